"""Report flow: the HTML index from the store, plus a Markdown artifact in Prefect."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.config import DEFAULT_CONFIG, load_config
from tasks import store
from tasks.hypotheses import load_hypotheses
from tasks.reporting import write_index


@flow(name="report", flow_run_name="render reports")
def report(config_path: Path = DEFAULT_CONFIG) -> str:
    """Path of the written `index.html`."""
    config = load_config(Path(config_path))
    engine = store.open_store(store.database_url(config.database_url))
    path = write_index(engine, config.reports.out_dir, load_hypotheses(config.hypotheses_dir))
    create_markdown_artifact(
        key="cxloop-index",
        markdown=f"CX report written to `{path.resolve()}`",
        description="cxloop report",
    )
    get_run_logger().info("report written to %s", path)
    return str(path)
