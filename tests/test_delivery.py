"""Delivery on loopback: a real SMTP server (aiosmtpd), webhook servers, retries across runs."""

from __future__ import annotations

import base64
import email.policy
import json
import re
import socket
import warnings
from email.parser import BytesParser
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from pytest_httpserver import HTTPServer

from tasks import store
from tasks.delivery import Outgoing, deliver, email_message, write_mail
from tasks.delivery_settings import DeliveryConfig, SmtpConfig, WebhookConfig
from tasks.labels import labels, reason_text
from tasks.outputs import record_report, write_report
from tasks.pilot_report import build_experiment
from tasks.render import Rendered
from tests.test_reports_html import Browser, Demo, demo_company, render_both

SECRET_HOOK = "/services/T000/B000/very-secret-token"
AUTO_ROUTE = "auto-route-tickets"
FEWER = {"pilot": 150, "control": 170, "need": 200}  # another cycle, more observations


@pytest.fixture(scope="module")
def company() -> Demo:
    return demo_company(3000)


@pytest.fixture(scope="module")
def rendered(company: Demo) -> dict[str, Rendered]:
    return render_both(company)


@pytest.fixture(scope="module")
def digest(rendered: dict[str, Rendered]) -> Rendered:
    return rendered["digest"]


def decided(company: Demo, decision: str, why: dict) -> Rendered:
    """The auto-route report rendered again after its pilot was decided `decision`, `why`
    as `tasks.experiments.decide` gives it."""
    hypothesis = next(h for h in company.hypotheses if h.id == AUTO_ROUTE)
    results = company.results[company.results["hypothesis_id"] == AUTO_ROUTE].copy()
    primary = results["role"] == "primary"
    results.loc[primary, "decision"] = decision
    results.loc[primary, "reason"] = reason_text(why, labels("en"))
    cells = zip(results["cells"], primary, strict=True)
    results["cells"] = [c | {"why": why} if is_primary else c for c, is_primary in cells]
    return build_experiment(
        hypothesis, results, company.arms[AUTO_ROUTE], company.data, company.pain
    )


def written(rendered: Rendered, out: Path, engine) -> Outgoing:
    path = write_report(rendered, out)
    write_mail(
        path, email_message(rendered.title, rendered.email_html, rendered.text, rendered.charts)
    )
    record_report(engine, rendered.kind, path)
    return Outgoing(path, rendered.kind, rendered.title, rendered.summary, rendered.news)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Inbox:
    def __init__(self) -> None:
        self.envelopes: list = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.envelopes.append(envelope)
        return "250 OK"


def test_email_reaches_a_real_smtp_server_with_text_html_and_every_inline_chart(
    digest, tmp_path
) -> None:
    engine = store.open_store(f"sqlite:///{tmp_path / 'store.db'}")
    inbox, port = Inbox(), _port()

    def login(server, session, envelope, mechanism, data) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"cx", b"pw-1")
        return AuthResult(success=ok)

    controller = Controller(
        inbox, hostname="127.0.0.1", port=port, authenticator=login, auth_require_tls=False
    )
    controller.start()
    try:
        config = DeliveryConfig(
            smtp=SmtpConfig(
                host="127.0.0.1", port=port, security="none", sender="cxloop@example.com"
            ),
            attempts=1,
        )
        env = {"CXLOOP_SMTP_USER": "cx", "CXLOOP_SMTP_PASSWORD": "pw-1"}
        outgoing = written(digest, tmp_path / "out", engine)
        recipients = {"digest": ["cx-team@example.com"]}
        tried = deliver(engine, [outgoing], recipients, config, env)
    finally:
        controller.stop()
    assert tried["status"].tolist() == ["sent"], tried["last_error"].tolist()
    assert [e.rcpt_tos for e in inbox.envelopes] == [["cx-team@example.com"]]
    message = BytesParser(policy=email.policy.default).parsebytes(inbox.envelopes[0].content)
    assert message["Subject"] == digest.title and message["From"] == "cxloop@example.com"
    for header in ("From", "To", "Date", "Message-ID"):
        assert len(message.get_all(header)) == 1, header
    assert message["To"] == "cx-team@example.com"
    assert message["Message-ID"].endswith("@example.com>")
    text = message.get_body(("plain",)).get_content()
    page = message.get_body(("html",)).get_content()
    assert "NPS" in text and "<svg" not in page
    cids = set(re.findall(r'src="cid:([^"]+)"', page))
    images = {
        part["Content-ID"].strip("<>"): part.get_content()
        for part in message.walk()
        if part.get_content_type() == "image/png"
    }
    assert cids and cids == set(images) == {c.cid for c in digest.charts}
    assert all(png.startswith(b"\x89PNG") for png in images.values())
    assert store.read_frame(engine, store.Report)["delivered_to"].tolist() == [
        ["email:cx-team@example.com"]
    ]
    # Sent once: the next run does not mail the same report again.
    assert deliver(engine, [outgoing], recipients, config, env).empty


def test_saved_email_opens_with_headers_inline_charts_inline_styles_and_key_figures(
    digest, tmp_path
) -> None:
    page = write_report(digest, tmp_path)
    message = email_message(
        digest.title,
        digest.email_html,
        digest.text,
        digest.charts,
        sender="cx@example.com",
        to=["lead@example.com"],
    )
    saved = BytesParser(policy=email.policy.default).parsebytes(
        write_mail(page, message).read_bytes()
    )
    assert saved["From"] == "cx@example.com" and saved["To"] == "lead@example.com"
    assert saved["Date"].datetime.tzinfo is not None
    assert re.fullmatch(r"<[^@<>]+@example\.com>", saved["Message-ID"])
    images = [part for part in saved.walk() if part.get_content_type() == "image/png"]
    assert len(images) == len(digest.charts)
    assert {part.get_content_disposition() for part in images} == {"inline"}
    html = saved.get_body(("html",)).get_content()
    cids = {part["Content-ID"].strip("<>"): part.get_content() for part in images}
    assert set(re.findall(r'src="cid:([^"]+)"', html)) == set(cids)
    text = saved.get_body(("plain",)).get_content()
    tiles = {row["metric"]: row for row in digest.tables["kpis"]}
    assert f"{tiles['nps']['value']:.1f}" in text and f"{tiles['csat']['value']:.1f}" in text
    # As a mail client that drops <style> shows it: cid: images resolved, the block removed.
    for cid, png in cids.items():
        html = html.replace(f"cid:{cid}", "data:image/png;base64," + base64.b64encode(png).decode())
    opened = tmp_path / "opened.html"
    opened.write_text(re.sub(r"<style>.*?</style>", "", html, flags=re.S), encoding="utf-8")
    browser = Browser()
    try:
        browser.open(opened)
        view = browser.evaluate(SEEN_IN_MAIL)
        assert browser.errors() == []
    finally:
        browser.close()
    assert view["styles"] == 0
    assert len(view["images"]) == len(cids) and all(w > 300 for w in view["images"]), view
    assert view["collapse"] == "collapse" and view["padding"] == "7px"
    assert view["muted"] == "rgb(102, 113, 126)"
    assert f"{tiles['nps']['value']:.1f}" in view["text"]


SEEN_IN_MAIL = """({
  styles: document.querySelectorAll('style').length,
  images: [...document.images].map(i => i.complete ? i.naturalWidth : 0),
  collapse: getComputedStyle(document.querySelector('table')).borderCollapse,
  padding: getComputedStyle(document.querySelector('td')).paddingTop,
  muted: getComputedStyle(document.querySelector('.muted')).color,
  text: document.body.innerText,
})"""


def test_slack_and_teams_webhooks_get_summary_and_link(
    digest, tmp_path, httpserver: HTTPServer
) -> None:
    engine = store.open_store(f"sqlite:///{tmp_path / 'store.db'}")
    httpserver.expect_request(SECRET_HOOK, method="POST").respond_with_data("ok")
    httpserver.expect_request("/teams", method="POST").respond_with_data("1", status=202)
    env = {"SLACK_URL": httpserver.url_for(SECRET_HOOK), "TEAMS_URL": httpserver.url_for("/teams")}
    config = DeliveryConfig(
        webhooks=[
            WebhookConfig(kind="slack", url_env="SLACK_URL"),
            WebhookConfig(kind="teams", url_env="TEAMS_URL"),
        ],
        base_url="https://reports.example.com/cx",
        directory=tmp_path / "shared",
        attempts=1,
    )
    tried = deliver(engine, [written(digest, tmp_path / "out", engine)], {}, config, env)
    assert sorted(tried["channel"]) == ["directory", "slack", "teams"]
    assert set(tried["status"]) == {"sent"}
    bodies = {request.path: json.loads(request.data) for request, _ in httpserver.log}
    slack = bodies[SECRET_HOOK]["text"]
    assert digest.title in slack and "https://reports.example.com/cx/digest-2026-10.html" in slack
    card = bodies["/teams"]["attachments"][0]["content"]
    assert card["body"][1]["text"] == digest.summary
    assert card["actions"][0]["url"] == "https://reports.example.com/cx/digest-2026-10.html"
    assert (tmp_path / "shared" / "digest-2026-10.html").exists()


def test_chat_without_base_url_is_warned_about_and_names_the_report_file(
    digest, tmp_path, httpserver: HTTPServer
) -> None:
    hooks = [
        WebhookConfig(kind="slack", url_env="SLACK_URL"),
        WebhookConfig(kind="teams", url_env="TEAMS_URL"),
    ]
    with pytest.warns(UserWarning, match=r"reports\.delivery\.base_url is not set"):
        config = DeliveryConfig(webhooks=hooks, attempts=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DeliveryConfig(webhooks=hooks, base_url="https://reports.example.com")
        DeliveryConfig()
    engine = store.open_store(f"sqlite:///{tmp_path / 'store.db'}")
    httpserver.expect_request("/slack", method="POST").respond_with_data("ok")
    httpserver.expect_request("/teams", method="POST").respond_with_data("1", status=202)
    env = {"SLACK_URL": httpserver.url_for("/slack"), "TEAMS_URL": httpserver.url_for("/teams")}
    outgoing = written(digest, tmp_path / "out", engine)
    tried = deliver(engine, [outgoing], {}, config, env)
    assert set(tried["status"]) == {"sent"}, tried["last_error"].tolist()
    bodies = {request.path: json.loads(request.data) for request, _ in httpserver.log}
    where = f"Report file: {outgoing.report.resolve()} on {socket.gethostname()}"
    slack = bodies["/slack"]["text"]
    assert slack.endswith(where) and "file://" not in slack and "Open the report" not in slack
    card = bodies["/teams"]["attachments"][0]["content"]
    assert card["body"][-1]["text"] == where and card["actions"] == []
    assert "file://" not in json.dumps(bodies)


def test_failing_webhook_is_recorded_without_its_url_and_retried_next_run(
    digest, tmp_path, httpserver: HTTPServer
) -> None:
    engine = store.open_store(f"sqlite:///{tmp_path / 'store.db'}")
    httpserver.expect_request(SECRET_HOOK).respond_with_data("down", status=503)
    env = {"SLACK_URL": httpserver.url_for(SECRET_HOOK)}
    config = DeliveryConfig(
        webhooks=[WebhookConfig(kind="slack", url_env="SLACK_URL")],
        base_url="https://reports.example.com",
        attempts=2,
    )
    outgoing = written(digest, tmp_path / "out", engine)
    first = deliver(engine, [outgoing], {}, config, env, sleep=0)
    assert first[["status", "attempts"]].values.tolist() == [["failed", 2]]
    assert first["last_error"].iloc[0] == "slack webhook answered HTTP 503"
    assert len(httpserver.log) == 2 and outgoing.report.exists()
    stored = store.read_frame(engine, store.Delivery)
    assert "very-secret-token" not in stored.to_json(date_format="iso")

    httpserver.clear()
    httpserver.expect_request(SECRET_HOOK).respond_with_data("ok")
    second = deliver(engine, [], {}, config, env, sleep=0)
    assert second[["status", "attempts"]].values.tolist() == [["sent", 3]]
    assert len(httpserver.log) == 1
    assert digest.title in json.loads(httpserver.log[0][0].data)["text"]


def test_unreachable_smtp_fails_with_a_message_and_no_password(digest, tmp_path) -> None:
    engine = store.open_store(f"sqlite:///{tmp_path / 'store.db'}")
    config = DeliveryConfig(
        smtp=SmtpConfig(
            host="127.0.0.1", port=_port(), security="starttls", sender="a@b.c", timeout=2
        ),
        attempts=1,
    )
    env = {"CXLOOP_SMTP_USER": "cx", "CXLOOP_SMTP_PASSWORD": "pw-secret"}
    outgoing = written(digest, tmp_path / "out", engine)
    tried = deliver(engine, [outgoing], {"digest": ["x@example.com"]}, config, env, sleep=0)
    assert tried["status"].tolist() == ["failed"]
    assert "Connection refused" in tried["last_error"].iloc[0]
    assert "pw-secret" not in store.read_frame(engine, store.Delivery).to_json(date_format="iso")


def test_rewritten_report_goes_out_again_only_when_its_decision_changed(
    company, rendered, tmp_path, httpserver: HTTPServer
) -> None:
    engine = store.open_store(f"sqlite:///{tmp_path / 'store.db'}")
    httpserver.expect_request(SECRET_HOOK, method="POST").respond_with_data("ok")
    inbox, port = Inbox(), _port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    config = DeliveryConfig(
        smtp=SmtpConfig(host="127.0.0.1", port=port, security="none", sender="cx@example.com"),
        webhooks=[WebhookConfig(kind="slack", url_env="SLACK_URL", reports=["experiment"])],
        base_url="https://reports.example.com",
        attempts=1,
    )
    env = {"SLACK_URL": httpserver.url_for(SECRET_HOOK)}
    recipients = {"experiment": ["product@example.com"]}
    out = tmp_path / "out"
    running = rendered["experiment"]
    reason = "guardrail breached: CSAT"
    rejected = decided(company, "reject", {"rule": "guardrail", "metrics": ["csat"]})
    assert "inconclusive" in running.summary and reason in rejected.summary
    # Fresh estimates with the same decision are no news.
    updated = decided(company, "inconclusive", {"rule": "too_few", **FEWER})
    assert updated.summary != running.summary and updated.news == running.news
    controller.start()
    try:
        first = deliver(engine, [written(running, out, engine)], recipients, config, env)
        # Later cycles rewrite the same file; while the decision stands nothing is re-sent.
        unchanged = deliver(engine, [written(updated, out, engine)], recipients, config, env)
        outgoing = written(rejected, out, engine)
        second = deliver(engine, [outgoing], recipients, config, env)
        third = deliver(engine, [written(rejected, out, engine)], recipients, config, env)
    finally:
        controller.stop()
    assert sorted(first["channel"]) == ["email", "slack"] and set(first["status"]) == {"sent"}
    assert unchanged.empty and third.empty
    assert outgoing.report == Path(first["report"].iloc[0])
    assert sorted(second["channel"]) == ["email", "slack"]
    assert set(second["status"]) == {"sent"} and set(second["attempts"]) == {1}

    assert len(httpserver.log) == len(inbox.envelopes) == 2
    slack = json.loads(httpserver.log[1][0].data)["text"]
    assert reason in slack and "inconclusive" not in slack
    message = BytesParser(policy=email.policy.default).parsebytes(inbox.envelopes[1].content)
    assert reason in message.get_body(("plain",)).get_content()
    stored = store.read_frame(engine, store.Delivery)
    assert set(stored["summary"]) == {rejected.summary} and set(stored["status"]) == {"sent"}
