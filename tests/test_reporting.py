"""Report rendering without a browser: formatting, escaping, the index, e-mail form, PDF."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from connectors.errors import ConfigError
from tasks import charts, store
from tasks.alerts import Alert
from tasks.digest import build_digest, digest_month
from tasks.hypotheses import load_hypothesis
from tasks.labels import alert_text, labels, pain_title, reason_text
from tasks.loader import CxData
from tasks.outputs import print_pdf, record_report, write_index, write_report
from tasks.pilot_report import (
    build_experiment,
    experiment_verbatims,
    metric_intervals,
    status_label,
)
from tasks.render import effect, render
from tests.conftest import REPO
from tests.test_reports_html import Demo, demo_company, render_both


@pytest.fixture(scope="module")
def small() -> Demo:
    return demo_company(2000)


def span(tickets: tuple[str, str] | None, responses: tuple[str, str] | None) -> CxData:
    """Data whose tickets and survey answers fall daily between the given days, if any."""

    def daily(days: tuple[str, str] | None) -> pd.Series:
        return pd.Series(pd.date_range(*days, freq="D") if days else [], dtype="datetime64[ns]")

    empty = pd.DataFrame()
    return CxData(
        customers=empty,
        tickets=pd.DataFrame({"created_at": daily(tickets) + pd.Timedelta(hours=10)}),
        responses=pd.DataFrame({"submitted_at": daily(responses) + pd.Timedelta(hours=12)}),
        orders=empty,
        web=empty,
    )


def test_effect_formats_relative_and_absolute_values() -> None:
    assert effect(-0.4, True) == "-40.0%"
    assert effect(8, False) == "+8.00"
    assert effect(float("nan"), False) == "n/a"


def test_customer_text_is_escaped_by_the_templates() -> None:
    evil = "<script>alert('x')</script>"
    page = render(
        "index.html.j2", {"t": labels("en"), "title": evil, "entries": [], "generated_at": "now"}
    )
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page


def test_region_chart_marks_low_bars_red_and_keeps_ids_unique() -> None:
    first = charts.bars("a", ["x", "<y>"], [1, 2], "T", "pts", highlight=[True, False])
    second = charts.bars("b", ["x", "y"], [1, 2], "T", "pts")
    assert charts.ALERT_COLOUR in first.svg and charts.ALERT_COLOUR not in second.svg
    assert "&lt;y&gt;" in first.svg and "<y>" not in first.svg
    ids = re.findall(r'id="([^"]+)"', first.svg + second.svg)
    assert len(ids) == len(set(ids))


def test_index_links_every_report_on_disk_and_email_form_uses_cid_images(
    small: Demo, tmp_path
) -> None:
    engine = store.open_store(f"sqlite:///{tmp_path / 'store.db'}")
    reports = render_both(small)
    out = tmp_path / "out"
    paths = {kind: write_report(r, out) for kind, r in reports.items()}
    for kind, path in paths.items():
        record_report(engine, kind, path)
    record_report(engine, "digest", out / "digest-1999-01.html")  # gone from disk
    index = write_index(engine, out).read_text(encoding="utf-8")
    assert 'href="digest-2026-10.html"' in index
    assert 'href="experiment-auto-route-tickets.html"' in index
    assert "1999" not in index
    assert not re.search(r"(src|href)=\"https?://", index + paths["digest"].read_text())
    digest = reports["digest"]
    assert "<svg" not in digest.email_html
    assert set(re.findall(r'src="cid:([^"]+)"', digest.email_html)) == {
        c.cid for c in digest.charts
    }


def test_pdf_is_printed_by_headless_chromium(tmp_path) -> None:
    page = tmp_path / "r.html"
    page.write_text("<!doctype html><h1>CX digest</h1>", encoding="utf-8")
    pdf = print_pdf(page)
    assert pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 500


@pytest.mark.parametrize(
    ("tickets", "responses", "month"),
    [
        (("2026-08-03", "2026-10-14"), ("2026-08-04", "2026-10-14"), "2026-09"),
        (("2026-08-03", "2026-10-31"), ("2026-08-04", "2026-10-30"), "2026-10"),
        (("2026-08-03", "2026-10-30"), ("2026-08-04", "2026-10-29"), "2026-09"),
        (None, ("2026-08-04", "2026-11-15"), "2026-10"),
        (("2026-10-05", "2026-10-14"), ("2026-10-06", "2026-10-14"), "2026-10"),
    ],
    ids=["mid-month", "last-day", "day-before-last", "responses-only", "one-partial-month"],
)
def test_digest_covers_the_last_complete_month(tickets, responses, month) -> None:
    found = digest_month(span(tickets, responses))
    assert found.label == month
    assert (found.start, found.end) == (
        pd.Period(month).start_time,
        (pd.Period(month) + 1).start_time,
    )


def test_digest_of_data_ending_mid_month_is_the_previous_month(small: Demo) -> None:
    data = small.data
    cut = pd.Timestamp("2026-10-15")
    data = CxData(
        data.customers,
        data.tickets[data.tickets["created_at"] < cut],
        data.responses[data.responses["submitted_at"] < cut],
        data.orders,
        data.web,
    )
    digest = build_digest(data, small.pain, small.results, small.hypotheses)
    assert digest.name == "digest-2026-09" and "2026-09" in digest.title
    assert digest.summary.startswith(f"{digest.title}: ")


def test_own_labels_override_single_words_also_inside_groups(tmp_path: Path) -> None:
    (tmp_path / "labels.yaml").write_text("ru: {topic_names: {login: авторизация}}", "utf-8")
    words = labels("ru", tmp_path)
    assert words["topic_names"]["login"] == "авторизация"
    assert words["topic_names"]["delivery"] == "доставка"
    assert pain_title("ticket_topic", "ticket:login", {}, words) == "Обращения: авторизация"
    assert labels("ru")["topic_names"]["login"] == "вход"


def test_a_label_given_twice_is_an_error_naming_both_lines(tmp_path: Path) -> None:
    (tmp_path / "labels.yaml").write_text("ru:\n  digest: Сводка\n  digest: Дайджест\n", "utf-8")
    with pytest.raises(
        ConfigError, match=r"labels\.yaml:3: `ru\.digest` is given twice, on lines 2 and 3"
    ):
        labels("ru", tmp_path)


def test_names_with_colons_stay_whole_in_pain_point_titles() -> None:
    words = labels("en")
    region = pain_title("region", "region:Nizhny Novgorod: Volga", {}, words)
    assert region == "Customers in Nizhny Novgorod: Volga"
    step = pain_title("funnel_step", "funnel:Step 2: Checkout:desktop", {}, words)
    assert step == "Step 2: Checkout on desktop"
    segment = pain_title("comment_topic", "comment:delivery:B2B:SMB", {}, words)
    assert segment == "Comments about delivery (B2B:SMB customers)"


def test_a_broken_label_override_names_the_entry_and_the_fields_it_may_use(tmp_path) -> None:
    own = (
        "ru: {reasons: {srm: 'p = {pvalue:.2g}'}, alert_texts: {complaint_growth: 'рост {growth'}}"
    )
    (tmp_path / "labels.yaml").write_text(own, "utf-8")
    words = labels("ru", tmp_path)
    with pytest.raises(ConfigError, match=r"ru\.reasons\.srm .*KeyError.* it may use .*\{p\}"):
        reason_text({"rule": "srm", "p": 0.001}, words)
    evidence = {"topic": "returns", "period_before": "2026-09", "before": 3, "after": 9}
    with pytest.raises(ConfigError, match=r"ru\.alert_texts\.complaint_growth .*ValueError"):
        alert_text(
            "complaint_growth", "2026-10", evidence | {"growth": 2.0, "p_value": 0.01}, words
        )


def test_an_alert_stored_by_an_older_cxloop_shows_its_stored_text(small: Demo) -> None:
    old = Alert(
        "complaint_growth",
        "complaint_growth:topic=returns",
        "2026-10",
        {"topic": "returns", "before": 308, "after": 685, "p_value": 1e-9},  # no period_before
        "tickets about returns grew +115% per day",
    )
    digest = build_digest(small.data, small.pain, small.results, small.hypotheses, [old], "ru")
    assert "tickets about returns grew +115% per day" in digest.html and "рост жалоб" in digest.html


def test_pilot_verbatims_quote_the_pilots_topic_first_then_the_rest() -> None:
    pilot = load_hypothesis(REPO / "hypotheses" / "auto-route-tickets.yaml")  # ticket:delivery
    said = [
        "The prices could be a little lower this year",
        "The courier never came and the delivery was two days late",
        "The app keeps logging me out of my account",
        "Support answered politely but slowly",
    ]
    customers = [f"C{i}" for i in range(len(said))]
    responses = pd.DataFrame(
        {"customer_id": customers, "comment": said, "submitted_at": pd.Timestamp("2026-09-10")}
    )
    arms = pd.DataFrame({"customer_id": customers, "arm": "pilot"})

    quoted = experiment_verbatims(responses, arms, pilot)["pilot"]["before"]

    assert quoted[0] == said[1] and len(quoted) == 3


def test_pilot_report_quotes_the_arm_sizes_its_stored_srm_test_counted(small: Demo) -> None:
    """The SRM line shows the stored result's arm sizes, never a recount of today's data, so
    the sizes and the stored p-value always belong together."""
    pilot = next(h for h in small.hypotheses if h.id == "auto-route-tickets")
    results = small.results[small.results["hypothesis_id"] == pilot.id].copy()
    results.loc[results["role"] == "primary", ["n_pilot", "n_control"]] = [1234, 5678]

    report = build_experiment(pilot, results, small.arms[pilot.id], small.data, small.pain)

    srm = re.search(r'id="srm">(.*?)</p>', report.html, re.S).group(1)
    assert "1,234" in srm and "5,678" in srm
    assert "1234 / 5678" in report.markdown


@pytest.mark.parametrize("language", ["en", "ru"])
def test_a_running_pilot_past_its_end_reads_ended_awaiting_decision(language: str) -> None:
    t = labels(language)
    running = load_hypothesis(REPO / "hypotheses" / "auto-route-tickets.yaml").model_copy(
        update={"status": "running"}
    )
    end = pd.Timestamp(running.schedule.pilot.end)
    assert status_label(running, end, t) == t["running"]
    assert status_label(running, end + pd.Timedelta(days=1), t) == t["ended_awaiting"]
    concluded = running.model_copy(update={"status": "concluded"})
    assert status_label(concluded, end + pd.Timedelta(days=1), t) == t["concluded"]
    assert status_label(running, pd.NaT, t) == t["running"]


def test_the_interval_chart_has_a_panel_per_estimated_metric_and_the_guardrail_margin() -> None:
    t = labels("en")
    rows = [
        {"metric": "frt_hours", "role": "primary", "relative": True,
         "estimate": -0.366, "ci_low": -0.471, "ci_high": -0.240},
        {"metric": "nps", "role": "secondary", "relative": False,
         "estimate": 7.9, "ci_low": 2.1, "ci_high": 13.6},
        {"metric": "csat", "role": "guardrail", "relative": False,
         "estimate": -0.02, "ci_low": -0.09, "ci_high": 0.05},
        {"metric": "fcr", "role": "secondary", "relative": False,
         "estimate": None, "ci_low": None, "ci_high": None},
    ]  # fmt: skip
    guardrails = [{"metric": "csat", "margin": -0.1}]
    (chart,) = metric_intervals(rows, guardrails, t)
    for label in ("First response time (primary), %", "NPS (secondary), points",
                  "CSAT (guardrail), score", t["margin"]):  # fmt: skip
        assert label in chart.svg
    assert t["fcr"] not in chart.svg  # no estimate, no panel
    assert chart.svg.count(">margin<") == 1
    assert metric_intervals(rows[3:], guardrails, t) == []
