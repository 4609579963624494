"""Pilot statistics: DiD against cell means and statsmodels, coverage, SRM, demo decisions;
stored assignments."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from connectors.arms import assign_arms
from connectors.errors import HypothesisError
from flows.experiments import fading_alert
from tasks import store
from tasks.experiments import (
    Z80,
    Estimate,
    always_valid,
    analysis_of,
    assignments,
    critical_multiple,
    cuped,
    did,
    elapsed_share,
    evaluate,
    holm,
    holm_adjusted,
    noninferiority_p,
    planned,
    response_check,
    rollout_watch,
    srm_p_value,
    tuned_tau2,
)
from tasks.hypotheses import (
    Assignment,
    Decision,
    Guardrail,
    Hypothesis,
    Period,
    Population,
    load_hypothesis,
)
from tasks.labels import alert_text, labels, reason_text
from tasks.loader import CxData
from tasks.metrics import observations, with_ticket_measures
from tasks.pilot_store import save_assignments
from tests.conftest import REPO

BASE = Period(start=date(2026, 9, 1), end=date(2026, 9, 30))
PILOT = Period(start=date(2026, 10, 1), end=date(2026, 10, 31))


def _panel(rng: np.random.Generator, customers: int, effect: float, log: bool = False) -> tuple:
    ids = pd.Series([f"C{i}" for i in range(customers)])
    arms = pd.DataFrame({"customer_id": ids, "arm": assign_arms(ids, "salt", 0.5)})
    level = rng.normal(0, 1, customers)  # a customer effect: observations cluster
    rows = []
    for at, post in ((pd.Timestamp("2026-09-10"), 0), (pd.Timestamp("2026-10-10"), 1)):
        for _ in range(2):
            noise = rng.normal(0, 1, customers)
            treated = (arms["arm"] == "pilot").to_numpy() * post
            y = 3 + level + 0.3 * post + noise
            y = np.exp(y / 3) * np.where(treated, 1 + effect, 1) if log else y + treated * effect
            rows.append(pd.DataFrame({"customer_id": ids, "at": at, "value": y}))
    return pd.concat(rows, ignore_index=True), arms


def test_did_equals_difference_of_cell_means_and_statsmodels_cluster_se() -> None:
    import statsmodels.formula.api as smf

    obs, arms = _panel(np.random.default_rng(1), 400, effect=0.5)
    est = did("y", obs, arms, BASE, PILOT)
    cells = est.cells.set_index(["arm", "period"])["mean"]
    by_hand = (cells["pilot", "pilot period"] - cells["pilot", "baseline"]) - (
        cells["control", "pilot period"] - cells["control", "baseline"]
    )
    assert est.value == pytest.approx(by_hand, abs=1e-9)
    frame = obs.merge(arms, on="customer_id")
    frame["treated"] = (frame["arm"] == "pilot").astype(int)
    frame["post"] = (frame["at"] >= pd.Timestamp("2026-10-01")).astype(int)
    groups = pd.factorize(frame["customer_id"])[0]
    ref = smf.ols("value ~ treated * post", frame).fit(
        cov_type="cluster", cov_kwds={"groups": groups}
    )
    assert est.se == pytest.approx(ref.bse["treated:post"], rel=1e-6)
    assert est.p_value == pytest.approx(ref.pvalues["treated:post"], rel=1e-6)


def test_relative_did_ci_covers_a_known_multiplicative_effect_in_95_percent_of_runs() -> None:
    rng = np.random.default_rng(7)
    covered = 0
    runs = 1000
    for _ in range(runs):
        obs, arms = _panel(rng, 100, effect=-0.4, log=True)
        est = did("frt", obs, arms, BASE, PILOT, "ratio")
        covered += est.ci_low <= -0.4 <= est.ci_high
    assert covered / runs >= 0.93


def test_assignment_is_deterministic_and_splits_at_the_share() -> None:
    ids = pd.Series([f"C{i:07d}" for i in range(50_000)])
    first, again = assign_arms(ids, "s1", 0.3), assign_arms(ids, "s1", 0.3)
    assert (first == again).all()
    assert (first == "pilot").mean() == pytest.approx(0.3, abs=0.01)
    assert (assign_arms(ids, "s2", 0.3) != first).any()


def test_rerunning_a_pilot_writes_only_the_assignments_that_are_new_or_changed(
    store_url: str,
) -> None:
    h = load_hypothesis(REPO / "hypotheses" / "auto-route-tickets.yaml")
    ids = pd.Series([f"C{i}" for i in range(1000)])
    arms = pd.DataFrame({"customer_id": ids, "arm": assign_arms(ids, "s", 0.5)})
    engine = store.open_store(store_url)
    assert save_assignments(store_url, h, arms) == 1000
    first = store.read_frame(engine, store.Assignment)
    assert save_assignments(store_url, h, arms) == 0
    pd.testing.assert_frame_equal(store.read_frame(engine, store.Assignment), first)

    changed = pd.concat([arms, pd.DataFrame({"customer_id": ["C1000"], "arm": ["pilot"]})])
    changed.iloc[0, 1] = "control" if arms["arm"].iloc[0] == "pilot" else "pilot"
    assert save_assignments(store_url, h, changed) == 2
    stored = store.read_frame(engine, store.Assignment)
    assert stored.set_index("customer_id")["arm"].to_dict() == dict(changed.to_numpy().tolist())
    ids = stored.set_index("customer_id")["id"]
    assert ids[first["customer_id"]].tolist() == first["id"].tolist()  # updated in place

    other = h.model_copy(update={"id": "other"})
    assert save_assignments(store_url, other, changed) == 1001
    pilot = Period(start=date(2026, 10, 8), end=date(2026, 10, 31))
    moved = h.model_copy(update={"schedule": h.schedule.model_copy(update={"pilot": pilot})})
    assert save_assignments(store_url, moved, changed) == 1001
    assert save_assignments(store_url, moved, changed) == 0
    stored = store.read_frame(engine, store.Assignment, where={"hypothesis_id": h.id})
    assert (stored["assigned_at"] == pd.Timestamp("2026-10-08")).all()

    narrowed = changed.iloc[100:]  # the population lost its first hundred customers
    assert save_assignments(store_url, moved, narrowed) == 0
    stored = store.read_frame(engine, store.Assignment, where={"hypothesis_id": h.id})
    assert sorted(stored["customer_id"]) == sorted(narrowed["customer_id"])
    assert len(store.read_frame(engine, store.Assignment, where={"hypothesis_id": "other"})) == 1001


def test_a_customer_assigned_twice_keeps_the_last_arm_on_every_run(store_url: str) -> None:
    h = load_hypothesis(REPO / "hypotheses" / "auto-route-tickets.yaml")
    twice = pd.DataFrame({"customer_id": ["C1", "C1"], "arm": ["pilot", "control"]})
    for _ in range(2):
        save_assignments(store_url, h, twice)
        stored = store.read_frame(store.open_store(store_url), store.Assignment)
        assert stored["arm"].tolist() == ["control"]  # as upserting both rows in order leaves it


def test_srm_check_flags_a_ten_percent_imbalance_but_not_a_fair_split() -> None:
    ids = pd.Series([f"C{i}" for i in range(20_000)])
    fair = pd.DataFrame({"customer_id": ids, "arm": assign_arms(ids, "x", 0.5)})
    assert srm_p_value(fair, 0.5) > 0.001
    pilots = fair.index[fair["arm"] == "pilot"]
    skewed = fair.drop(pilots[: len(pilots) // 10])
    assert srm_p_value(skewed, 0.5) < 0.001


def test_demo_effective_pilot_is_adopted_with_cis_covering_the_planted_effects(
    company, demo_data
) -> None:
    h = load_hypothesis(REPO / "hypotheses" / "auto-route-tickets.yaml")
    result = evaluate(h, demo_data)
    truth = company.truth.pilots[h.id]
    assert result.decision == "adopt", result.reason
    assert result.primary.ci_low <= truth["frt_hours"] <= result.primary.ci_high
    (nps,) = result.secondary
    assert nps.ci_low <= truth["nps"] <= nps.ci_high
    assert result.srm_p > 0.001


def test_a_stream_losing_part_of_one_arm_is_caught_as_a_sample_ratio_mismatch(demo_data) -> None:
    h = load_hypothesis(REPO / "hypotheses" / "auto-route-tickets.yaml")
    arms = evaluate(h, demo_data).arms.set_index("customer_id")["arm"]
    tickets = demo_data.tickets
    in_pilot = tickets["customer_id"].map(arms).eq("pilot") & (
        tickets["created_at"] >= "2026-10-01"
    )
    lost = in_pilot & (pd.util.hash_array(tickets["customer_id"].to_numpy()) % 4 == 0)
    damaged = CxData(
        demo_data.customers, tickets[~lost], demo_data.responses, demo_data.orders, demo_data.web
    )
    result = evaluate(h, damaged)
    assert result.srm_p < 0.001 and result.decision == "inconclusive"
    assert "sample ratio mismatch" in result.reason


def test_demo_null_pilot_is_not_adopted(demo_data) -> None:
    h = load_hypothesis(REPO / "hypotheses" / "chat-greeting-script.yaml")
    result = evaluate(h, demo_data)
    assert result.decision != "adopt", result.reason
    assert result.primary.ci_low <= 0 <= result.primary.ci_high


def _running_estimates(rng: np.random.Generator, runs: int, looks: int, effect: float) -> tuple:
    """Estimates of a mean difference after each daily batch, with their standard errors."""
    per_look = 50
    diffs = rng.normal(effect, 1.0, size=(runs, looks, per_look)).sum(axis=2).cumsum(axis=1)
    n = per_look * np.arange(1, looks + 1)
    return diffs / n, np.sqrt(1.0 / n)


def _estimate(coef: float, se: float) -> Estimate:
    low, high = coef - 1.96 * se, coef + 1.96 * se
    p = 2 * stats.norm.sf(abs(coef / se))
    return Estimate("m", False, coef, se, low, high, p, pd.DataFrame(), 0, 0)


def test_daily_peeking_with_always_valid_p_keeps_false_positives_at_alpha() -> None:
    coefs, ses = _running_estimates(np.random.default_rng(3), runs=1000, looks=30, effect=0.0)
    naive = sequential = 0
    for run in range(1000):
        looks = [_estimate(c, s) for c, s in zip(coefs[run], ses, strict=True)]
        naive += any(e.p_value < 0.05 for e in looks)
        sequential += any(always_valid(e, 0.05, tau2=0.2**2).p_value < 0.05 for e in looks)
    assert naive / 1000 > 0.10  # peeking at fixed-horizon p-values inflates errors…
    assert sequential / 1000 <= 0.055  # …always-valid ones do not


def test_always_valid_ci_covers_the_truth_at_every_look() -> None:
    coefs, ses = _running_estimates(np.random.default_rng(4), runs=1000, looks=30, effect=0.3)
    half = [always_valid(_estimate(0.0, s), 0.05, tau2=0.3**2).high for s in ses]
    covered = (np.abs(coefs - 0.3) <= np.array(half)).all(axis=1).mean()
    assert covered >= 0.95


def test_aa_pilots_are_significant_in_at_most_5_5_percent_of_1000_runs() -> None:
    rng = np.random.default_rng(11)
    false_positives = sum(
        did("y", *_panel(rng, 60, effect=0.0), BASE, PILOT).p_value < 0.05 for _ in range(1000)
    )
    assert false_positives / 1000 <= 0.055


def test_holm_adjusts_secondary_p_values_upwards_in_order() -> None:
    raw = [_estimate(c, 1.0) for c in (2.5, 2.2, 0.3)]
    adjusted = holm(raw)
    p = sorted(e.p_value for e in raw)
    assert [e.p_value for e in adjusted] == pytest.approx([3 * p[0], 2 * p[1], p[2]], rel=1e-9)


def test_customers_in_an_earlier_concurrent_pilot_are_left_out_unless_overlap_allowed() -> None:
    customers = pd.DataFrame(
        {"customer_id": [f"C{i}" for i in range(1000)], "segment": ["loyal", "new"] * 500}
    )
    first = load_hypothesis(REPO / "hypotheses" / "auto-route-tickets.yaml")
    later = first.model_copy(
        update={
            "id": "later",
            "population": first.population.model_copy(update={"segment": ["loyal", "new"]}),
            "schedule": first.schedule.model_copy(
                update={"pilot": Period(start=date(2026, 10, 15), end=date(2026, 11, 15))}
            ),
        }
    )
    arms = assignments(later, customers, [first, later])
    assert set(customers.set_index("customer_id").loc[arms["customer_id"], "segment"]) == {"new"}
    shared = later.model_copy(
        update={"assignment": later.assignment.model_copy(update={"overlap": True})}
    )
    assert len(assignments(shared, customers, [first, shared])) == 1000
    assert len(assignments(first, customers, [first, later])) == 500


def test_planned_mde_is_the_sequential_tests_and_warns(demo_data) -> None:
    h = load_hypothesis(REPO / "hypotheses" / "chat-greeting-script.yaml")
    result = evaluate(h, demo_data)
    fixed_rules = h.decision.model_copy(update={"sequential": False})
    fixed = planned(h.model_copy(update={"decision": fixed_rules}), demo_data, result.arms)
    plan = result.plan
    assert plan.se == pytest.approx(fixed.se, rel=1e-12)  # the same placebo pilot
    assert plan.mde / fixed.mde == pytest.approx((plan.critical + Z80) / (1.959964 + Z80), 1e-5)
    assert plan.critical == pytest.approx(critical_multiple(1.0, tuned_tau2(1.0, 1, 0.05), 0.05))
    # at `days` the expected effect has 80% power: the standard error shrinks as 1 / √days
    se_then = plan.se * np.sqrt(31 / plan.days)
    assert stats.norm.cdf(0.3 / se_then - plan.critical) == pytest.approx(0.8, abs=1e-9)
    assert plan.mde > 0.3 and "smaller than this pilot can detect" in result.warnings[0]
    assert plan.text() in result.warnings[0] and "days" in plan.text()


def test_segment_pilot_compares_one_region_with_another_and_recovers_the_effect(
    demo_data,
) -> None:
    base = load_hypothesis(REPO / "hypotheses" / "auto-route-tickets.yaml")
    regional = base.model_copy(
        update={
            "assignment": Assignment(
                method="segment",
                pilot=Population(region=["Moscow"]),
                control=Population(region=["Volga", "South"]),
            )
        }
    )
    arms = assignments(regional, demo_data.customers)
    region = demo_data.customers.set_index("customer_id").loc[arms["customer_id"], "region"]
    assert set(region[arms["arm"].to_numpy() == "pilot"]) == {"Moscow"}
    assert set(region[arms["arm"].to_numpy() == "control"]) == {"Volga", "South"}
    result = evaluate(regional, demo_data)
    assert np.isnan(result.srm_p)  # no planned split to check
    # the demo's routing pilot runs inside both regions alike, so the regions' DiD is ~0
    assert result.primary.ci_low <= 0 <= result.primary.ci_high


def test_segment_assignment_without_groups_is_an_error() -> None:
    with pytest.raises(ValueError, match="method segment needs pilot and control"):
        Assignment(method="segment", pilot=Population(region=["Moscow"]))
    with pytest.raises(ValueError, match="method hash needs pilot_share"):
        Assignment(method="hash", salt="x")


def _frt_world(after_rollout_hours: float) -> tuple:
    """Tickets of 400 customers: a pilot that cut FRT from 6 h to 3.6 h, then a rollout."""
    rng = np.random.default_rng(2)
    ids = pd.Series([f"C{i}" for i in range(400)])
    h = load_hypothesis(REPO / "hypotheses" / "auto-route-tickets.yaml").model_copy(
        update={"population": Population(), "rollout": date(2026, 11, 1)}
    )
    arms = assignments(h, pd.DataFrame({"customer_id": ids}))
    pilot = set(arms.loc[arms["arm"] == "pilot", "customer_id"])
    rows = []
    for day, phase in ((15, "pilot"), (45, "after")):
        created = pd.Timestamp("2026-10-01") + pd.Timedelta(days=day)
        for cid in ids:
            hours = 6.0 if phase == "pilot" and cid not in pilot else 3.6
            hours = after_rollout_hours if phase == "after" else hours
            rows.append((cid, created, hours * np.exp(rng.normal(0, 0.3))))
    t = pd.DataFrame(rows, columns=["customer_id", "created_at", "frt"])
    tickets = t.assign(
        first_response_at=t["created_at"] + pd.to_timedelta(t["frt"], unit="h"),
        resolved_at=t["created_at"] + pd.to_timedelta(t["frt"] + 1, unit="h"),
        reopened=False,
        channel="email",
        topic="delivery",
    ).drop(columns="frt")
    empty = pd.DataFrame()
    data = CxData(
        pd.DataFrame({"customer_id": ids}), with_ticket_measures(tickets), empty, empty, empty
    )
    return h, data, arms


def test_rollout_watch_flags_a_gain_that_fades_and_not_one_that_holds() -> None:
    h, data, arms = _frt_world(after_rollout_hours=5.6)
    faded = rollout_watch(h, data, arms)
    assert faded.fading and faded.retained < 0.2 and faded.n == 400
    assert faded.pilot_level == pytest.approx(3.6, rel=0.05)
    alert = fading_alert(h, faded, pd.Period("2026-11", "M"))
    assert alert.message.startswith("Since the rollout of auto-route-tickets on 2026-11-01 only ")
    russian = alert_text(alert.kind, alert.period, alert.evidence, labels("ru"))
    retained = f"сохранилось лишь {faded.retained:.0%} эффекта пилота"
    assert f"{retained} по метрике «Время первого ответа» (сейчас " in russian
    h, data, arms = _frt_world(after_rollout_hours=3.6)
    held = rollout_watch(h, data, arms)
    assert not held.fading and held.retained == pytest.approx(1.0, abs=0.1)


def test_cuped_covers_a_known_effect_and_narrows_the_interval() -> None:
    rng = np.random.default_rng(9)
    covered, widths, naive = 0, [], []
    for _ in range(400):
        obs, arms = _panel(rng, 200, effect=0.5)
        est = cuped("y", obs, arms, BASE, PILOT)
        covered += est.ci_low <= 0.5 <= est.ci_high
        widths.append(est.high - est.low)
        post = obs[obs["at"] >= pd.Timestamp("2026-10-01")].merge(arms, on="customer_id")
        means = post.groupby(["customer_id", "arm"])["value"].mean().groupby("arm")
        naive.append(2 * 1.96 * np.sqrt((means.var() / means.size()).sum()))
    assert covered / 400 >= 0.93
    assert np.mean(widths) < 0.8 * np.mean(naive)  # the baseline soaks up customer effects


def test_a_population_that_matches_nobody_is_an_error_naming_the_file(demo_data) -> None:
    h = load_hypothesis(REPO / "hypotheses" / "auto-route-tickets.yaml")
    nobody = h.model_copy(update={"population": Population(region=["Atlantis"])})
    with pytest.raises(HypothesisError, match=r"auto-route-tickets\.yaml: `population`"):
        evaluate(nobody, demo_data)


WHY = {
    "srm": {"p": 1e-5},
    "guardrail_unproven": {
        "metric": "frt_hours",
        "effect": "-30.0%",
        "low": "-40.0%",
        "high": "-20.0%",
        "metrics": ["csat"],
    },
    "guardrail_unknown": {
        "metric": "frt_hours",
        "effect": "-30.0%",
        "low": "-40.0%",
        "high": "-20.0%",
        "metrics": ["csat"],
    },
    "too_few": {"pilot": 1200, "control": 987, "need": 1500},
    "guardrail": {"metrics": ["csat", "nps"]},
    "as_expected": {"metric": "frt_hours", "effect": "-36.6%", "low": "-47.1%", "high": "-24.0%"},
    "as_expected_unguarded": {
        "metric": "frt_hours",
        "effect": "-36.6%",
        "low": "-47.1%",
        "high": "-24.0%",
    },
    "wrong_way": {"metric": "nps", "effect": "-4.10", "low": "-6.00", "high": "-2.20"},
    "no_change": {"metric": "fcr", "effect": "+1.20", "low": "-0.80", "high": "+3.20"},
}


@pytest.mark.parametrize("language", ["en", "ru"])
@pytest.mark.parametrize("rule", sorted(WHY))
def test_every_decision_rule_is_worded_with_its_numbers(rule: str, language: str) -> None:
    why = {"rule": rule, "sequential": True, "p": 0.0123, "mde": "+2.50", "expected": "+3"}
    words = labels(language)
    text = reason_text(why | WHY[rule], words)
    shown = {k: v for k, v in WHY[rule].items() if k not in ("metric", "metrics", "p")}
    numbers = [f"{v:,}" if isinstance(v, int) else v for v in shown.values()]
    assert all(n in text for n in numbers), text
    if rule not in ("too_few", "guardrail"):
        assert f"p = {(why | WHY[rule])['p']:.2g}" in text
    if rule.startswith("as_expected") or rule in ("wrong_way", "no_change", "guardrail_unproven"):
        assert words[WHY[rule]["metric"]] in text and words["always_valid"] in text
    if rule == "guardrail":
        assert f"{words['csat']}, {words['nps']}" in text
    if rule.startswith("guardrail_"):
        assert words["csat"] in text


def _ticket_world(
    rng: np.random.Generator,
    customers: int,
    pilot_frt: object,
    baseline: bool = True,
    segments: tuple[str, ...] = ("loyal",),
) -> tuple[Hypothesis, CxData, pd.DataFrame]:
    """One ticket per customer and period, FRT log-normal (median 6 h, σ 1.08, a customer
    effect); `pilot_frt(hours, rng)` is what the pilot arm gets in the pilot period. A hash
    pilot on everyone, with the default (CUPED) analysis."""
    ids = pd.Series([f"C{i}" for i in range(customers)])
    h = load_hypothesis(REPO / "hypotheses" / "auto-route-tickets.yaml").model_copy(
        update={
            "population": Population(),
            "guardrails": [],
            "secondary_metrics": [],
            "decision": Decision(),
        }
    )
    arms = assignments(h, pd.DataFrame({"customer_id": ids}))
    in_pilot = ids.isin(arms.loc[arms["arm"] == "pilot", "customer_id"]).to_numpy()
    level = rng.normal(0, 0.5, customers)
    frames = []
    for day, post in (("2026-09-15", False), ("2026-10-15", True)):
        if not (post or baseline):
            continue
        hours = 6.0 * np.exp(level + rng.normal(0, np.sqrt(1.08**2 - 0.25), customers))
        if post:
            hours = np.where(in_pilot, pilot_frt(hours, rng), hours)
        created = pd.Timestamp(day) + pd.to_timedelta(rng.uniform(0, 10, customers), unit="D")
        frames.append(pd.DataFrame({"customer_id": ids, "created_at": created, "frt": hours}))
    t = pd.concat(frames, ignore_index=True)
    tickets = t.assign(
        first_response_at=t["created_at"] + pd.to_timedelta(t["frt"], unit="h"),
        resolved_at=t["created_at"] + pd.to_timedelta(t["frt"] + 1, unit="h"),
        reopened=False,
        channel="email",
        topic="delivery",
    ).drop(columns="frt")
    people = pd.DataFrame({"customer_id": ids, "segment": rng.choice(segments, customers)})
    empty = pd.DataFrame()
    return h, CxData(people, with_ticket_measures(tickets), NO_ANSWERS, empty, empty), arms


NO_ANSWERS = pd.DataFrame(
    {
        "customer_id": pd.Series(dtype=str),
        "kind": pd.Series(dtype=str),
        "score": pd.Series(dtype=float),
        "submitted_at": pd.Series(dtype="datetime64[ns]"),
        "survey": pd.Series(dtype=str),
        "channel": pd.Series(dtype=str),
        "comment": pd.Series(dtype=str),
    }
)


def test_new_customers_without_baseline_get_a_finite_post_period_estimate_covering_the_truth():
    h, data, _ = _ticket_world(np.random.default_rng(5), 3000, lambda f, _: f * 0.5, False)
    for analysis in ("cuped", "did"):
        rules = Decision(analysis=analysis)
        result = evaluate(h.model_copy(update={"decision": rules}), data)
        primary = result.primary
        assert primary.analysis == "post_only" and np.isfinite(primary.value), analysis
        assert primary.ci_low <= -0.5 <= primary.ci_high, (analysis, primary)
        assert result.decision == "adopt", result.reason
        assert any("no baseline data" in w for w in result.warnings)
        assert np.isnan(result.plan.mde) and "no baseline" in result.plan.text()


def test_auto_answered_tickets_at_zero_frt_give_mean_and_median_lifts_that_cover_the_truth():
    def auto_answer(hours: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.where(rng.random(len(hours)) < 0.1, 0.0, hours)

    h, data, arms = _ticket_world(np.random.default_rng(6), 8000, auto_answer)
    result = evaluate(h, data)
    assert analysis_of(h) == "cuped" and result.primary.estimand == "ratio"
    assert result.primary.ci_low <= -0.10 <= result.primary.ci_high, result.primary
    median_truth = np.exp(1.08 * stats.norm.ppf(0.4 / 0.9)) - 1  # 10% of mass moved to 0
    assert median_truth == pytest.approx(-0.14, abs=0.005)
    median, p90 = result.quantiles
    assert (median.quantile, p90.quantile) == (0.5, 0.9)
    assert median.low <= median_truth <= median.high, median
    p90_truth = np.exp(1.08 * (stats.norm.ppf(0.8 / 0.9) - stats.norm.ppf(0.9))) - 1
    assert p90.low <= p90_truth <= p90.high, p90
    assert evaluate(h, data).quantiles == result.quantiles  # the bootstrap is seeded
    with pytest.raises(HypothesisError, match="log-scale estimand needs positive values"):
        cuped("frt_hours", observations("frt_hours", data), arms, BASE, PILOT, "log_ratio")


def test_cuped_equals_regression_adjustment_by_statsmodels_and_gbstats_formulas() -> None:
    import statsmodels.api as sm
    from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

    obs, arms = _panel(np.random.default_rng(3), 500, effect=0.5)
    obs["value"] += 5  # a positive control mean for the relative effect
    frame = obs.merge(arms, on="customer_id")
    frame["post"] = frame["at"] >= pd.Timestamp(PILOT.start)
    means = frame.groupby(["customer_id", "arm", "post"])["value"].mean().unstack("post")
    means = means.reset_index()
    x, y = means[False], means[True]
    theta = sm.OLS(y, sm.add_constant(x)).fit().params[False]  # pooled slope: gbstats' θ
    adjusted = y - theta * (x - x.mean())
    pilot, control = (DescrStatsW(adjusted[means["arm"] == a]) for a in ("pilot", "control"))
    compared = CompareMeans(pilot, control)
    est = cuped("y", obs, arms, BASE, PILOT)
    assert est.analysis == "cuped" and est.n_pilot == pilot.nobs
    assert est.coef == pytest.approx(pilot.mean - control.mean, abs=1e-9)
    assert est.se == pytest.approx(compared.std_meandiff_separatevar, abs=1e-9)
    ratio = cuped("y", obs, arms, BASE, PILOT, "ratio")
    y_pilot, y_control = (y[means["arm"] == a].mean() for a in ("pilot", "control"))
    var = pilot.var_ddof(1) / (y_control**2 * pilot.nobs) + control.var_ddof(1) * y_pilot**2 / (
        y_control**4 * control.nobs
    )  # gbstats' frequentist_variance, relative, on the adjusted statistics
    assert ratio.coef == pytest.approx((pilot.mean - control.mean) / y_control, abs=1e-9)
    assert ratio.se == pytest.approx(np.sqrt(var), abs=1e-9)


def test_cuped_is_the_default_for_hash_splits_and_the_unit_analysis_for_segment_splits() -> None:
    h = load_hypothesis(REPO / "hypotheses" / "auto-route-tickets.yaml")
    explicit = h.model_copy(update={"decision": Decision(analysis="did")})
    assert analysis_of(explicit) == "did"  # what the file says wins
    default = h.model_copy(update={"decision": Decision()})
    assert analysis_of(default) == "cuped"
    regional = default.model_copy(
        update={
            "assignment": Assignment(
                method="segment",
                pilot=Population(region=["Moscow"]),
                control=Population(region=["Volga"]),
            )
        }
    )
    assert analysis_of(regional) == "auto"
    listed = default.model_copy(
        update={"assignment": Assignment(method="list", pilot="p.csv", control="rest")}
    )
    assert analysis_of(listed) == "did"


def test_min_per_arm_counts_customers_for_did_and_cuped() -> None:
    obs, arms = _panel(np.random.default_rng(1), 400, effect=0.5)  # two rows per period each
    customers = arms["arm"].value_counts()
    for est in (did("y", obs, arms, BASE, PILOT), cuped("y", obs, arms, BASE, PILOT)):
        assert (est.n_pilot, est.n_control) == (customers["pilot"], customers["control"])


def test_always_valid_interval_is_gbstats_sequential_interval_at_the_planned_sample() -> None:
    se, n, alpha = 0.07, 900, 0.05
    s2 = se**2 * n  # gbstats' per-unit variance, tuned for N = n
    rho2 = (-2 * np.log(alpha) + np.log(-2 * np.log(alpha) + 1)) / n
    width = np.sqrt(s2) * np.sqrt(
        2 * (n * rho2 + 1) * np.log(np.sqrt(n * rho2 + 1) / alpha) / (n**2 * rho2)
    )
    est = always_valid(_estimate(0.3, se), alpha, tuned_tau2(se, 1.0, alpha))
    assert est.high - est.coef == pytest.approx(width, rel=1e-12)
    evalue = np.exp(rho2 * 0.3**2 * n / se**2 / (2 * (n * rho2 + 1))) / np.sqrt(n * rho2 + 1)
    assert est.p_value == pytest.approx(1 / evalue, rel=1e-12)
    assert est.mde(alpha) == pytest.approx((width / se + Z80) * se, rel=1e-12)


def test_evaluate_tunes_the_always_valid_test_to_the_share_of_the_pilot_run(demo_data) -> None:
    h = load_hypothesis(REPO / "hypotheses" / "auto-route-tickets.yaml")
    h = h.model_copy(update={"decision": Decision(analysis="did", adjust_for=["channel"])})
    result = evaluate(h, demo_data)
    raw = did(
        "frt_hours",
        observations("frt_hours", demo_data),
        result.arms,
        h.schedule.baseline,
        h.schedule.pilot,
        "ratio",
        0.05,
        h.decision.adjust_for,
    )
    share = elapsed_share(h, demo_data)
    expected = always_valid(raw, 0.05, tuned_tau2(raw.se, share, 0.05))
    assert (result.primary.coef, result.primary.low) == pytest.approx((expected.coef, expected.low))
    assert result.primary.tau2 == pytest.approx(expected.tau2)


def test_guardrail_margin_and_its_aliases_say_which_way_is_harm() -> None:
    assert (
        Guardrail(metric="csat", margin=0.2).harm,
        Guardrail(metric="csat", margin=0.2).limit,
    ) == (-1, 0.2)
    assert Guardrail(metric="frt_hours", margin=1.0).harm == 1
    assert Guardrail(metric="csat", max_drop=0.2).harm == -1
    assert Guardrail(metric="frt_hours", max_increase=1.0).harm == 1
    with pytest.raises(ValueError, match="exactly one of margin, max_drop or max_increase"):
        Guardrail(metric="csat", margin=0.2, max_drop=0.2)


def test_guardrails_hold_only_when_the_worse_end_clears_the_margin_holm_adjusted() -> None:
    h, data, _ = _ticket_world(np.random.default_rng(8), 4000, lambda f, _: f * 0.6)
    wide = h.model_copy(update={"guardrails": [Guardrail(metric="art_hours", margin=3.0)]})
    only_wide = evaluate(wide, data)
    (check,) = only_wide.guardrails
    assert check.status == "holds" and check.estimate.sequential and check.estimate.ci_high < 3
    assert only_wide.decision == "adopt", only_wide.reason
    # ART fell: with a drop as the harm, a margin just beyond the estimate is not shown to hold
    drop = check.estimate
    near = Guardrail(metric="art_hours", max_drop=-drop.value + 0.5 * drop.se)
    guarded = h.model_copy(
        update={"guardrails": [*wide.guardrails, near, Guardrail(metric="csat", margin=0.2)]}
    )
    result = evaluate(guarded, data)
    held, unproven, no_data = result.guardrails
    assert held.status == "holds"
    assert unproven.status == "unproven" and unproven.estimate.ci_low < -near.limit
    assert no_data.status == "unknown" and np.isnan(no_data.p_value)
    raw = [noninferiority_p(g.guardrail, g.estimate) for g in result.guardrails]
    adjusted = [g.p_value for g in result.guardrails]
    assert adjusted == pytest.approx(list(holm_adjusted(raw)), nan_ok=True)
    assert adjusted[0] == pytest.approx(2 * raw[0])  # two guardrails with data: Holm doubles
    assert result.decision == "inconclusive" and result.why["rule"] == "guardrail_unknown"


def test_a_response_rate_gap_between_arms_is_flagged_and_reweighting_recovers_the_effect() -> None:
    rng = np.random.default_rng(9)
    ids = pd.Series([f"C{i}" for i in range(20_000)])
    people = pd.DataFrame({"customer_id": ids, "segment": rng.choice(["happy", "grumpy"], 20_000)})
    h = load_hypothesis(REPO / "hypotheses" / "chat-greeting-script.yaml").model_copy(
        update={"population": Population()}
    )
    arms = assignments(h, people)
    pilot = ids.isin(arms.loc[arms["arm"] == "pilot", "customer_id"]).to_numpy()
    happy = (people["segment"] == "happy").to_numpy()
    # the pilot's grumpy customers answer far less often: respondents look happier than they are
    rate = np.where(pilot & ~happy, 0.1, 0.3)
    answered = rng.random(20_000) < rate
    score = np.where(happy, 4.5, 2.5) + rng.normal(0, 0.5, 20_000) + 0.3 * pilot
    responses = pd.DataFrame(
        {
            "customer_id": ids[answered].to_numpy(),
            "kind": "csat",
            "score": score[answered],
            "submitted_at": pd.Timestamp("2026-10-10"),
            "survey": "post",
            "channel": "chat",
            "comment": None,
        }
    )
    empty = pd.DataFrame()
    data = CxData(people, empty, responses, empty, empty)
    check = response_check(h, data, arms)
    assert check.mismatch and check.p_value < 0.01 and check.rates["pilot"] < check.rates["control"]
    (weighted,) = check.reweighted
    assert weighted.analysis == "reweighted" and weighted.ci_low <= 0.3 <= weighted.ci_high
    obs = observations("csat", data).merge(arms, on="customer_id").groupby("arm")["value"].mean()
    assert obs["pilot"] - obs["control"] > 0.6  # unweighted, the gap is more than twice the truth
    balanced = responses[
        rng.random(len(responses)) < np.where(pilot[answered] & ~happy[answered], 1.0, 1 / 3)
    ]
    fair = response_check(h, CxData(people, empty, balanced, empty, empty), arms)
    assert not fair.mismatch and fair.reweighted == []


def test_holm_adjusted_equals_statsmodels_on_random_families_with_ties_and_nan() -> None:
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(11)
    for _ in range(20):  # statsmodels collects garbage on every call: slow, hence few
        p = rng.random(int(rng.integers(1, 9))) ** 3
        p[-1] = p[0] if rng.random() < 0.3 else p[-1]
        assert holm_adjusted(p) == pytest.approx(multipletests(p, method="holm")[1], rel=1e-12)
    assert np.isnan(holm_adjusted([np.nan, 0.01, 0.04])[0])
    assert holm_adjusted([np.nan, 0.01, 0.04])[1:] == pytest.approx([0.02, 0.04])


def test_the_flow_brings_crm_properties_only_when_a_pilots_arms_read_one(store_url: str) -> None:
    from tasks.pilot_store import with_crm_properties

    engine = store.open_store(store_url)
    crm = pd.DataFrame({"source": "crm", "source_id": ["C1", "C2"], "segment": "loyal"})
    crm["attributes"] = [{"ab_autorouting": "pilot"}, {"ab_autorouting": "control"}]
    store.save_rows(engine, store.Customer, crm, ("source", "source_id"))
    customers = pd.DataFrame({"customer_id": ["C2", "C1", "C3"], "segment": "loyal"})
    data = CxData(customers, pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), pd.DataFrame())
    h = load_hypothesis(REPO / "hypotheses" / "auto-route-tickets.yaml")
    assert with_crm_properties(data, store_url, [h]) is data  # a hash split reads none
    marked = Assignment(method="attribute", attribute="ab_autorouting", pilot="pilot",
                        control="control")  # fmt: skip
    routed = h.model_copy(update={"assignment": marked})
    found = with_crm_properties(data, store_url, [routed]).customers
    assert found["attributes"].tolist()[:2] == [{"ab_autorouting": "control"},
                                               {"ab_autorouting": "pilot"}]  # fmt: skip
    assert pd.isna(found["attributes"].iloc[2])
    arms = assignments(routed.model_copy(update={"population": Population()}), found)
    assert arms.set_index("customer_id")["arm"].to_dict() == {"C2": "control", "C1": "pilot"}
