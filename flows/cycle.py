"""The improvement cycle: ingest → rank → experiments → report, as subflows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefect import flow

from flows.config import DEFAULT_CONFIG, load_config
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
def improvement_cycle(config_path: Path = DEFAULT_CONFIG) -> CycleResult:
    """One full turn of the loop on the configuration in `config_path`."""
    ingested = ingest(config_path)
    ranked = configured(load_config(Path(config_path)))(config_path)
    pilots = evaluate_pilots(config_path)
    return CycleResult(ingested, ranked, pilots, report(config_path))
