"""The improvement cycle: ingest → rank → experiments → report, as subflows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from prefect import flow
from sqlalchemy.engine import Engine

from flows.config import DEFAULT_CONFIG, Config, given_or_loaded
from flows.experiments import PilotSummary, evaluate_pilots
from flows.ingest import Synced, ingest
from flows.names import flow_run_name
from flows.rank import configured
from flows.report import report
from tasks import store
from tasks.alerts import Alert


@dataclass(frozen=True)
class CycleResult:
    """What one turn of the loop produced, for the CLI summary."""

    ingested: dict[str, dict[str, Synced]]
    pain_points: list[dict]
    pilots: list[PilotSummary]
    report_path: str
    alerts: list[Alert]  # raised (or raised again) by this run, by kind and key


@flow(name="improvement-cycle", flow_run_name=flow_run_name("cycle"))
def improvement_cycle(
    config_path: Path = DEFAULT_CONFIG, config: Config | None = None
) -> CycleResult:
    """One full turn of the loop on `config` if given (the CLI's, already checked), else on
    the configuration in `config_path`, read once and handed to every subflow."""
    config = given_or_loaded(config_path, config)
    started = store.now_utc()
    ingested = ingest(config_path, config)
    ranked = configured(config)(config_path, config)
    pilots = evaluate_pilots(config_path, config)
    path = report(config_path, config=config)
    return CycleResult(ingested, ranked, pilots, path, raised_since(config.store(), started))


def raised_since(engine: Engine, since: datetime) -> list[Alert]:
    """The stored alerts raised at or after `since` (UTC), by kind and key; an alert raised
    again for its period counts, as the store keeps its latest `raised_at`."""
    raised = store.read_frame(engine, store.Alert)
    raised = raised[raised["raised_at"] >= since].sort_values(["kind", "key"])
    return [
        Alert(row.kind, row.key, row.period, row.evidence, row.message)
        for row in raised.itertuples()
    ]
