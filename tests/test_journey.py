"""The journey map groups touchpoints into stages with their metrics and barriers."""

from __future__ import annotations

import pytest

from connectors.demo import FUNNEL
from flows.config import DEFAULT_JOURNEY
from tasks.journey import journey_map
from tasks.pain_points import rank_pain_points


def test_each_stage_carries_its_touchpoints_metrics_and_ranked_barriers(demo_data) -> None:
    ranked = rank_pain_points(demo_data, {"default": 2.0})
    stages = journey_map(demo_data, ranked, DEFAULT_JOURNEY, FUNNEL).set_index("stage")
    assert list(stages.index) == ["search", "purchase", "delivery", "support", "loyalty"]
    assert stages.loc["delivery", "barriers"][0] == "ticket:delivery"
    topics = demo_data.tickets["topic"]
    assert (
        stages.loc["delivery", "tickets"]
        == topics.isin(["delivery", "product_quality", "returns"]).sum()
    )
    web = demo_data.web.groupby("step")["value"].sum()
    assert stages.loc["search", "conversion"] == pytest.approx(
        100 * web["add_to_cart"] / web["visit"]
    )
    nps = demo_data.responses[demo_data.responses["kind"] == "nps"]["score"]
    expected = 100 * ((nps >= 9).mean() - (nps <= 6).mean())
    assert stages.loc["loyalty", "surveys"]["relationship_nps"] == pytest.approx(expected, abs=0.01)
