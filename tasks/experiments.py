"""Pilot experiments: assignment, effect estimates, the always-valid test, guardrails, checks.

Estimators: CUPED (each customer's pilot-period mean adjusted by their baseline mean, the
default for hash splits), difference-in-differences by OLS with customer-clustered errors
(the default for arms operations fixed: segment, attribute, list), and the plain post-period
difference both fall back to when no baseline data exists. A relative effect (`-40%`) is a
ratio of means minus one with a delta-method standard error, valid when values are 0; the
ratio of geometric means (log scale) only when asked for. The primary metric is judged on a
mixture-SPRT interval tuned to the planned sample; power and the detectable effect are those
of that test. Guardrails are non-inferiority margins, Holm-adjusted across guardrails.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats

from connectors.arms import assign_arms
from connectors.errors import HypothesisError
from tasks.holdout import Holdout
from tasks.hypotheses import (
    ACTIVE,
    REST,
    Assignment,
    Guardrail,
    Hypothesis,
    MetricTarget,
    Period,
    listed_ids,
)
from tasks.identity import is_in
from tasks.labels import labels, reason_text
from tasks.loader import CxData
from tasks.metrics import SURVEY_METRICS, TICKET_METRICS, observations
from tasks.moments import log_values
from tasks.unit_pilots import UnitEffect, analyse, panel_of, unit_panel

Z80 = 0.8416212335729143
SRM_ALPHA = 0.001
RESPONSE_ALPHA = 0.01
QUANTILE_METRICS = ("frt_hours", "art_hours")
QUANTILES = (0.5, 0.9)
BOOTSTRAP_DRAWS = 400
BOOTSTRAP_SEED = 2026
BOOLEANS = ("true", "false")

Analysis = Literal["cuped", "did", "auto"]
# difference: in the metric's units; ratio: ratio of means − 1; log_ratio: of geometric means.
Estimand = Literal["difference", "ratio", "log_ratio"]


def estimand_of(target: MetricTarget) -> Estimand:
    """The estimand a metric target asks for: a relative effect is a ratio of means unless
    its file asks for the log scale (`log_scale: true`)."""
    if not target.expected_effect.relative:
        return "difference"
    return "log_ratio" if target.log_scale else "ratio"


def attribute_values(customers: pd.DataFrame, name: str) -> pd.Series:
    """`name` per customer: their column, else the key of their CRM properties
    (`attributes`); a value may be a list (a multi-select property). NaN where absent."""
    if name in customers.columns and name != "attributes":
        return customers[name]
    properties = customers.get("attributes", pd.Series(None, index=customers.index, dtype=object))
    table = pd.DataFrame.from_records(
        [p if isinstance(p, dict) else {} for p in properties], index=customers.index
    )
    if name not in table.columns:
        known = sorted({*customers.columns, *map(str, table.columns)} - {"attributes"})
        raise HypothesisError(
            f"no customer column or CRM property {name!r}; known: {', '.join(known)}. "
            "Check the spelling in the hypothesis."
        )
    return table[name]


def _matches(customers: pd.DataFrame, filters: dict[str, list[str]]) -> pd.Series:
    mask = pd.Series(True, index=customers.index)
    for column, values in filters.items():
        found = attribute_values(customers, column).explode()  # a list matches on any element
        text = found.astype("string")
        # YAML's `true` against a CRM's boolean True
        hit = text.isin(values) | text.str.lower().isin([v for v in values if v in BOOLEANS])
        hit = hit.fillna(False).groupby(level=0).any()
        mask &= hit.reindex(customers.index, fill_value=False)
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
    hypothesis: Hypothesis,
    customers: pd.DataFrame,
    others: Sequence[Hypothesis] = (),
    holdout: Holdout | None = None,
) -> pd.DataFrame:
    """`customer_id`, `arm` for the hypothesis' population.

    A hash split draws the pilot share at random; a segment split takes the customers
    matching `assignment.pilot` against those matching `assignment.control` (DiD then
    compares the groups' changes, so they need not start equal). Customers already in an
    earlier concurrent pilot among `others` are left out, unless either hypothesis sets
    `assignment.overlap`; the long-term `holdout`'s customers always are.
    """
    mask = eligible(hypothesis, customers)
    if holdout is not None:
        mask &= ~holdout.members(customers["customer_id"])
    if not hypothesis.assignment.overlap:
        for other in others:
            if _earlier_and_concurrent(other, hypothesis):
                mask &= ~eligible(other, customers)
    plan = hypothesis.assignment
    if plan.method == "hash":
        arm = assign_arms(customers.loc[mask, "customer_id"], plan.salt, plan.pilot_share)
    else:
        try:
            pilot, control = _arm_masks(hypothesis, customers)
        except HypothesisError as exc:
            raise HypothesisError(f"hypotheses/{hypothesis.id}.yaml: `assignment`: {exc}") from None
        mask &= pilot | control
        arm = np.where(pilot[mask], "pilot", "control")
    return pd.DataFrame({"customer_id": customers.loc[mask, "customer_id"].to_numpy(), "arm": arm})


def _arm_masks(hypothesis: Hypothesis, customers: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Which customers the arms operations fixed (segment, attribute, list) hold."""
    plan = hypothesis.assignment
    if plan.method in ("segment", "attribute"):
        pilot, control = (_matches(customers, _arm_filters(plan, a)) for a in ("pilot", "control"))
        return pilot, control
    ids = customers["customer_id"].astype(str)
    pilot = pd.Series(is_in(ids, listed_ids(Path(plan.pilot))), index=customers.index)
    if plan.control == REST:
        return pilot, ~pilot
    return pilot, pd.Series(is_in(ids, listed_ids(Path(plan.control))), index=customers.index)


def _arm_filters(plan: Assignment, arm: str) -> dict[str, list[str]]:
    group = getattr(plan, arm)
    if plan.method == "segment":
        return group.filters()
    return {plan.attribute: [group] if isinstance(group, str) else list(group)}


def unmatched_ids(hypothesis: Hypothesis, customers: pd.DataFrame) -> dict[str, int]:
    """Per list file of the assignment, its ids that match no known customer (empty for the
    other methods)."""
    plan = hypothesis.assignment
    if plan.method != "list":
        return {}
    known = customers["customer_id"].astype(str)
    files = {arm: getattr(plan, arm) for arm in ("pilot", "control")}
    return {
        arm: int((~is_in(listed_ids(Path(file)), known)).sum())
        for arm, file in files.items()
        if file != REST
    }


def pilot_observations(metric: str, data: CxData, hypothesis: Hypothesis) -> pd.DataFrame:
    """`observations` of `metric` within the hypothesis' `scope`: ticket metrics from the
    scoped tickets; CSAT, CES and post-contact NPS from the surveys linked to them (by
    `ticket_id`, the ticket's id at its source); relationship NPS (no ticket) from every
    answer, unless `surveys: linked`."""
    obs = observations(metric, data)
    scope = hypothesis.scope
    if scope is None or not scope.tickets.filters():
        return obs
    tickets = data.tickets
    inside = _matches(tickets, scope.tickets.filters())
    if metric in TICKET_METRICS:
        return obs[inside.reindex(obs.index).to_numpy()]
    if metric not in SURVEY_METRICS:
        return obs
    if "ticket_id" not in tickets.columns or "ticket_id" not in data.responses.columns:
        raise HypothesisError(
            f"hypotheses/{hypothesis.id}.yaml: `scope` restricts {metric} to the surveys linked "
            "to the scoped tickets, but the tickets or the answers carry no `ticket_id` to link "
            "them by; map the survey's ticket id (e.g. Typeform's hidden field ticket_id), or "
            "measure a ticket metric only."
        )
    ticket_of = data.responses.loc[obs.index, "ticket_id"]
    linked = ticket_of.notna().to_numpy() & is_in(
        ticket_of.astype(str), tickets.loc[inside, "ticket_id"].astype(str)
    )
    relationship = ticket_of.isna().to_numpy() & (metric == "nps")
    return obs[linked | (relationship & (scope.surveys == "population"))]


def _days(period: Period) -> int:
    return (period.end - period.start).days + 1


def in_period(at: pd.Series, period: Period) -> pd.Series:
    """Which of the timestamps `at` fall on the days of `period`, both ends included."""
    end = pd.Timestamp(period.end) + pd.Timedelta(days=1)
    return (at >= pd.Timestamp(period.start)) & (at < end)


@dataclass(frozen=True)
class Moments:
    """Sufficient statistics of one arm's customers: n, Σy, Σy², Σx, Σx², Σxy, with y the
    pilot-period mean and x the baseline mean. Fields may be arrays (one entry per
    simulated run): every computation on them broadcasts."""

    n: Any
    sy: Any
    syy: Any
    sx: Any
    sxx: Any
    sxy: Any

    @classmethod
    def of(cls, y: np.ndarray, x: np.ndarray) -> Moments:
        """Moments over the last axis of `y` and `x` (customers)."""
        return cls(y.shape[-1] * np.ones(y.shape[:-1]), y.sum(-1), (y * y).sum(-1),
                   x.sum(-1), (x * x).sum(-1), (x * y).sum(-1))  # fmt: skip

    def __add__(self, other: Moments) -> Moments:
        return Moments(*(getattr(self, f) + getattr(other, f) for f in _MOMENTS))

    def covariances(self) -> tuple[Any, Any, Any]:
        """(var y, var x, cov(x, y)), each with n − 1 in the denominator."""
        n = self.n
        var_y = (self.syy - self.sy**2 / n) / (n - 1)
        var_x = (self.sxx - self.sx**2 / n) / (n - 1)
        return var_y, var_x, (self.sxy - self.sx * self.sy / n) / (n - 1)


_MOMENTS = ("n", "sy", "syy", "sx", "sxx", "sxy")


def regression_adjusted(pilot: Moments, control: Moments, relative: bool) -> tuple[Any, Any]:
    """(effect, standard error) of the pilot against control, adjusted by the baseline.

    θ = cov(x, y) / var(x) over both arms (0 when x does not vary: the plain post-period
    difference); each arm's mean is ȳ − θ·x̄ with variance var y + θ² var x − 2θ cov. With
    `relative`, the effect is the adjusted difference over the control's unadjusted mean,
    with the delta-method variance: gbstats' `RegressionAdjustedStatistic` and `TTest`.
    """
    var_y, var_x, cov = (pilot + control).covariances()
    with np.errstate(divide="ignore", invalid="ignore"):
        theta = np.where((var_x > 0) & (var_y > 0), cov / var_x, 0.0)
        arms = []
        for arm in (pilot, control):
            vy, vx, c = arm.covariances()
            arms.append((arm.sy / arm.n, arm.sx / arm.n, vy + theta**2 * vx - 2 * theta * c))
        (yp, xp, vp), (yc, xc, vc) = arms
        diff = (yp - theta * xp) - (yc - theta * xc)
        if relative:
            var = vp / (yc**2 * pilot.n) + vc * yp**2 / (yc**4 * control.n)
            return diff / yc, np.sqrt(var)
        return diff, np.sqrt(vp / pilot.n + vc / control.n)


def sequential_ratio(alpha: float) -> float:
    """τ² / V at which the mixture-SPRT interval is narrowest when the variance of the
    estimate is V: −2 log α + log(1 − 2 log α) (gbstats' ρ², Waudby-Smith et al. eq. 161)."""
    return -2 * np.log(alpha) + np.log(1 - 2 * np.log(alpha))


def tuned_tau2(se: Any, fraction: float, alpha: float) -> Any:
    """Mixture variance for the planned sample: the estimate's variance at the pilot's end
    (now `se`² after `fraction` of the pilot, shrinking as 1 / days) times
    `sequential_ratio`."""
    return sequential_ratio(alpha) * se**2 * fraction


def critical_multiple(se: Any, tau2: Any, alpha: float) -> Any:
    """Half-width of the always-valid (1 − α) interval in standard errors."""
    v = se**2
    return np.sqrt((v + tau2) / tau2 * (np.log((v + tau2) / v) - 2 * np.log(alpha)))


def always_valid_p(distance: Any, se: Any, tau2: Any) -> Any:
    """Always-valid p-value of an estimate `distance` away from the null, normal mixture."""
    v = se**2
    log_lr = 0.5 * np.log(v / (v + tau2)) + distance**2 * tau2 / (2 * v * (v + tau2))
    return np.minimum(1.0, np.exp(-log_lr))


@dataclass(frozen=True)
class Estimate:
    """One metric's effect, how it was estimated, and the table it came from.

    `coef`, `low`, `high` and `se` are on the model's scale: the effect itself for the
    `difference` and `ratio` estimands (−0.1 is −10% of the control's mean), the log ratio
    for `log_ratio`; `value`, `ci_low`, `ci_high` on the reader's. `analysis` is `cuped`,
    `did`, `post_only` (no baseline data: the pilot-period difference) or `reweighted`.
    `n_pilot`, `n_control` count customers observed in the pilot period. `sequential`
    marks an always-valid interval and p-value with mixture variance `tau2`.
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
    analysis: str = "did"
    estimand: Estimand = "difference"
    tau2: float = float("nan")

    def _effect(self, coef: float) -> float:
        return float(np.expm1(coef)) if self.estimand == "log_ratio" else float(coef)

    @property
    def value(self) -> float:
        return self._effect(self.coef)

    @property
    def ci_low(self) -> float:
        return self._effect(self.low)

    @property
    def ci_high(self) -> float:
        return self._effect(self.high)

    def critical(self, alpha: float) -> float:
        """Half-width of this estimate's interval in standard errors, for its test."""
        if self.sequential:
            return float(critical_multiple(self.se, self.tau2, alpha))
        return float(stats.norm.ppf(1 - alpha / 2))

    def mde(self, alpha: float, sign: int = 1) -> float:
        """Smallest effect in direction `sign` (±1) the test that decides detects with 80%
        power at this standard error."""
        return self._effect(sign * (self.critical(alpha) + Z80) * self.se)


def _normal(metric: str, coef: float, se: float, alpha: float, cells: pd.DataFrame,
            n: pd.Series, **how: Any) -> Estimate:  # fmt: skip
    z = stats.norm.ppf(1 - alpha / 2)
    return Estimate(
        metric=metric,
        relative=how.get("estimand", "difference") != "difference",
        coef=float(coef),
        se=float(se),
        low=float(coef - z * se),
        high=float(coef + z * se),
        p_value=float(2 * stats.norm.sf(abs(coef) / se)) if se > 0 else float("nan"),
        cells=cells,
        n_pilot=int(n.get("pilot", 0)),
        n_control=int(n.get("control", 0)),
        **how,
    )


def _missing(metric: str, cells: pd.DataFrame, n: pd.Series, **how: Any) -> Estimate:
    nan = float("nan")
    return _normal(metric, nan, nan, 0.05, cells, n, **how)


def always_valid(estimate: Estimate, alpha: float, tau2: float) -> Estimate:
    """`estimate` with a mixture-SPRT always-valid CI and p-value (mixture N(0, `tau2`)).

    Valid at every look, so evaluating a running pilot daily does not inflate false
    positives; `tuned_tau2` gives the mixture variance for the planned sample.
    """
    half = critical_multiple(estimate.se, tau2, alpha) * estimate.se
    return replace(
        estimate,
        low=estimate.coef - half,
        high=estimate.coef + half,
        p_value=float(always_valid_p(estimate.coef, estimate.se, tau2)),
        sequential=True,
        tau2=float(tau2),
    )


def _values(frame: pd.DataFrame, metric: str, estimand: Estimand) -> pd.Series:
    if estimand != "log_ratio":
        return frame["value"]
    return log_values(frame["value"], metric)


def _framed(
    obs: pd.DataFrame, arms: pd.DataFrame, baseline: Period, pilot: Period
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    """Observations of both periods with their arm, `post` and `treated`; the arm × period
    means; customers per arm observed in the pilot period."""
    frame = obs.merge(arms, on="customer_id", how="inner")
    pre, post = in_period(frame["at"], baseline), in_period(frame["at"], pilot)
    frame = frame[pre | post].assign(post=post[pre | post].astype(float))
    frame["treated"] = (frame["arm"] == "pilot").astype(float)
    cells = (
        frame.assign(period=np.where(frame["post"] == 1, "pilot period", "baseline"))
        .groupby(["arm", "period"])["value"]
        .agg(mean="mean", n="size")
        .reset_index()
    )
    customers = frame.loc[frame["post"] == 1].groupby("arm")["customer_id"].nunique()
    return frame, cells, customers


def cuped(
    metric: str,
    obs: pd.DataFrame,
    arms: pd.DataFrame,
    baseline: Period,
    pilot: Period,
    estimand: Estimand = "difference",
    alpha: float = 0.05,
) -> Estimate:
    """Pilot-period difference of customer means, regression-adjusted by their baseline means.

    Customers without a baseline take the mean baseline of those with one; with no baseline
    at all the estimate is the plain post-period difference (`analysis` `post_only`).
    Standard errors are Welch's; `regression_adjusted` holds the formulas.
    """
    frame, cells, customers = _framed(obs, arms, baseline, pilot)
    frame["value"] = _values(frame, metric, estimand)
    means = frame.groupby(["customer_id", "post"])["value"].mean().unstack("post")
    means = means.rename(columns={0.0: "x", 1.0: "y"}).reindex(columns=["x", "y"])
    means = means.dropna(subset=["y"]).join(arms.set_index("customer_id")["arm"])
    has_baseline = means["x"].notna().any()
    x = means["x"].fillna(means["x"].mean() if has_baseline else 0.0)
    how = {"analysis": "cuped" if has_baseline else "post_only", "estimand": estimand}
    n = means.groupby("arm").size()
    if not {"pilot", "control"} <= set(n.index) or n.min() < 2:
        return _missing(metric, cells, customers, **how)
    moments = {
        arm: Moments.of(means.loc[rows, "y"].to_numpy(), x[rows].to_numpy())
        for arm, rows in means.groupby("arm").groups.items()
    }
    coef, se = regression_adjusted(moments["pilot"], moments["control"], estimand == "ratio")
    return _normal(metric, coef, se, alpha, cells, customers, **how)


def did(
    metric: str,
    obs: pd.DataFrame,
    arms: pd.DataFrame,
    baseline: Period,
    pilot: Period,
    estimand: Estimand = "difference",
    alpha: float = 0.05,
    adjust_for: Sequence[str] = (),
) -> Estimate:
    """Difference-in-differences of `obs` (`customer_id`, `at`, `value`) between the arms.

    Fits value ~ pilot + post + pilot·post by OLS with customer-clustered errors (statsmodels);
    without baseline observations, value ~ pilot on the pilot period (`post_only`). The
    `ratio` estimand divides the effect by the pilot arm's counterfactual mean (its fitted
    pilot-period mean without the effect), delta method on the clustered covariance.
    `adjust_for` names columns of `obs` (e.g. contact channel) added as fixed effects: they
    soak up variance the arms share, narrowing the interval, as long as the pilot does not
    change them.
    """
    frame, cells, customers = _framed(obs, arms, baseline, pilot)
    both_periods = frame.groupby("arm")["post"].nunique()
    has_baseline = len(both_periods) == 2 and (both_periods == 2).all()
    how = {"analysis": "did" if has_baseline else "post_only", "estimand": estimand}
    if not has_baseline:
        frame = frame[frame["post"] == 1]
    if frame["arm"].nunique() < 2 or len(frame) < 8:
        return _missing(metric, cells, customers, **how)
    columns = [np.ones(len(frame)), frame["treated"]]
    if has_baseline:
        columns += [frame["post"], frame["treated"] * frame["post"]]
    covariates = [c for c in adjust_for if c in frame.columns]
    if covariates:
        columns.append(pd.get_dummies(frame[covariates], drop_first=True, dtype=float))
    design = np.column_stack(columns)
    y = _values(frame, metric, estimand).to_numpy()
    effect, treated_post = (3 if has_baseline else 1), (frame["treated"] * frame["post"]) == 1
    return _clustered(metric, y, design, effect, treated_post.to_numpy(), frame, alpha,
                      cells, customers, how)  # fmt: skip


def _clustered(metric: str, y: np.ndarray, design: np.ndarray, k: int, treated_post: np.ndarray,
               frame: pd.DataFrame, alpha: float, cells: pd.DataFrame, customers: pd.Series,
               how: dict[str, Any]) -> Estimate:  # fmt: skip
    import statsmodels.api as sm

    groups = pd.factorize(frame["customer_id"])[0]
    fit = sm.OLS(y, design).fit(cov_type="cluster", cov_kwds={"groups": groups})
    if how["estimand"] != "ratio":
        low, high = fit.conf_int(alpha)[k]
        return Estimate(metric, how["estimand"] != "difference", float(fit.params[k]),
                        float(fit.bse[k]), float(low), float(high), float(fit.pvalues[k]), cells,
                        int(customers.get("pilot", 0)), int(customers.get("control", 0)),
                        **how)  # fmt: skip
    b, cov = fit.params, fit.cov_params()
    unit = np.eye(len(b))[k]
    counterfactual_row = design[treated_post].mean(axis=0) - unit
    base = counterfactual_row @ b
    gradient = unit / base - b[k] * counterfactual_row / base**2
    se = float(np.sqrt(gradient @ cov @ gradient))
    return _normal(metric, b[k] / base, se, alpha, cells, customers, **how)


def observed_arms(obs: pd.DataFrame, arms: pd.DataFrame, pilot: Period) -> pd.DataFrame:
    """The arms of the customers observed (`obs`, a metric's observations) in the pilot
    period: the units the analysis compares, whose split a stream losing one arm's data
    would skew."""
    seen = obs.loc[in_period(obs["at"], pilot), "customer_id"].unique()
    return arms[is_in(arms["customer_id"], seen)]


def srm_p_value(arms: pd.DataFrame, pilot_share: float) -> float:
    """Chi-square p-value of the arm sizes against the planned split (SRM if below 0.001)."""
    n_pilot = int((arms["arm"] == "pilot").sum())
    total = len(arms)
    if total == 0:
        return float("nan")
    expected = [total * pilot_share, total * (1 - pilot_share)]
    return float(stats.chisquare([n_pilot, total - n_pilot], expected).pvalue)


def analysis_of(hypothesis: Hypothesis) -> Analysis:
    """`decision.analysis` when the file sets it, else CUPED for a hash split (randomised:
    the baseline only reduces variance), `auto` (the unit-level analysis) for arms that are
    whole units (segment, attribute) and DiD for a list of customers or an attribute that
    only flags the arms (one value each, `pilot` / `control`: one unit per arm is no panel)."""
    if hypothesis.decision.analysis:
        return hypothesis.decision.analysis
    plan = hypothesis.assignment
    if plan.method == "attribute" and all(
        isinstance(arm, str) or (isinstance(arm, list) and len(arm) == 1)
        for arm in (plan.pilot, plan.control)
    ):
        return "did"
    return {"hash": "cuped", "list": "did"}.get(plan.method, "auto")


def unit_column(hypothesis: Hypothesis) -> str:
    """The customer column whose values are the arms' units: the attribute, or the one
    dimension the segment's pilot group filters on."""
    plan = hypothesis.assignment
    if plan.method == "attribute":
        return plan.attribute
    keys = list(plan.pilot.filters())
    if plan.method != "segment" or len(keys) != 1:
        raise HypothesisError(
            f"hypotheses/{hypothesis.id}.yaml: `decision.analysis: auto` needs arms that are "
            f"whole units of one dimension (assignment.method segment with one filter, or "
            f"attribute); this pilot has method {plan.method} filtering on {keys}. Set "
            "`decision.analysis: did` to compare customers instead."
        )
    return keys[0]


def unit_effect(hypothesis: Hypothesis, data: CxData, arms: pd.DataFrame) -> UnitEffect:
    """The unit-level effect on the primary metric (tasks/unit_pilots.py): weekly unit means
    from the baseline to the pilot's end, the pilot arm's units treated from the pilot's
    start. Raises HypothesisError when the panel is unusable (too few units or periods)."""
    column, schedule = unit_column(hypothesis), hypothesis.schedule
    obs = pilot_observations(hypothesis.metric.name, data, hypothesis)
    obs = obs[in_period(obs["at"], Period(start=schedule.baseline.start, end=schedule.pilot.end))]
    units = attribute_values(data.customers, column).astype(str)
    unit_of = pd.Series(units.to_numpy(), index=data.customers["customer_id"])
    in_arms = arms.set_index("customer_id")["arm"]
    obs = obs[obs["customer_id"].isin(in_arms.index)]
    obs = obs.assign(unit=obs["customer_id"].map(unit_of).to_numpy())
    pilot_ids = in_arms.index[in_arms.to_numpy() == "pilot"]
    treated = sorted(set(unit_of.reindex(pilot_ids).dropna()))
    panel = panel_of(unit_panel(obs[["unit", "at", "value"]]), treated, schedule.pilot.start)
    higher = hypothesis.metric.direction == "increase"
    return analyse(panel, hypothesis.decision.alpha, higher_is_better=higher)


def relative(effect: UnitEffect) -> tuple[float, float, float]:
    """The effect and its interval divided by the counterfactual's mean over the pilot."""
    series = effect.series
    base = float(series.loc[series["post"], "counterfactual"].mean())
    return effect.estimate / base, effect.low / base, effect.high / base


def _estimate(
    metric: str,
    estimand: Estimand,
    data: CxData,
    arms: pd.DataFrame,
    hypothesis: Hypothesis,
    periods: tuple[Period, Period] | None = None,
) -> Estimate:
    baseline, pilot = periods or (hypothesis.schedule.baseline, hypothesis.schedule.pilot)
    obs = pilot_observations(metric, data, hypothesis)
    return estimate_on(metric, estimand, obs, arms, hypothesis, baseline, pilot)


def estimate_on(
    metric: str,
    estimand: Estimand,
    obs: pd.DataFrame,
    arms: pd.DataFrame,
    hypothesis: Hypothesis,
    baseline: Period,
    pilot: Period,
) -> Estimate:
    """The per-customer estimate of `metric` from observations `obs`, as `evaluate` makes it:
    CUPED for `analysis: cuped`, else DiD with its `adjust_for`, fixed-horizon at `alpha`."""
    rules = hypothesis.decision
    if analysis_of(hypothesis) == "cuped":
        return cuped(metric, obs, arms, baseline, pilot, estimand, rules.alpha)
    return did(metric, obs, arms, baseline, pilot, estimand, rules.alpha, rules.adjust_for)


def _target(target: MetricTarget, data: CxData, arms: pd.DataFrame, h: Hypothesis) -> Estimate:
    return _estimate(target.name, estimand_of(target), data, arms, h)


def elapsed_share(hypothesis: Hypothesis, data: CxData) -> float:
    """Share of the pilot's days the data covers (1 once the pilot has ended)."""
    pilot, newest = hypothesis.schedule.pilot, data.newest()
    if pd.isna(newest):
        return 1.0
    days = (min(newest.date(), pilot.end) - pilot.start).days + 1
    return float(np.clip(days / _days(pilot), 1 / _days(pilot), 1.0))


@dataclass(frozen=True)
class Plan:
    """What a pilot can detect, before it runs, for the test that will decide it.

    `se` is the primary estimate's standard error expected at the pilot's end, from a
    placebo pilot on the baseline (its second half against its first, the real arms, the
    real analysis), scaled as 1 / √days. `mde` (80% power, signed, in the expected effect's
    units) and `power` (at the expected effect) use `critical` standard errors: the
    always-valid interval's when `sequential`. `days` is how long the pilot must run to
    reach 80% power at the expected effect. All NaN with `note` when nothing plans it.
    """

    mde: float
    power: float
    days: float
    se: float
    critical: float
    sequential: bool
    analysis: str
    relative: bool
    note: str = ""

    def text(self) -> str:
        """The plan in one English line, as the CLI and the warnings quote it."""
        if np.isnan(self.mde):
            return f"no power estimate: {self.note}"
        mde = f"{self.mde:+.1%}" if self.relative else f"{self.mde:+.2f}"
        test = "always-valid test" if self.sequential else "fixed-horizon test"
        return (
            f"detects {mde} with 80% power ({self.analysis}, {test}); the expected effect has "
            f"{self.power:.0%} power; 80% power needs about {np.ceil(self.days):.0f} days"
        )


def stored_plan(cells: Mapping[str, Any] | None) -> str:
    """`Plan.text()` of the plan a primary result stored in its `cells` ("" without one)."""
    plan = (cells or {}).get("plan")
    if not plan:
        return ""
    return Plan(**{k: float("nan") if v is None else v for k, v in plan.items()}).text()


def planned(hypothesis: Hypothesis, data: CxData, arms: pd.DataFrame) -> Plan:
    """The pilot's `Plan` from its baseline period."""
    target, schedule, rules = hypothesis.metric, hypothesis.schedule, hypothesis.decision
    # a unit pilot's customer-level estimate is the DiD; its plan is that DiD's
    analysis = "did" if analysis_of(hypothesis) == "auto" else analysis_of(hypothesis)
    relative = target.expected_effect.relative
    critical = (
        float(np.sqrt((1 + 1 / sequential_ratio(rules.alpha))
                      * (np.log1p(sequential_ratio(rules.alpha)) - 2 * np.log(rules.alpha))))
        if rules.sequential
        else float(stats.norm.ppf(1 - rules.alpha / 2))
    )  # fmt: skip
    nan = float("nan")
    unknown = Plan(nan, nan, nan, nan, critical, rules.sequential, analysis, relative)
    base = schedule.baseline
    if _days(base) < 2:
        return replace(unknown, note="the baseline is shorter than two days")
    middle = base.start + timedelta(days=_days(base) // 2)
    halves = (Period(start=base.start, end=middle - timedelta(days=1)),
              Period(start=middle, end=base.end))  # fmt: skip
    placebo = _estimate(target.name, estimand_of(target), data, arms, hypothesis, halves)
    if not np.isfinite(placebo.se) or placebo.analysis == "post_only":
        return replace(unknown, note="no baseline data to plan from")
    se = placebo.se * np.sqrt(_days(halves[1]) / _days(schedule.pilot))
    sign = 1 if target.direction == "increase" else -1
    expected = abs(target.expected_effect.value)
    return Plan(
        mde=float(sign * (critical + Z80) * se),
        power=float(stats.norm.cdf(expected / se - critical)),
        days=float(_days(schedule.pilot) * ((critical + Z80) * se / expected) ** 2),
        se=float(se),
        critical=critical,
        sequential=rules.sequential,
        analysis=analysis,
        relative=relative,
    )


def holm(estimates: list[Estimate]) -> list[Estimate]:
    """`estimates` with Holm-adjusted p-values (family-wise error across secondary metrics)."""
    p = holm_adjusted([e.p_value for e in estimates])
    return [replace(e, p_value=float(q)) for e, q in zip(estimates, p, strict=True)]


def holm_adjusted(p_values: Sequence[float]) -> np.ndarray:
    """Holm step-down adjusted p-values; NaN stays NaN and out of the family.

    statsmodels' `multipletests` gives the same numbers but runs the garbage collector on
    every call, which costs seconds with a large store loaded."""
    p = np.asarray(p_values, dtype=float)
    adjusted, valid = p.copy(), ~np.isnan(p)
    ranked = np.sort(p[valid])
    steps = np.maximum.accumulate((len(ranked) - np.arange(len(ranked))) * ranked)
    adjusted[valid] = np.minimum(steps, 1.0)[np.argsort(np.argsort(p[valid], kind="stable"))]
    return adjusted


@dataclass(frozen=True)
class GuardrailCheck:
    """A guardrail evaluated: `status` is `holds` (the worse end of the metric's CI is within
    the margin, Holm-adjusted across guardrails), `breached` (harm beyond the margin and
    significant), `unproven` (neither) or `unknown` (no data); `p_value` is the adjusted
    non-inferiority p-value."""

    guardrail: Guardrail
    estimate: Estimate
    p_value: float
    status: str


def noninferiority_p(guard: Guardrail, estimate: Estimate) -> float:
    """p-value against harm of exactly the margin: below α exactly when the worse end of the
    shown (1 − α) CI is within the margin (two-sided convention). NaN without an estimate."""
    if not np.isfinite(estimate.se) or estimate.se <= 0:
        return float("nan")
    tau2 = estimate.tau2 if estimate.sequential else None
    return float(noninferiority(estimate.coef, estimate.se, guard.harm * guard.limit, tau2))


def noninferiority(coef: Any, se: Any, limit: Any, tau2: Any = None) -> Any:
    """`noninferiority_p` on arrays: `limit` is the signed margin (+ when a rise is harm);
    always-valid with mixture variance `tau2`, fixed-horizon without."""
    distance = coef - limit
    if tau2 is None:
        p = 2 * stats.norm.sf(np.abs(distance) / se)
    else:
        p = always_valid_p(distance, se, tau2)
    return np.where(np.sign(limit) * distance >= 0, 1.0, p)


def check_guardrails(
    hypothesis: Hypothesis, data: CxData, arms: pd.DataFrame, share: float
) -> list[GuardrailCheck]:
    """Every guardrail of `hypothesis`, always-valid when the decision is sequential."""
    rules = hypothesis.decision
    estimates = []
    for guard in hypothesis.guardrails:
        estimate = _estimate(guard.metric, "difference", data, arms, hypothesis)
        if rules.sequential and np.isfinite(estimate.se) and estimate.se > 0:
            tau2 = tuned_tau2(estimate.se, share, rules.alpha)
            estimate = always_valid(estimate, rules.alpha, tau2)
        estimates.append(estimate)
    pairs = zip(hypothesis.guardrails, estimates, strict=True)
    p = holm_adjusted([noninferiority_p(g, e) for g, e in pairs])
    checks = []
    for guard, estimate, q in zip(hypothesis.guardrails, estimates, p, strict=True):
        if np.isnan(q):
            status = "unknown"
        elif q < rules.alpha:
            status = "holds"
        elif guard.breached(estimate.value, estimate.ci_low, estimate.ci_high):
            status = "breached"
        else:
            status = "unproven"
        checks.append(GuardrailCheck(guard, estimate, float(q), status))
    return checks


@dataclass(frozen=True)
class QuantileEffect:
    """The pilot-period change in a quantile of `metric`: `lift` is the pilot's quantile over
    the control's minus one, with a 95% percentile CI from a Poisson bootstrap by customer."""

    metric: str
    quantile: float
    pilot: float
    control: float
    lift: float
    low: float
    high: float


def _bootstrap_quantile(values: np.ndarray, customers: np.ndarray, q: float,
                        rng: np.random.Generator, draws: int) -> np.ndarray:  # fmt: skip
    """`draws` quantiles of `values` with every customer's rows weighted by one Poisson(1)."""
    order = np.argsort(values, kind="stable")
    values, customers = values[order], pd.factorize(customers[order])[0]
    weights = rng.poisson(1.0, size=(draws, customers.max() + 1)).astype(np.float32)
    found = np.empty(draws)
    block = max(1, 4_000_000 // len(values))  # rows of draws × values held at once
    for start in range(0, draws, block):
        cum = weights[start : start + block, customers].cumsum(axis=1)
        below = (cum < q * cum[:, -1:]).sum(axis=1)
        found[start : start + block] = values[np.minimum(below, len(values) - 1)]
    return found


def quantile_effects(
    metric: str,
    obs: pd.DataFrame,
    arms: pd.DataFrame,
    pilot: Period,
    quantiles: Sequence[float] = QUANTILES,
    draws: int = BOOTSTRAP_DRAWS,
    seed: int = BOOTSTRAP_SEED,
) -> list[QuantileEffect]:
    """Median and p90 effects (by default) of the pilot period; seeded, so reruns agree."""
    frame = obs.merge(arms, on="customer_id")
    frame = frame[in_period(frame["at"], pilot)]
    if frame["arm"].nunique() < 2:
        return []
    rng = np.random.default_rng(seed)
    by_arm = {arm: rows for arm, rows in frame.groupby("arm")}
    effects = []
    for q in quantiles:
        point, boot = {}, {}
        for arm in ("pilot", "control"):
            values = by_arm[arm]["value"].to_numpy(dtype=float)
            point[arm] = float(np.quantile(values, q, method="inverted_cdf"))
            boot[arm] = _bootstrap_quantile(
                values, by_arm[arm]["customer_id"].to_numpy(), q, rng, draws
            )
        with np.errstate(divide="ignore", invalid="ignore"):
            lifts = boot["pilot"] / boot["control"] - 1
        low, high = np.nanquantile(lifts, [0.025, 0.975]) if np.isfinite(lifts).any() else (
            np.nan, np.nan)  # fmt: skip
        lift = point["pilot"] / point["control"] - 1 if point["control"] else float("nan")
        effects.append(QuantileEffect(metric, q, point["pilot"], point["control"], float(lift),
                                      float(low), float(high)))  # fmt: skip
    return effects


@dataclass(frozen=True)
class ResponseCheck:
    """Whether the arms answer surveys alike: customers per arm who answered in the pilot
    period, the chi-square p-value, and, when it is below `RESPONSE_ALPHA`, each survey
    metric's pilot-period difference re-weighted to the assigned customers' segment mix."""

    answered: dict[str, int]
    assigned: dict[str, int]
    p_value: float
    reweighted: list[Estimate]

    @property
    def rates(self) -> dict[str, float]:
        return {arm: self.answered[arm] / self.assigned[arm] for arm in self.assigned}

    @property
    def mismatch(self) -> bool:
        return bool(self.p_value < RESPONSE_ALPHA)


def reweighted(
    metric: str,
    obs: pd.DataFrame,
    arms: pd.DataFrame,
    segments: pd.Series,
    pilot: Period,
    estimand: Estimand = "difference",
    alpha: float = 0.05,
) -> Estimate:
    """Pilot-period difference of respondents' customer means, both arms' segments weighted by
    their share of the customers assigned (post-stratification to the population the arms
    were drawn from, so the arms' chance imbalance of segments adds no bias); `segments` maps
    customer id to segment. Segments an arm has no respondent in drop out of that arm and its
    other weights are rescaled."""
    frame = obs.merge(arms, on="customer_id")
    frame = frame[in_period(frame["at"], pilot)]
    means = frame.groupby(["arm", "customer_id"])["value"].mean().reset_index()
    means["segment"] = means["customer_id"].map(segments)
    weights = arms["customer_id"].map(segments).value_counts(normalize=True).rename("weight")
    cells = means.groupby(["arm", "segment"])["value"].agg(mean="mean", var="var", n="size")
    cells = cells.join(weights, on="segment", how="inner")
    cells["weight"] /= cells.groupby("arm")["weight"].transform("sum")
    cells["var"] = cells["var"].fillna(0.0)
    arm_mean = (cells["weight"] * cells["mean"]).groupby("arm").sum()
    arm_var = (cells["weight"] ** 2 * cells["var"] / cells["n"]).groupby("arm").sum()
    customers = means.groupby("arm").size()
    how = {"analysis": "reweighted", "estimand": estimand}
    if not {"pilot", "control"} <= set(arm_mean.index) or customers.min() < 2:
        return _missing(metric, cells.reset_index(), customers, **how)
    mp, mc, vp, vc = arm_mean["pilot"], arm_mean["control"], arm_var["pilot"], arm_var["control"]
    if estimand == "ratio":
        coef, var = mp / mc - 1, vp / mc**2 + vc * mp**2 / mc**4
    else:
        coef, var = mp - mc, vp + vc
    return _normal(metric, coef, np.sqrt(var), alpha, cells.reset_index(), customers, **how)


def response_check(
    hypothesis: Hypothesis, data: CxData, arms: pd.DataFrame
) -> ResponseCheck | None:
    """The `ResponseCheck` of `hypothesis`, None when none of its metrics is a survey metric."""
    targets = [t for t in (hypothesis.metric, *hypothesis.secondary_metrics)
               if t.name in SURVEY_METRICS]  # fmt: skip
    if not targets:
        return None
    pilot = hypothesis.schedule.pilot
    kinds = {t.name.removesuffix("_top2") for t in targets}
    answers = data.responses[data.responses["kind"].isin(kinds)]
    answers = answers[in_period(answers["submitted_at"], pilot)]
    answered_ids = is_in(arms["customer_id"], answers["customer_id"])
    assigned = arms["arm"].value_counts()
    answered = arms.loc[answered_ids, "arm"].value_counts().reindex(assigned.index, fill_value=0)
    table = np.array([answered.to_numpy(), (assigned - answered).to_numpy()])
    p = float(stats.chi2_contingency(table, correction=False).pvalue) if table.min() > 0 else (
        float("nan"))  # fmt: skip
    found = []
    if p < RESPONSE_ALPHA and "segment" in data.customers.columns:
        segments = data.customers.set_index("customer_id")["segment"]
        for t in targets:
            obs = pilot_observations(t.name, data, hypothesis)
            found.append(reweighted(t.name, obs, arms, segments, pilot, estimand_of(t),
                                    hypothesis.decision.alpha))  # fmt: skip
    return ResponseCheck(
        {arm: int(answered[arm]) for arm in assigned.index},
        {arm: int(assigned[arm]) for arm in assigned.index},
        p,
        found,
    )


@dataclass(frozen=True)
class Evaluation:
    """A hypothesis evaluated: primary and secondary estimates, guardrails, checks, decision;
    `reason` says why in English, `why` holds the rule and numbers behind it."""

    hypothesis: Hypothesis
    primary: Estimate
    secondary: list[Estimate]
    guardrails: list[GuardrailCheck]
    srm_p: float
    decision: str
    reason: str
    arms: pd.DataFrame = field(repr=False)
    plan: Plan | None = None
    warnings: list[str] = field(default_factory=list)
    why: dict[str, Any] = field(default_factory=dict)
    quantiles: list[QuantileEffect] = field(default_factory=list)
    response: ResponseCheck | None = None
    unmatched: dict[str, int] = field(default_factory=dict)
    unit: UnitEffect | None = None


def evaluate(
    hypothesis: Hypothesis,
    data: CxData,
    others: Sequence[Hypothesis] = (),
    holdout: Holdout | None = None,
) -> Evaluation:
    """Estimate every metric of `hypothesis` on `data` and decide adopt / reject / inconclusive;
    the `holdout`'s customers take part in no arm.

    With `decision.sequential` (the default) the primary metric's and the guardrails' CIs and
    p-values are always-valid, tuned to the planned sample, so daily evaluation of a running
    pilot keeps its false-positive rate; secondary metrics get Holm-adjusted p-values.
    """
    rules = hypothesis.decision
    arms = assignments(hypothesis, data.customers, others, holdout)
    if arms["arm"].nunique() < 2:
        raise HypothesisError(
            f"hypotheses/{hypothesis.id}.yaml: `population` and `assignment` leave "
            f"{len(arms):,} customers and {arms['arm'].nunique()} arm(s) of the "
            f"{len(data.customers):,} known; widen the filters (check their spelling)."
        )
    plan = planned(hypothesis, data, arms)
    share = elapsed_share(hypothesis, data)
    target = hypothesis.metric
    warnings = []
    if np.isfinite(plan.mde) and abs(target.expected_effect.value) < abs(plan.mde):
        warnings.append(
            f"expected effect {target.expected_effect} is smaller than this pilot can detect "
            f"(it {plan.text()})"
        )
    primary = _target(target, data, arms, hypothesis)
    if primary.analysis == "post_only":
        warnings.append(
            f"no baseline data for {target.name}: the estimate is the pilot-period difference"
        )
    if rules.sequential and np.isfinite(primary.se) and primary.se > 0:
        primary = always_valid(primary, rules.alpha, tuned_tau2(primary.se, share, rules.alpha))
    secondary = holm([_target(m, data, arms, hypothesis) for m in hypothesis.secondary_metrics])
    guardrails = check_guardrails(hypothesis, data, arms, share)
    quantiles = (
        quantile_effects(target.name, pilot_observations(target.name, data, hypothesis), arms,
                         hypothesis.schedule.pilot)
        if target.name in QUANTILE_METRICS
        else []
    )  # fmt: skip
    response = response_check(hypothesis, data, arms)
    if response is not None and response.mismatch:
        rates = ", ".join(f"{arm} {rate:.1%}" for arm, rate in response.rates.items())
        warnings.append(
            f"the arms answer surveys at different rates ({rates}; p = {response.p_value:.2g}): "
            "compare with the estimates re-weighted to each arm's segment mix"
        )
    split = hypothesis.assignment.split
    observed = observed_arms(pilot_observations(target.name, data, hypothesis), arms,
                             hypothesis.schedule.pilot)  # fmt: skip
    srm = srm_p_value(observed, split) if split is not None else float("nan")
    unmatched = unmatched_ids(hypothesis, data.customers)
    warnings.extend(
        f"{count:,} ids of the {arm} list match no customer"
        for arm, count in unmatched.items()
        if count
    )
    decision, why = decide(hypothesis, primary, guardrails, srm)
    reason, unit = reason_text(why, labels("en")), None
    if analysis_of(hypothesis) == "auto":
        decision, reason, why, unit = _unit_verdict(hypothesis, data, arms, decision, why, warnings)
        reason = reason or reason_text(why, labels("en"))
    return Evaluation(hypothesis, primary, secondary, guardrails, srm, decision, reason, arms,
                      plan, warnings, why, quantiles, response, unmatched, unit)  # fmt: skip


def _unit_verdict(
    hypothesis: Hypothesis, data: CxData, arms: pd.DataFrame, decision: str,
    why: dict[str, Any], warnings: list[str],
) -> tuple[str, str, dict[str, Any], UnitEffect | None]:  # fmt: skip
    """(decision, reason, why, effect) of a unit pilot: a customer-level adopt stands only when
    the unit-level analysis shows the effect (then `reason` is its words, `why` empty); rejects
    and the sample checks stand as they are. Without a usable panel the customer-level verdict
    stands, with a warning saying why."""
    try:
        unit = unit_effect(hypothesis, data, arms)
    except HypothesisError as error:
        warnings.append(f"unit-level analysis not possible, judged per customer: {error}")
        return decision, "", why, None
    wanted = 1 if hypothesis.metric.direction == "increase" else -1
    if decision == "reject" or why.get("rule") in ("srm", "too_few"):
        return decision, "", why, unit
    return ("adopt" if unit.shows_effect(wanted) else "inconclusive"), unit.reason, {}, unit


def _fmt(estimate: Estimate, value: float) -> str:
    return f"{value:+.1%}" if estimate.relative else f"{value:+.2f}"


def decide(
    hypothesis: Hypothesis, primary: Estimate, guardrails: list[GuardrailCheck], srm_p: float
) -> tuple[str, dict[str, Any]]:
    """(`adopt` | `reject` | `inconclusive`, why): `why` names the `rule` that decided and
    holds the numbers behind it, for `tasks.labels.reason_text` to put in words.

    A guardrail breached rejects; adopting needs every guardrail shown to hold.
    """
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
    by_status = {s: [g.guardrail.metric for g in guardrails if g.status == s]
                 for s in ("breached", "unproven", "unknown")}  # fmt: skip
    if by_status["breached"]:
        return "reject", {"rule": "guardrail", "metrics": by_status["breached"]}
    shown = {
        "metric": target.name,
        "effect": _fmt(primary, primary.value),
        "low": _fmt(primary, primary.ci_low),
        "high": _fmt(primary, primary.ci_high),
        "sequential": primary.sequential,
        "p": primary.p_value,
    }
    wanted = 1 if target.direction == "increase" else -1
    significant = primary.p_value < rules.alpha
    if significant and np.sign(primary.value) != wanted:
        return "reject", {"rule": "wrong_way", **shown}
    if significant and (by_status["unknown"] or by_status["unproven"]):
        rule = "guardrail_unknown" if by_status["unknown"] else "guardrail_unproven"
        return "inconclusive", {"rule": rule, "metrics": by_status["unknown"]
                                or by_status["unproven"], **shown}  # fmt: skip
    if significant:
        return "adopt", {"rule": "as_expected" if guardrails else "as_expected_unguarded", **shown}
    detectable = _fmt(primary, primary.mde(rules.alpha, wanted))
    return "inconclusive", {
        "rule": "no_change",
        **shown,
        "mde": detectable,
        "expected": str(target.expected_effect),
    }


@dataclass(frozen=True)
class RolloutWatch:
    """How much of a pilot's gain the whole population kept after the rollout: against the
    pilot's control level, or against the long-term holdout's level after the rollout."""

    pilot_level: float
    control_level: float
    rollout_level: float
    retained: float
    n: int
    holdout_level: float | None = None

    @property
    def fading(self) -> bool:
        return self.retained < FADING_SHARE


FADING_SHARE = 0.5


def rollout_watch(
    hypothesis: Hypothesis, data: CxData, arms: pd.DataFrame, holdout: Holdout | None = None
) -> RolloutWatch | None:
    """The target metric on the whole population since `rollout`, against the pilot's arms.

    `retained` is the share of the pilot-period gain (pilot arm over control arm) that the
    population shows after the rollout; below `FADING_SHARE` the gain is fading. The level
    the gain is measured from is the control arm's in the pilot period or, with a `holdout`
    (which never got the change), the holdout's after the rollout, so a shift that moved
    everyone alike is not taken for a fading gain. Levels are means, geometric for relative
    metrics. None before the rollout or without data after it.
    """
    if hypothesis.rollout is None:
        return None
    target = hypothesis.metric
    every = pilot_observations(target.name, data, hypothesis)
    if target.expected_effect.relative:
        every["value"] = log_values(every["value"], target.name, floor=1e-6)
    obs = every.merge(arms, on="customer_id")
    during = obs[in_period(obs["at"], hypothesis.schedule.pilot)]
    after = obs[obs["at"] >= pd.Timestamp(hypothesis.rollout)]
    if after.empty or during["arm"].nunique() < 2:
        return None
    levels = during.groupby("arm")["value"].mean()
    gain = levels["pilot"] - levels["control"]
    level, baseline, held_level = after["value"].mean(), levels["control"], None
    if holdout is not None:
        later = every[every["at"] >= pd.Timestamp(hypothesis.rollout)]
        held = later[holdout.members(later["customer_id"])]
        if len(held):
            baseline = held_level = held["value"].mean()
    to_reader = np.exp if target.expected_effect.relative else float
    return RolloutWatch(
        pilot_level=float(to_reader(levels["pilot"])),
        control_level=float(to_reader(levels["control"])),
        rollout_level=float(to_reader(level)),
        retained=float((level - baseline) / gain) if gain else float("nan"),
        n=len(after),
        holdout_level=None if held_level is None else float(to_reader(held_level)),
    )
