"""The demo company's region pilots: a new courier partner in Siberia that answers delivery
tickets 40% sooner, and a courier app in Volga that changes nothing. The planted effect is a
factor on the draws the demo already makes, the shipped hypotheses describe both pilots, the
unit-level analysis recovers the one and rejects the other, and the pilot reports say so
in Chromium."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from connectors import demo
from connectors.demo import REGION_PILOTS, DemoCompany, generate
from tasks.experiments import Evaluation, evaluate
from tasks.hypotheses import Hypothesis, load_hypotheses, load_hypothesis
from tasks.loader import CxData
from tasks.pilot_report import build_experiment
from tasks.pilot_store import result_rows
from tests.test_reports_html import Browser

REPO = Path(__file__).resolve().parents[1]
PLANTED, NULL = "courier-siberia", "courier-volga"


def _frt_hours(tickets: pd.DataFrame) -> pd.Series:
    return (tickets["first_response_at"] - tickets["created_at"]).dt.total_seconds() / 3600


def test_region_pilots_scale_first_replies_and_leave_every_other_draw_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with_pilots = generate(5000, 7)
    monkeypatch.setattr(demo, "PLANTED", replace(demo.PLANTED, region_pilots={}))
    without = generate(5000, 7)
    for name, frame in without.frames.items():
        if name not in ("tickets", "survey_responses"):
            pd.testing.assert_frame_equal(with_pilots.frames[name], frame, obj=name)
    after, before = with_pilots.frames["tickets"], without.frames["tickets"]
    timing = ["first_response_at", "resolved_at"]
    pd.testing.assert_frame_equal(after.drop(columns=timing), before.drop(columns=timing))
    region = after["customer_id"].map(without.frames["customers"].set_index("source_id")["region"])
    ratio = _frt_hours(after) / _frt_hours(before)
    touched = np.zeros(len(after), dtype=bool)
    for pilot in with_pilots.truth.region_pilots.values():
        mine = pilot.touches(region.to_numpy(), after["topic"].to_numpy(), after["created_at"])
        assert mine.sum() > 20, pilot
        np.testing.assert_allclose(ratio[mine], pilot.frt_factor, rtol=1e-9)
        touched |= mine
    np.testing.assert_allclose(ratio[~touched], 1.0, rtol=1e-9)
    # Only the post-ticket surveys' times move with the resolution; every score stays.
    keys = ["source_id", "score", "kind", "customer_id", "ticket_id"]
    pd.testing.assert_frame_equal(
        with_pilots.frames["survey_responses"][keys].sort_values("source_id", ignore_index=True),
        without.frames["survey_responses"][keys].sort_values("source_id", ignore_index=True),
    )
    assert with_pilots.truth.pilots[PLANTED] == {"frt_hours": -0.4, "nps": 0.0}
    assert with_pilots.truth.pilots[NULL] == {"frt_hours": 0.0, "nps": 0.0}


def test_the_shipped_region_hypotheses_describe_the_region_pilots_the_demo_runs() -> None:
    shipped = {h.id: h for h in load_hypotheses(REPO / "hypotheses")}
    pilot_regions = {p.region for p in REGION_PILOTS.values()}
    for hypothesis_id, pilot in REGION_PILOTS.items():
        h = shipped[hypothesis_id]
        assert h.assignment.method == "segment"
        assert h.assignment.pilot.region == [pilot.region]
        assert set(h.assignment.control.region) == set(demo.REGIONS) - pilot_regions
        assert h.scope.tickets.topic == [pilot.topic]
        assert (h.schedule.pilot.start, h.schedule.pilot.end) == (pilot.start, pilot.end)
        assert h.schedule.baseline.end < pilot.start
        assert h.metric.name == "frt_hours" and h.metric.direction == "decrease"


@pytest.fixture(scope="module")
def judged(demo_data: CxData) -> dict[str, tuple[Hypothesis, Evaluation]]:
    found = {}
    for hypothesis_id in REGION_PILOTS:
        h = load_hypothesis(REPO / "hypotheses" / f"{hypothesis_id}.yaml")
        found[hypothesis_id] = h, evaluate(h, demo_data)
    return found


def planted_hours(evaluation: Evaluation, factor: float) -> float:
    """The planted effect in hours on the unit analysis' scale (weeks count equally): every
    scoped ticket of the pilot region in the pilot weeks waits `factor` times as long, so each
    week's mean would have been its observed mean / `factor` without the pilot."""
    series = evaluation.unit.series
    observed = series.loc[series["post"], "treated"]
    return float(observed.mean() * (1 - 1 / factor))


def test_the_courier_partner_in_siberia_is_adopted_with_a_ci_covering_the_planted_effect(
    judged: dict[str, tuple[Hypothesis, Evaluation]], company: DemoCompany
) -> None:
    _, evaluation = judged[PLANTED]
    unit = evaluation.unit
    assert unit is not None and unit.treated == ("Siberia",)
    assert len(unit.donors) == 4 and unit.method == "did"  # too few donors for synthetic control
    assert any("synthetic control needs" in c.reason for c in unit.checks if c.name == "method")
    truth = planted_hours(evaluation, company.truth.region_pilots[PLANTED].frt_factor)
    assert unit.low <= truth <= unit.high < 0, (truth, unit.low, unit.high)
    primary = evaluation.primary
    assert primary.low <= company.truth.pilots[PLANTED]["frt_hours"] <= primary.high
    assert evaluation.decision == "adopt", evaluation.reason
    assert evaluation.reason.startswith("effect shown (observational")


def test_the_courier_app_in_volga_is_not_adopted(
    judged: dict[str, tuple[Hypothesis, Evaluation]],
) -> None:
    _, evaluation = judged[NULL]
    unit = evaluation.unit
    assert unit is not None and unit.treated == ("Volga",) and len(unit.donors) == 4
    assert unit.low <= 0 <= unit.high, (unit.low, unit.high)
    assert evaluation.decision != "adopt", evaluation.reason
    assert evaluation.reason.startswith("effect not shown (observational")


@pytest.fixture(scope="module")
def browser() -> Browser:
    started = Browser()
    yield started
    started.close()


def test_both_region_pilot_reports_show_their_verdicts_in_chromium(
    judged: dict[str, tuple[Hypothesis, Evaluation]],
    demo_data: CxData,
    browser: Browser,
    tmp_path: Path,
) -> None:
    for hypothesis_id, decision in ((PLANTED, "adopt"), (NULL, "inconclusive")):
        h, evaluation = judged[hypothesis_id]
        as_of = pd.Timestamp(h.schedule.pilot.end) + pd.Timedelta(days=1)
        rows = result_rows(evaluation, as_of).assign(as_of=as_of)
        rendered = build_experiment(h, rows, evaluation.arms, demo_data, pd.DataFrame(), "en")
        page = tmp_path / f"experiment-{hypothesis_id}.html"
        page.write_text(rendered.html, encoding="utf-8")
        browser.open(page)
        assert browser.errors() == [], hypothesis_id
        text = browser.evaluate("document.body.innerText")
        assert h.title in text and f"Decision: {decision}" in text, hypothesis_id
        verdict = browser.evaluate("document.getElementById('unit-verdict').innerText")
        shown = "effect shown" if decision == "adopt" else "effect not shown"
        assert verdict.startswith(shown), (hypothesis_id, verdict)
        assert "Observational" in browser.evaluate("document.getElementById('unit').innerText")
        assert browser.evaluate("document.getElementById('unit-n-donors').innerText") == "4"
        method = browser.evaluate("document.getElementById('unit-method').innerText")
        assert method.startswith("difference-in-differences"), method
        fallback = browser.evaluate("document.getElementById('unit-fallback').innerText")
        assert "synthetic control needs" in fallback, fallback
        drawn = browser.evaluate(
            "[...document.querySelectorAll('svg.chart')].map(s => s.getAttribute('aria-label'))"
        )
        assert any("pilot units against" in label for label in drawn), drawn
