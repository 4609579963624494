"""Pilot experiments: deterministic assignment, difference-in-differences, SRM, decision.

The effect of a pilot is the difference-in-differences of the metric between pilot and
control, baseline versus pilot period, by OLS with standard errors clustered by customer.
Relative effects (`-40%`) are estimated on the log scale, so they read as a percentage
change of each unit's value; absolute effects in the metric's own units.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from tasks.errors import HypothesisError
from tasks.hypotheses import ACTIVE, Hypothesis, MetricTarget, Period
from tasks.labels import labels, reason_text
from tasks.metrics import CxData, is_in, observations

Z80 = 0.8416212335729143
SRM_ALPHA = 0.001


def assign_arms(customer_ids: pd.Series, salt: str, pilot_share: float) -> np.ndarray:
    """`pilot` or `control` per customer: 64-bit hash of `salt:id` below `pilot_share` of 2⁶⁴.

    Deterministic across runs and machines, so operations can reproduce the split.
    """
    keys = salt + ":" + customer_ids.astype(str)
    buckets = pd.util.hash_pandas_object(keys, index=False).to_numpy(dtype=np.uint64)
    return np.where(buckets < np.uint64(pilot_share * 2.0**64), "pilot", "control")


def _matches(customers: pd.DataFrame, filters: dict[str, list[str]]) -> pd.Series:
    mask = pd.Series(True, index=customers.index)
    for column, values in filters.items():
        mask &= customers[column].isin(values)
    return mask


def eligible(hypothesis: Hypothesis, customers: pd.DataFrame) -> pd.Series:
    """Whether each customer matches the hypothesis' population filters."""
    return _matches(customers, hypothesis.population.filters())


def _earlier_and_concurrent(other: Hypothesis, hypothesis: Hypothesis) -> bool:
    a, b = other.schedule.pilot, hypothesis.schedule.pilot
    return (
        other.id != hypothesis.id
        and other.status in ACTIVE
        and not other.assignment.overlap
        and (a.start, other.id) < (b.start, hypothesis.id)
        and a.start <= b.end
        and b.start <= a.end
    )


def assignments(
    hypothesis: Hypothesis, customers: pd.DataFrame, others: Sequence[Hypothesis] = ()
) -> pd.DataFrame:
    """`customer_id`, `arm` for the hypothesis' population.

    A hash split draws the pilot share at random; a segment split takes the customers
    matching `assignment.pilot` against those matching `assignment.control` (DiD then
    compares the groups' changes, so they need not start equal). Customers already in an
    earlier concurrent pilot among `others` are left out, unless either hypothesis sets
    `assignment.overlap`.
    """
    mask = eligible(hypothesis, customers)
    if not hypothesis.assignment.overlap:
        for other in others:
            if _earlier_and_concurrent(other, hypothesis):
                mask &= ~eligible(other, customers)
    plan = hypothesis.assignment
    if plan.method == "segment":
        pilot = mask & _matches(customers, plan.pilot.filters())
        mask &= pilot | _matches(customers, plan.control.filters())
        arm = np.where(pilot[mask], "pilot", "control")
    else:
        arm = assign_arms(customers.loc[mask, "customer_id"], plan.salt, plan.pilot_share)
    return pd.DataFrame({"customer_id": customers.loc[mask, "customer_id"].to_numpy(), "arm": arm})


def _days(period: Period) -> int:
    return (period.end - period.start).days + 1


def planned_mde(hypothesis: Hypothesis, arms: pd.DataFrame, data: CxData) -> float:
    """Smallest effect on the primary metric the pilot can detect (80% power), before it runs.

    From the baseline period: the metric's spread and observations per arm, with the pilot
    period assumed to yield as many per day. Signed in the expected direction, in the expected
    effect's units (−0.29 is −29% for a relative decrease); ignores clustering by customer,
    so treat it as optimistic when customers repeat.
    """
    target, schedule = hypothesis.metric, hypothesis.schedule
    obs = observations(target.name, data).merge(arms, on="customer_id")
    obs = obs[_window(obs["at"], schedule.baseline)]
    values = (
        np.log(obs["value"].clip(lower=1e-6)) if target.expected_effect.relative else obs["value"]
    )
    counts = obs["arm"].value_counts()
    if len(counts) < 2 or len(values) < 3:
        return float("nan")
    scale = _days(schedule.pilot) / _days(schedule.baseline)
    inverse = sum(1 / counts[arm] + 1 / (scale * counts[arm]) for arm in ("pilot", "control"))
    z = stats.norm.ppf(1 - hypothesis.decision.alpha / 2) + Z80
    units = (1 if target.direction == "increase" else -1) * z * values.std() * np.sqrt(inverse)
    return float(np.expm1(units)) if target.expected_effect.relative else float(units)


@dataclass(frozen=True)
class Estimate:
    """A difference-in-differences estimate and the table it came from.

    `coef`, `low`, `high` and `se` are on the model's scale (log for relative metrics);
    `value`, `ci_low`, `ci_high` on the reader's (−0.4 is −40% for relative metrics).
    `sequential` marks an always-valid interval and p-value, safe under daily peeking.
    """

    metric: str
    relative: bool
    coef: float
    se: float
    low: float
    high: float
    p_value: float
    cells: pd.DataFrame
    n_pilot: int
    n_control: int
    sequential: bool = False

    def _effect(self, coef: float) -> float:
        return float(np.expm1(coef)) if self.relative else float(coef)

    @property
    def value(self) -> float:
        return self._effect(self.coef)

    @property
    def ci_low(self) -> float:
        return self._effect(self.low)

    @property
    def ci_high(self) -> float:
        return self._effect(self.high)

    def mde(self, alpha: float, sign: int = 1) -> float:
        """Smallest effect in direction `sign` (±1) this design detects with 80% power."""
        return self._effect(sign * (stats.norm.ppf(1 - alpha / 2) + Z80) * self.se)


def always_valid(estimate: Estimate, alpha: float, tau: float) -> Estimate:
    """`estimate` with a mixture-SPRT always-valid CI and p-value (normal mixture N(0, tau²)).

    Valid at every look, so evaluating a running pilot daily does not inflate false
    positives. `tau` is the effect size on the model's scale the test is tuned for.
    """
    v, t2 = estimate.se**2, tau**2
    half = np.sqrt(v * (v + t2) / t2 * (np.log((v + t2) / v) - 2 * np.log(alpha)))
    log_lr = 0.5 * np.log(v / (v + t2)) + estimate.coef**2 * t2 / (2 * v * (v + t2))
    return replace(
        estimate,
        low=estimate.coef - half,
        high=estimate.coef + half,
        p_value=float(min(1.0, np.exp(-log_lr))),
        sequential=True,
    )


def _window(at: pd.Series, period: Period) -> pd.Series:
    end = pd.Timestamp(period.end) + pd.Timedelta(days=1)
    return (at >= pd.Timestamp(period.start)) & (at < end)


def _framed(
    obs: pd.DataFrame, arms: pd.DataFrame, baseline: Period, pilot: Period
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Observations of both periods with their arm, `post` and `treated`; the arm × period means."""
    frame = obs.merge(arms, on="customer_id", how="inner")
    pre, post = _window(frame["at"], baseline), _window(frame["at"], pilot)
    frame = frame[pre | post].assign(post=post[pre | post].astype(float))
    frame["treated"] = (frame["arm"] == "pilot").astype(float)
    cells = (
        frame.assign(period=np.where(frame["post"] == 1, "pilot period", "baseline"))
        .groupby(["arm", "period"])["value"]
        .agg(mean="mean", n="size")
        .reset_index()
    )
    return frame, cells


def cuped(
    metric: str,
    obs: pd.DataFrame,
    arms: pd.DataFrame,
    baseline: Period,
    pilot: Period,
    relative: bool,
    alpha: float = 0.05,
) -> Estimate:
    """Pilot-period difference of customer means, variance-reduced by their baseline (CUPED).

    Each customer's pilot-period mean y is adjusted by θ·(x − x̄), with x their baseline mean
    (customers without one take x̄) and θ = cov(y, x) / var(x); the effect is the difference
    of adjusted means between arms with a Welch standard error. Counts are customers.
    """
    frame, cells = _framed(obs, arms, baseline, pilot)
    frame["value"] = np.log(frame["value"].clip(lower=1e-6)) if relative else frame["value"]
    means = frame.groupby(["customer_id", "post"])["value"].mean().unstack("post")
    means = means.rename(columns={0.0: "x", 1.0: "y"}).reindex(columns=["x", "y"])
    means = means.dropna(subset=["y"]).join(arms.set_index("customer_id")["arm"])
    x = means["x"].fillna(means["x"].mean())
    theta = np.cov(means["y"], x)[0, 1] / x.var() if x.var() > 0 else 0.0
    adjusted = means["y"] - theta * (x - x.mean())
    groups = adjusted.groupby(means["arm"])
    mean, var, n = groups.mean(), groups.var(), groups.size()
    if not {"pilot", "control"} <= set(n.index) or n.min() < 2:
        nan = float("nan")
        return Estimate(metric, relative, nan, nan, nan, nan, nan, cells, 0, 0)
    coef = float(mean["pilot"] - mean["control"])
    se = float(np.sqrt(var["pilot"] / n["pilot"] + var["control"] / n["control"]))
    z = stats.norm.ppf(1 - alpha / 2)
    return Estimate(
        metric=metric,
        relative=relative,
        coef=coef,
        se=se,
        low=coef - z * se,
        high=coef + z * se,
        p_value=float(2 * stats.norm.sf(abs(coef) / se)),
        cells=cells,
        n_pilot=int(n["pilot"]),
        n_control=int(n["control"]),
    )


def did(
    metric: str,
    obs: pd.DataFrame,
    arms: pd.DataFrame,
    baseline: Period,
    pilot: Period,
    relative: bool,
    alpha: float = 0.05,
    adjust_for: Sequence[str] = (),
) -> Estimate:
    """Difference-in-differences of `obs` (`customer_id`, `at`, `value`) between the arms.

    Fits value ~ pilot + post + pilot·post by OLS with customer-clustered errors (statsmodels);
    with `relative`, on log(value) and reported as exp(coefficient) − 1. `adjust_for` names
    columns of `obs` (e.g. contact channel) added as fixed effects: they soak up variance the
    arms share, narrowing the interval, as long as the pilot does not change them.
    """
    import statsmodels.api as sm

    frame, cells = _framed(obs, arms, baseline, pilot)
    in_post = frame[frame["post"] == 1]
    n_pilot = int((in_post["arm"] == "pilot").sum())
    n_control = int((in_post["arm"] == "control").sum())
    y = np.log(frame["value"].clip(lower=1e-6)) if relative else frame["value"]
    covariates = [c for c in adjust_for if c in frame.columns]
    fixed_effects = (
        pd.get_dummies(frame[covariates], drop_first=True, dtype=float).to_numpy()
        if covariates
        else np.empty((len(frame), 0))
    )
    design = np.column_stack(
        [
            np.ones(len(frame)),
            frame["treated"],
            frame["post"],
            frame["treated"] * frame["post"],
            fixed_effects,
        ]
    )
    if len(frame) < 8 or cells.shape[0] < 4:
        nan = float("nan")
        return Estimate(metric, relative, nan, nan, nan, nan, nan, cells, n_pilot, n_control)
    groups = pd.factorize(frame["customer_id"])[0]
    fit = sm.OLS(y.to_numpy(), design).fit(cov_type="cluster", cov_kwds={"groups": groups})
    low, high = fit.conf_int(alpha)[3]
    return Estimate(
        metric=metric,
        relative=relative,
        coef=float(fit.params[3]),
        se=float(fit.bse[3]),
        low=float(low),
        high=float(high),
        p_value=float(fit.pvalues[3]),
        cells=cells,
        n_pilot=n_pilot,
        n_control=n_control,
    )


def observed_arms(metric: str, data: CxData, arms: pd.DataFrame, pilot: Period) -> pd.DataFrame:
    """The arms of the customers `metric` observed in the pilot period: the units the analysis
    compares, whose split a stream losing one arm's data would skew."""
    obs = observations(metric, data)
    seen = obs.loc[_window(obs["at"], pilot), "customer_id"].unique()
    return arms[is_in(arms["customer_id"], seen)]


def srm_p_value(arms: pd.DataFrame, pilot_share: float) -> float:
    """Chi-square p-value of the arm sizes against the planned split (SRM if below 0.001)."""
    n_pilot = int((arms["arm"] == "pilot").sum())
    total = len(arms)
    if total == 0:
        return float("nan")
    expected = [total * pilot_share, total * (1 - pilot_share)]
    return float(stats.chisquare([n_pilot, total - n_pilot], expected).pvalue)


@dataclass(frozen=True)
class Evaluation:
    """A hypothesis evaluated: primary and secondary estimates, guardrails, SRM and decision;
    `reason` says why in English, `why` holds the rule and numbers behind it."""

    hypothesis: Hypothesis
    primary: Estimate
    secondary: list[Estimate]
    guardrails: list[tuple[Estimate, bool]]
    srm_p: float
    decision: str
    reason: str
    arms: pd.DataFrame = field(repr=False)
    planned_mde: float = float("nan")
    warnings: list[str] = field(default_factory=list)
    why: dict[str, Any] = field(default_factory=dict)


def _estimate(
    metric: str, relative: bool, data: CxData, arms: pd.DataFrame, hypothesis: Hypothesis
) -> Estimate:
    schedule, rules = hypothesis.schedule, hypothesis.decision
    obs = observations(metric, data)
    if rules.analysis == "cuped":
        return cuped(metric, obs, arms, schedule.baseline, schedule.pilot, relative, rules.alpha)
    return did(
        metric,
        obs,
        arms,
        schedule.baseline,
        schedule.pilot,
        relative,
        rules.alpha,
        rules.adjust_for,
    )


def _target(target: MetricTarget, data: CxData, arms: pd.DataFrame, h: Hypothesis) -> Estimate:
    return _estimate(target.name, target.expected_effect.relative, data, arms, h)


def holm(estimates: list[Estimate]) -> list[Estimate]:
    """`estimates` with Holm-adjusted p-values (family-wise error across secondary metrics)."""
    from statsmodels.stats.multitest import multipletests

    p = np.array([e.p_value for e in estimates])
    valid = ~np.isnan(p)
    if not valid.any():
        return estimates
    adjusted = p.copy()
    adjusted[valid] = multipletests(p[valid], method="holm")[1]
    return [replace(e, p_value=float(q)) for e, q in zip(estimates, adjusted, strict=True)]


def evaluate(hypothesis: Hypothesis, data: CxData, others: Sequence[Hypothesis] = ()) -> Evaluation:
    """Estimate every metric of `hypothesis` on `data` and decide adopt / reject / inconclusive.

    With `decision.sequential` (the default) the primary metric's CI and p-value are
    always-valid, tuned to the expected effect, so daily evaluation of a running pilot keeps
    its false-positive rate; secondary metrics get Holm-adjusted p-values.
    """
    rules = hypothesis.decision
    arms = assignments(hypothesis, data.customers, others)
    if arms["arm"].nunique() < 2:
        raise HypothesisError(
            f"hypotheses/{hypothesis.id}.yaml: `population` and `assignment` leave "
            f"{len(arms):,} customers and {arms['arm'].nunique()} arm(s) of the "
            f"{len(data.customers):,} known; widen the filters (check their spelling)."
        )
    mde = planned_mde(hypothesis, arms, data)
    expected = hypothesis.metric.expected_effect
    warnings = []
    if abs(expected.value) < abs(mde):
        needed = f"{mde:+.0%}" if expected.relative else f"{mde:+.2f}"
        warnings.append(
            f"expected effect {expected} is smaller than this pilot can detect "
            f"(about {needed}, from the baseline period)"
        )
    primary = _target(hypothesis.metric, data, arms, hypothesis)
    if rules.sequential and not np.isnan(primary.se):
        tau = abs(np.log1p(expected.value) if expected.relative else expected.value)
        primary = always_valid(primary, rules.alpha, tau)
    secondary = holm([_target(m, data, arms, hypothesis) for m in hypothesis.secondary_metrics])
    guardrails = []
    for guard in hypothesis.guardrails:
        estimate = _estimate(guard.metric, False, data, arms, hypothesis)
        breached = guard.breached(estimate.value, estimate.ci_low, estimate.ci_high)
        guardrails.append((estimate, breached))
    plan = hypothesis.assignment
    observed = observed_arms(hypothesis.metric.name, data, arms, hypothesis.schedule.pilot)
    srm = srm_p_value(observed, plan.pilot_share) if plan.method == "hash" else float("nan")
    decision, why = decide(hypothesis, primary, guardrails, srm)
    return Evaluation(
        hypothesis,
        primary,
        secondary,
        guardrails,
        srm,
        decision,
        reason_text(why, labels("en")),
        arms,
        mde,
        warnings,
        why,
    )


def _fmt(estimate: Estimate, value: float) -> str:
    return f"{value:+.1%}" if estimate.relative else f"{value:+.2f}"


def decide(
    hypothesis: Hypothesis, primary: Estimate, guardrails: list[tuple[Estimate, bool]], srm_p: float
) -> tuple[str, dict[str, Any]]:
    """(`adopt` | `reject` | `inconclusive`, why): `why` names the `rule` that decided and
    holds the numbers behind it, for `tasks.labels.reason_text` to put in words."""
    rules = hypothesis.decision
    target = hypothesis.metric
    if srm_p < SRM_ALPHA:
        return "inconclusive", {"rule": "srm", "p": srm_p}
    if min(primary.n_pilot, primary.n_control) < rules.min_per_arm:
        return "inconclusive", {
            "rule": "too_few",
            "pilot": primary.n_pilot,
            "control": primary.n_control,
            "need": rules.min_per_arm,
        }
    breached = [g.metric for g, hit in guardrails if hit]
    if breached:
        return "reject", {"rule": "guardrail", "metrics": breached}
    shown = {
        "metric": target.name,
        "effect": _fmt(primary, primary.value),
        "low": _fmt(primary, primary.ci_low),
        "high": _fmt(primary, primary.ci_high),
        "sequential": primary.sequential,
        "p": primary.p_value,
    }
    wanted = 1 if target.direction == "increase" else -1
    if primary.p_value < rules.alpha and np.sign(primary.value) == wanted:
        return "adopt", {"rule": "as_expected", **shown}
    if primary.p_value < rules.alpha:
        return "reject", {"rule": "wrong_way", **shown}
    detectable = _fmt(primary, primary.mde(rules.alpha, wanted))
    return "inconclusive", {
        "rule": "no_change",
        **shown,
        "mde": detectable,
        "expected": str(target.expected_effect),
    }


@dataclass(frozen=True)
class RolloutWatch:
    """How much of a pilot's gain the whole population kept after the rollout."""

    pilot_level: float
    control_level: float
    rollout_level: float
    retained: float
    n: int

    @property
    def fading(self) -> bool:
        return self.retained < FADING_SHARE


FADING_SHARE = 0.5


def rollout_watch(hypothesis: Hypothesis, data: CxData, arms: pd.DataFrame) -> RolloutWatch | None:
    """The target metric on the whole population since `rollout`, against the pilot's arms.

    `retained` is the share of the pilot-period gain (pilot arm over control arm) that the
    population shows after the rollout; below `FADING_SHARE` the gain is fading. Levels are
    means, geometric for relative metrics. None before the rollout or without data after it.
    """
    if hypothesis.rollout is None:
        return None
    target = hypothesis.metric
    obs = observations(target.name, data).merge(arms, on="customer_id")
    if target.expected_effect.relative:
        obs["value"] = np.log(obs["value"].clip(lower=1e-6))
    during = obs[_window(obs["at"], hypothesis.schedule.pilot)]
    after = obs[obs["at"] >= pd.Timestamp(hypothesis.rollout)]
    if after.empty or during["arm"].nunique() < 2:
        return None
    levels = during.groupby("arm")["value"].mean()
    gain = levels["pilot"] - levels["control"]
    level = after["value"].mean()
    to_reader = np.exp if target.expected_effect.relative else float
    return RolloutWatch(
        pilot_level=float(to_reader(levels["pilot"])),
        control_level=float(to_reader(levels["control"])),
        rollout_level=float(to_reader(level)),
        retained=float((level - levels["control"]) / gain) if gain else float("nan"),
        n=len(after),
    )
