"""Reports printed to PDF by headless Chromium, read back with pypdf.

What a reader of the paper copy sees: the chosen page size, a running header with the
report's title and period and "page / pages" on every page, and no section heading left
alone at the foot of a page.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
from pypdf import PdfReader

from tasks.digest import build_digest
from tasks.outputs import print_pdf, write_report
from tasks.render import Rendered
from tests.test_reports_html import DIGEST_MONTH, Demo, demo_company

A4_POINTS = (595.3, 841.9)
HEADER = f"CX digest · Period: {DIGEST_MONTH.start:%Y-%m-%d} … 2026-10-31"


@pytest.fixture(scope="module")
def company() -> Demo:
    return demo_company(3000)


def digest(company: Demo, paper: str) -> Rendered:
    return build_digest(
        company.data,
        company.pain,
        company.results,
        company.hypotheses,
        month=DIGEST_MONTH,
        paper=paper,
    )


def printed(rendered: Rendered, out: Path) -> PdfReader:
    return PdfReader(print_pdf(write_report(rendered, out)))


def headings(rendered: Rendered) -> set[str]:
    """The text of every h1–h3 in the report, as it appears on paper."""
    found = re.findall(r"<h[1-3][^>]*>(.*?)</h[1-3]>", rendered.html, flags=re.S)
    return {html.unescape(re.sub(r"<[^>]+>", "", h)).strip() for h in found}


def body_lines(page_text: str, header: str) -> list[str]:
    """A page's text lines without the running header and the page number."""
    lines = [line.strip() for line in page_text.splitlines()]
    return [
        line for line in lines if line and line != header and not re.fullmatch(r"\d+ / \d+", line)
    ]


@pytest.fixture(scope="module")
def a4(company: Demo, tmp_path_factory: pytest.TempPathFactory) -> tuple[Rendered, PdfReader]:
    rendered = digest(company, "a4")
    return rendered, printed(rendered, tmp_path_factory.mktemp("a4"))


def test_digest_prints_on_a4_with_header_and_page_numbers_on_every_page(a4) -> None:
    _, pdf = a4
    pages = len(pdf.pages)
    assert pages >= 3
    for number, page in enumerate(pdf.pages, start=1):
        width, height = float(page.mediabox.width), float(page.mediabox.height)
        assert (width, height) == pytest.approx(A4_POINTS, abs=1)
        lines = [line.strip() for line in page.extract_text().splitlines()]
        assert f"{number} / {pages}" in lines, (number, lines[:3], lines[-3:])
        assert HEADER in lines, (number, lines[:3])


def test_no_heading_is_the_last_thing_on_a_page(a4) -> None:
    rendered, pdf = a4
    titles = headings(rendered)
    assert len(titles) > 6
    for number, page in enumerate(pdf.pages[:-1], start=1):
        lines = body_lines(page.extract_text(), HEADER)
        assert lines and lines[-1] not in titles, f"page {number} ends with {lines[-1]!r}"


def test_letter_paper_when_configured(company: Demo, tmp_path: Path) -> None:
    pdf = printed(digest(company, "letter"), tmp_path)
    sizes = {(round(float(p.mediabox.width)), round(float(p.mediabox.height))) for p in pdf.pages}
    assert sizes == {(612, 792)}
