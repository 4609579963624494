"""Report delivery: a directory, e-mail over SMTP, Slack and Microsoft Teams incoming webhooks.

Every (report, channel, target) is a row of the `delivery` table, holding the news last
queued for it. Reports are rewritten at every run under the same path, so a report goes out
again only when its news (the digest's month, a pilot's decision) differs from the stored one.
A send is tried a few times with backoff; one that still fails is recorded as `failed` with a
redacted error and tried again on the next run, while the report stays on disk. Secrets
(SMTP credentials, webhook URLs) are read from the environment variables the configuration
names, and never stored, logged or put in an error message.
"""

from __future__ import annotations

import email.policy
import os
import re
import shutil
import smtplib
import socket
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import formatdate, make_msgid
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pandas as pd
from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from connectors.errors import CxloopError
from tasks import store

if TYPE_CHECKING:
    from tasks.charts import Chart
    from tasks.delivery_settings import DeliveryConfig, SmtpConfig, WebhookConfig


class DeliveryError(CxloopError):
    """A send that failed; the message is safe to store (no secrets)."""


@dataclass(frozen=True)
class Outgoing:
    """A written report to deliver: its HTML path, kind, title, one-paragraph summary and
    news (it goes out again only when that changes: the digest's month, a pilot's decision)."""

    report: Path
    kind: str
    title: str
    summary: str
    news: str


# A selector simple enough to apply without a CSS engine: a tag, a class, or a tag.class.
SIMPLE_SELECTOR = re.compile(r"[a-z][a-z0-9]*|[a-z0-9]*\.[a-z_][\w-]*")
# Reports are rendered by autoescaped templates, so `<` and `>` never occur inside text or
# attribute values: every `<name ...>` is a start tag.
START_TAG = re.compile(r"<([a-z][a-z0-9]*)(\s[^<>]*?)?(/?)>")
STYLE_BLOCK = re.compile(r"<style>(.*?)</style>", re.S)


def simple_rules(css: str) -> dict[str, str]:
    """The declarations of every top-level rule whose selectors are simple (`td`, `.muted`,
    `span.delta`), by selector; `@media`/`@page` blocks and compound selectors are left out."""
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    rules: dict[str, str] = {}
    depth, start, selectors = 0, 0, ""
    for at, char in enumerate(css):
        if char == "{":
            depth += 1
            if depth == 1:
                selectors, start = css[start:at].strip(), at + 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                body = css[start:at].strip().rstrip(";")
                if not selectors.startswith("@"):
                    for selector in (s.strip() for s in selectors.split(",")):
                        if SIMPLE_SELECTOR.fullmatch(selector):
                            rules[selector] = f"{rules.get(selector, '')}{body}; "
                start = at + 1
    return rules


def inline_styles(html: str) -> str:
    """`html` with the simple rules of its own `<style>` copied onto each element's `style`
    (tag rules, then class rules, then the element's own), for mail clients that drop
    `<style>`; the block itself stays for those that keep it."""
    rules = simple_rules("".join(STYLE_BLOCK.findall(html)))

    def styled(tag: re.Match[str]) -> str:
        name, attributes, closing = tag.group(1), tag.group(2) or "", tag.group(3)
        classes = re.search(r'\sclass="([^"]*)"', attributes)
        names = classes.group(1).split() if classes else []
        found = [rules.get(name, "")]
        found += [rules.get(f".{c}", "") for c in names]
        found += [rules.get(f"{name}.{c}", "") for c in names]
        own = re.search(r'\sstyle="([^"]*)"', attributes)
        style = "".join(found) + (own.group(1) if own else "")
        if not style.strip():
            return tag.group(0)
        attributes = re.sub(r'\sstyle="[^"]*"', "", attributes)
        return f'<{name}{attributes} style="{escape(style.strip(), quote=True)}"{closing}>'

    head, body = html.split("<body", 1) if "<body" in html else ("", html)
    return head + START_TAG.sub(styled, "<body" + body if head else body)


def email_message(
    title: str,
    html: str,
    text: str,
    charts: Sequence[Chart],
    sender: str = "cxloop@localhost",
    to: Sequence[str] = (),
) -> EmailMessage:
    """A multipart/alternative message: `text` and `html` (styles inlined), charts as
    related PNGs shown inline by Content-ID.

    It carries From, To, Date and Message-ID so the copy on disk opens in any mail client;
    `send_email` sets sender, recipient, date and id again for each send.
    """
    message = EmailMessage(policy=email.policy.SMTP)
    message["Subject"] = title
    message["From"] = sender
    message["To"] = ", ".join(to) if to else "undisclosed-recipients:;"
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain=_domain(sender))
    message.set_content(text)
    message.add_alternative(inline_styles(html), subtype="html")
    html_part = message.get_payload()[1]
    for chart in charts:
        html_part.add_related(
            chart.png,
            "image",
            "png",
            cid=f"<{chart.cid}>",
            disposition="inline",
            filename=f"{chart.name}.png",
        )
    return message


def _domain(sender: str) -> str | None:
    return sender.rpartition("@")[2] or None


def mail_path(report: Path) -> Path:
    """Where the e-mail form of `report` is kept, next to it."""
    return report.with_suffix(".eml")


def write_mail(report: Path, message: EmailMessage) -> Path:
    """The message saved next to the report, for sending now and for retries later."""
    path = mail_path(report)
    path.write_bytes(message.as_bytes(policy=email.policy.SMTP))
    return path


def report_link(report: Path, base_url: str | None) -> str | None:
    """The report's address under `base_url`, where reports are published; None without it."""
    return base_url.rstrip("/") + "/" + report.name if base_url else None


def report_location(report: Path) -> str:
    """Where an unpublished report lies, for chat: its file on this machine (a file:// link
    would open nothing on the reader's computer)."""
    return f"{report.resolve()} on {socket.gethostname()}"


def _secret(name: str | None, env: Mapping[str, str], what: str) -> str | None:
    if not name:
        return None
    value = env.get(name)
    if not value:
        raise DeliveryError(f"{what}: environment variable {name} is not set")
    return value


def _redacted(exc: BaseException, secrets: Sequence[str | None]) -> str:
    message = f"{type(exc).__name__}: {exc}"
    for secret in secrets:
        if secret:
            message = message.replace(secret, "***")
    return message[:500]


def send_email(report: Path, to: str, smtp: SmtpConfig, env: Mapping[str, str]) -> None:
    """The saved e-mail of `report` sent to `to` (STARTTLS, SSL or plain, login if configured)."""
    message = BytesParser(policy=email.policy.SMTP).parsebytes(mail_path(report).read_bytes())
    for header in ("From", "To", "Date", "Message-ID"):
        del message[header]
    message["From"] = smtp.sender
    message["To"] = to
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain=_domain(smtp.sender))
    user = env.get(smtp.username_env) if smtp.username_env else None
    password = _secret(smtp.password_env, env, "SMTP password") if user else None
    context = ssl.create_default_context()
    try:
        if smtp.security == "ssl":
            client = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout, context=context)
        else:
            client = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout)
        with client:
            if smtp.security == "starttls":
                client.starttls(context=context)
            if user:
                client.login(user, password or "")
            client.send_message(message)
    except (OSError, smtplib.SMTPException) as exc:
        raise DeliveryError(_redacted(exc, [user, password])) from None


def webhook_payload(kind: str, title: str, summary: str, link: str | None, where: str) -> dict:
    """The JSON body: Slack `text` with mrkdwn, or a Teams message with an Adaptive Card.

    With a `link` the message opens the report; without one it says `where` the report is.
    """
    found = f"Report file: {where}"
    if kind == "slack":
        escape = lambda s: s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")  # noqa: E731
        tail = f"<{link}|Open the report>" if link else escape(found)
        return {"text": f"*{escape(title)}*\n{escape(summary)}\n{tail}"}
    body = [
        {"type": "TextBlock", "text": title, "weight": "Bolder", "size": "Medium", "wrap": True},
        {"type": "TextBlock", "text": summary, "wrap": True},
    ]
    card = {
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": "1.4",
        "body": body if link else [*body, {"type": "TextBlock", "text": found, "wrap": True}],
        "actions": [{"type": "Action.OpenUrl", "title": "Open the report", "url": link}]
        if link
        else [],
    }
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "content": card}
        ],
    }


def send_webhook(
    hook: WebhookConfig,
    outgoing: Outgoing,
    link: str | None,
    env: Mapping[str, str],
    timeout: float = 20,
) -> None:
    """The report's title, summary and link (or its location) posted to the webhook;
    non-2xx is a failure."""
    url = _secret(hook.url_env, env, f"{hook.kind} webhook")
    where = report_location(outgoing.report)
    payload = webhook_payload(hook.kind, outgoing.title, outgoing.summary, link, where)
    try:
        response = httpx.post(url, json=payload, timeout=timeout)
        response.raise_for_status()
    except httpx.HTTPStatusError as exc:
        raise DeliveryError(
            f"{hook.kind} webhook answered HTTP {exc.response.status_code}"
        ) from None
    except httpx.HTTPError as exc:
        raise DeliveryError(_redacted(exc, [url])) from None


def copy_to(report: Path, directory: Path) -> None:
    """The report's HTML (and PDF, if printed) copied into `directory`."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for path in (report, report.with_suffix(".pdf")):
            if path.exists():
                shutil.copy2(path, directory / path.name)
    except OSError as exc:
        raise DeliveryError(f"{type(exc).__name__}: {exc}") from None


def targets(
    outgoing: Outgoing, recipients: Mapping[str, Sequence[str]], config: DeliveryConfig
) -> list[tuple[str, str]]:
    """(channel, target) pairs for one report: the directory, each e-mail recipient, each webhook.

    A webhook's target is the name of the environment variable holding its URL.
    """
    found: list[tuple[str, str]] = []
    if config.directory:
        found.append(("directory", str(config.directory)))
    if config.smtp:
        found += [("email", address) for address in recipients.get(outgoing.kind, [])]
    found += [
        (hook.kind, hook.url_env) for hook in config.webhooks if outgoing.kind in hook.reports
    ]
    return found


def _send(row: dict, config: DeliveryConfig, env: Mapping[str, str]) -> None:
    report = Path(row["report"])
    channel, target = row["channel"], row["target"]
    if channel == "directory":
        copy_to(report, Path(target))
    elif channel == "email":
        if config.smtp is None:
            raise DeliveryError("e-mail delivery needs reports.delivery.smtp in cxloop.yaml")
        send_email(report, target, config.smtp, env)
    else:
        hooks = [h for h in config.webhooks if (h.kind, h.url_env) == (channel, target)]
        if not hooks:
            raise DeliveryError(f"no {channel} webhook with url_env {target} is configured")
        outgoing = Outgoing(report, row["kind"], row["title"], row["summary"], row["news"])
        send_webhook(hooks[0], outgoing, report_link(report, config.base_url), env)


def pending(engine: Engine) -> pd.DataFrame:
    """Deliveries not yet sent whose report is still on disk."""
    with engine.connect() as conn:
        rows = pd.read_sql(select(store.Delivery).where(store.Delivery.status != "sent"), conn)
    return rows[[Path(p).exists() for p in rows["report"]]] if len(rows) else rows


def deliver(
    engine: Engine,
    outgoing: Sequence[Outgoing],
    recipients: Mapping[str, Sequence[str]],
    config: DeliveryConfig,
    env: Mapping[str, str] | None = None,
    sleep: float | None = None,
) -> pd.DataFrame:
    """Send new or changed reports and every earlier failed delivery; returns the rows tried.

    A (report, channel, target) whose stored news equals the report's is not queued again;
    one whose news changed goes back to `pending` with the new summary and its attempts
    counted afresh. Each send is tried `config.attempts` times with exponential backoff
    (`sleep` overrides the first delay).
    """
    env = os.environ if env is None else env
    delay = config.backoff_seconds if sleep is None else sleep
    with engine.connect() as conn:
        known = pd.read_sql(
            select(
                store.Delivery.report,
                store.Delivery.channel,
                store.Delivery.target,
                store.Delivery.news,
            ),
            conn,
        )
    queued = {(r, c, t): news for r, c, t, news in known.itertuples(index=False)}
    fresh = [
        {
            "report": str(o.report),
            "kind": o.kind,
            "channel": channel,
            "target": target,
            "title": o.title,
            "summary": o.summary,
            "news": o.news,
            "status": "pending",
            "attempts": 0,
            "last_error": None,
            "updated_at": store.now_utc(),
        }
        for o in outgoing
        for channel, target in targets(o, recipients, config)
        if queued.get((str(o.report), channel, target)) != o.news
    ]
    store.save_rows(engine, store.Delivery, pd.DataFrame(fresh), ("report", "channel", "target"))
    due = pending(engine)
    tried = []
    for row in due.drop(columns="id").to_dict("records"):
        error = None
        for attempt in range(config.attempts):
            try:
                _send(row, config, env)
                error = None
                break
            except DeliveryError as exc:
                error = str(exc)
                if attempt + 1 < config.attempts:
                    time.sleep(delay * 2**attempt)
        tried.append(
            {
                **row,
                "status": "failed" if error else "sent",
                "last_error": error,
                "attempts": int(row["attempts"]) + attempt + 1,
                "updated_at": store.now_utc(),
            }
        )
    result = pd.DataFrame(tried)
    if len(result):
        store.save_rows(engine, store.Delivery, result, ("report", "channel", "target"))
        _record_sent(engine)
    return result


def _record_sent(engine: Engine) -> None:
    """Each report's `delivered_to` set to the channel:target pairs it reached."""
    with engine.begin() as conn:
        sent = pd.read_sql(select(store.Delivery).where(store.Delivery.status == "sent"), conn)
        reached = (sent["channel"] + ":" + sent["target"]).groupby(sent["report"]).agg(sorted)
        for report, where in reached.items():
            conn.execute(
                update(store.Report).where(store.Report.path == report).values(delivered_to=where)
            )
