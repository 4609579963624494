"""`prefect.yaml` names real flows with parameters they accept and valid cron schedules."""

from __future__ import annotations

import importlib
import inspect

import yaml
from prefect import Flow
from prefect.client.schemas.schedules import CronSchedule
from prefect.utilities.callables import parameter_schema

from tests.conftest import REPO


def test_every_deployment_points_at_a_flow_with_its_parameters_and_a_schedule() -> None:
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text(encoding="utf-8"))
    names = set()
    for deployment in spec["deployments"]:
        path, function = deployment["entrypoint"].split(":")
        module = path.removesuffix(".py").replace("/", ".")
        flow = getattr(importlib.import_module(module), function)
        assert isinstance(flow, Flow), deployment["name"]
        accepted = set(inspect.signature(flow.fn).parameters)
        # what `cxloop serve` and `prefect deploy` register: the path, not a loaded Config
        schema = parameter_schema(flow.fn)
        assert "config_path" in schema.properties, deployment["name"]
        assert set(deployment.get("parameters", {})) <= accepted, deployment["name"]
        for schedule in deployment["schedules"]:
            CronSchedule(**schedule)
        names.add(deployment["name"])
    assert {"improvement-cycle", "ingest-hourly", "digest-weekly"} <= names
