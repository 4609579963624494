"""Pain-point ranking recovers the demo's planted order with every component exposed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from connectors.demo import FUNNEL_PAIN, generate
from tasks.loader import CxData
from tasks.metrics import nps_points
from tasks.pain_points import (
    backlog,
    confidence,
    funnel_leaks,
    key_drivers,
    nps_gaps,
    peak_hours,
    rank_pain_points,
)
from tasks.text import Taxonomy, tag_topics
from tests.conftest import cx_data

FUNNEL = ["visit", "view_item", "add_to_cart", "begin_checkout", "purchase"]


@pytest.mark.parametrize("seed", [7, 21, 99])
def test_planted_pain_points_come_out_top_three_in_order(seed: int) -> None:
    company = generate(20_000, seed)
    ranked = rank_pain_points(cx_data(company), {"default": 2.0})
    assert list(ranked["key"][:3]) == company.truth.planted_order[:3]


def test_impact_ci_covers_the_planted_nps_gap_of_the_top_pain_points(company, demo_data) -> None:
    ranked = rank_pain_points(demo_data, {"default": 2.0}).set_index("key")
    for key in company.truth.planted_order[:3]:
        gap = company.truth.pain_points.loc[key, "impact"]
        assert ranked.loc[key, "impact_ci_low"] <= gap <= ranked.loc[key, "impact_ci_high"], key
        reach = company.truth.pain_points.loc[key, "reach_share"]
        assert ranked.loc[key, "reach_share"] == pytest.approx(reach, abs=0.01), key


def test_score_is_reach_times_impact_times_confidence_over_effort(demo_data) -> None:
    efforts = {"default": 2.0, "ticket:delivery": 8.0}
    ranked = rank_pain_points(demo_data, efforts).set_index("key")
    row = ranked.loc["ticket:delivery"]
    assert row["score"] == pytest.approx(
        row["reach_share"] * 100 * row["impact"] * row["confidence"] / 8.0
    )
    assert not row["effort_is_default"] and ranked.loc["ticket:payment", "effort_is_default"]
    assert list(ranked["rank"]) == list(range(1, len(ranked) + 1))


def test_evidence_carries_counts_and_redacted_verbatims(demo_data) -> None:
    ranked = rank_pain_points(demo_data, {"default": 2.0}).set_index("key")
    evidence = ranked.loc["ticket:delivery", "evidence"]
    assert evidence["tickets"] == (demo_data.tickets["topic"] == "delivery").sum()
    assert evidence["nps_affected"] < evidence["nps_unaffected"]
    assert 1 <= len(evidence["verbatims"]) <= 3


def test_confidence_is_zero_when_the_ci_reaches_zero_or_evidence_is_thin() -> None:
    impact = pd.Series([20.0, 20.0, 5.0, 20.0])
    half = pd.Series([5.0, 25.0, 2.0, 5.0])
    respondents = pd.Series([500, 500, 500, 10])
    assert confidence(impact, half, respondents).tolist() == [0.75, 0.0, 0.6, 0.0]


def test_backlog_marks_each_pain_point_by_where_its_hypotheses_stand() -> None:
    ranked = pd.DataFrame(
        {"rank": [1, 2, 3, 4], "key": list("abcd"), "title": list("ABCD"), "score": [4, 3, 2, 1]}
    )
    links = pd.DataFrame(
        {
            "key": ["a", "a", "b", "c", "seen-in-calls"],
            "hypothesis": ["h1", "h2", "h3", "h4", "h5"],
            "status": ["concluded", "running", "running", "concluded", "draft"],
            "decision": ["adopt", None, "inconclusive", "reject", None],
        }
    )
    plan = backlog(ranked, links)
    state = plan.drop_duplicates("key").set_index("key")["state"]
    assert state.to_dict() == {
        "a": "addressed", "b": "piloting", "c": "learned", "d": "open", "seen-in-calls": "planned"
    }  # fmt: skip
    assert list(plan["key"]) == ["a", "a", "b", "c", "d", "seen-in-calls"]
    new = plan.iloc[-1]
    assert pd.isna(new["rank"]) and pd.isna(new["score"]) and new["title"] == "seen-in-calls"


def test_reach_of_every_planted_pain_point_matches_the_planted_rate(company, demo_data) -> None:
    ranked = rank_pain_points(demo_data, {"default": 2.0}, FUNNEL).set_index("key")
    expected = company.truth.pain_points["reach_share"]
    assert ranked.loc[expected.index, "reach_share"].to_numpy() == pytest.approx(
        expected.to_numpy(), abs=0.01
    )


def test_key_drivers_recover_the_planted_nps_cost_of_each_top_topic(company, demo_data) -> None:
    from tasks.pain_points import key_drivers, latest_nps

    drivers = key_drivers(demo_data.tickets, latest_nps(demo_data)).set_index("key")
    topics = [key for key in company.truth.planted_order if key.startswith("ticket:")]
    for key in [key for key in topics if "@" not in key][:3]:
        gap = company.truth.pain_points.loc[key, "impact"]
        assert drivers.loc[key, "driver_ci_low"] <= gap <= drivers.loc[key, "driver_ci_high"], key
    ranked = rank_pain_points(demo_data, {"default": 2.0}).set_index("key")
    assert ranked.loc["ticket:delivery", "evidence"]["driver_agrees"] is True


@pytest.mark.parametrize("seed", [7, 21])
def test_every_kind_of_planted_pain_point_is_found_with_its_impact(seed: int) -> None:
    company = generate(20_000, seed)
    ranked = rank_pain_points(cx_data(company), {"default": 2.0}, FUNNEL).set_index("key")
    assert list(ranked.index[:3]) == company.truth.planted_order[:3]
    for key in ("region:Siberia", FUNNEL_PAIN.key):
        truth = company.truth.pain_points.loc[key, "impact"]
        assert ranked.loc[key, "impact_ci_low"] <= truth <= ranked.loc[key, "impact_ci_high"], key
        assert ranked.loc[key, "score"] > 0, key
    assert set(ranked["kind"]) >= {"ticket_topic", "region", "funnel_step", "comment_topic"}
    assert ranked.loc[FUNNEL_PAIN.key, "unit"] == "conversion points"
    assert ranked.loc["ticket:delivery", "unit"] == "NPS points"
    comment = ranked[ranked["kind"] == "comment_topic"].iloc[0]
    quotes = pd.Series(comment["evidence"]["verbatims"])
    tags = tag_topics(quotes)
    assert len(quotes) and set(tags["text_index"]) == set(quotes.index)
    assert (tags["topic"] == comment.name.split(":")[1]).any()
    unplanted = ranked[
        ranked.index.str.startswith("funnel:") & ~ranked.index.str.contains(":mobile")
    ]
    assert (unplanted["confidence"] < 0.5).all()


def test_nps_gap_and_its_ci_match_a_direct_welch_comparison() -> None:
    from scipy import stats

    rng = np.random.default_rng(3)
    points = pd.Series(
        rng.choice([-100.0, 0.0, 100.0], 2_000), index=[f"c{i}" for i in range(2_000)]
    )
    members = pd.DataFrame({"key": "k", "customer_id": [f"c{i}" for i in range(0, 1_200, 2)] * 2})
    row = nps_gaps(points, members).iloc[0]
    inside = points.iloc[0:1_200:2]
    outside = points.drop(inside.index)
    assert row["reach"] == 600 and row["respondents"] == 600
    assert row["impact"] == pytest.approx(outside.mean() - inside.mean())
    welch = stats.ttest_ind(outside, inside, equal_var=False)
    ci = welch.confidence_interval(0.95)
    se = (ci.high - ci.low) / (2 * stats.t.ppf(0.975, welch.df))
    z = stats.norm.ppf(0.975)  # a normal interval on Welch's standard error
    assert row["impact_ci_low"] == pytest.approx(row["impact"] - z * se)
    assert row["impact_ci_high"] == pytest.approx(row["impact"] + z * se)


def test_funnel_leak_ci_matches_statsmodels_two_proportion_interval() -> None:
    from statsmodels.stats.proportion import confint_proportions_2indep

    web = pd.DataFrame(
        {
            "step": ["visit", "purchase"] * 3,
            "device": ["mobile", "mobile", "desktop", "desktop", "tablet", "tablet"],
            "value": [1_000.0, 300.0, 800.0, 400.0, 200.0, 90.0],
        }
    )
    leak = funnel_leaks(web, ["visit", "purchase"]).set_index("key").loc["funnel:purchase:mobile"]
    low, high = confint_proportions_2indep(490, 1_000, 300, 1_000, method="wald")
    assert leak["impact"] == pytest.approx(100 * (490 / 1_000 - 300 / 1_000))
    assert leak["impact_ci_low"] == pytest.approx(100 * low)
    assert leak["impact_ci_high"] == pytest.approx(100 * high)
    assert leak["reach"] == 1_000 and leak["reach_share"] == pytest.approx(1_000 / 2_000)


def test_peak_hours_are_those_half_again_busier_than_the_average_hour() -> None:
    hours = [10] * 30 + [11] * 20 + list(range(24)) * 2
    tickets = pd.DataFrame({"created_at": pd.Timestamp("2026-10-01") + pd.to_timedelta(hours, "h")})
    assert peak_hours(tickets) == [10, 11]


def test_comment_topics_no_ticket_covers_become_candidates_per_segment() -> None:
    customers = pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(200)],
            "segment": ["new", "loyal"] * 100,
            "region": "Moscow",
        }
    )
    price = "Цены слишком высокие, дорого"
    responses = pd.DataFrame(
        {
            "customer_id": customers["customer_id"],
            "kind": "nps",
            "score": [2.0 if i < 80 and i % 2 == 0 else 9.0 for i in range(200)],
            "comment": [
                price if i < 80 and i % 2 == 0 else "Delivery was late" for i in range(200)
            ],
            "submitted_at": pd.Timestamp("2026-10-01"),
        }
    )
    tickets = pd.DataFrame(
        {
            "customer_id": ["c1"],
            "topic": ["delivery"],
            "channel": ["chat"],
            "created_at": [pd.Timestamp("2026-10-01")],
            "frt_hours": [1.0],
            "sla_breach": [False],
        }
    )
    empty = pd.DataFrame(columns=["step", "device", "value"])
    data = CxData(customers, tickets, responses, pd.DataFrame(), empty)
    ranked = rank_pain_points(data, {"default": 1.0}).set_index("key")
    row = ranked.loc["comment:price:new"]
    assert row["reach"] == 40 and row["impact"] == pytest.approx(200.0)
    assert row["evidence"]["verbatims"] == [price]
    assert not ranked.index.str.startswith("comment:delivery").any()


def test_ranking_keeps_the_kinds_it_finds_when_others_find_nothing() -> None:
    """No comments, ticket load flat over the day, no funnel: only ticket topics and regions."""
    ids = [f"c{i}" for i in range(200)]
    customers = pd.DataFrame(
        {"customer_id": ids, "segment": ["new", "loyal"] * 100, "region": ["Moscow", "Urals"] * 100}
    )
    responses = pd.DataFrame(
        {
            "customer_id": ids,
            "kind": "nps",
            "score": [2.0 if i < 48 else 9.0 for i in range(200)],
            "comment": None,
            "submitted_at": pd.Timestamp("2026-10-01"),
        }
    )
    tickets = pd.DataFrame(
        {
            "customer_id": ids[:96],
            "topic": ["delivery"] * 48 + ["payment"] * 48,
            "channel": "chat",
            "created_at": pd.Timestamp("2026-10-01") + pd.to_timedelta(np.arange(96) % 24, "h"),
            "frt_hours": 1.0,
            "sla_breach": False,
        }
    )
    empty = pd.DataFrame(columns=["step", "device", "value"])
    ranked = rank_pain_points(CxData(customers, tickets, responses, pd.DataFrame(), empty), {})
    assert set(ranked["kind"]) == {"ticket_topic", "region"}
    assert ranked.iloc[0]["key"] == "ticket:delivery"
    # Commenters whose segment is unknown give no comment candidates (and no crash).
    said = responses.assign(comment="Цены слишком высокие, дорого")
    unknown = customers.assign(segment=None)
    ranked = rank_pain_points(CxData(unknown, tickets, said, pd.DataFrame(), empty), {})
    assert not ranked["kind"].eq("comment_topic").any()
    nothing = CxData(customers, tickets.iloc[:0], responses.iloc[:0], pd.DataFrame(), empty)
    assert rank_pain_points(nothing, {}).empty


def test_a_configured_topic_becomes_a_comment_pain_point() -> None:
    ids = [f"c{i}" for i in range(200)]
    customers = pd.DataFrame({"customer_id": ids, "segment": "new", "region": "Moscow"})
    torn = [i < 60 for i in range(200)]
    responses = pd.DataFrame(
        {
            "customer_id": ids,
            "kind": "nps",
            "score": [3.0 if t else 9.0 for t in torn],
            "comment": ["Упаковка порвана" if t else "Всё хорошо" for t in torn],
            "submitted_at": pd.Timestamp("2026-10-01"),
        }
    )
    empty = pd.DataFrame(columns=["step", "device", "value"])
    tickets = pd.DataFrame(
        {"customer_id": ["c0"], "topic": ["login"], "channel": ["chat"],
         "created_at": [pd.Timestamp("2026-10-01")], "frt_hours": [1.0], "sla_breach": [0.0]}
    )  # fmt: skip
    data = CxData(customers, tickets, responses, pd.DataFrame(), empty)
    assert "comment:packaging:new" not in set(rank_pain_points(data, {}).get("key", []))
    taxonomy = Taxonomy.default({"packaging": {"ru": ["упаковка"]}})
    ranked = rank_pain_points(data, {}, (), taxonomy).set_index("key")
    assert ranked.loc["comment:packaging:new", "reach"] == 60


def _contact_world(seed: int, n: int = 4_000) -> tuple[pd.Series, pd.DataFrame, pd.DataFrame]:
    """Respondents' NPS-like points where contacting support at all costs 30 points and a
    ticket on `a` costs 20 more; `b` and untagged contacts cost nothing beyond contact; new
    customers contact twice as often and score 10 lower."""
    rng = np.random.default_rng(seed)
    ids = pd.Index([f"c{i}" for i in range(n)])
    segment = np.where(rng.random(n) < 0.4, "new", "loyal")
    rate = np.where(segment == "new", 0.6, 0.3)
    a, b, untagged = (rng.random(n) < rate / 2 for _ in range(3))
    contacted = a | b | untagged
    points = rng.normal(40, 30, n) - 30 * contacted - 20 * a - 10 * (segment == "new")
    pairs = pd.concat(
        [
            pd.DataFrame({"customer_id": ids[a], "topic": "a"}),
            pd.DataFrame({"customer_id": ids[b], "topic": "b"}),
            pd.DataFrame({"customer_id": ids[untagged], "topic": None}),
        ],
        ignore_index=True,
    )
    covariates = pd.DataFrame(
        {"segment": segment, "region": rng.choice(["R1", "R2"], n)}, index=ids
    )
    return pd.Series(points, index=ids), pairs, covariates


def test_adjusted_impact_is_the_statsmodels_regression_on_topics_contact_segment_region() -> None:
    import statsmodels.api as sm

    from tasks.comparable import adjusted_impacts

    points, pairs, covariates = _contact_world(1, 600)
    table = adjusted_impacts(points, pairs, covariates).set_index("topic")
    tagged = pairs.dropna()
    design = pd.DataFrame(
        {
            "a": points.index.isin(tagged.loc[tagged["topic"] == "a", "customer_id"]),
            "b": points.index.isin(tagged.loc[tagged["topic"] == "b", "customer_id"]),
            "contacted": points.index.isin(pairs["customer_id"]),
            "new": covariates["segment"].to_numpy() == "new",
            "r2": covariates["region"].to_numpy() == "R2",
        },
        index=points.index,
    ).astype(float)
    fit = sm.OLS(points, sm.add_constant(design)).fit(cov_type="HC1")
    low, high = fit.conf_int().loc["a"]
    assert table.loc["a", "impact"] == pytest.approx(-fit.params["a"], abs=1e-6)
    assert table.loc["a", "impact_ci_low"] == pytest.approx(-high, abs=1e-6)
    assert table.loc["a", "impact_ci_high"] == pytest.approx(-low, abs=1e-6)
    assert table["contact_adjusted"].all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_robust_ols_is_statsmodels_hc1_on_skewed_heteroscedastic_data(seed: int) -> None:
    import statsmodels.api as sm

    from tasks.comparable import robust_ols

    rng = np.random.default_rng(seed)
    x = np.column_stack([np.ones(2_000), rng.random((2_000, 4)) < [0.02, 0.3, 0.5, 0.9]])
    y = x @ rng.normal(0, 30, 5) + rng.exponential(1 + 40 * x[:, 1], 2_000)
    params, se = robust_ols(y, x.astype(float))
    fit = sm.OLS(y, x.astype(float)).fit(cov_type="HC1")
    np.testing.assert_allclose(params, fit.params, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(se, fit.bse, rtol=1e-9)


def test_key_drivers_are_the_statsmodels_hc1_regression_on_topic_indicators() -> None:
    import statsmodels.api as sm

    rng = np.random.default_rng(5)
    ids = [f"c{i}" for i in range(800)]
    latest = pd.DataFrame({"customer_id": ids, "score": rng.integers(0, 11, 800).astype(float)})
    raised = rng.random(800) < 0.5
    tickets = pd.DataFrame(
        {
            "customer_id": np.array(ids, dtype=object)[raised],
            "topic": rng.choice(["billing", "delivery", "login"], raised.sum()),
        }
    )
    drivers = key_drivers(tickets, latest).set_index("key")
    design = pd.DataFrame(
        {t: latest["customer_id"].isin(tickets.loc[tickets["topic"] == t, "customer_id"])
         for t in ["billing", "delivery", "login"]}
    ).astype(float)  # fmt: skip
    fit = sm.OLS(nps_points(latest["score"]), sm.add_constant(design)).fit(cov_type="HC1")
    ci = fit.conf_int()
    for topic in ["billing", "delivery", "login"]:
        row = drivers.loc[f"ticket:{topic}"]
        assert row["driver_impact"] == pytest.approx(-fit.params[topic], abs=1e-6)
        assert row["driver_ci_low"] == pytest.approx(-ci.loc[topic, 1], abs=1e-6)
        assert row["driver_ci_high"] == pytest.approx(-ci.loc[topic, 0], abs=1e-6)
        assert row["driver_p"] == pytest.approx(fit.pvalues[topic], rel=1e-6)


def test_raw_gap_is_biased_when_contact_itself_costs_nps_and_adjusted_is_not() -> None:
    from tasks.comparable import adjusted_impacts

    raw, adjusted = [], []
    for seed in range(40):
        points, pairs, covariates = _contact_world(seed)
        members = pairs.dropna().assign(key="ticket:" + pairs["topic"].dropna())
        raw.append(nps_gaps(points, members).set_index("key").loc["ticket:a", "impact"])
        adjusted.append(
            adjusted_impacts(points, pairs, covariates).set_index("topic").at["a", "impact"]
        )
    se = np.std(adjusted) / np.sqrt(len(adjusted))
    assert abs(np.mean(adjusted) - 20) < 3 * se  # unbiased for the planted 20 points
    assert np.mean(raw) - 20 > 10  # the raw gap also counts contacting support at all


def test_contact_term_is_left_out_when_every_contact_has_exactly_one_topic() -> None:
    from tasks.comparable import adjusted_impacts

    points, pairs, covariates = _contact_world(2, 1_000)
    single = pairs.dropna().drop_duplicates("customer_id")
    table = adjusted_impacts(points, single, covariates)
    assert not table["contact_adjusted"].any() and set(table["topic"]) == {"a", "b"}


def test_revenue_at_stake_equals_a_hand_computation() -> None:
    from tasks.money import PointValue, revenue_at_stake

    latest = pd.DataFrame(
        {"customer_id": [f"c{i}" for i in range(8)], "score": [10, 9, 10, 9, 2, 3, 5, 8]}
    )
    orders = pd.DataFrame(
        {"customer_id": ["c0", "c1", "c2", "c3", "c4", "c5", "c0"],
         "amount": [600.0, 1_000, 1_000, 1_000, 300, 300, 400]}
    )  # fmt: skip
    value = PointValue.from_orders(orders, latest)
    # promoters c0-c3 spend 1,000 each; detractors c4-c6 spend (300 + 300 + 0) / 3 = 200
    assert value.per_nps_point == pytest.approx((1_000 - 200) / 200)
    reach = pd.Series([50, 1_000, 10])
    impact = pd.Series([12.0, 2.5, -4.0])
    unit = pd.Series(["NPS points", "conversion points", "NPS points"])
    money = revenue_at_stake(reach, impact, unit, value)
    aov = orders["amount"].mean()
    assert money.tolist() == pytest.approx([50 * 12 * 4.0, 1_000 * 2.5 / 100 * aov, 0.0])
    configured = PointValue.from_orders(orders, latest, configured=1.5)
    assert revenue_at_stake(reach[:1], impact[:1], unit[:1], configured)[0] == 50 * 12 * 1.5


def test_revenue_sits_beside_nps_and_ranking_by_revenue_needs_orders(demo_data) -> None:
    from connectors.errors import ConfigError

    ranked = rank_pain_points(demo_data, {"default": 2.0}).set_index("key")
    row = ranked.loc["ticket:delivery"]
    assert row["revenue_at_stake"] >= 0 and "revenue_formula" in row["evidence"]
    by_revenue = rank_pain_points(
        demo_data, {"default": 2.0}, ranking="revenue", value_per_point=3.0
    )
    top = by_revenue.iloc[0]
    assert top["revenue_at_stake"] == pytest.approx(top["reach"] * top["impact"] * 3.0)
    unexplained = by_revenue[by_revenue["explained_by"].isna()]  # explained ones come last
    assert unexplained["revenue_score"].is_monotonic_decreasing
    no_orders = CxData(demo_data.customers, demo_data.tickets, demo_data.responses,
                       demo_data.orders.iloc[:0], demo_data.web)  # fmt: skip
    with pytest.raises(ConfigError, match=r"ranking\.by: revenue needs orders"):
        rank_pain_points(no_orders, {}, ranking="revenue")


def test_a_topic_with_linked_post_contact_answers_is_judged_on_them() -> None:
    ids = [f"c{i}" for i in range(200)]
    customers = pd.DataFrame({"customer_id": ids, "segment": "new", "region": "Moscow"})
    topics = ["delivery"] * 100 + ["payment"] * 100
    tickets = pd.DataFrame(
        {
            "source_id": [f"t{i}" for i in range(200)],
            "customer_id": ids,
            "topic": topics,
            "channel": "chat",
            "created_at": pd.Timestamp("2026-10-01"),
            "frt_hours": 1.0,
            "sla_breach": 0.0,
        }
    )
    late = [i < 100 and i % 2 == 0 for i in range(200)]
    responses = pd.DataFrame(
        {
            "customer_id": ids,
            "ticket_id": tickets["source_id"],
            "kind": "nps",
            "score": [2.0 if bad else 9.0 for bad in late],
            "comment": ["Nothing arrived, awful" if bad else None for bad in late],
            "submitted_at": pd.Timestamp("2026-10-02"),
        }
    )
    empty = pd.DataFrame(columns=["step", "device", "value"])
    data = CxData(customers, tickets, responses, pd.DataFrame(), empty)
    row = rank_pain_points(data, {}).set_index("key").loc["ticket:delivery"]
    assert row["impact"] == pytest.approx(100.0 - 0.0)  # payment's answers 100, delivery's 0
    assert row["evidence"]["impact_method"].startswith("post-contact answers")
    # The comment names no topic, but it is an answer about a delivery ticket.
    assert row["evidence"]["verbatims"] == ["Nothing arrived, awful"]
    assert row["evidence"]["verbatim_sources"] == ["survey about the ticket"]
