"""The demo company is deterministic, and its shipped hypotheses describe the pilots it runs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from connectors.demo import PILOTS, REGION_PILOTS, generate
from tasks.hypotheses import load_hypotheses

REPO = Path(__file__).resolve().parents[1]


def test_same_seed_same_company_other_seed_other_company() -> None:
    a, b, c = generate(2_000, 1), generate(2_000, 1), generate(2_000, 2)
    for name in a.frames:
        pd.testing.assert_frame_equal(a.frames[name], b.frames[name])
    assert not a.frames["tickets"]["created_at"].equals(c.frames["tickets"]["created_at"])


def test_size_scales_with_customers() -> None:
    small, large = generate(1_000, 3), generate(4_000, 3)
    assert len(large.frames["customers"]) == 4 * len(small.frames["customers"])
    ratio = len(large.frames["tickets"]) / len(small.frames["tickets"])
    assert 3.4 < ratio < 4.6


def test_truth_orders_planted_pain_points_by_reach_times_impact(company) -> None:
    assert company.truth.planted_order[:3] == [
        "ticket:delivery",
        "ticket:payment",
        "region:Siberia",
    ]
    assert company.truth.pilots["auto-route-tickets"] == {"frt_hours": -0.4, "nps": 8.0}
    assert company.truth.pilots["chat-greeting-script"] == {"frt_hours": 0.0, "nps": 0.0}


def test_shipped_hypotheses_match_the_pilots_the_demo_runs() -> None:
    shipped = {h.id: h for h in load_hypotheses(REPO / "hypotheses")}
    assert set(shipped) == set(PILOTS) | set(REGION_PILOTS)
    for hypothesis_id, pilot in PILOTS.items():
        h = shipped[hypothesis_id]
        assert h.assignment.salt == pilot.salt
        assert h.assignment.pilot_share == pilot.pilot_share
        assert tuple(h.population.segment) == pilot.segments
        assert (h.schedule.pilot.start, h.schedule.pilot.end) == (pilot.start, pilot.end)


def test_customer_text_carries_pii_and_markup_for_the_reports_to_handle(company) -> None:
    comments = company.frames["survey_responses"]["comment"].dropna()
    assert comments.str.contains("<script>").any()
    assert comments.str.contains("@example.com").any()
    assert comments.str.contains(r"\+7 \(912\)").any()
    assert comments.str.contains("[а-я]").any() and comments.str.contains("[a-z]").any()
