"""Pain-point ranking recovers the demo's planted order with every component exposed."""

from __future__ import annotations

import pandas as pd
import pytest

from connectors.demo import generate
from tasks.pain_points import backlog, confidence, rank_pain_points
from tests.conftest import cx_data


@pytest.mark.parametrize("seed", [7, 21, 99])
def test_planted_pain_points_come_out_top_three_in_order(seed: int) -> None:
    company = generate(20_000, seed)
    ranked = rank_pain_points(cx_data(company), {"default": 2.0})
    assert list(ranked["key"][:3]) == company.truth.pain_point_order[:3]


def test_impact_ci_covers_the_planted_nps_gap_of_the_top_pain_points(company, demo_data) -> None:
    ranked = rank_pain_points(demo_data, {"default": 2.0}).set_index("key")
    for key in company.truth.pain_point_order[:3]:
        gap = company.truth.pain_points.loc[key, "nps_gap"]
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
            "key": ["a", "a", "b", "c"],
            "hypothesis": ["h1", "h2", "h3", "h4"],
            "status": ["concluded", "running", "running", "concluded"],
            "decision": ["adopt", None, "inconclusive", "reject"],
        }
    )
    plan = backlog(ranked, links)
    state = plan.drop_duplicates("key").set_index("key")["state"]
    assert state.to_dict() == {"a": "addressed", "b": "piloting", "c": "learned", "d": "open"}
    assert list(plan["key"]) == ["a", "a", "b", "c", "d"]


def test_reach_of_every_topic_matches_the_planted_rate(company, demo_data) -> None:
    ranked = rank_pain_points(demo_data, {"default": 2.0}).set_index("key")
    expected = company.truth.pain_points["reach_share"]
    assert ranked.loc[expected.index, "reach_share"].to_numpy() == pytest.approx(
        expected.to_numpy(), abs=0.01
    )


def test_key_drivers_recover_the_planted_nps_cost_of_each_top_topic(company, demo_data) -> None:
    from tasks.pain_points import key_drivers

    drivers = key_drivers(demo_data).set_index("key")
    for key in company.truth.pain_point_order[:3]:
        gap = company.truth.pain_points.loc[key, "nps_gap"]
        assert drivers.loc[key, "driver_ci_low"] <= gap <= drivers.loc[key, "driver_ci_high"], key
    ranked = rank_pain_points(demo_data, {"default": 2.0}).set_index("key")
    assert ranked.loc["ticket:delivery", "evidence"]["driver_agrees"] is True
