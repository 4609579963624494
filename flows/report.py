"""Report flow: the CX digest and a report per hypothesis from the store, Prefect artifacts,
the index page, then delivery (new reports, and earlier deliveries that failed)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from sqlalchemy.engine import Engine

from connectors.errors import CxloopError
from flows.artifacts import publish_artifacts
from flows.config import DEFAULT_CONFIG, Config, given_or_loaded
from flows.names import flow_run_name
from tasks import store
from tasks.alerts import Alert
from tasks.delivery import Outgoing, deliver, email_message, write_mail
from tasks.digest import build_digest, stored_churn_run
from tasks.hypotheses import read_hypotheses
from tasks.latest import latest_pain_points, latest_results
from tasks.loader import CxData
from tasks.outputs import print_pdf, record_report, write_index, write_report
from tasks.pilot_report import build_experiment, experiment_name
from tasks.render import Rendered

KINDS = ("digest", "experiment")
frame_task = task(cache_policy=NO_CACHE, persist_result=False)


class ReportsFailed(CxloopError):
    """Some reports failed; the others were written and delivered."""


@frame_task(task_run_name=lambda parameters: "render " + ", ".join(parameters["kinds"]))
def render_reports(config: Config, kinds: Sequence[str]) -> tuple[list[Rendered], dict[str, str]]:
    """The requested reports rendered from the store, and the error of each report that
    failed to render, by report name: one pilot's broken report costs only that report."""
    logger = get_run_logger()
    engine = config.store()
    alerts = latest_alerts(engine)
    settings = config.reports
    data = CxData.latest(
        engine, config.business_hours.calendar(), config.timezone, config.fcr.repeat_days
    )
    hypotheses, _ = read_hypotheses(config.hypotheses_dir)
    pain, results = latest_pain_points(engine), latest_results(engine)
    jobs: list[tuple[str, Callable[[], Rendered]]] = []
    if "digest" in kinds:
        jobs.append(
            (
                "digest",
                partial(
                    build_digest,
                    data,
                    pain,
                    results,
                    hypotheses,
                    alerts,
                    settings.language,
                    config.csat_scale,
                    settings.template_dir,
                    paper=settings.paper,
                    standards=store.read_frame(engine, store.StandardSnapshot),
                    cuts=settings.breakdowns,
                    repeat_days=config.fcr.repeat_days,
                    ces_scale=config.ces_scale,
                    at_risk=stored_churn_run(engine) if config.churn.enabled else None,
                ),
            )
        )
    if "experiment" in kinds and len(results):
        arms = store.read_frame(engine, store.Assignment, ["hypothesis_id", "customer_id", "arm"])
        for h in hypotheses:
            mine = results[results["hypothesis_id"] == h.id]
            if len(mine):
                jobs.append(
                    (
                        experiment_name(h.id),
                        partial(
                            build_experiment,
                            h,
                            mine,
                            arms[arms["hypothesis_id"] == h.id],
                            data,
                            pain,
                            settings.language,
                            settings.template_dir,
                            config.taxonomy,
                            settings.paper,
                            settings.breakdowns,
                        ),
                    )
                )
    rendered, failed = [], {}
    for name, build in jobs:
        try:
            rendered.append(build())
        except Exception as exc:  # one report's defect must not cost the digest and the rest
            logger.exception("%s failed to render", name)
            failed[name] = f"{type(exc).__name__}: {exc}"
    return rendered, failed


def latest_alerts(engine: Engine) -> list[Alert]:
    """The alerts of the last period any were raised for, by key."""
    raised = store.read_frame(engine, store.Alert)
    raised = raised[raised["period"] == raised["period"].max()] if len(raised) else raised
    return [
        Alert(row.kind, row.key, row.period, row.evidence, row.message)
        for row in raised.sort_values("key").itertuples()
    ]


@task(task_run_name="pdf {path.name}", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def pdf(path: Path, chromium: str) -> Path:
    return print_pdf(path, chromium)


@flow(name="report", flow_run_name=flow_run_name("reports"))
def report(
    config_path: Path = DEFAULT_CONFIG,
    kinds: Sequence[str] = KINDS,
    config: Config | None = None,
) -> str:
    """Path of the written `index.html`, after rendering `kinds` of reports and delivering them;
    from `config` if given (the cycle's, already loaded), else from the file at `config_path`."""
    logger = get_run_logger()
    config = given_or_loaded(config_path, config)
    settings = config.reports
    engine = config.store()
    outgoing = []
    all_rendered, failed = render_reports(config, kinds)
    for rendered in all_rendered:
        try:
            outgoing.append(write_outputs(rendered, config, engine))
        except Exception as exc:  # as in rendering: this report fails, the others go out
            logger.exception("%s failed to write", rendered.name)
            failed[rendered.name] = f"{type(exc).__name__}: {exc}"
            continue
        logger.info("%s written to %s", rendered.kind, outgoing[-1].report)
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
    if failed:
        raise ReportsFailed(
            "reports failed (the others were written and delivered): "
            + "; ".join(f"{name}: {error}" for name, error in sorted(failed.items()))
            + ". The log of this run has each traceback."
        )
    return str(index)


def write_outputs(rendered: Rendered, config: Config, engine: Engine) -> Outgoing:
    """`rendered` written as HTML, e-mail and (if configured) PDF, recorded and published;
    returns what delivery sends."""
    settings = config.reports
    path = write_report(rendered, settings.out_dir)
    smtp = settings.delivery.smtp
    message = email_message(
        rendered.title,
        rendered.email_html,
        rendered.text,
        rendered.charts,
        sender=smtp.sender if smtp else "cxloop@localhost",
        to=settings.recipients.get(rendered.kind, []),
    )
    write_mail(path, message)
    if settings.pdf:
        pdf(path, settings.chromium)
    record_report(engine, rendered.kind, path)
    publish_artifacts(rendered, settings.language, settings.template_dir)
    return Outgoing(path, rendered.kind, rendered.title, rendered.summary, rendered.news)
