"""Unit pilots (tasks/unit_pilots.py, tasks/synthetic_control.py): the estimates against
statsmodels and pysyncon on the same data, the checks, bad input, and simulated region
pilots with a known truth (benchmarks/unit_pilot_simulation.py)."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf
from pysyncon import Synth
from statsmodels.stats import multivariate

from benchmarks import unit_pilot_simulation as sim
from connectors.errors import HypothesisError
from tasks.experiments import did
from tasks.hypotheses import Period
from tasks.unit_pilots import (
    analyse,
    assignments,
    design_check,
    hotelling_p,
    panel_of,
    synthetic,
    unit_did,
    unit_panel,
)


def _region_panel(seed: int = 11, **planted: float) -> pd.DataFrame:
    return sim.world(seed, 1, **planted).panel(0)


def _check(result, name: str):
    return next(c for c in result.checks if c.name == name)


def test_did_equals_statsmodels_two_way_fixed_effects_and_the_unit_level_t_test() -> None:
    frame = _region_panel(effect=1.0)
    treated = ["r0", "r3"]
    result = unit_did(panel_of(frame, treated, sim.PRE))
    cells = frame.assign(d=frame["unit"].isin(treated) & (frame["period"] >= sim.PRE))
    twfe = smf.ols("value ~ C(unit) + C(period) + d", data=cells.assign(d=cells["d"] * 1.0)).fit()
    assert result.estimate == pytest.approx(twfe.params["d"], abs=1e-6)
    # the inference: OLS of each unit's post − pre difference on treated (classical errors)
    means = cells.groupby(["unit", cells["period"] >= sim.PRE])["value"].mean().unstack()
    units = pd.DataFrame({"diff": means[True] - means[False],
                          "treated": means.index.isin(treated) * 1.0})  # fmt: skip
    collapsed = sm.OLS(units["diff"], sm.add_constant(units["treated"])).fit()
    assert result.estimate == pytest.approx(collapsed.params["treated"], abs=1e-9)
    assert result.p_value == pytest.approx(collapsed.pvalues["treated"], abs=1e-9)
    low, high = collapsed.conf_int(0.05).loc["treated"]
    assert (result.low, result.high) == pytest.approx((low, high), abs=1e-9)
    assert result.method == "did" and result.design == "observational"


def test_event_study_leads_test_equals_statsmodels_hotelling() -> None:
    rng = np.random.default_rng(4)
    leads = rng.normal(size=(9, 3))
    treated = np.arange(9) < 3
    expected = multivariate.test_mvmean_2indep(leads[treated], leads[~treated]).pvalue
    assert hotelling_p(leads, treated) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", [21, 22, 23])
def test_synthetic_control_weights_and_effect_equal_pysyncon(seed: int) -> None:
    frame = _region_panel(seed, effect=1.0)
    result = synthetic(panel_of(frame, ["r0"], sim.PRE))
    # pysyncon's Synth on the same demeaned series, V the rows' variances so that its
    # row scaling leaves equal weight on every baseline period
    wide = frame.pivot(index="period", columns="unit", values="value")
    pre = wide.index < sim.PRE
    demeaned = wide - wide[pre].mean()
    z0, z1 = demeaned.drop(columns="r0"), demeaned["r0"]
    x0, x1 = z0[pre], z1[pre]
    both = pd.concat([x0, x1], axis=1)
    v = both.std(axis=1).to_numpy() ** 2
    mine = result.weights.set_index("unit")["weight"].reindex(z0.columns).to_numpy()
    scaled = both.divide(both.std(axis=1), axis=0)
    tight, _ = Synth.w_optimize(np.diag(v), scaled.drop(columns="r0").to_numpy(),
                                scaled["r0"].to_numpy(), qp_options={"ftol": 1e-14,
                                                                     "maxiter": 1000})  # fmt: skip
    assert np.abs(mine - tight).max() < 1e-6
    assert result.estimate == pytest.approx((z1 - z0 @ tight)[~pre].mean(), abs=1e-6)
    # pysyncon's default fit stops at SLSQP's ftol 1e-6: within 1e-3, never a better fit
    synth = Synth()
    synth.fit(X0=x0, X1=x1, Z0=z0, Z1=z1, custom_V=v)
    assert np.abs(mine - synth.W).max() < 1e-3

    def loss(w: np.ndarray) -> float:
        return float(((x1 - x0 @ w) ** 2).sum())

    assert loss(mine) <= loss(synth.W) + 1e-12


def test_customer_clustered_did_of_the_simulation_is_cxloops_did() -> None:
    w = sim.world(5, 2)
    effects, p_values = sim.customer_did(w)
    answered = w.answered[1]
    customer, day = np.nonzero(answered)
    start = date(2026, 8, 1)
    obs = pd.DataFrame({
        "customer_id": [f"c{c}" for c in customer],
        "at": pd.to_datetime([start + timedelta(days=int(d)) for d in day]),
        "value": w.value[1][answered],
    })  # fmt: skip
    ids = [f"c{c}" for c in range(sim.REGIONS * sim.CUSTOMERS)]
    arm = np.where(np.arange(len(ids)) < sim.CUSTOMERS, "pilot", "control")
    arms = pd.DataFrame({"customer_id": ids, "arm": arm})
    baseline = Period(start=start, end=start + timedelta(days=sim.PRE - 1))
    pilot = Period(start=start + timedelta(days=sim.PRE), end=start + timedelta(days=sim.DAYS - 1))
    estimate = did("csat", obs, arms, baseline, pilot)
    assert effects[1] == pytest.approx(estimate.coef, abs=1e-9)
    assert p_values[1] == pytest.approx(estimate.p_value, rel=1e-7)


def test_aa_region_pilots_adopt_at_most_5_percent_where_customer_clustering_is_far_above() -> None:
    unit_p, adopted, customer_p = sim.aa_rates(runs=500)
    print(unit_p, adopted, customer_p, sep="\n")
    assert adopted.share <= 0.05, adopted
    assert unit_p.share <= 0.075, unit_p  # its size is 5%: within 2.5 standard errors of 500 runs
    assert customer_p.share >= 0.3, customer_p  # region shocks read as effects


def test_unit_did_rejects_near_alpha_in_aa_region_pilots() -> None:
    unit_p, _, _ = sim.aa_rates(runs=300, seed=7, method="unit_did")
    # exact under normal unit shocks: 5% within 2.8 standard errors of 300 runs
    assert 0.015 <= unit_p.share <= 0.085, unit_p


def test_planted_region_effect_is_covered_in_at_least_90_percent_of_runs() -> None:
    for method in ("analyse", "unit_did"):
        rate = sim.coverage(runs=200, effect=1.0, method=method)
        assert rate.share >= 0.9, rate


def test_a_region_drifting_apart_before_the_start_is_never_adopted() -> None:
    rate = sim.trend_adoptions(runs=200, trend=0.2)
    assert rate.hits == 0, rate


def test_drift_reads_inconclusive_with_the_numbers() -> None:
    result = analyse(panel_of(_region_panel(trend=0.2), ["r0"], sim.PRE))
    assert not result.identified and not result.shows_effect(1)
    assert result.reason.startswith("inconclusive: pre-trends differ")
    assert _check(result, "linear_trend").p_value < 0.05
    assert "p = " in result.reason


def test_strong_region_effect_is_shown_with_its_series_weights_and_placebos() -> None:
    result = analyse(panel_of(_region_panel(effect=4.0), ["r0"], sim.PRE))
    assert result.shows_effect(1), result.reason
    assert result.reason.startswith("effect shown (observational")
    assert len(result.series) == sim.DAYS and result.series["post"].sum() == sim.POST
    assert result.placebos["treated"].sum() == 1 and len(result.placebos) == sim.REGIONS
    assert result.weights["weight"].sum() == pytest.approx(1.0)
    # with 8 regions no placebo rank can fall below 1/8: the check informs, not decides
    space = _check(result, "placebo_in_space")
    assert not space.blocking and "cannot fall below 0.125" in space.reason


def test_synthetic_control_is_chosen_when_the_treated_region_moves_with_some_donors() -> None:
    rng = np.random.default_rng(8)
    days = np.arange(sim.DAYS)
    season = 2 * np.sin(2 * np.pi * days / 28) + 0.08 * days
    moves_with = np.array([1, 1, 1, 1, 0, 0, 0, 0.0])  # r0 moves like r1–r3, not r4–r7
    values = moves_with[:, None] * season + rng.normal(size=(8, 1))
    values += rng.normal(scale=0.3, size=values.shape)
    values[0, sim.PRE :] += 1.0
    frame = pd.DataFrame({
        "unit": np.repeat(sim.UNITS, sim.DAYS), "period": np.tile(days, 8),
        "value": values.ravel(),
    })  # fmt: skip
    panel = panel_of(frame, ["r0"], sim.PRE)
    result = analyse(panel)
    assert result.method == "synthetic_control", _check(result, "method").reason
    assert result.weights.set_index("unit").loc[["r1", "r2", "r3"], "weight"].sum() > 0.9
    assert result.low <= 1.0 <= result.high and result.shows_effect(1), result.reason
    assert "placebo gaps" in _check(result, "pre_trends").reason
    # the donors' plain mean does not move like r0: the DiD's own pre-trend checks refuse
    assert unit_did(panel).reason.startswith("inconclusive: pre-trends differ")


def test_placebo_in_space_blocks_when_units_are_enough_for_it() -> None:
    rng = np.random.default_rng(3)
    units, days = 25, 30
    frame = pd.DataFrame({
        "unit": np.repeat([f"u{i}" for i in range(units)], days),
        "period": np.tile(np.arange(days), units),
        "value": rng.normal(size=units * days),
    })  # fmt: skip
    space = _check(unit_did(panel_of(frame, ["u0"], 20)), "placebo_in_space")
    assert space.blocking and space.p_value >= 0.04


def test_worst_unit_warns_of_regression_to_the_mean_in_the_metrics_direction() -> None:
    frame = _region_panel()
    baselines = frame[frame["period"] < sim.PRE].groupby("unit")["value"].mean()
    worst, best = baselines.idxmin(), baselines.idxmax()
    warned = _check(unit_did(panel_of(frame, [worst], sim.PRE)), "regression_to_mean")
    assert not warned.passed and not warned.blocking
    assert "regression to the mean" in warned.reason and "ranks 1 worst of 8" in warned.reason
    assert _check(unit_did(panel_of(frame, [best], sim.PRE)), "regression_to_mean").passed
    lower_is_better = unit_did(panel_of(frame, [best], sim.PRE), higher_is_better=False)
    assert not _check(lower_is_better, "regression_to_mean").passed
    assert not design_check(frame, [worst], post_periods=14).regression_to_mean.passed


def test_design_check_mde_is_detected_about_80_percent_of_the_time() -> None:
    w = sim.world(9, 60)
    baselines = [w.panel(i) for i in range(w.runs)]
    checks = [design_check(b[b["period"] < sim.PRE], ["r0"], sim.POST) for b in baselines]
    # the MDE is proportional to the unit sd: pooled over baselines it is the one of the world
    mde = float(np.sqrt(np.mean([c.mde**2 for c in checks])))
    results = sim.analysed(sim.world(10, 200, effect=mde), "unit_did")
    power = np.mean([r.p_value < 0.05 and r.estimate > 0 for r in results])
    print(f"MDE {mde:.3g}: detected in {power:.1%} of 200 runs")
    assert 0.72 <= power <= 0.92, (mde, power)


def test_too_few_donors_fall_back_to_did_and_say_so() -> None:
    frame = _region_panel()
    few = frame[frame["unit"].isin(["r0", "r1", "r2", "r3", "r4"])]
    result = analyse(panel_of(few, ["r0"], sim.PRE))
    assert result.method == "did"
    method = _check(result, "method")
    assert "4 untreated units, fewer than the 5" in method.reason and "fell back" in method.reason


def test_bad_panels_are_named_with_the_fix() -> None:
    frame = _region_panel()
    with pytest.raises(HypothesisError, match=r"3 period\(s\) before the pilot start 3"):
        panel_of(frame[frame["period"] < 10], ["r0"], 3)
    with pytest.raises(HypothesisError, match=r"unit 'r2' in period 5; aggregate"):
        panel_of(frame.drop(index=frame.index[(frame["unit"] == "r2") & (frame["period"] == 5)]),
                 ["r0"], sim.PRE)  # fmt: skip
    with pytest.raises(HypothesisError, match=r"treated units \['r9'\] have no rows"):
        panel_of(frame, ["r9"], sim.PRE)
    with pytest.raises(HypothesisError, match="1 untreated unit"):
        panel_of(frame[frame["unit"].isin(["r0", "r1"])], ["r0"], sim.PRE)
    with pytest.raises(HypothesisError, match="no period from the pilot start 99"):
        panel_of(frame, ["r0"], 99)


def test_a_dated_panel_takes_a_date_as_start_and_its_reasons_show_dates() -> None:
    frame = _region_panel()
    frame["period"] = pd.Timestamp("2026-06-01") + pd.to_timedelta(frame["period"], unit="D")
    result = unit_did(panel_of(frame, ["r0"], date(2026, 7, 13)))
    assert result.n_pre == sim.PRE
    assert "fake start at 2026-06-29 gives" in _check(result, "placebo_in_time").reason


def test_unit_panel_aggregates_answers_to_unit_weeks() -> None:
    obs = pd.DataFrame({
        "unit": ["north", "north", "north", "south"],
        "at": pd.to_datetime(["2026-09-07", "2026-09-13T23:00", "2026-09-14", "2026-09-08"],
                            format="ISO8601"),
        "value": [1.0, 3.0, 10.0, 5.0],
    })  # fmt: skip
    cells = unit_panel(obs)
    assert cells.to_dict("records") == [
        {"unit": "north", "period": pd.Timestamp("2026-09-07"), "value": 2.0, "n": 2},
        {"unit": "north", "period": pd.Timestamp("2026-09-14"), "value": 10.0, "n": 1},
        {"unit": "south", "period": pd.Timestamp("2026-09-07"), "value": 5.0, "n": 1},
    ]


def test_assignments_enumerate_every_treated_set_once() -> None:
    masks = assignments(6, 2)
    assert len(masks) == 15 and (masks.sum(1) == 2).all()
    assert len({tuple(m) for m in masks}) == 15
