"""The improvement cycle: ingest → rank → experiments → report, as subflows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefect import flow

from flows.config import DEFAULT_CONFIG, Config, given_or_loaded
from flows.experiments import PilotSummary, evaluate_pilots
from flows.ingest import Synced, ingest
from flows.rank import configured
from flows.report import report


@dataclass(frozen=True)
class CycleResult:
    """What one turn of the loop produced, for the CLI summary."""

    ingested: dict[str, dict[str, Synced]]
    pain_points: list[dict]
    pilots: list[PilotSummary]
    report_path: str


@flow(name="improvement-cycle", flow_run_name="improvement cycle")
def improvement_cycle(
    config_path: Path = DEFAULT_CONFIG, config: Config | None = None
) -> CycleResult:
    """One full turn of the loop on `config` if given (the CLI's, already checked), else on
    the configuration in `config_path`, read once and handed to every subflow."""
    config = given_or_loaded(config_path, config)
    ingested = ingest(config_path, config)
    ranked = configured(config)(config_path, config)
    pilots = evaluate_pilots(config_path, config)
    return CycleResult(ingested, ranked, pilots, report(config_path, config=config))
