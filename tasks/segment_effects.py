"""A pilot's primary effect within each segment (and each value of other customer dimensions),
with Holm-adjusted p-values and intervals across the groups shown.

Each group's estimate is the one the pilot's overall effect uses (CUPED or DiD, difference or
ratio, from `tasks.experiments`) on that group's customers alone. The groups are one family:
Holm's step-down keeps the chance that an A/A pilot flags any group at α. A group's interval
is drawn at the level Holm tests its p-value at (the k-th smallest at 1 − α/(m − k + 1),
held at the level of the first group Holm stops at), so it excludes zero exactly when the
adjusted p-value is below α. Intervals are fixed-horizon: the table is read once, not watched.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy import stats

from tasks.experiments import (
    Estimate,
    attribute_values,
    estimand_of,
    estimate_on,
    holm_adjusted,
    in_period,
)
from tasks.hypotheses import Hypothesis, Period

# Customers per arm observed in the pilot period below which a group is "too few data": the
# normal interval needs a few dozen customers per arm to hold its level.
MIN_PER_ARM = 30

Estimator = Callable[[pd.DataFrame, pd.DataFrame, Period], Estimate]


def customer_estimator(hypothesis: Hypothesis) -> Estimator:
    """The primary metric's per-customer estimator as `evaluate` runs it (`estimate_on`), as a
    function of the observations, the arms and the pilot period."""
    metric, baseline = hypothesis.metric.name, hypothesis.schedule.baseline
    estimand = estimand_of(hypothesis.metric)
    return lambda obs, arms, pilot: estimate_on(
        metric, estimand, obs, arms, hypothesis, baseline, pilot
    )


def holm_levels(p_values: Sequence[float], alpha: float) -> np.ndarray:
    """Per p-value the α its interval is drawn at: α / (m − k + 1) for the k-th smallest of the
    m non-NaN ones, up to the first that Holm does not reject; that one's level for it and
    every larger one, so an interval excludes zero exactly when Holm rejects. NaN stays NaN."""
    p = np.asarray(p_values, dtype=float)
    levels, valid = np.full(len(p), np.nan), ~np.isnan(p)
    order = np.argsort(p[valid], kind="stable")
    m = int(valid.sum())
    steps = alpha / (m - np.arange(m))
    kept = p[valid][order] >= steps
    if kept.any():
        stop = int(np.argmax(kept))
        steps[stop:] = steps[stop]
    held = np.empty(m)
    held[order] = steps
    levels[valid] = held
    return levels


@dataclass(frozen=True)
class SegmentEffects:
    """The primary effect per group: `rows` has `dimension`, `group`, `n_pilot`, `n_control`,
    `estimated` (False: too few data), `estimate`, `ci_low`, `ci_high` (Holm-adjusted, on
    the reader's scale: relative effects as fractions), `p_value` (unadjusted), `p_adjusted`,
    `level` (the α its interval is drawn at) and `flagged` (adjusted p below `alpha`);
    `family` counts the groups estimated, which Holm adjusts across."""

    rows: pd.DataFrame
    family: int
    alpha: float
    relative: bool
    min_per_arm: int


def _groups(customers: pd.DataFrame, dimension: str) -> pd.Series:
    """Each customer's groups of `dimension` (a list property gives several), by customer id."""
    values = attribute_values(customers, dimension)
    found = pd.Series(values.to_numpy(), index=customers["customer_id"].to_numpy()).explode()
    return found.dropna().astype(str).rename("group")


def _observed(obs: pd.DataFrame, arms: pd.DataFrame, pilot: Period) -> pd.DataFrame:
    """`customer_id`, `arm` of the arms' customers with an observation in the pilot period."""
    seen = obs.loc[in_period(obs["at"], pilot), "customer_id"].drop_duplicates()
    return arms[["customer_id", "arm"]].merge(seen.to_frame(), on="customer_id")


def _holm_interval(estimate: Estimate, level: float) -> tuple[float, float]:
    """`estimate`'s interval at (1 − `level`), on the reader's scale."""
    half = stats.norm.ppf(1 - level / 2) * estimate.se
    wider = replace(estimate, low=estimate.coef - half, high=estimate.coef + half)
    return wider.ci_low, wider.ci_high


def segment_effects(
    hypothesis: Hypothesis,
    obs: pd.DataFrame,
    arms: pd.DataFrame,
    customers: pd.DataFrame,
    dimensions: Sequence[str] = ("segment",),
    min_per_arm: int = MIN_PER_ARM,
) -> SegmentEffects:
    """The primary effect in every group of `dimensions` (customer columns or CRM properties)
    from the metric's observations `obs` (`customer_id`, `at`, `value`) and the `arms`.

    Groups where either arm has fewer than `min_per_arm` customers observed in the pilot
    period are listed, not estimated, and stay out of the Holm family.
    """
    pilot, alpha = hypothesis.schedule.pilot, hypothesis.decision.alpha
    estimator = customer_estimator(hypothesis)
    obs = obs[obs["customer_id"].isin(arms["customer_id"])]
    observed = _observed(obs, arms, pilot)
    rows, estimates = [], []
    for dimension in dimensions:
        member = arms[["customer_id", "arm"]].merge(
            _groups(customers, dimension), left_on="customer_id", right_index=True
        )
        counts = (
            observed.merge(member[["customer_id", "group"]], on="customer_id")
            .groupby(["group", "arm"])
            .size()
            .unstack("arm")
            .reindex(index=sorted(member["group"].unique()), columns=["pilot", "control"])
            .fillna(0)
            .astype(int)
        )
        # Each group's estimate reads only its own customers' observations.
        tagged = obs.merge(member[["customer_id", "group"]], on="customer_id")
        own = {group: part.drop(columns="group") for group, part in tagged.groupby("group")}
        for group, n in counts.iterrows():
            enough = n.min() >= min_per_arm
            mine = member[member["group"] == group]
            found = estimator(own[group], mine, pilot) if enough else None
            usable = found is not None and np.isfinite(found.se) and found.se > 0
            rows.append({"dimension": dimension, "group": group, "n_pilot": int(n["pilot"]),
                         "n_control": int(n["control"]), "estimated": usable})  # fmt: skip
            estimates.append(found if usable else None)
    p = [e.p_value if e is not None else np.nan for e in estimates]
    levels, adjusted = holm_levels(p, alpha), holm_adjusted(p)
    for row, found, level, q in zip(rows, estimates, levels, adjusted, strict=True):
        low, high = _holm_interval(found, level) if found is not None else (np.nan, np.nan)
        row.update(
            estimate=found.value if found is not None else np.nan,
            ci_low=low,
            ci_high=high,
            p_value=found.p_value if found is not None else np.nan,
            p_adjusted=q,
            level=level,
            flagged=bool(q < alpha),
        )
    return SegmentEffects(
        rows=pd.DataFrame(rows),
        family=int(np.isfinite(p).sum()),
        alpha=alpha,
        relative=hypothesis.metric.expected_effect.relative,
        min_per_arm=min_per_arm,
    )
