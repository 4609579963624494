"""Experiments flow: assign, evaluate and decide every running or concluded hypothesis."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from connectors.errors import HypothesisError
from flows.config import DEFAULT_CONFIG, Config, given_or_loaded
from flows.names import flow_run_name
from flows.rank import load_data, publish_alerts
from tasks.alerts import Alert, last_complete_month
from tasks.experiments import (
    Estimate,
    RolloutWatch,
    evaluate,
    rollout_watch,
)
from tasks.holdout import Holdout
from tasks.hypotheses import Hypothesis, read_hypotheses
from tasks.loader import CxData
from tasks.pilot_store import (
    record_statuses,
    save_assignments,
    save_results,
    with_crm_properties,
)

EVALUATED = ("running", "concluded")


@dataclass(frozen=True)
class PilotSummary:
    """One pilot after a run, as the logs and the CLI summary show it."""

    id: str
    decision: str
    reason: str
    warnings: list[str]
    estimates: list[Estimate]  # the primary metric first, then the secondary ones
    plan: str  # `Plan.text()`: what the pilot can detect, as every output quotes it


def fading_alert(hypothesis: Hypothesis, watch: RolloutWatch, period: pd.Period) -> Alert:
    """An alert for `period` that an adopted change keeps less than half of its pilot gain
    after rollout."""
    return Alert(
        kind="rollout_fading",
        key=f"rollout_fading:{hypothesis.id}",
        period=str(period),
        evidence={
            "hypothesis": hypothesis.id,
            "metric": hypothesis.metric.name,
            "rollout": str(hypothesis.rollout),
            **vars(watch),
        },
    )


@task(task_run_name="evaluate {hypothesis.id}", cache_policy=NO_CACHE, persist_result=False)
def evaluate_and_store(
    hypothesis: Hypothesis,
    data: CxData,
    url: str,
    others: list[Hypothesis],
    holdout: Holdout | None = None,
) -> PilotSummary:
    """Assignment and results stored, the long-term `holdout` kept out of both arms and
    used as the rollout watch's baseline; returns the pilot's summary."""
    evaluation = evaluate(hypothesis, data, others, holdout)
    as_of = min(pd.Timestamp(hypothesis.schedule.pilot.end), data.newest())
    save_assignments(url, hypothesis, evaluation.arms)
    watch = rollout_watch(hypothesis, data, evaluation.arms, holdout)
    if watch is not None and watch.fading:
        publish_alerts(url, [fading_alert(hypothesis, watch, last_complete_month(data))])
    save_results(url, evaluation, as_of)
    return PilotSummary(
        hypothesis.id,
        evaluation.decision,
        evaluation.reason,
        evaluation.warnings,
        [evaluation.primary, *evaluation.secondary],
        evaluation.plan.text() if evaluation.plan else "",
    )


@flow(name="experiments", flow_run_name=flow_run_name("pilots"))
def evaluate_pilots(
    config_path: Path = DEFAULT_CONFIG, config: Config | None = None
) -> list[PilotSummary]:
    """One summary per running or concluded hypothesis; from `config` if given (the cycle's,
    already loaded), else from the file at `config_path`.

    A broken hypothesis file is logged and skipped; the others are still evaluated (the CLI
    refuses to start on one, but a scheduled run should not lose every pilot to a typo).
    """
    logger = get_run_logger()
    config = given_or_loaded(config_path, config)
    url = config.store_url
    everything, problems = read_hypotheses(config.hypotheses_dir)
    for problem in problems:
        logger.error("skipped: %s", problem)
    record_statuses(url, everything)
    hypotheses = [h for h in everything if h.status in EVALUATED]
    if not hypotheses:
        logger.info("no running or concluded hypotheses in %s", config.hypotheses_dir)
        return []
    data = with_crm_properties(load_data(url, config), url, hypotheses)
    holdout = config.holdout.holdout() if config.holdout else None
    summaries = []
    for h in hypotheses:
        try:
            summaries.append(evaluate_and_store(h, data, url, everything, holdout))
        except HypothesisError as exc:
            logger.error("skipped: %s", exc)
    for s in summaries:
        logger.info("%s: %s (%s)", s.id, s.decision, s.reason)
        for warning in s.warnings:
            logger.warning("%s: %s", s.id, warning)
    return summaries
