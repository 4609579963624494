"""The digest's opening block ("What changed and what to do") and its monthly KPI trends,
checked against a plain recomputation and as a reader sees them in Chromium."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.digest import Month, executive_summary, kpi_trends
from tasks.labels import labels
from tasks.outputs import write_report
from tests.test_reports_html import (
    DIGEST_MONTH,
    Browser,
    Demo,
    demo_company,
    render_both,
    seen,
)


@pytest.fixture(scope="module")
def company() -> Demo:
    return demo_company()


@pytest.fixture(scope="module")
def digest_page(company: Demo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_report(render_both(company)["digest"], tmp_path_factory.mktemp("digest"))


@pytest.fixture(scope="module")
def chromium() -> Browser:
    started = Browser()
    yield started
    started.close()


SEEN = """({
  executive: [...document.querySelectorAll('#executive li a')].map(a => ({
    text: a.innerText, target: !!document.querySelector(a.getAttribute('href')),
  })),
  first: document.querySelector('h2').innerText,
  trends: [...document.querySelectorAll('svg.chart[aria-label]')]
    .filter(s => s.closest('figure, div, section, body') && s.compareDocumentPosition(
      document.querySelector('#trends')) & Node.DOCUMENT_POSITION_PRECEDING)
    .filter(s => !(s.compareDocumentPosition(document.querySelector('#weighting'))
      & Node.DOCUMENT_POSITION_PRECEDING))
    .map(s => ({title: s.getAttribute('aria-label'), width: s.getBoundingClientRect().width,
                text: s.textContent})),
})"""


def test_trends_are_each_months_kpis_as_a_plain_recomputation_gives_them(company: Demo) -> None:
    trends = kpi_trends(company.data, DIGEST_MONTH)
    nps = trends[trends["metric"] == "nps"].set_index("period")
    answers = company.data.responses
    answers = answers[(answers["kind"] == "nps") & answers["score"].notna()]
    month = answers["submitted_at"].dt.to_period("M").dt.to_timestamp()
    points = np.select([answers["score"] >= 9, answers["score"] <= 6], [100.0, -100.0], 0.0)
    expected = pd.Series(points, index=answers.index).groupby(month).agg(["mean", "size"])
    assert list(nps.index) == list(pd.date_range("2025-11-01", "2026-10-01", freq="MS"))
    assert np.allclose(nps["value"], expected["mean"]) and (nps["n"] == expected["size"]).all()
    assert (nps["ci_low"] < nps["value"]).all() and (nps["value"] < nps["ci_high"]).all()
    assert set(trends["metric"]) == {"nps", "csat", "ces", "frt_hours", "fcr"}
    # A shorter window starts that many months back.
    short = kpi_trends(company.data, DIGEST_MONTH, months=3)
    assert short["period"].min() == pd.Timestamp("2026-08-01")
    # Twelve months by default: a digest for September 2027 starts in October 2026.
    later = kpi_trends(company.data, Month.containing(pd.Timestamp("2027-09-15")))
    assert later["period"].min() == pd.Timestamp("2026-10-01")


def test_the_executive_block_names_the_change_largest_against_its_ci_and_ended_pilots(
    company: Demo,
) -> None:
    t = labels("en")
    tiles = pd.DataFrame(
        {
            "change": [5.0, -0.2, 3.0],
            "change_low": [1.0, -0.3, 2.0],
            "change_high": [9.0, -0.1, 4.0],
            "verdict": ["better", "worse", "better"],
            "metric": ["nps", "frt_hours", "csat"],
        }
    )
    top = pd.DataFrame({"title": ["Delivery tickets in Siberia"]})
    lines = executive_summary(tiles, top, company.hypotheses, pd.Timestamp("2026-10-31"), t)
    # CSAT's +3.0 is 3 half-widths from zero, FRT's 2, NPS's 1.25: CSAT leads.
    assert lines[0] == {
        "text": "CSAT changed by +3.0 against the month before: better.",
        "link": "#kpi-csat",
    }
    assert lines[1]["text"] == "Top pain point: Delivery tickets in Siberia."
    running = [h.id for h in company.hypotheses if h.status == "running"]
    assert lines[2]["text"].endswith(f"{', '.join(running)}.") and running
    quiet = tiles.assign(verdict="not_significant")
    september = pd.Timestamp("2026-09-30")
    early = executive_summary(quiet, top.iloc[:0], company.hypotheses, september, t)
    assert early == [{"text": t["executive"]["no_change"], "link": "#kpis"}]


def test_the_digest_opens_with_the_block_and_shows_a_trend_per_kpi_in_chromium(
    company: Demo, digest_page: Path, chromium: Browser
) -> None:
    seen(chromium, digest_page, digest_page.with_suffix(".trends.png"))
    view = chromium.evaluate(SEEN)
    assert view["first"] == "What changed and what to do"
    assert view["executive"] and all(line["target"] for line in view["executive"])
    assert any(company.pain.iloc[0]["title"] in line["text"] for line in view["executive"])
    t = labels("en")
    assert [c["title"] for c in view["trends"]] == [
        t[m] for m in ("nps", "csat", "ces", "frt_hours", "fcr")
    ]
    window = pd.Timestamp("2026-05-01").date()
    starts = [h.id for h in company.hypotheses if h.schedule.pilot.start >= window]
    assert starts and all(
        chart["width"] > 300 and all(start in chart["text"] for start in starts)
        for chart in view["trends"]
    )
