"""The pilot report's effect by segment and cumulative estimate as a person reads them: in
Chromium at a phone's width (390 px) and a laptop's (1280 px), in English and Russian, and
in the Markdown that the plain-text e-mail carries."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from tasks.experiments import evaluate
from tasks.outputs import write_report
from tasks.pilot_report import build_experiment
from tasks.pilot_store import result_rows
from tests.test_pilots_from_operations import METHODS, company, routing
from tests.test_reports_html import Browser
from tests.test_reports_layout import MIN_CHART_TEXT_PX, measure

SECTIONS = """(() => {
  const table = document.getElementById('segments');
  const cumulative = [...document.querySelectorAll('svg.chart')]
    .find(s => s.closest('figure').previousElementSibling?.id === 'cumulative-effect');
  return {
    text: document.body.innerText,
    headline: document.getElementById('estimate').innerText,
    note: document.getElementById('segment-note').innerText,
    rows: [...table.querySelectorAll('tr')].slice(1).map(r => r.innerText),
    cumulative: cumulative ? {label: cumulative.getAttribute('aria-label'),
      lines: cumulative.querySelectorAll('path').length,
      height: cumulative.getBoundingClientRect().height} : null,
    cumulativeNote: document.getElementById('cumulative-note').innerText,
  };
})()"""


def _rendered(tmp_path: Path, method: str, language: str = "en"):
    (tmp_path / "ops").mkdir(exist_ok=True)
    ids = "".join(f"C{i}\n" for i in range(0, 600, 2))
    (tmp_path / "ops" / "pilot.csv").write_text(f"customer_id\n{ids}", encoding="utf-8")
    h = routing(tmp_path, **{METHODS["attribute"]: METHODS[method]})
    data = company(2)
    result = evaluate(h, data)
    rows = result_rows(result, pd.Timestamp("2026-10-31")).assign(as_of=pd.Timestamp("2026-10-31"))
    return result, build_experiment(h, rows, result.arms, data, pd.DataFrame(), language)


@pytest.fixture(scope="module")
def browser() -> Browser:
    started = Browser()
    yield started
    started.close()


@pytest.mark.parametrize("language", ["en", "ru"])
@pytest.mark.parametrize("method", ["hash", "attribute"])
def test_segments_and_the_cumulative_estimate_read_right_on_a_phone_and_a_laptop(
    tmp_path: Path, browser: Browser, method: str, language: str
) -> None:
    _, rendered = _rendered(tmp_path, method, language)
    page = write_report(rendered, tmp_path / "out")
    for width in (390, 1280):
        view = measure(browser, page, width)
        assert max(view["scrollWidth"], view["bodyScroll"]) <= view["width"], width
        (segments,) = [t for t in view["tables"] if t.get("id") == "segments"]
        assert segments["declared"] and segments["cells"] == 2 and segments["hidden"] == []
        small = [t for t in view["text"] if t["px"] < MIN_CHART_TEXT_PX]
        assert small == [], small[:5]
        seen = browser.evaluate(SECTIONS)
        assert seen["cumulative"] and seen["cumulative"]["height"] > 100
        assert seen["cumulative"]["lines"] > 3
    if language == "en":
        assert (
            "Effect by segment" in seen["text"]
            and "Cumulative estimate over the pilot" in seen["text"]
        )
        assert "Holm-adjusted across 2 groups" in seen["note"]
        assert [r.split("\t")[0] for r in seen["rows"]] == ["Segment: loyal", "Segment: new"]
        assert "always-valid 95% CI" in seen["cumulativeNote"]
    else:
        assert "Эффект по сегментам" in seen["text"] and "Накопленная оценка" in seen["text"]
        assert "Поправка Холма на 2 среза" in seen["note"]
        assert all(re.search(r"\d,\d+%", row) for row in seen["rows"]), seen["rows"]
        shown = seen["note"] + seen["cumulativeNote"] + "".join(seen["rows"])
        assert not re.search(r"\bCI\b", shown)
    # The last point of the chart is the headline estimate.
    assert f": {seen['headline']})" in seen["cumulativeNote"], seen["cumulativeNote"]
    flagged = [row for row in seen["rows"] if "differs from zero" in row or "отличается" in row]
    # The company plants −40% for the customers operations marked, not for a hash split's.
    assert bool(flagged) == (method == "attribute"), seen["rows"]
    assert rendered.tables["segment_effects"][0]["group"] == "loyal"


def test_the_markdown_carries_the_segment_table_and_the_estimate_by_week(tmp_path: Path) -> None:
    result, rendered = _rendered(tmp_path, "hash")
    text = rendered.text
    assert "## Effect by segment" in text and "| Segment: loyal | -" in text
    milestones = re.findall(r"^\| (2026-10-\d\d) \| ([^|]+) \|", text, re.M)
    weekly = ["2026-10-07", "2026-10-14", "2026-10-21", "2026-10-26"]  # the data ends on the 26th
    assert [day for day, _ in milestones] == weekly
    assert milestones[-1][1].strip() == f"{result.primary.value:+.1%}"


def test_arms_that_are_segments_show_too_few_data_in_every_segment(tmp_path: Path) -> None:
    _, rendered = _rendered(tmp_path, "segment")
    table = rendered.html.split('id="segments"')[1].split("</table>")[0]
    assert table.count("too few data") == 2
    assert "No group has at least 30 customers in each arm" in rendered.html
