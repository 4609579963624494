"""Report flow: the CX digest and a report per hypothesis from the store, Prefect artifacts,
the index page, then delivery (new reports, and earlier deliveries that failed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from sqlalchemy.engine import Engine

from flows.config import DEFAULT_CONFIG, Config, load_config
from tasks import store
from tasks.alerts import Alert
from tasks.delivery import Outgoing, deliver, email_message, write_mail
from tasks.hypotheses import read_hypotheses
from tasks.metrics import CxData
from tasks.reporting import (
    Rendered,
    build_digest,
    build_experiment,
    latest_pain_points,
    latest_results,
    print_pdf,
    record_report,
    write_index,
    write_report,
)

KINDS = ("digest", "experiment")
frame_task = task(cache_policy=NO_CACHE, persist_result=False)


@frame_task
def render_reports(config: Config, kinds: Sequence[str]) -> list[Rendered]:
    """The requested reports rendered from the store."""
    engine = store.open_store(store.database_url(config.database_url))
    alerts = latest_alerts(engine)
    settings = config.reports
    data = CxData.latest(engine, config.business_hours.calendar(), config.timezone)
    hypotheses, _ = read_hypotheses(config.hypotheses_dir)
    pain, results = latest_pain_points(engine), latest_results(engine)
    rendered = []
    if "digest" in kinds:
        rendered.append(
            build_digest(
                data,
                pain,
                results,
                hypotheses,
                alerts,
                settings.language,
                config.csat_scale,
                settings.template_dir,
            )
        )
    if "experiment" in kinds and len(results):
        arms = store.read_frame(engine, store.Assignment, ["hypothesis_id", "customer_id", "arm"])
        for h in hypotheses:
            mine = results[results["hypothesis_id"] == h.id]
            if len(mine):
                rendered.append(
                    build_experiment(
                        h,
                        mine,
                        arms[arms["hypothesis_id"] == h.id],
                        data,
                        pain,
                        settings.language,
                        settings.template_dir,
                        config.taxonomy,
                    )
                )
    return rendered


def latest_alerts(engine: Engine) -> list[Alert]:
    """The alerts of the last period any were raised for, by key."""
    raised = store.read_frame(engine, store.Alert)
    raised = raised[raised["period"] == raised["period"].max()] if len(raised) else raised
    return [
        Alert(row.kind, row.key, row.period, row.evidence, row.message)
        for row in raised.sort_values("key").itertuples()
    ]


@task(retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def pdf(path: Path, chromium: str) -> Path:
    return print_pdf(path, chromium)


def publish_artifacts(report: Rendered) -> None:
    """A Markdown artifact per report, and a table artifact per table it carries."""
    key = report.name.lower().replace("_", "-")
    create_markdown_artifact(key=key, markdown=report.markdown, description=report.title)
    for name, rows in report.tables.items():
        if rows:
            create_table_artifact(
                key=f"{key}-{name.replace('_', '-')}", table=rows, description=report.title
            )


@flow(name="report", flow_run_name="render reports")
def report(
    config_path: Path = DEFAULT_CONFIG,
    kinds: Sequence[str] = KINDS,
) -> str:
    """Path of the written `index.html`, after rendering `kinds` of reports and delivering them."""
    logger = get_run_logger()
    config = load_config(Path(config_path))
    settings = config.reports
    engine = store.open_store(store.database_url(config.database_url))
    outgoing = []
    for rendered in render_reports(config, kinds):
        path = write_report(rendered, settings.out_dir)
        write_mail(
            path,
            email_message(rendered.title, rendered.email_html, rendered.text, rendered.charts),
        )
        if settings.pdf:
            pdf(path, settings.chromium)
        record_report(engine, rendered.kind, path)
        publish_artifacts(rendered)
        outgoing.append(
            Outgoing(path, rendered.kind, rendered.title, rendered.summary, rendered.news)
        )
        logger.info("%s written to %s", rendered.kind, path)
    index = write_index(engine, settings.out_dir, settings.language, settings.template_dir)
    tried = deliver(engine, outgoing, settings.recipients, settings.delivery)
    for row in tried.to_dict("records") if len(tried) else []:
        log = logger.info if row["status"] == "sent" else logger.warning
        log(
            "%s → %s %s: %s %s",
            Path(row["report"]).name,
            row["channel"],
            row["target"],
            row["status"],
            row["last_error"] or "",
        )
    return str(index)
