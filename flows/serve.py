"""Serve every deployment of `prefect.yaml` with its schedules from one process (`cxloop serve`).

For a single machine without a Prefect worker: the deployments are registered with the
Prefect API (ephemeral, or `PREFECT_API_URL`) and their scheduled runs execute as
subprocesses of this one, in the directory it was started in (where `cxloop.yaml` is).
SIGINT or SIGTERM stops it cleanly: no new runs start, the schedules are paused, exit code 0.
"""

from __future__ import annotations

import warnings
from importlib import import_module
from pathlib import Path
from typing import Any

import yaml
from prefect import Flow, serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.schedules import Cron

from tasks.errors import ConfigError

DEFAULT_PREFECT_YAML = Path("prefect.yaml")


def deployments(prefect_yaml: Path = DEFAULT_PREFECT_YAML) -> list[RunnerDeployment]:
    """A served deployment per `deployments:` entry: its flow, name, parameters, cron
    schedules (with their time zones), tags, description and concurrency limit; `work_pool`
    is ignored."""
    if not prefect_yaml.exists():
        raise ConfigError(
            f"{prefect_yaml}: no such file; run from the cxloop repository root or pass "
            "the path of its prefect.yaml."
        )
    spec = yaml.safe_load(prefect_yaml.read_text(encoding="utf-8")) or {}
    if not spec.get("deployments"):
        raise ConfigError(f"{prefect_yaml}: no `deployments:` list to serve.")
    return [_deployment(prefect_yaml, entry) for entry in spec["deployments"]]


def _deployment(prefect_yaml: Path, entry: dict[str, Any]) -> RunnerDeployment:
    name = entry.get("name", "?")
    where = f"{prefect_yaml}: deployment {name!r}"
    flow = _flow(entry.get("entrypoint", ""), where)
    schedules = []
    for schedule in entry.get("schedules") or []:
        if "cron" not in schedule:
            raise ConfigError(f"{where}: only cron schedules are served; got {schedule}.")
        schedules.append(
            Cron(
                schedule["cron"],
                timezone=schedule.get("timezone"),
                active=schedule.get("active", True),
            )
        )
    limit = entry.get("concurrency_limit")
    if isinstance(limit, dict):
        limit = ConcurrencyLimitConfig(**limit)
    # Module-path entrypoints load from the installed package, wherever this process runs.
    return flow.to_deployment(
        name=name,
        description=entry.get("description"),
        parameters=entry.get("parameters") or {},
        schedules=schedules,
        tags=entry.get("tags") or [],
        concurrency_limit=limit,
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def _flow(entrypoint: str, where: str) -> Flow:
    """The flow object an entrypoint such as `flows/cycle.py:improvement_cycle` names."""
    path, _, function = entrypoint.partition(":")
    module = path.removesuffix(".py").replace("/", ".")
    try:
        flow = getattr(import_module(module), function)
    except (ImportError, AttributeError, ValueError):
        raise ConfigError(
            f"{where}: entrypoint {entrypoint!r} names no importable flow; "
            "use `path/to/module.py:flow_function`."
        ) from None
    if not isinstance(flow, Flow):
        raise ConfigError(f"{where}: {entrypoint!r} is not a Prefect flow.")
    return flow


def serve_all(prefect_yaml: Path = DEFAULT_PREFECT_YAML) -> None:
    """Serve the deployments until SIGINT or SIGTERM; returns once they stopped cleanly.

    On shutdown Prefect pauses the served schedules, so no runs pile up while nothing
    serves them; the next `serve_all` resumes them.
    """
    # Prefect's SIGTERM handler calls the async `Runner.stop` without awaiting it; the
    # shutdown still completes (the runner's exit pauses the schedules), only the warning is noise.
    warnings.filterwarnings("ignore", "coroutine 'Runner.astop' was never awaited")
    serve(*deployments(prefect_yaml), pause_on_shutdown=True)
