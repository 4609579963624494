"""Alerts fire on planted changes with their evidence, and stay quiet on partial months."""

from __future__ import annotations

import numpy as np

from tasks.alerts import detect_alerts
from tasks.metrics import CxData


def test_the_planted_complaint_surge_raises_an_alert_with_evidence(company, demo_data) -> None:
    alerts = {a.key: a for a in detect_alerts(demo_data)}
    surge = alerts[f"complaint_growth:topic={company.truth.complaint_surge}"]
    assert surge.period == "2026-10" and surge.evidence["after"] > 1.5 * surge.evidence["before"]
    assert surge.evidence["p_value"] < 0.01


def test_an_injected_nps_drop_in_one_segment_is_caught(demo_data: CxData) -> None:
    responses = demo_data.responses.copy()
    segment = responses["customer_id"].map(demo_data.customers.set_index("customer_id")["segment"])
    october = (responses["kind"] == "nps") & (responses["submitted_at"] >= "2026-10-01")
    target = october & (segment == "premium") & (responses["score"] >= 9)
    flip = target & (np.random.default_rng(0).random(len(responses)) < 0.5)
    responses.loc[flip, "score"] = 3.0
    data = CxData(
        demo_data.customers, demo_data.tickets, responses, demo_data.orders, demo_data.web
    )
    alerts = {a.key: a for a in detect_alerts(data)}
    drop = alerts["nps_drop:segment=premium"]
    assert drop.evidence["after"] < drop.evidence["before"] - 20
    assert "nps_drop:segment=premium" not in {a.key for a in detect_alerts(demo_data)}
