"""A pilot's primary estimate and its interval recomputed on the data up to each day of the
pilot (each week for pilots longer than `MAX_POINTS` days), as a daily evaluation showed it.

Each point is the estimate `evaluate` makes on the data up to its day: CUPED from cumulative
sums per customer and day (every day's arm moments at once, `tasks.experiments.Moments` on
arrays), DiD by its own estimator on each day's data. With `decision.sequential` a point's
interval and p-value are the always-valid ones tuned to the share of the pilot elapsed by that
day, so the last point is the final estimate.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd
from scipy import stats

from tasks.experiments import (
    Moments,
    always_valid_p,
    analysis_of,
    critical_multiple,
    estimand_of,
    in_period,
    regression_adjusted,
    tuned_tau2,
)
from tasks.hypotheses import Hypothesis, Period
from tasks.moments import log_values
from tasks.segment_effects import customer_estimator

MAX_POINTS = 90
COLUMNS = ["day", "estimate", "ci_low", "ci_high", "p_value", "n_pilot", "n_control"]


@dataclass(frozen=True)
class CumulativeEffect:
    """`points` (`day`, `estimate`, `ci_low`, `ci_high` on the reader's scale, `p_value`,
    `n_pilot`, `n_control`), one per day or week (`step`) with an estimate; `sequential`
    marks always-valid intervals."""

    points: pd.DataFrame
    step: str
    relative: bool
    sequential: bool


def cut_days(pilot: Period, last: date, max_points: int = MAX_POINTS) -> tuple[list[date], str]:
    """The days the estimate is recomputed at, from the pilot's start to `last` (included):
    every day, or every seventh and `last` when that would be more than `max_points`."""
    days = (last - pilot.start).days + 1
    if days <= max_points:
        return [pilot.start + timedelta(days=i) for i in range(days)], "day"
    weekly = [pilot.start + timedelta(days=i) for i in range(6, days, 7)]
    return [*weekly, last] if weekly[-1] != last else weekly, "week"


def _shares(pilot: Period, cuts: list[date]) -> np.ndarray:
    """Share of the pilot's days elapsed by each cut, as `elapsed_share` counts it."""
    total = (pilot.end - pilot.start).days + 1
    elapsed = np.array([(cut - pilot.start).days + 1 for cut in cuts], dtype=float)
    return np.clip(elapsed / total, 1 / total, 1.0)


def _cuped_points(
    hypothesis: Hypothesis, obs: pd.DataFrame, arms: pd.DataFrame, cuts: list[date]
) -> pd.DataFrame:
    """`cuped` at every cut at once: each customer's pilot-period mean up to each cut from
    cumulative sums, their baseline mean (missing ones filled, as `cuped` does, with the
    mean of the customers seen by that cut), each arm's moments per cut."""
    metric, estimand = hypothesis.metric.name, estimand_of(hypothesis.metric)
    baseline, pilot = hypothesis.schedule.baseline, hypothesis.schedule.pilot
    frame = obs.merge(arms[["customer_id", "arm"]], on="customer_id")
    pre = in_period(frame["at"], baseline)
    post = in_period(frame["at"], Period(start=pilot.start, end=cuts[-1]))
    frame = frame[pre | post]
    if estimand == "log_ratio":
        frame = frame.assign(value=log_values(frame["value"], metric))
    x = frame[pre[pre | post]].groupby("customer_id")["value"].mean()
    later = frame[post[pre | post]]
    ends = pd.to_datetime([cut + timedelta(days=1) for cut in cuts])
    step = np.searchsorted(ends.to_numpy(), later["at"].to_numpy(), side="right")
    daily = later.assign(step=step).groupby(["customer_id", "step"])["value"].agg(["sum", "count"])
    columns = range(len(cuts))
    total = daily["sum"].unstack("step").reindex(columns=columns).fillna(0.0).cumsum(axis=1)
    count = daily["count"].unstack("step").reindex(columns=columns).fillna(0).cumsum(axis=1)
    seen = count.to_numpy().T > 0  # cut × customer
    y = np.divide(total.to_numpy().T, count.to_numpy().T, out=np.zeros(seen.shape), where=seen)
    base = x.reindex(total.index).to_numpy()
    has_x = ~np.isnan(base)
    with_x = seen & has_x
    known = with_x.sum(axis=1)
    fill = np.divide((with_x * np.nan_to_num(base)).sum(axis=1), known,
                     out=np.zeros(len(cuts)), where=known > 0)  # fmt: skip
    xs = np.where(has_x, np.nan_to_num(base), fill[:, None])
    arm = arms.set_index("customer_id")["arm"].reindex(total.index).to_numpy()
    moments = {}
    for name in ("pilot", "control"):
        w = seen & (arm == name)
        moments[name] = Moments(w.sum(axis=1).astype(float), (w * y).sum(axis=1),
                                (w * y * y).sum(axis=1), (w * xs).sum(axis=1),
                                (w * xs * xs).sum(axis=1), (w * xs * y).sum(axis=1))  # fmt: skip
    with np.errstate(divide="ignore", invalid="ignore"):
        coef, se = regression_adjusted(moments["pilot"], moments["control"], estimand == "ratio")
    enough = np.minimum(moments["pilot"].n, moments["control"].n) >= 2
    return pd.DataFrame({
        "day": cuts, "coef": np.where(enough, coef, np.nan), "se": np.where(enough, se, np.nan),
        "n_pilot": moments["pilot"].n.astype(int), "n_control": moments["control"].n.astype(int),
    })  # fmt: skip


def _estimator_points(
    hypothesis: Hypothesis, obs: pd.DataFrame, arms: pd.DataFrame, cuts: list[date]
) -> pd.DataFrame:
    """The per-customer estimator (DiD) run on the data up to each cut."""
    estimator, pilot = customer_estimator(hypothesis), hypothesis.schedule.pilot
    found = [estimator(obs, arms, Period(start=pilot.start, end=cut)) for cut in cuts]
    return pd.DataFrame({
        "day": cuts, "coef": [e.coef for e in found], "se": [e.se for e in found],
        "n_pilot": [e.n_pilot for e in found], "n_control": [e.n_control for e in found],
    })  # fmt: skip


def cumulative_effect(
    hypothesis: Hypothesis, obs: pd.DataFrame, arms: pd.DataFrame, last: date
) -> CumulativeEffect:
    """The primary estimate on the metric's observations `obs` (`customer_id`, `at`, `value`)
    up to each cut from the pilot's start to `last` (the pilot's end or the data's newest
    day, whichever is earlier), with the interval and p-value `evaluate` gives it."""
    rules, pilot = hypothesis.decision, hypothesis.schedule.pilot
    cuts, step = cut_days(pilot, min(last, pilot.end))
    arms = arms[["customer_id", "arm"]]
    obs = obs[obs["customer_id"].isin(arms["customer_id"])]
    vectorised = analysis_of(hypothesis) == "cuped"
    found = (_cuped_points if vectorised else _estimator_points)(hypothesis, obs, arms, cuts)
    coef, se = found["coef"].to_numpy(), found["se"].to_numpy()
    usable = np.isfinite(se) & (se > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        if rules.sequential:
            tau2 = tuned_tau2(se, _shares(pilot, cuts), rules.alpha)
            half = critical_multiple(se, tau2, rules.alpha) * se
            p = always_valid_p(coef, se, tau2)
        else:
            half = stats.norm.ppf(1 - rules.alpha / 2) * se
            p = 2 * stats.norm.sf(np.abs(coef) / se)
    to_reader = np.expm1 if estimand_of(hypothesis.metric) == "log_ratio" else np.asarray
    points = found.assign(
        estimate=to_reader(coef), ci_low=to_reader(coef - half), ci_high=to_reader(coef + half),
        p_value=p,
    )[usable]  # fmt: skip
    return CumulativeEffect(
        points=points[COLUMNS].reset_index(drop=True),
        step=step,
        relative=hypothesis.metric.expected_effect.relative,
        sequential=rules.sequential,
    )
