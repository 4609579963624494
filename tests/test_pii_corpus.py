"""What readers get of customer text: no phone number or e-mail address of a hand-written corpus
in any report output (HTML, Markdown, e-mail, PDF), the numbers that are not phones kept, and
bidirectional controls unable to reorder what is shown.

`tests/data/pii/` holds one sentence per line: `phones.txt` and `emails.txt` mark each phone
number or address as `[[...]]`; `not_phones.txt` holds numbers that must stay as written.
"""

from __future__ import annotations

import email.policy
import html
import re
import unicodedata
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from email.parser import BytesParser
from itertools import chain
from pathlib import Path

import pandas as pd
import pytest

from tasks.delivery import email_message, write_mail
from tasks.labels import labels
from tasks.loader import CxData
from tasks.outputs import print_pdf, write_report
from tasks.pain_points import rank_pain_points
from tasks.render import render
from tasks.text import neutralise_bidi, redact_pii, redact_pii_series
from tests.test_reports_html import LOW_REGION, Demo, demo_company, render_both

CORPUS = Path(__file__).parent / "data" / "pii"
MARKED = re.compile(r"\[\[(.+?)\]\]")
BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
# A reader would see "Invoice exe.pdf" if the override reached the page.
SPOOF = "Invoice \u202efdp.exe\u202c from \u2067support\u2069\u200f, see attachment."
SPOOF_SHOWN = "Invoice fdp.exe from support, see attachment."
PILOT_START = pd.Timestamp("2026-10-01")


@dataclass(frozen=True)
class Line:
    """One corpus sentence: where it is, as the customer wrote it, as a report must show it,
    and the phone numbers or addresses in it."""

    where: str
    written: str
    shown: str
    secrets: tuple[str, ...]


def read_corpus(name: str, token: str = "") -> list[Line]:
    """The sentences of corpus file `name`, each marked span shown as `token`."""
    lines = (CORPUS / name).read_text(encoding="utf-8").splitlines()
    return [
        Line(
            f"{name}:{number}",
            MARKED.sub(r"\1", line),
            MARKED.sub(lambda _: token, line),
            tuple(MARKED.findall(line)),
        )
        for number, line in enumerate(lines, 1)
        if line.strip()
    ]


PHONES = read_corpus("phones.txt", "[phone]")
EMAILS = read_corpus("emails.txt", "[email]")
KEPT = read_corpus("not_phones.txt")
SPOOFED = Line("spoof", SPOOF, SPOOF_SHOWN, ())


def located(line: Line) -> str:
    return line.where


def spelled(phone: str) -> re.Pattern[str]:
    """The digits of `phone` as one number, whatever separates them (whitespace, hyphens,
    brackets, dots, nothing)."""
    digits = re.sub(r"\D", "", phone)
    return re.compile(r"(?<!\d)" + r"\W{0,3}".join(digits) + r"(?!\d)")


def cyrillic(text: str) -> bool:
    return re.search(r"[а-яёА-ЯЁ]", text) is not None


def test_corpus_has_50_phone_formats_and_50_numbers_to_keep_in_both_languages() -> None:
    assert len(PHONES) >= 50 and len(KEPT) >= 50 and len(EMAILS) >= 10
    for lines in (PHONES, KEPT, EMAILS):
        assert any(cyrillic(line.written) for line in lines)
        assert any(not cyrillic(line.written) for line in lines)
    phones = [secret for line in PHONES for secret in line.secrets]
    assert len(set(phones)) == len(phones) >= 50
    # Unicode hyphens and spaces: non-breaking hyphen, figure and en dash, minus, no-break,
    # thin and narrow no-break space.
    assert all(any(c in p for p in phones) for c in "\u2011\u2012\u2013\u2212\u00a0\u2009\u202f")
    for start in ("+7", "007", "00 7", "8", "7", "9", "(", "00", "+1", "1"):
        assert any(p.startswith(start) for p in phones), start
    assert all(not line.secrets and line.shown == line.written for line in KEPT)
    assert not any(spelled(p).search(line.written) for p in phones for line in KEPT)


@pytest.mark.parametrize("line", PHONES + EMAILS, ids=located)
def test_each_phone_and_address_is_redacted_whole(line: Line) -> None:
    assert redact_pii(line.written) == line.shown


@pytest.mark.parametrize("line", KEPT, ids=located)
def test_numbers_that_are_not_phones_stay(line: Line) -> None:
    assert redact_pii(line.written) == line.written


def test_series_redaction_matches_the_corpus() -> None:
    lines = [*PHONES, *EMAILS, *KEPT, SPOOFED]
    texts = pd.Series([line.written for line in lines], dtype="string")
    assert redact_pii_series(texts).tolist() == [line.shown for line in lines]


def test_bidi_controls_go_from_text_and_nothing_else_changes() -> None:
    assert neutralise_bidi(SPOOF) == SPOOF_SHOWN
    assert neutralise_bidi("Доставка שלום 12") == "Доставка שלום 12"
    assert neutralise_bidi(None) is None and neutralise_bidi(7) == 7


def test_every_printed_value_loses_its_bidi_controls() -> None:
    page = render(
        "index.html.j2", {"t": labels("en"), "title": SPOOF, "entries": [], "generated_at": "now"}
    )
    assert not set(BIDI) & set(page)
    assert html.escape(SPOOF_SHOWN) in page


# The corpus in reports, as readers get them.


def comments() -> list[list[Line]]:
    """Every corpus line and the spoof, interleaved into three long survey comments."""
    lines = [*PHONES, *EMAILS, *KEPT, SPOOFED]
    return [lines[i::3] for i in range(3)]


def joined(lines: list[Line], field: str) -> str:
    return " ".join(getattr(line, field) for line in lines)


def planted() -> Demo:
    """The demo company whose only comments from the pilot month on are the three corpus
    comments, by three Urals detractors piloting auto-routing: the Urals pain point in the
    digest and the pilot's verbatims in its report quote exactly those."""
    demo = demo_company(2000)
    responses = demo.data.responses.copy()
    responses.loc[responses["submitted_at"] >= PILOT_START, "comment"] = None
    arms = demo.arms["auto-route-tickets"]
    pilot = arms.loc[arms["arm"] == "pilot", "customer_id"]
    region = demo.data.customers.set_index("customer_id")["region"]
    latest = (
        responses[responses["kind"] == "nps"]
        .sort_values("submitted_at", kind="stable")
        .drop_duplicates("customer_id", keep="last")
    )
    voices = latest[
        (latest["submitted_at"] >= PILOT_START)
        & (latest["score"] <= 6)
        & latest["customer_id"].isin(pilot)
        & (latest["customer_id"].map(region) == LOW_REGION)
    ]
    responses.loc[voices.index[:3], "comment"] = [joined(c, "written") for c in comments()]
    d = demo.data
    data = CxData(d.customers, d.tickets, responses, d.orders, d.web)
    return replace(demo, data=data, pain=rank_pain_points(data, {"default": 2.0}))


# Just enough PDF for what headless Chromium (Skia) prints: Flate streams, Type0 fonts with a
# ToUnicode CMap, glyph codes shown as hex strings by Tj and TJ in marked content, and the
# structure tree that puts marked content in document order. Drawing order is not reading
# order: a card beside another, or cut by a page break, is drawn in pieces among the other's.


def pdf_objects(pdf: Path) -> dict[int, str]:
    """The PDF's objects by number, bytes as Latin-1 text."""
    found = re.findall(rb"(\d+) 0 obj(.*?)endobj", pdf.read_bytes(), re.S)
    return {int(n): body.decode("latin-1") for n, body in found}


def stream(objects: dict[int, str], n: int) -> str:
    """Object `n`'s stream, inflated."""
    body = objects[n].encode("latin-1")
    data = body[body.index(b"stream") + len(b"stream") :].removeprefix(b"\r").removeprefix(b"\n")
    return zlib.decompressobj().decompress(data).decode("latin-1")


def to_unicode(objects: dict[int, str], font: int) -> dict[int, str]:
    """Glyph code to text, from the ToUnicode CMap of font object `font`."""
    cmap = stream(objects, int(re.search(r"/ToUnicode (\d+) 0 R", objects[font])[1]))
    codes = {}
    for block in re.findall(r"beginbfchar(.*?)endbfchar", cmap, re.S):
        for code, text in re.findall(r"<(\w+)>\s*<(\w+)>", block):
            codes[int(code, 16)] = bytes.fromhex(text).decode("utf-16-be")
    for block in re.findall(r"beginbfrange(.*?)endbfrange", cmap, re.S):
        for low, high, first in re.findall(r"<(\w+)>\s*<(\w+)>\s*<(\w+)>", block):
            start = bytes.fromhex(first).decode("utf-16-be")
            for offset in range(int(high, 16) - int(low, 16) + 1):
                codes[int(low, 16) + offset] = start[:-1] + chr(ord(start[-1]) + offset)
    return codes


def drawn_text(objects: dict[int, str]) -> tuple[dict[tuple[int, int], list[str]], list[str]]:
    """The text drawn in each marked content (by page and MCID), and the text drawn outside any."""
    marked: dict[tuple[int, int], list[str]] = {}
    unmarked: list[str] = []
    pages = [(n, body) for n, body in objects.items() if re.search(r"/Type /Page\b", body)]
    for page, body in pages:
        fonts = re.search(r"/Font <<(.*?)>>", body, re.S)[1]
        maps = {
            name: to_unicode(objects, int(n)) for name, n in re.findall(r"/(\w+) (\d+) 0 R", fonts)
        }
        font: dict[int, str] = {}
        inside: list[int | None] = []  # open marked content, innermost last
        for name, mcid, operator, shown, shown_many in re.findall(
            r"/(\w+) [\d.]+ Tf|<<\s*/MCID (\d+)\s*>>\s*BDC|\b(BDC|BMC|EMC)\b"
            r"|<([0-9A-Fa-f]*)> ?Tj|\[([^\]]*)\] ?TJ",
            stream(objects, int(re.search(r"/Contents (\d+) 0 R", body)[1])),
        ):
            if name:
                font = maps[name]
            elif mcid or operator in ("BDC", "BMC"):
                inside.append(int(mcid) if mcid else None)
            elif operator == "EMC":
                inside.pop()
            else:
                ids = [m for m in inside if m is not None]
                into = marked.setdefault((page, ids[-1]), []) if ids else unmarked
                for codes in [shown] if shown else re.findall(r"<([0-9A-Fa-f]*)>", shown_many):
                    glyph_codes = [int(codes[i : i + 4], 16) for i in range(0, len(codes), 4)]
                    into.append("".join(font.get(g, "\ufffd") for g in glyph_codes))
    return marked, unmarked


def pdf_text(pdf: Path) -> str:
    """The text of a PDF printed by headless Chromium in reading order, then whatever it draws
    outside its structure (decoration), so that nothing drawn is left out."""
    objects = pdf_objects(pdf)
    marked, unmarked = drawn_text(objects)

    def read(element: int) -> Iterator[str]:
        body = objects[element]
        own_page = re.search(r"/Pg (\d+) 0 R", body)
        kids = re.search(r"/K (\[.*?\]|\d+ 0 R|\d+)", body, re.S)
        for page, page_mcid, child, mcid in re.findall(
            r"/Pg (\d+) 0 R\s*/MCID (\d+)|(\d+) 0 R|(\d+)", kids[1] if kids else ""
        ):
            if child:
                yield from read(int(child))
            else:
                key = (int(page), int(page_mcid)) if page else (int(own_page[1]), int(mcid))
                yield "".join(marked.pop(key, []))

    root = next(n for n, body in objects.items() if "/Type /StructTreeRoot" in body)
    return "".join([*read(root), *chain.from_iterable(marked.values()), *unmarked])


def squeezed(text: str) -> str:
    """`text` compatibility-normalised (ligatures, no-break spaces), hyphens and dashes as
    "-", without whitespace: what survives a PDF's line breaks and glyph positioning."""
    text = unicodedata.normalize("NFKC", text)
    return re.sub(r"\s+", "", re.sub(r"[\u2010-\u2015\u2212]", "-", text))


def one_line(text: str) -> str:
    return " ".join(text.split())


def quotes(page: str) -> set[str]:
    """The text of each `<blockquote>` of `page`, on one line."""
    return {one_line(q) for q in re.findall(r"<blockquote[^>]*>(.*?)</blockquote>", page, re.S)}


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    """Per report (digest, experiment): its HTML, Markdown, e-mail HTML and text parts (read
    back from the .eml) and PDF text, each as a reader gets it (entities decoded)."""
    out = tmp_path_factory.mktemp("reports")
    seen = {}
    for kind, rendered in render_both(planted()).items():
        page = write_report(rendered, out)
        message = email_message(rendered.title, rendered.email_html, rendered.text, rendered.charts)
        mail = BytesParser(policy=email.policy.default).parsebytes(
            write_mail(page, message).read_bytes()
        )
        seen[kind] = {
            "html": html.unescape(page.read_text(encoding="utf-8")),
            "markdown": html.unescape(page.with_suffix(".md").read_text(encoding="utf-8")),
            "e-mail html": html.unescape(mail.get_body(("html",)).get_content()),
            "e-mail text": mail.get_body(("plain",)).get_content(),
            "pdf": pdf_text(print_pdf(page)),
        }
    return seen


def test_no_corpus_phone_or_address_reaches_any_output(outputs) -> None:
    phones = [spelled(p) for line in PHONES for p in line.secrets]
    addresses = [a.casefold() for line in EMAILS for a in line.secrets]
    for kind, forms in outputs.items():
        for form, text in forms.items():
            leaked = [p.pattern for p in phones if p.search(text)]
            leaked += [a for a in addresses if a in text.casefold()]
            assert not leaked, f"{kind} {form}"
            assert not set(BIDI) & set(text), f"{kind} {form}"


def test_quoted_comments_show_redacted_with_every_other_number_kept(outputs) -> None:
    shown = [one_line(joined(c, "shown")) for c in comments()]
    for kind in ("digest", "experiment"):
        for form in ("html", "e-mail html"):
            assert set(shown) <= quotes(outputs[kind][form]), f"{kind} {form}"
        pdf = squeezed(outputs[kind]["pdf"])
        assert all(squeezed(c) in pdf for c in shown), kind
    # Only the pilot's report quotes comments in Markdown and so in the e-mail's text part.
    for form in ("markdown", "e-mail text"):
        assert all(one_line(c) in one_line(outputs["experiment"][form]) for c in shown)


def test_a_bidi_override_does_not_reorder_what_the_pdf_shows(outputs) -> None:
    for forms in outputs.values():
        assert squeezed(SPOOF_SHOWN) in squeezed(forms["pdf"])
        assert "exe.pdf" not in forms["pdf"]
