"""The digest's pain-point table as a person reads it in Chromium, on a phone (390 px) and a
laptop (1280 px): adjusted impact beside the raw gap, revenue at risk priced by a published
churn model, the mechanism ("FRT 4× slower here"), the key-driver check, and verbatims that
name the pain point's topic, each with where it came from, or a note that there are none."""

from __future__ import annotations

import pandas as pd
import pytest

from tasks.digest import Month, build_digest
from tasks.loader import CxData
from tasks.outputs import write_report
from tasks.pain_points import NAMES_TOPIC, rank_pain_points
from tasks.render import Rendered
from tasks.text import tag_topics
from tests.test_pain_point_cells import DIMENSIONS, PLANTED, synthetic_company
from tests.test_pain_point_money import churn_scores
from tests.test_reports_html import Browser

MONTH = Month.containing(pd.Timestamp("2026-10-15"))

ROWS = """[...document.querySelectorAll('#pain-points tr.pain-point')].map(tr => {
  const one = s => tr.querySelector(s)?.innerText ?? null;
  const box = tr.querySelector('td.revenue').getBoundingClientRect();
  return {
    title: tr.querySelector('td').innerText,
    adjusted: one('.adjusted'), raw: one('.raw'), revenue: one('td.revenue strong'),
    churn: one('.churn'), mechanism: one('.mechanism'), driver: one('.driver'),
    note: one('.no-verbatims'), drawn: box.width > 0 && box.height > 0,
    quotes: [...tr.querySelectorAll('.verbatim')].map(q => ({
      text: q.querySelector('blockquote').innerText,
      source: q.querySelector('.source')?.innerText })),
  };
})"""


@pytest.fixture(scope="module")
def ranked() -> tuple[pd.DataFrame, CxData]:
    company = synthetic_company(3, 30_000)
    answers = company.responses.assign(survey="relationship_nps", channel="email")
    data = CxData(company.customers, company.tickets, answers, company.orders, company.web)
    pain = rank_pain_points(
        data, {"default": 2.0}, (), None, DIMENSIONS, churn=churn_scores(data, 3)
    )
    return pain, data


@pytest.fixture(scope="module")
def digests(ranked) -> dict[str, Rendered]:
    pain, data = ranked
    return {
        language: build_digest(data, pain, pd.DataFrame(), [], [], language, month=MONTH)
        for language in ("en", "ru")
    }


@pytest.fixture(scope="module")
def browser() -> Browser:
    started = Browser()
    yield started
    started.close()


def read_table(browser: Browser, page, width: int) -> dict[str, dict]:
    browser.open_at(page, width)
    rows = browser.evaluate(ROWS)
    scroll = browser.evaluate("document.documentElement.scrollWidth")
    assert browser.errors() == []
    assert scroll <= width, f"the page scrolls sideways at {width}px"
    return {row["title"].split("\n")[1]: row for row in rows}


@pytest.mark.parametrize("width", [390, 1280])
def test_pain_table_shows_adjusted_and_raw_impact_revenue_mechanism_and_on_topic_quotes(
    ranked, digests, browser, tmp_path, width
) -> None:
    pain = ranked[0].set_index("key")
    shown = read_table(browser, write_report(digests["en"], tmp_path), width)
    cell_key, topic = PLANTED[0][0], PLANTED[0][3]
    cell, truth = shown[cell_key], pain.loc[cell_key]
    evidence = truth["evidence"]
    assert cell["drawn"]
    assert cell["adjusted"] == f"{truth['impact']:.1f}"
    assert cell["raw"] == f"{truth['raw_impact']:.1f}" and cell["adjusted"] != cell["raw"]
    assert cell["revenue"] == f"{truth['revenue_at_stake']:,.0f}"
    assert cell["churn"] == (
        f"churn {evidence['churn_uplift']:.1f} points above comparable customers "
        f"({evidence['churn_scored']:,} scored)"
    )
    mechanism = evidence["mechanism"]
    assert mechanism["frt_ratio"] > 3
    assert cell["mechanism"].startswith(
        f"Why here: FRT {mechanism['frt_in']:.1f} h here vs {mechanism['frt_out']:.1f} h "
        f"elsewhere ({mechanism['frt_ratio']:.1f}× slower)"
    )
    quotes = pd.Series([q["text"] for q in cell["quotes"]], dtype=object)
    assert len(quotes) and {q["source"] for q in cell["quotes"]} == {NAMES_TOPIC}
    tags = tag_topics(quotes)
    assert set(tags.loc[tags["topic"] == topic, "text_index"]) == set(quotes.index)
    # A cell whose customers wrote nothing on its topic quotes nothing and says why.
    quiet = shown[PLANTED[1][0]]
    assert quiet["quotes"] == [] and quiet["note"].startswith("No comment names this topic")
    # A ticket topic shows its key-driver estimate beside the ranking's, which agree here.
    key = next(k for k in shown if k.startswith("ticket:") and "@" not in k)
    driver = pain.loc[key, "evidence"]
    assert shown[key]["driver"] == (
        f"Key-driver regression: {driver['driver_impact']:.1f} points "
        f"({driver['driver_ci_low']:.1f} … {driver['driver_ci_high']:.1f}): agrees with the ranking"
    )


def test_markdown_and_russian_tables_carry_the_raw_gap_and_revenue(ranked, digests) -> None:
    truth = ranked[0].set_index("key").loc[PLANTED[0][0]]
    line = next(row for row in digests["en"].markdown.splitlines() if PLANTED[0][0] in row or
                row.startswith("| 1 |"))  # fmt: skip
    assert f"| {truth['raw_impact']:.1f} | {truth['revenue_at_stake']:,.0f} |" in line
    table = digests["en"].tables["pain_points"][0]
    assert table["revenue_at_stake"] == pytest.approx(truth["revenue_at_stake"], abs=0.01)
    html = digests["ru"].html
    assert "Выручка под угрозой" in html and "Почему здесь" in html and "называет тему" in html
    assert f"{truth['impact']:.1f}".replace(".", ",") in html


def test_a_key_driver_that_disagrees_with_the_ranking_says_why_in_the_digest() -> None:
    from tests.test_pain_point_money import contact_costs_nps

    company = contact_costs_nps()
    answers = company.responses.assign(survey="relationship_nps", channel="email")
    data = CxData(company.customers, company.tickets, answers, company.orders, company.web)
    pain = rank_pain_points(data, {})
    assert pain.set_index("key").loc["ticket:delivery", "evidence"]["driver_agrees"] is False
    html = build_digest(data, pain, pd.DataFrame(), [], [], month=MONTH).html
    row = html[html.index("ticket:delivery</span>") :]
    row = row[: row.index("</tr>")]
    assert (
        '<span class="flag">differs from the ranking, because the ranking also holds '
        "contacting support at all, segment and region fixed, and the key-driver regression "
        "only the other topics</span>"
    ) in row
