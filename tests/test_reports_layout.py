"""Both reports at a phone's width (390 px) and a laptop's (1280 px), measured in Chromium.

What a person sees: the page never scrolls sideways, the key figure of every table (its
`.key` cell, or the first column where a table names none) lies inside the viewport without
scrolling the table, and chart text is at least 11 CSS pixels tall as drawn.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.outputs import write_report
from tasks.render import Rendered
from tests.test_reports_html import Browser, Demo, demo_company, render_both

MIN_CHART_TEXT_PX = 11

LAYOUT = """(() => {
  const width = document.documentElement.clientWidth;
  const inside = el => { const b = el.getBoundingClientRect();
    return b.width > 0 && b.left >= -0.5 && b.right <= width + 0.5; };
  const tables = [...document.querySelectorAll('main table')].map(table => {
    const rows = [...table.querySelectorAll('tr')].slice(1);
    const key = table.querySelector('th.key') ? 'td.key' : 'td:first-child';
    const cells = rows.map(r => r.querySelector(key)).filter(Boolean);
    return {
      id: table.id || table.querySelector('th')?.innerText,
      declared: key === 'td.key',
      cells: cells.length,
      hidden: cells.filter(c => !inside(c)).map(c => c.innerText.slice(0, 40)),
    };
  });
  const text = [...document.querySelectorAll('svg.chart text')].map(t => {
    const size = parseFloat(getComputedStyle(t).fontSize);
    const m = t.getScreenCTM();
    return {text: t.textContent, px: size * Math.hypot(m.a, m.b)};
  });
  return {
    width, scrollWidth: document.documentElement.scrollWidth,
    bodyScroll: document.body.scrollWidth, tables, text,
    tiles: [...document.querySelectorAll('.tile')].map(t => t.getBoundingClientRect().left),
  };
})()"""


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Rendered, Path]]:
    company: Demo = demo_company(3000)
    out = tmp_path_factory.mktemp("layout")
    return {kind: (r, write_report(r, out)) for kind, r in render_both(company).items()}


@pytest.fixture(scope="module")
def browser() -> Browser:
    started = Browser()
    yield started
    started.close()


def measure(browser: Browser, page: Path, width: int) -> dict:
    """The page's layout measured at `width` CSS pixels, as a phone or laptop shows it."""
    browser.open_at(page, width)
    view = browser.evaluate(LAYOUT)
    assert browser.errors() == []
    return view


@pytest.mark.parametrize("kind", ["digest", "experiment"])
@pytest.mark.parametrize("width", [390, 1280])
def test_no_sideways_scroll_and_every_key_figure_visible(pages, browser, kind, width) -> None:
    _, page = pages[kind]
    view = measure(browser, page, width)
    assert width - 20 <= view["width"] <= width  # less a desktop scrollbar
    assert max(view["scrollWidth"], view["bodyScroll"]) <= view["width"], view["scrollWidth"]
    assert view["tables"], "no table measured"
    for table in view["tables"]:
        assert table["cells"] > 0, table
        # Every table with a header names its key figure; label/value lists lead with it.
        assert table["declared"] or (kind == "experiment" and table.get("id") is None), table
        assert table["hidden"] == [], f"{kind} at {width}px: {table}"


@pytest.mark.parametrize("kind", ["digest", "experiment"])
@pytest.mark.parametrize("width", [390, 1280])
def test_chart_text_stays_readable(pages, browser, kind, width) -> None:
    rendered, page = pages[kind]
    view = measure(browser, page, width)
    assert len(view["text"]) > 10 * len(rendered.charts)
    small = [t for t in view["text"] if t["px"] < MIN_CHART_TEXT_PX]
    assert small == [], f"{len(small)} chart labels under {MIN_CHART_TEXT_PX}px: {small[:5]}"


def test_kpi_tiles_stack_on_a_phone_and_line_up_on_a_laptop(pages, browser) -> None:
    _, page = pages["digest"]
    phone = measure(browser, page, 390)["tiles"]
    laptop = measure(browser, page, 1280)["tiles"]
    assert len(phone) >= 5 and len(set(round(x) for x in phone)) <= 2
    assert len(set(round(x) for x in laptop)) >= 4
