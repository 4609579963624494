"""The pilots in the store: assignments kept in step with the arms, statuses first seen,
results as `experiment_result` rows, and the CRM properties a split reads; no Prefect."""

from __future__ import annotations

import math
from dataclasses import replace

import pandas as pd

from tasks import store
from tasks.experiments import Estimate, Evaluation, ResponseCheck, relative
from tasks.hypotheses import Hypothesis
from tasks.identity import is_in
from tasks.loader import CxData
from tasks.unit_pilots import UnitEffect


def result_rows(evaluation: Evaluation, as_of: pd.Timestamp) -> pd.DataFrame:
    """One `experiment_result` row per estimated metric; the decision sits on the primary,
    with the plan, quantile effects and the response-rate check in its `cells`."""
    h = evaluation.hypothesis
    roles = [("primary", evaluation.primary, {})]
    roles += [("secondary", e, {}) for e in evaluation.secondary]
    roles += [
        ("guardrail", g.estimate, {"status": g.status, "noninferiority_p": g.p_value})
        for g in evaluation.guardrails
    ]
    rows = [_row(role, e) | {"extra": extra} for role, e, extra in roles]
    for row in rows:
        row["cells"] |= row.pop("extra")
    rows[0]["cells"] |= {
        "plan": vars(evaluation.plan) if evaluation.plan else None,
        "warnings": evaluation.warnings,
        "why": evaluation.why,
        "quantiles": [vars(q) for q in evaluation.quantiles],
        "response": _response(evaluation.response),
        "unit": unit_cells(evaluation.unit),
    }
    for row in rows:
        row["cells"] = _json_safe(row["cells"])
    frame = pd.DataFrame(rows).assign(
        hypothesis_id=h.id,
        as_of=as_of.date(),
        srm_p=evaluation.srm_p,
        evaluated_at=store.now_utc(),
    )
    frame["decision"] = [evaluation.decision if role == "primary" else None for role, *_ in roles]
    frame["reason"] = [evaluation.reason if role == "primary" else None for role, *_ in roles]
    return frame.drop_duplicates(subset=["metric"])


def save_results(url: str, evaluation: Evaluation, as_of: pd.Timestamp) -> int:
    """Rows written: the evaluation's `experiment_result` rows as of `as_of`, one per metric."""
    keys = ("hypothesis_id", "metric", "as_of")
    rows = result_rows(evaluation, as_of)
    return store.save_rows(store.open_store(url), store.ExperimentResult, rows, keys)


def _json_safe(value: object) -> object:
    """`value` with every non-finite float as None: PostgreSQL's JSON has no NaN."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def unit_cells(effect: UnitEffect | None) -> dict | None:
    """The unit-level analysis as the report shows it: method, estimate (the metric's units,
    and relative to the counterfactual) with its interval, units, checks, the treated and
    counterfactual series, the placebo statistics and the donor weights; None without one."""
    if effect is None:
        return None
    ratio, ratio_low, ratio_high = relative(effect)
    return {
        "method": effect.method,
        "design": effect.design,
        "estimate": effect.estimate,
        "low": effect.low,
        "high": effect.high,
        "relative": {"estimate": ratio, "low": ratio_low, "high": ratio_high},
        "p": effect.p_value,
        "alpha": effect.alpha,
        "treated": list(effect.treated),
        "donors": list(effect.donors),
        "n_pre": effect.n_pre,
        "n_post": effect.n_post,
        "pre_rmspe": effect.pre_rmspe,
        "identified": effect.identified,
        "reason": effect.reason,
        "checks": [vars(c) for c in effect.checks],
        "series": effect.series.assign(period=effect.series["period"].astype(str)).to_dict(
            "records"
        ),
        "placebos": effect.placebos.to_dict("records"),
        "weights": effect.weights.to_dict("records"),
    }


def _response(check: ResponseCheck | None) -> dict | None:
    if check is None:
        return None
    return {
        "answered": check.answered,
        "assigned": check.assigned,
        "p": check.p_value,
        "mismatch": check.mismatch,
        "reweighted": [_row("reweighted", e) for e in check.reweighted],
    }


def _row(role: str, e: Estimate) -> dict:
    return {
        "metric": e.metric,
        "role": role,
        "relative": e.relative,
        "estimate": e.value,
        "ci_low": e.ci_low,
        "ci_high": e.ci_high,
        "p_value": e.p_value,
        "sequential": e.sequential,
        "n_pilot": e.n_pilot,
        "n_control": e.n_control,
        "cells": {
            "rows": e.cells.to_dict("records"),
            "analysis": e.analysis,
            "estimand": e.estimand,
            "se": e.se,
            "tau2": e.tau2,
        },
    }


def record_statuses(url: str, hypotheses: list[Hypothesis]) -> None:
    """Store when each hypothesis was first seen in its current lifecycle status."""
    seen = pd.DataFrame(
        {
            "hypothesis_id": [h.id for h in hypotheses],
            "status": [h.status for h in hypotheses],
            "first_seen_at": store.now_utc(),
        }
    )
    store.save_rows(
        store.open_store(url), store.HypothesisStatus, seen, ("hypothesis_id", "status"), False
    )


def save_assignments(url: str, hypothesis: Hypothesis, arms: pd.DataFrame) -> int:
    """Store `arms` (`customer_id`, `arm`) as the hypothesis' assignments; returns rows written.

    Only rows new or changed (another arm or pilot start) are written, so rerunning a large
    pilot writes nothing; the stored rows end as upserting every row would leave them. Stored
    customers no longer in `arms` (the population narrowed, or an earlier pilot claimed them)
    are deleted.
    """
    rows = arms.assign(
        hypothesis_id=hypothesis.id, assigned_at=pd.Timestamp(hypothesis.schedule.pilot.start)
    ).drop_duplicates("customer_id", keep="last")  # the row an upsert of them all would keep
    engine, compared = store.open_store(url), ["customer_id", "arm", "assigned_at"]
    stored = store.read_frame(engine, store.Assignment, compared, {"hypothesis_id": hypothesis.id})
    kept = rows.merge(stored, how="left", on=compared, indicator=True)["_merge"] == "left_only"
    gone = stored.loc[~is_in(stored["customer_id"], rows["customer_id"]), ["customer_id"]]
    store.delete_rows(engine, store.Assignment, gone.assign(hypothesis_id=hypothesis.id))
    return store.save_rows(
        engine, store.Assignment, rows[kept.to_numpy()], ("hypothesis_id", "customer_id")
    )


def with_crm_properties(data: CxData, url: str, hypotheses: list[Hypothesis]) -> CxData:
    """`data` with each customer's CRM properties (`attributes`) when a pilot's arms read an
    attribute that is no customer column; `data` itself otherwise (they are costly to load)."""
    read = {name for h in hypotheses for _, name in h.assignment.reads()}
    if not read - set(data.customers.columns):
        return data
    stored = store.read_frame(store.open_store(url), store.Customer, ["source_id", "attributes"])
    properties = stored.drop_duplicates("source_id", keep="last").set_index("source_id")
    customers = data.customers.assign(
        attributes=data.customers["customer_id"].map(properties["attributes"])
    )
    return replace(data, customers=customers)
