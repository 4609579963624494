"""Pilots whose arms are whole units (region, branch, team, channel): observational estimates
with inference that holds with few treated units, and the checks that say whether to trust
them.

The input is a panel: one row per unit and period (`unit`, `period`, `value`, optionally
`n`, the observations behind the cell), the treated units and the first pilot period.
Units count equally: when arms are whole units, the units' own shocks, not the customers'
noise, dominate the error, so a unit of 10,000 customers is one observation, not 10,000.

- `unit_did`: difference-in-differences of unit means (each unit's post minus pre mean,
  treated against untreated), the two-way fixed-effects estimate on a balanced panel, with
  Donald & Lang's (2007) unit-level t test on units − 2 degrees of freedom: exact for
  normal unit shocks however they are correlated over time, and valid with one treated unit.
- `synthetic`: a demeaned synthetic control (tasks/synthetic_control.py) with a conformal
  p-value and confidence set, the pre-period fit and the placebo-in-space RMSPE ranks.
- `analyse`: whichever of the two predicts the baseline's last periods better from its
  earlier ones; the DiD when there are fewer than 5 donors or too few periods, saying why.
- Checks on every result: an event-study pre-trend test (leads jointly zero, Hotelling's T²
  on the units' binned baseline), a test of diverging baseline slopes, a placebo in time
  (the DiD at a fake start inside the baseline), the placebo in space, and a
  regression-to-the-mean warning. Failing a pre-trend check makes the result inconclusive.
  The placebo in space decides only when there are units enough for its p-value to fall
  below alpha (1 / assignments < alpha; with 8 regions and one treated it cannot go below
  1/8); otherwise the p-value of the estimate decides and the placebo rank is shown.
- `design_check`: the detectable effect before launch, and the same warning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import combinations
from math import comb
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.power import TTestIndPower

from connectors.errors import HypothesisError
from tasks import synthetic_control as sc

MIN_PRE = 4
MIN_DONORS = 5
MIN_SC_PRE = 10
LEADS = 3
MAX_ASSIGNMENTS = 5000
ASSIGNMENT_SEED = 2026
POWER = 0.8
DESIGN = "observational"
UNTREATED = "the untreated units"
PLACEBO_GAPS = "the donors' placebo gaps"

Method = Literal["did", "synthetic_control"]


@dataclass(frozen=True)
class Check:
    """One identification check: whether it `passed`, whether failing it `blocking` stops
    adoption, its p-value (NaN when it has none) and the `reason` in plain words."""

    name: str
    passed: bool
    blocking: bool
    p_value: float
    reason: str


@dataclass(frozen=True)
class UnitEffect:
    """The effect of a unit pilot: `estimate` (treated minus counterfactual, the metric's
    units, averaged over the post periods), its (1 − `alpha`) interval and p-value, how it
    was estimated (`method`), and the checks.

    `series`: period, treated, counterfactual (synthetic or DiD path), post; `placebos`:
    unit, statistic (placebo effect for DiD, post/pre RMSPE ratio for the synthetic
    control), treated; `weights`: donor unit, weight (equal for DiD). `design` is always
    "observational": the arms were not randomised.
    """

    method: Method
    estimate: float
    low: float
    high: float
    p_value: float
    alpha: float
    treated: tuple[str, ...]
    donors: tuple[str, ...]
    n_pre: int
    n_post: int
    pre_rmspe: float
    checks: tuple[Check, ...]
    series: pd.DataFrame
    placebos: pd.DataFrame
    weights: pd.DataFrame
    design: str = DESIGN

    @property
    def identified(self) -> bool:
        """True when no blocking check failed."""
        return all(c.passed or not c.blocking for c in self.checks)

    def shows_effect(self, direction: int) -> bool:
        """Identified, significant at `alpha` and in `direction` (+1 up, −1 down)."""
        significant = self.p_value < self.alpha and np.sign(self.estimate) == direction
        return bool(self.identified and significant)

    @property
    def reason(self) -> str:
        """Why the verdict is what it is, with the numbers."""
        failed = [c.reason for c in self.checks if c.blocking and not c.passed]
        if failed:
            return "inconclusive: " + "; ".join(failed)
        word = "shown" if self.p_value < self.alpha else "not shown"
        return (
            f"effect {word} ({DESIGN}, {self.method.replace('_', ' ')}): {self.estimate:.3g} "
            f"({1 - self.alpha:.0%} CI {self.low:.3g} to {self.high:.3g}), "
            f"p = {self.p_value:.3g} against alpha {self.alpha:g}"
        )


@dataclass(frozen=True)
class Panel:
    """A balanced panel as arrays: `values` units × periods (periods ascending)."""

    values: np.ndarray
    units: tuple[str, ...]
    periods: pd.Index
    treated: np.ndarray
    pre: np.ndarray

    @property
    def donors(self) -> tuple[str, ...]:
        return tuple(u for u, t in zip(self.units, self.treated, strict=True) if not t)

    def treated_series(self) -> np.ndarray:
        return self.values[self.treated].mean(axis=0)


def unit_panel(obs: pd.DataFrame, freq: str = "W") -> pd.DataFrame:
    """Unit × period means and counts (`unit`, `period`, `value`, `n`) of observations
    (`unit`, `at`, `value`); `freq` "D" or "W" (weeks starting Monday)."""
    at = pd.to_datetime(obs["at"])
    period = at.dt.to_period("W-SUN" if freq == "W" else freq).dt.start_time
    cells = obs.assign(period=period).groupby(["unit", "period"])["value"]
    return cells.agg(value="mean", n="size").reset_index()


def panel_of(frame: pd.DataFrame, treated: Sequence[str], start: Any) -> Panel:
    """`frame` (`unit`, `period`, `value`) as a `Panel`, periods before `start` the baseline.

    Raises HypothesisError naming the unit, period or count when the panel is unusable.
    """
    missing = {"unit", "period", "value"} - set(frame.columns)
    if missing:
        raise HypothesisError(
            f"unit panel: columns {sorted(missing)} are missing; give one row per unit and "
            "period with columns unit, period, value (unit_panel makes them)."
        )
    frame = frame.assign(unit=frame["unit"].astype(str))
    repeated = frame.duplicated(["unit", "period"])
    if repeated.any():
        row = frame.loc[repeated].iloc[0]
        raise HypothesisError(
            f"unit panel: unit {row['unit']!r} has more than one row for period "
            f"{row['period']}; aggregate to one mean per unit and period first."
        )
    wide = frame.pivot(index="unit", columns="period", values="value").sort_index(axis=1)
    _require_balanced(wide)
    treated = [str(u) for u in treated]
    unknown = sorted(set(treated) - set(wide.index))
    if unknown:
        raise HypothesisError(
            f"unit panel: treated units {unknown} have no rows; the units are {sorted(wide.index)}."
        )
    is_treated = wide.index.isin(treated)
    if isinstance(wide.columns, pd.DatetimeIndex):
        start = pd.Timestamp(start)
    pre = np.asarray(wide.columns < start)
    _require_periods(int(pre.sum()), int((~pre).sum()), start)
    if (~is_treated).sum() < 2:
        raise HypothesisError(
            f"unit panel: {int((~is_treated).sum())} untreated unit(s); the unit-level test "
            "needs at least 2 to compare the treated units with."
        )
    return Panel(wide.to_numpy(float), tuple(wide.index), wide.columns, is_treated, pre)


def _require_balanced(wide: pd.DataFrame) -> None:
    empty = wide.isna().to_numpy()
    if empty.any():
        row, column = np.argwhere(empty)[0]
        unit, period = wide.index[row], wide.columns[column]
        raise HypothesisError(
            f"unit panel: {int(empty.sum()):,} unit-period cells are empty, the first unit "
            f"{unit!r} in period {_label(period)}; aggregate to longer periods (weeks instead of "
            "days) or leave out the units with no data."
        )


def _require_periods(n_pre: int, n_post: int, start: Any) -> None:
    if n_pre < MIN_PRE:
        raise HypothesisError(
            f"unit panel: {n_pre} period(s) before the pilot start {_label(start)}; the pre-trend "
            f"checks need at least {MIN_PRE}: move the baseline start earlier or use shorter "
            "periods (days instead of weeks)."
        )
    if n_post < 1:
        raise HypothesisError(
            f"unit panel: no period from the pilot start {_label(start)} on; the pilot has no "
            "data yet."
        )


def _differences(values: np.ndarray, pre: np.ndarray) -> np.ndarray:
    """Each unit's post-period mean minus its baseline mean."""
    return values[:, ~pre].mean(axis=1) - values[:, pre].mean(axis=1)


@dataclass(frozen=True)
class TwoSample:
    """Treated minus untreated mean of per-unit values, with the pooled-variance t test."""

    estimate: float
    se: float
    df: int

    @classmethod
    def of(cls, d: np.ndarray, treated: np.ndarray) -> TwoSample:
        a, b = d[treated], d[~treated]
        scatter = ((a - a.mean()) ** 2).sum() + ((b - b.mean()) ** 2).sum()
        df = d.size - 2
        se = np.sqrt(scatter / df * (1 / a.size + 1 / b.size))
        return cls(float(a.mean() - b.mean()), float(se), df)

    def p_value(self) -> float:
        return float(2 * stats.t.sf(abs(self.estimate) / self.se, self.df))

    def interval(self, alpha: float) -> tuple[float, float]:
        half = stats.t.ppf(1 - alpha / 2, self.df) * self.se
        return self.estimate - half, self.estimate + half


def assignments(n_units: int, n_treated: int) -> np.ndarray:
    """Every way to treat `n_treated` of `n_units` units (boolean rows), or a seeded sample
    of MAX_ASSIGNMENTS of them, the actual one not singled out."""
    if comb(n_units, n_treated) <= MAX_ASSIGNMENTS:
        picks = np.array(list(combinations(range(n_units), n_treated)))
    else:
        rng = np.random.default_rng(ASSIGNMENT_SEED)
        picks = np.argsort(rng.random((MAX_ASSIGNMENTS, n_units)), axis=1)[:, :n_treated]
    masks = np.zeros((len(picks), n_units), dtype=bool)
    np.put_along_axis(masks, picks, True, axis=1)
    return masks


def pre_trend_check(panel: Panel, alpha: float, against: str = UNTREATED) -> Check:
    """Event-study leads jointly zero: the baseline cut into consecutive bins, each unit's
    bin means minus its last bin's, treated against untreated by two-sample Hotelling T²."""
    units = panel.values.shape[0]
    leads = min(LEADS, units - 2, int(panel.pre.sum()) - 1)
    bins = np.array_split(np.flatnonzero(panel.pre), leads + 1)
    means = np.column_stack([panel.values[:, b].mean(axis=1) for b in bins])
    p = hotelling_p(means[:, :-1] - means[:, -1:], panel.treated)
    return _trend_check(
        "pre_trends", p, alpha, "parallel within noise",
        f"testing that the {leads} baseline lead(s) of the treated against {against} are "
        f"all zero gives p = {p:.3g} (Hotelling's T², {units} units)",
    )  # fmt: skip


def _trend_check(name: str, p: float, alpha: float, fine: str, detail: str) -> Check:
    """A blocking check that fails with "pre-trends differ" when `p` is below `alpha`."""
    passed = bool(p >= alpha)
    return Check(name, passed, True, p, f"{fine if passed else 'pre-trends differ'}: {detail}")


def hotelling_p(leads: np.ndarray, treated: np.ndarray) -> float:
    """p-value of two-sample Hotelling's T² (pooled covariance) of `leads` rows by arm."""
    a, b = leads[treated], leads[~treated]
    n, k = leads.shape
    scatter = (a - a.mean(0)).T @ (a - a.mean(0)) + (b - b.mean(0)).T @ (b - b.mean(0))
    diff = a.mean(0) - b.mean(0)
    t2 = a.shape[0] * b.shape[0] / n * diff @ np.linalg.pinv(scatter / (n - 2)) @ diff
    f = (n - k - 1) / (k * (n - 2)) * t2
    return float(stats.f.sf(f, k, n - k - 1))


def linear_trend_check(panel: Panel, alpha: float, against: str = UNTREATED) -> Check:
    """Baseline slopes (each unit's least-squares line over the baseline periods), treated
    against untreated by the unit-level t test: the most sensitive check for a drift."""
    t = np.arange(int(panel.pre.sum()), dtype=float)
    centred = t - t.mean()
    slopes = panel.values[:, panel.pre] @ centred / (centred @ centred)
    test = TwoSample.of(slopes, panel.treated)
    return _trend_check(
        "linear_trend", test.p_value(), alpha, "no drift apart",
        f"over the baseline the treated drift {test.estimate:.3g} per period against "
        f"{against} (p = {test.p_value():.3g})",
    )  # fmt: skip


def placebo_in_time_check(panel: Panel, alpha: float, against: str = UNTREATED) -> Check:
    """The DiD at the fake start inside the baseline (`_fake_pre`): an effect there means
    the arms drift apart without the pilot."""
    pre_values, fake_pre = panel.values[:, panel.pre], _fake_pre(panel)
    test = TwoSample.of(_differences(pre_values, fake_pre), panel.treated)
    fake = _label(panel.periods[panel.pre][~fake_pre][0])
    return _trend_check(
        "placebo_in_time", test.p_value(), alpha, "no effect before the start",
        f"a fake start at {fake} gives {test.estimate:.3g} against {against} with "
        f"p = {test.p_value():.3g}",
    )  # fmt: skip


def _label(period: Any) -> str:
    """A period as a reader writes it: a day's date without its midnight."""
    if isinstance(period, pd.Timestamp) and period == period.normalize():
        return period.date().isoformat()
    return str(period)


def placebo_in_space_check(statistics: np.ndarray, floor: float, alpha: float, what: str) -> Check:
    """Rank of the actual assignment's statistic (first entry) among all placebo ones; it
    blocks only when the units are enough for its p-value to reach below `alpha`."""
    p = float(np.mean(statistics >= statistics[0] - 1e-12 * max(abs(statistics[0]), 1.0)))
    blocking = floor < alpha
    passed = bool(p < alpha) if blocking else True
    limit = (
        ""
        if blocking
        else f"; with these units it cannot fall below {floor:.3g}, so it informs and does "
        "not decide"
    )
    return Check(
        "placebo_in_space", passed, blocking, p,
        f"the treated {what} ranks with p = {p:.3g} among {statistics.size} placebo "
        f"assignments{limit}",
    )  # fmt: skip


def regression_to_mean_check(panel: Panel, higher_is_better: bool) -> Check:
    """A warning (never blocking) when the treated baseline is in the worst tenth of units."""
    baselines = panel.values[:, panel.pre].mean(axis=1)
    badness = -baselines if higher_is_better else baselines
    treated = float(badness[panel.treated].mean())
    worst = bool(treated >= np.quantile(badness, 0.9))
    rank = int((badness > treated).sum()) + 1
    base = float(baselines[panel.treated].mean())
    if worst:
        reason = (
            f"regression to the mean: the pilot's baseline {base:.3g} ranks {rank} worst of "
            f"{badness.size} units; a unit picked for being the worst tends to improve on "
            "its own, so part of any improvement may not be the pilot's"
        )
    else:
        reason = f"the pilot's baseline {base:.3g} ranks {rank} worst of {badness.size} units"
    return Check("regression_to_mean", not worst, False, float("nan"), reason)


def _common_checks(panel: Panel, alpha: float, higher_is_better: bool) -> list[Check]:
    return [
        pre_trend_check(panel, alpha),
        linear_trend_check(panel, alpha),
        placebo_in_time_check(panel, alpha),
        regression_to_mean_check(panel, higher_is_better),
    ]


def _series(panel: Panel, counterfactual: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({
        "period": panel.periods, "treated": panel.treated_series(),
        "counterfactual": counterfactual, "post": ~panel.pre,
    })  # fmt: skip


def _did_effect(panel: Panel, alpha: float, checks: list[Check]) -> UnitEffect:
    d = _differences(panel.values, panel.pre)
    test = TwoSample.of(d, panel.treated)
    masks = assignments(d.size, int(panel.treated.sum()))
    actual = np.flatnonzero((masks == panel.treated).all(axis=1))
    order = np.concatenate([actual, np.delete(np.arange(len(masks)), actual)])
    masks = masks[order]
    placebo = masks @ d / masks.sum(1) - (~masks) @ d / (~masks).sum(1)
    floor = 1 / comb(d.size, int(panel.treated.sum()))
    checks = [*checks, placebo_in_space_check(np.abs(placebo), floor, alpha, "DiD effect")]
    controls = panel.values[~panel.treated]
    counterfactual = (
        panel.treated_series()[panel.pre].mean()
        + controls.mean(axis=0)
        - controls[:, panel.pre].mean()
    )
    low, high = test.interval(alpha)
    gap = panel.treated_series() - counterfactual
    equal = np.full(len(panel.donors), 1 / len(panel.donors))
    return UnitEffect(
        "did", test.estimate, float(low), float(high), test.p_value(), alpha,
        _treated(panel), panel.donors, int(panel.pre.sum()), int((~panel.pre).sum()),
        sc.rmspe(gap[panel.pre]), tuple(checks), _series(panel, counterfactual),
        _placebo_frame(panel, placebo, masks), _weights(panel, equal),
    )  # fmt: skip


def _treated(panel: Panel) -> tuple[str, ...]:
    return tuple(u for u, t in zip(panel.units, panel.treated, strict=True) if t)


def _placebo_frame(panel: Panel, statistic: np.ndarray, masks: np.ndarray) -> pd.DataFrame:
    units = np.array(panel.units, dtype=object)
    return pd.DataFrame({
        "unit": [", ".join(units[m]) for m in masks], "statistic": statistic,
        "treated": (masks == panel.treated).all(axis=1),
    })  # fmt: skip


def _weights(panel: Panel, weights: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"unit": panel.donors, "weight": weights})


def unit_did(panel: Panel, alpha: float = 0.05, higher_is_better: bool = True) -> UnitEffect:
    """Unit-level DiD of `panel` (`panel_of`) with the unit-level t test, the placebo in
    space over all assignments and the common checks."""
    return _did_effect(panel, alpha, _common_checks(panel, alpha, higher_is_better))


def synthetic(panel: Panel, alpha: float = 0.05, higher_is_better: bool = True) -> UnitEffect:
    """Synthetic control of the treated units' mean series with the conformal p-value and
    confidence set, the placebo-in-space RMSPE ranks, and the checks run on the gaps
    (`synthetic_checks`)."""
    return _synthetic_effect(panel, alpha, higher_is_better, [])


def gap_panel(panel: Panel, rows: np.ndarray) -> Panel:
    """The treated series' and each donor's synthetic-control gaps (`sc.placebo_gaps`,
    fitted on the periods `rows`) as a panel of one treated and the donor units."""
    y, donors = panel.treated_series(), panel.values[~panel.treated].T
    gaps = sc.placebo_gaps(y, donors, rows)
    treated = np.arange(gaps.shape[0]) == 0
    return Panel(gaps, ("treated", *panel.donors), panel.periods, treated, panel.pre)


def synthetic_checks(panel: Panel, alpha: float, higher_is_better: bool) -> list[Check]:
    """The checks for a synthetic control, which assumes no parallel trends with the donors'
    mean: the treated gap's leads and slope against the donors' placebo gaps (fitted on the
    baseline), and the placebo in time refitted on the baseline before the fake start."""
    fitted = gap_panel(panel, panel.pre)
    before_fake = np.zeros_like(panel.pre)
    before_fake[np.flatnonzero(panel.pre)[_fake_pre(panel)]] = True
    return [
        pre_trend_check(fitted, alpha, PLACEBO_GAPS),
        linear_trend_check(fitted, alpha, PLACEBO_GAPS),
        placebo_in_time_check(gap_panel(panel, before_fake), alpha, PLACEBO_GAPS),
        regression_to_mean_check(panel, higher_is_better),
    ]


def _synthetic_effect(panel: Panel, alpha: float, higher_is_better: bool,
                      extra: list[Check]) -> UnitEffect:  # fmt: skip
    y, donors, pre = panel.treated_series(), panel.values[~panel.treated].T, panel.pre
    fitted = sc.fit(y, donors, pre)
    estimate = float(fitted.gap[~pre].mean())
    low, high = sc.confidence_set(y, donors, pre, estimate, alpha)
    ratios = sc.rmspe_ratios(sc.placebo_gaps(y, donors, pre), pre)
    pre_rmspe = sc.rmspe(fitted.gap[pre])
    spread = float(np.std(y[pre]))
    r2 = 1 - pre_rmspe**2 / spread**2 if spread > 0 else float("nan")
    checks = [
        *synthetic_checks(panel, alpha, higher_is_better),
        *extra,
        placebo_in_space_check(ratios, 1 / ratios.size, alpha, "post/pre RMSPE ratio"),
        Check("pre_fit", bool(r2 > 0), False, float("nan"),
              f"pre-period fit: RMSPE {pre_rmspe:.3g} against the treated series' spread "
              f"{spread:.3g} (R² {r2:.2f})"),
    ]  # fmt: skip
    masks = np.vstack([panel.treated, *(np.array(panel.units) == u for u in panel.donors)])
    return UnitEffect(
        "synthetic_control", estimate, low, high,
        sc.conformal_p(y, donors, pre, 0.0), alpha, _treated(panel), panel.donors,
        int(pre.sum()), int((~pre).sum()), pre_rmspe, tuple(checks),
        _series(panel, y - fitted.gap), _placebo_frame(panel, ratios, masks),
        _weights(panel, fitted.weights),
    )  # fmt: skip


def synthetic_fallback(panel: Panel, alpha: float) -> str:
    """Why the synthetic control cannot be fitted on `panel` ("" when it can)."""
    n_donors, n_pre = len(panel.donors), int(panel.pre.sum())
    if n_donors < MIN_DONORS:
        return (
            f"{n_donors} untreated units, fewer than the {MIN_DONORS} a synthetic control "
            "needs; fell back to the unit-level DiD"
        )
    if n_pre < MIN_SC_PRE:
        return (
            f"{n_pre} baseline periods, fewer than the {MIN_SC_PRE} a synthetic control "
            "needs; fell back to the unit-level DiD"
        )
    if 1 / panel.periods.size >= alpha:
        return (
            f"{panel.periods.size} periods cannot give a conformal p-value below alpha "
            f"{alpha:g}; fell back to the unit-level DiD"
        )
    return ""


def analyse(panel: Panel, alpha: float = 0.05, higher_is_better: bool = True) -> UnitEffect:
    """The synthetic control or the unit-level DiD, whichever predicts the baseline's last
    periods better from its earlier ones (`method_choice`); the DiD when
    `synthetic_fallback` rules the synthetic control out. A non-blocking `method` check
    says which and why."""
    fallback = synthetic_fallback(panel, alpha)
    if fallback:
        method = Check("method", False, False, float("nan"), fallback)
        return _did_effect(panel, alpha, [*_common_checks(panel, alpha, higher_is_better), method])
    synthetic_error, did_error = method_choice(panel)
    window = f"over the last {int((~_fake_pre(panel)).sum())} baseline periods"
    if synthetic_error < did_error:
        why = (f"the synthetic control predicted the treated series {window} better (RMSPE "
               f"{synthetic_error:.3g} against the DiD's {did_error:.3g})")  # fmt: skip
        return _synthetic_effect(panel, alpha, higher_is_better, [_chosen(why)])
    why = (f"the DiD predicted the treated series {window} at least as well as a synthetic "
           f"control (RMSPE {did_error:.3g} against {synthetic_error:.3g})")  # fmt: skip
    return _did_effect(panel, alpha, [*_common_checks(panel, alpha, higher_is_better),
                                      _chosen(why)])  # fmt: skip


def _chosen(why: str) -> Check:
    return Check("method", True, False, float("nan"), why)


def _fake_pre(panel: Panel) -> np.ndarray:
    """Over the baseline periods: true before the fake start of the placebo in time (as many
    fake post periods as the pilot has, at most half the baseline)."""
    n_pre = int(panel.pre.sum())
    n_fake = min(int((~panel.pre).sum()), n_pre // 2)
    return np.arange(n_pre) < n_pre - n_fake


def method_choice(panel: Panel) -> tuple[float, float]:
    """Out-of-sample RMSPE over the placebo-in-time window of the synthetic control and of
    the DiD path, each fitted on the baseline before the fake start (Abadie 2021's
    cross-validation over the pre-period, using pre-period data only)."""
    values = panel.values[:, panel.pre]
    train = _fake_pre(panel)
    y, donors = values[panel.treated].mean(axis=0), values[~panel.treated]
    synthetic_gap = sc.fit(y, donors.T, train).gap[~train]
    controls = donors.mean(axis=0)
    did_gap = (y - controls - (y - controls)[train].mean())[~train]
    return sc.rmspe(synthetic_gap), sc.rmspe(did_gap)


@dataclass(frozen=True)
class DesignCheck:
    """Before launch: the smallest effect the unit-level DiD detects with 80% power (`mde`,
    metric units), what it rests on, and the regression-to-the-mean check."""

    mde: float
    units: int
    treated: int
    periods: int
    unit_sd: float
    regression_to_mean: Check


def design_check(
    frame: pd.DataFrame, treated: Sequence[str], post_periods: int, alpha: float = 0.05,
    higher_is_better: bool = True,
) -> DesignCheck:  # fmt: skip
    """Detectable effect of a pilot of `post_periods` periods on the baseline `frame` (all
    periods are baseline): the spread of unit-level post − pre differences at a fake start
    `post_periods` before the baseline's end (at most half of it), times the standardised
    effect the unit-level t test detects with 80% power (statsmodels' `TTestIndPower`)."""
    periods = np.sort(frame["period"].unique())
    n_fake = min(post_periods, periods.size // 2)
    panel = panel_of(frame, treated, periods[periods.size - n_fake])
    d = _differences(panel.values, panel.pre)
    n_t, units = int(panel.treated.sum()), d.size
    sd = float(np.std(d, ddof=1))
    # power of the unit-level t test: the noncentral t on units − 2 df
    standardised = TTestIndPower().solve_power(
        nobs1=n_t, ratio=(units - n_t) / n_t, alpha=alpha, power=POWER
    )
    whole_baseline = replace(panel, pre=np.ones_like(panel.pre))
    return DesignCheck(float(standardised * sd), units, n_t, int(panel.periods.size), sd,
                       regression_to_mean_check(whole_baseline, higher_is_better))  # fmt: skip
