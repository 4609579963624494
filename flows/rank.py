"""Rank flow: KPI snapshots per period, pain points scored and stored, alerts raised."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import Flow, flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.task_runners import ThreadPoolTaskRunner

from flows.config import DEFAULT_CONFIG, AlertConfig, Config, given_or_loaded
from flows.names import flow_run_name, snapshot_name
from tasks import store
from tasks.alerts import Alert, detect_alerts
from tasks.loader import CxData, unmatched_message
from tasks.metrics import KPIS, csi, metric_table
from tasks.money import published_scores
from tasks.pain_points import rank_pain_points
from tasks.standards import evaluate, newly_missed, snapshot_rows, summary

frame_task = task(cache_policy=NO_CACHE, persist_result=False)


def period_of(data: CxData) -> str:
    """`first..last` day covered by the store's tickets and responses: the analysis window."""
    times = pd.concat([data.tickets["created_at"], data.responses["submitted_at"]])
    if times.empty:
        return "empty"
    return f"{times.min():%Y-%m-%d}..{times.max():%Y-%m-%d}"


@frame_task(task_run_name="load the store")
def load_data(url: str, config: Config) -> CxData:
    return CxData.latest(
        store.open_store(url),
        config.business_hours.calendar(),
        config.timezone,
        config.fcr.repeat_days,
    )


CUTS = [(grain, by) for grain in (None, "month") for by in (None, "segment", "region")]
# Cuts are pandas work that mostly holds the GIL: on threads, a third one adds its memory
# but no speed (1M customers: 2 threads 3.0 s and +0.4 GB, all six at once 5.1 s and +0.9 GB).
CUT_THREADS = 2


@task(task_run_name=snapshot_name, cache_policy=NO_CACHE, persist_result=False)
def snapshot_cut(
    data: CxData, by: str | None, grain: str | None, config: Config, window: str
) -> pd.DataFrame:
    """KPI and CSI snapshot rows of one cut: `dims` reads `all` or `segment=premium`; without
    a grain the period is the whole `window`."""
    metrics = list(dict.fromkeys([*KPIS, *config.csi]))
    table = metric_table(data, metrics, [by] if by else [], grain, config.csat_scale)
    index = csi(table, config.csi, config.csat_scale, config.ces_scale)
    table = pd.concat([table[table["metric"].isin(KPIS)], index], ignore_index=True)
    dims = f"{by}=" + table[by].astype(str) if by else "all"
    return table.assign(dims=dims, period=table["period"] if grain else window)


def save_snapshots(url: str, data: CxData, config: Config, window: str) -> int:
    """KPI snapshots per month and for the whole window, overall, by region and by segment.

    The cuts run as concurrent tasks on the flow's task runner (`CUT_THREADS` threads, or a
    Dask cluster when `parallel` asks for one). Only the configured `segments` get their own
    rows.
    """
    cuts = [snapshot_cut.submit(data, by, grain, config, window) for grain, by in CUTS]
    rows = pd.concat([cut.result() for cut in cuts], ignore_index=True)
    rows = rows[~rows["dims"].str.startswith("segment=") | rows["segment"].isin(config.segments)]
    return store.save_rows(
        store.open_store(url),
        store.MetricSnapshot,
        rows.assign(computed_at=store.now_utc()),
        ("period", "metric", "dims"),
    )


@frame_task(task_run_name="score pain points")
def save_pain_points(url: str, data: CxData, config: Config, period: str) -> pd.DataFrame:
    ranked = rank_pain_points(
        data,
        config.efforts,
        config.funnel_steps,
        config.taxonomy,
        ranking=config.ranking.by,
        value_per_point=config.ranking.value_per_point,
        funnel_source=config.funnel_source,
        churn=published_scores(store.open_store(url)) if config.churn.enabled else None,
    )
    rows = ranked.assign(period=period, computed_at=store.now_utc())
    store.save_rows(store.open_store(url), store.PainPoint, rows, ("period", "key"))
    return ranked


@frame_task(task_run_name="raise alerts")
def raise_alerts(url: str, data: CxData, csat_scale: int, settings: AlertConfig) -> list[Alert]:
    """Detect, store and emit as Prefect events (`cxloop.alert.<kind>`) the period's alerts."""
    alerts = detect_alerts(data, csat_scale, settings.q, settings.min_growth)
    publish_alerts(url, alerts)
    return alerts


def publish_alerts(url: str, alerts: list[Alert]) -> None:
    """Store alerts (one per period and key) and emit each as a `cxloop.alert.<kind>` event."""
    if alerts:
        rows = pd.DataFrame([vars(a) for a in alerts]).assign(raised_at=store.now_utc())
        store.save_rows(store.open_store(url), store.Alert, rows, ("period", "key"))
    for alert in alerts:
        emit_event(
            event=f"cxloop.alert.{alert.kind}",
            resource={"prefect.resource.id": f"cxloop.alert.{alert.key}"},
            payload={"message": alert.message, "period": alert.period, **alert.evidence},
        )


@frame_task(task_run_name="judge standards")
def judge_standards(url: str, data: CxData, config: Config) -> pd.DataFrame:
    """Each standard per month, stored; a `cxloop.alert.standard_missed` per newly missed one."""
    results = evaluate(data, config.standards, "month", config.csat_scale)
    engine = store.open_store(url)
    alerts = newly_missed(results, store.read_frame(engine, store.StandardSnapshot))
    rows = snapshot_rows(results, store.now_utc())
    store.save_rows(engine, store.StandardSnapshot, rows, ("period", "standard"))
    publish_alerts(url, alerts)
    return results


@frame_task(task_run_name="churn risk")
def save_churn_risk(url: str, data: CxData, config: Config) -> str:
    """Train, validate and store the churn model (`churn.enabled`); what became of it."""
    from tasks.churn import ChurnError, run_churn, save_churn

    try:
        run = run_churn(data, config.churn)
    except ChurnError as exc:
        return str(exc)
    save_churn(store.open_store(url), run)
    return run.reason


def configured(config: Config) -> Flow:
    """The rank flow on the task runner `parallel` asks for: threads, or a Dask cluster."""
    settings = config.parallel
    if not (settings.dask_address or settings.dask_workers):
        return rank
    from prefect_dask import DaskTaskRunner

    runner = (
        DaskTaskRunner(address=settings.dask_address)
        if settings.dask_address
        else DaskTaskRunner(
            cluster_kwargs={"n_workers": settings.dask_workers, "threads_per_worker": 1}
        )
    )
    return rank.with_options(task_runner=runner)


@flow(
    name="rank",
    flow_run_name=flow_run_name("rank"),
    task_runner=ThreadPoolTaskRunner(max_workers=CUT_THREADS),
)
def rank(config_path: Path = DEFAULT_CONFIG, config: Config | None = None) -> list[dict]:
    """Ranked pain points (key, title, components, score), best first; from `config` if
    given (the cycle's, already loaded), else from the file at `config_path`."""
    logger = get_run_logger()
    config = given_or_loaded(config_path, config)
    url = config.store_url
    data = load_data(url, config)
    period = period_of(data)
    unmatched = data.unmatched()
    if any(unmatched.values()):
        logger.warning("%s", unmatched_message(unmatched))
    save_snapshots(url, data, config, period)
    if config.churn.enabled:  # first: the pain points' money scale reads the new scores
        logger.info("churn risk: %s", save_churn_risk(url, data, config))
    ranked = save_pain_points(url, data, config, period)
    if config.standards:
        judged = judge_standards(url, data, config)
        logger.info("standards in their latest month: %s", summary(judged))
    for alert in raise_alerts(url, data, config.csat_scale, config.alerts):
        logger.warning("alert: %s", alert.message)
    for row in ranked.head(3).itertuples():
        logger.info("#%d %s: score %.1f", row.rank, row.key, row.score)
    return ranked.drop(columns=["evidence"]).to_dict("records")
