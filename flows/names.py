"""Names people read in Prefect: flow runs such as `rank acme 2026-12-07`, and artifact keys
namespaced by the project, so that companies and configs sharing one Prefect server never
overwrite each other's artifacts."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date
from pathlib import Path

from flows.config import DEFAULT_CONFIG


def slug(text: str) -> str:
    """`text` as a Prefect artifact key accepts it: lower-case letters, digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def project_of(config_path: Path | str) -> str:
    """The project a configuration belongs to, as a slug: its directory's name for a
    `cxloop.yaml` (`acme/cxloop.yaml` → `acme`), else the file's own name
    (`.cxloop/demo-20000-7.yaml` → `demo-20000-7`)."""
    path = Path(config_path).resolve()
    return slug(path.parent.name if path.stem == DEFAULT_CONFIG.stem else path.stem) or "cxloop"


def running_project() -> str:
    """The project of the flow run in progress, from its `config_path` parameter."""
    from prefect.runtime import flow_run

    return project_of(flow_run.parameters.get("config_path", DEFAULT_CONFIG))


def flow_run_name(what: str) -> Callable[[], str]:
    """A `flow_run_name` callable: `what`, the project and the day the run starts."""

    def name() -> str:
        return f"{what} {running_project()} {date.today():%Y-%m-%d}"

    return name


def artifact_key(*parts: str) -> str:
    """An artifact key under the running project: `acme-digest-2026-10-kpis`."""
    return "-".join(slug(p) for p in (running_project(), *parts))


def snapshot_name(parameters: dict) -> str:
    """A KPI snapshot task's run name: `snapshot by segment per month`, `snapshot overall`."""
    by, grain = parameters.get("by"), parameters.get("grain")
    words = ["snapshot", f"by {by}" if by else "overall", *([f"per {grain}"] if grain else [])]
    return " ".join(words)
