"""The journey map groups touchpoints into stages with their metrics and barriers."""

from __future__ import annotations

import pandas as pd
import pytest

from connectors.demo import FUNNEL
from flows.config import DEFAULT_JOURNEY
from tasks.journey import journey_map
from tasks.metrics import metric_table
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
    frt = metric_table(demo_data, ["frt_hours"], by=["topic"]).set_index("topic")["value"]
    assert stages.loc["support", "frt_median_hours"] == pytest.approx(frt["login"])
    web = demo_data.web.groupby("step")["value"].sum()
    assert stages.loc["search", "conversion"] == pytest.approx(
        100 * web["add_to_cart"] / web["visit"]
    )
    nps = demo_data.responses[demo_data.responses["kind"] == "nps"]["score"]
    expected = 100 * ((nps >= 9).mean() - (nps <= 6).mean())
    assert stages.loc["loyalty", "surveys"]["relationship_nps"] == pytest.approx(expected, abs=0.01)


def test_a_stage_median_frt_counts_the_unanswered_ticket_as_still_waiting() -> None:
    from tasks.loader import CxData
    from tasks.metrics import with_ticket_measures

    tickets = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c"],
            "channel": "chat",
            "topic": "login",
            "created_at": pd.to_datetime(
                ["2026-10-05 00:00", "2026-10-05 00:00", "2026-10-04 16:00"]
            ),
            "first_response_at": pd.to_datetime(["2026-10-05 01:00", "2026-10-05 02:00", None]),
            "resolved_at": pd.NaT,
            "reopened": False,
        }
    )
    empty = pd.DataFrame(columns=["customer_id", "survey", "kind", "score", "submitted_at"])
    web = pd.DataFrame(columns=["date", "metric", "value", "step"])
    data = CxData(pd.DataFrame({"customer_id": ["a", "b", "c"]}), with_ticket_measures(tickets),
                  empty, pd.DataFrame(), web)  # fmt: skip
    stages = journey_map(data, pd.DataFrame(), DEFAULT_JOURNEY, FUNNEL).set_index("stage")
    # Answered in 1 h and 2 h, one still waiting 10 h: Kaplan–Meier 2 h, not the answered 1.5 h.
    assert stages.loc["support", "frt_median_hours"] == pytest.approx(2.0)
