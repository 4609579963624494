"""Matomo Reporting API: daily visits, goal conversions and funnel steps into `web_metric`.

Each call is `POST {base_url}/index.php?module=API&method=…&idSite=…&period=day&date=A,B` with
`token_auth` as a POST form field, never in the URL (URLs end up in server and proxy logs). A date
range answers with an object keyed by date, `[]` for a day without data. Streams: `visits`
(VisitsSummary.get), `goals` (Goals.get for all goals together and for each goal in `goals`, its
step the visits that converted, in one `API.getBulkRequest`) and, with a `funnel_id`, `funnel`
(Funnels.getFunnelFlow, a premium plugin), whose step tables page by `filter_limit`/`filter_offset`.
With `devices`, every call is asked once per device type (`segment=deviceType==…`) and once for all
other types, so rows carry a device and add up to the site's totals. Matomo reports errors with HTTP
200 as `{"result": "error", "message": …}`; such a page fails with Matomo's message and nothing of
it is saved. Like GA4, a sync reads from `start_date` (the first) or the last `lookback_days` days
before the previous end (later ones) through today, `days_per_request` days a page; rows are keyed
by stream, date, goal or step and metric, so re-pulled days upsert.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
from pydantic import SecretStr

from connectors.canonical import FieldMap
from connectors.daily_report import DailyReport, DailyReportOptions, Window
from connectors.errors import ConfigError, SourceError
from connectors.http import (
    HttpClient,
    Request,
    SecretHeader,
    Step,
    body_text,
    json_body,
)

TOKEN_ENV = "MATOMO_TOKEN"
PATH = "/index.php"
PAGE_LIMIT = 10_000
MAX_DAYS_PER_REQUEST = 366
VISITS = ("nb_visits", "nb_uniq_visitors", "nb_actions", "bounce_count", "sum_visit_length")
GOALS = ("nb_conversions", "nb_visits_converted", "revenue")
# A goal's funnel step counts visits, as GA4 and Metrica steps do: a visit may convert twice.
GOAL_STEP = ("nb_visits_converted",)
REPORTS = ("visits", "goals", "funnel")
TOKEN_HINT = (
    " — check {env}: it must hold a Matomo auth token (Administration → Personal → Security → "
    "Auth tokens) of a user with at least view access to site {site}"
)

MATOMO = FieldMap(
    fields={
        "id": "source_id",
        "date": "date",
        "metric": "metric",
        "value": "value",
        "step": "step",
        "device": "device",
    },
    values={
        "device": {"smartphone": "mobile", "phablet": "mobile", "feature phone": "mobile"},
        "metric": {
            "nb_visits": "visits",
            "nb_uniq_visitors": "users",
            "nb_actions": "actions",
            "bounce_count": "bounces",
            "sum_visit_length": "visit_seconds",
            "nb_conversions": "conversions",
            "nb_visits_converted": "converted_visits",
            "revenue": "revenue",
            "step_nb_visits": "visits",
        },
    },
)
"""Matomo's default fields: one row per date, goal or funnel step, device type and metric; its
phone types are GA4's `mobile`."""
OTHER_DEVICES = "other"


class FormToken(SecretHeader):
    """Adds the token to each request's form body as `token_auth`: POST only, never the URL."""

    requires_request_body = True

    def __init__(self, secret: SecretStr) -> None:
        super().__init__(secret, header="", scheme="")

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        fields = [
            *parse_qsl(request.content.decode()),
            ("token_auth", self.secret.get_secret_value()),
        ]
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in ("content-length", "content-type")
        }
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        yield httpx.Request(
            request.method,
            request.url,
            headers=headers,
            content=urlencode(fields).encode(),
            extensions=request.extensions,
        )


def matomo_error(body: Any) -> str | None:
    """Matomo's message if `body` is its error shape, `{"result": "error", "message": …}`."""
    if isinstance(body, dict) and body.get("result") == "error":
        return str(body.get("message") or "no message")
    return None


def error_message(response: httpx.Response, hint: str) -> str:
    """Matomo's own message on an HTTP error, with `hint` when it is about access."""
    message = matomo_error(json_body(response))
    if message is None:
        return body_text(response)
    return message + (hint if _about_access(message) else "")


def _about_access(message: str) -> bool:
    return any(word in message.lower() for word in ("token_auth", "access", "authenticat"))


@dataclass(frozen=True)
class Call:
    """One API method asked per page: its parameters, the metrics to keep, the funnel `step`
    (a goal's conversions), `key` (distinguishes its rows), whether it answers with a table of
    rows per day (paged) rather than one set of numbers per day, and the `device` its segment
    limits it to."""

    params: Mapping[str, str]
    metrics: Sequence[str]
    key: str
    step: str | None = None
    rows: bool = False
    device: str | None = None


class Report(DailyReport):
    """Some API calls over a date window, `days_per_request` days a page.

    Cursor: `{"end"}` (last date read) between syncs; within one, `{"start", "end", "offset"}`
    with `offset` the days of the window already read, plus `row` (the `filter_offset`) while a
    day's table has more rows than one page.
    """

    path = PATH

    def __init__(
        self,
        source: str,
        client: HttpClient,
        name: str,
        site_id: str,
        calls: Sequence[Call],
        fields: FieldMap,
        hint: str,
        *,
        first_date: date,
        lookback_days: int,
        days_per_request: int,
        page_size: int,
    ) -> None:
        super().__init__(source, client, fields, first_date, lookback_days, page_size)
        self.name = name
        self.site_id = site_id
        self.calls = list(calls)
        self.hint = hint
        self.days_per_request = days_per_request

    def dates(self, cursor: dict) -> tuple[Window, date, date]:
        """The sync's window and the first and last day the page after `cursor` asks for."""
        window = self.window(cursor)
        start = window.start + timedelta(days=self.position(cursor).offset or 0)
        end = min(start + timedelta(days=self.days_per_request - 1), window.end)
        return window, start, end

    def request(self, cursor: dict) -> Request:
        _, start, end = self.dates(cursor)
        common = {"idSite": self.site_id, "period": "day", "date": f"{start},{end}"}
        row = self.position(cursor).row or 0
        calls = []
        for call in self.calls:
            params = {**common, **call.params}
            if call.rows:
                params |= {"filter_limit": self.page_size, "filter_offset": row}
            calls.append(params)
        outer = {"module": "API", "format": "JSON", "format_metrics": 0}
        if len(calls) == 1:
            return Request("POST", self.path, params=outer | calls[0])
        bulk = {f"urls[{i}]": urlencode(params) for i, params in enumerate(calls)}
        return Request("POST", self.path, params=outer | {"method": "API.getBulkRequest"} | bulk)

    def parse(self, body: Any, cursor: dict) -> Step:
        window, start, end = self.dates(cursor)
        answers = [body]
        if len(self.calls) > 1:
            self._raise_for_error(body, "API.getBulkRequest", start, end)
            answers = body
        records, full = [], False
        for call, answer in zip(self.calls, answers, strict=True):
            self._raise_for_error(answer, call.params["method"], start, end)
            if not isinstance(answer, dict):
                raise TypeError(f"{call.params['method']} must answer an object keyed by date")
            for key, value in answer.items():
                day = date.fromisoformat(key)
                if not start <= day <= end:
                    raise ValueError(f"date {key} is outside the {start}..{end} asked for")
                rows = value if call.rows else ([value] if value else [])
                full |= call.rows and len(rows) >= self.page_size
                records += self._records(call, day, rows)
        row = self.position(cursor).row or 0
        if full:
            days_done = (start - window.start).days
            return Step(records, window.cursor(days_done, row + self.page_size), False)
        if end >= window.end:
            return Step(records, window.cursor(None), done=True)
        return Step(records, window.cursor((end - window.start).days + 1), done=False)

    def _raise_for_error(self, answer: Any, method: str, start: date, end: date) -> None:
        """`SourceError` with Matomo's message if `answer` is its error shape."""
        message = matomo_error(answer)
        if message is None:
            return
        hint = self.hint if _about_access(message) else ""
        raise SourceError(
            self.client.auth.redact(
                f"source {self.source}, stream {self.name}, {method} for {start}..{end}: Matomo "
                f"answered an error: {message.rstrip('.')}{hint}. Nothing of this page was saved."
            )
        )

    def _records(self, call: Call, day: date, rows: Sequence[Mapping[str, Any]]) -> list[dict]:
        """One flat record per row and kept metric; metrics a row lacks are left out."""
        out = []
        for row in rows:
            step = row["label"] if call.rows else call.step
            for metric in call.metrics:
                if metric in row:
                    out.append(
                        {
                            "id": f"{self.name}|{day}|{call.key}|{step or ''}|{metric}",
                            "date": day.isoformat(),
                            "metric": metric,
                            "value": float(row[metric]),
                            "step": step,
                            "device": call.device,
                        }
                    )
        return out


@dataclass(kw_only=True)
class MatomoSource(DailyReportOptions):
    """A Matomo site; the auth token comes from the environment variable `token_env`.

    `base_url` is the Matomo installation (e.g. `https://analytics.example.com` or
    `https://example.matomo.cloud`). `goals` maps goal ids to the funnel step whose visits they
    count (the visits that converted, e.g. `{"3": purchase}`); `funnel_id` adds the `funnel` stream.
    `devices` lists Matomo device types (e.g. `[desktop, smartphone, tablet]`) to break every report
    down by, the rest counted as `other`. `start_date` (ISO) is where the first sync begins; later
    syncs re-read `lookback_days` days.
    """

    VENDOR = "Matomo"
    PAGE_LIMIT = PAGE_LIMIT
    AUTH = FormToken

    base_url: str = ""
    site_id: str = ""
    goals: dict[str, str] = field(default_factory=dict)
    funnel_id: str | None = None
    devices: list[str] = field(default_factory=list)
    reports: list[str] | None = None
    days_per_request: int = 31
    page_size: int = 100
    token_env: str = TOKEN_ENV
    timeout: float = 120.0
    rate_limit: tuple[int, float] = (5, 1.0)
    kind: str = field(default="matomo", init=False)

    def check(self) -> None:
        where = f"sources.{self.name}.options"
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"{where}: base_url must be your Matomo's address, e.g. "
                "https://analytics.example.com or https://example.matomo.cloud."
            )
        if not str(self.site_id).isdigit():
            raise ConfigError(f"{where}: site_id must be the Matomo site's number (idSite).")
        super().check()
        if not 1 <= self.days_per_request <= MAX_DAYS_PER_REQUEST:
            raise ConfigError(f"{where}: days_per_request must be 1–{MAX_DAYS_PER_REQUEST}.")
        reports = self.report_names()
        unknown = sorted(set(reports) - set(REPORTS))
        if unknown:
            raise ConfigError(f"{where}: unknown reports {unknown}; use {list(REPORTS)}.")
        if OTHER_DEVICES in self.devices or any(set(d) & set(";,=!") for d in self.devices):
            raise ConfigError(
                f"{where}: devices are Matomo device types such as desktop, smartphone, tablet "
                f"(`{OTHER_DEVICES}` counts the rest by itself)."
            )
        if "funnel" in reports and self.funnel_id is None:
            raise ConfigError(f"{where}: the funnel report needs `funnel_id` (Matomo's idFunnel).")

    def report_names(self) -> list[str]:
        """The reports asked for; by default visits, goals and, with a `funnel_id`, funnel."""
        default = ["visits", "goals", *(["funnel"] if self.funnel_id is not None else [])]
        return default if self.reports is None else list(self.reports)

    def token(self) -> str:
        return (
            "a Matomo auth token (Administration → Personal → Security → Auth tokens) of a user "
            f"with view access to site {self.site_id}"
        )

    def url(self) -> str:
        return self.base_url.removesuffix("/").removesuffix("/index.php")

    def hooks(self) -> dict[str, Any]:
        return {"error_message": partial(error_message, hint=self._hint())}

    def _hint(self) -> str:
        return TOKEN_HINT.format(env=self.token_env, site=self.site_id)

    def build_streams(self, client: HttpClient) -> list[Report]:
        fields = MATOMO.override(self.field_map, self.value_map)
        return [
            Report(
                self.name,
                client,
                report,
                str(self.site_id),
                self._calls(report),
                fields,
                self._hint(),
                first_date=self.first_day(),
                lookback_days=self.lookback_days,
                days_per_request=self.days_per_request,
                page_size=self.page_size,
            )
            for report in self.report_names()
        ]

    def _calls(self, report: str) -> list[Call]:
        """The report's calls, once per device segment when `devices` are listed."""
        if report == "visits":
            calls = [Call({"method": "VisitsSummary.get"}, VISITS, "all")]
        elif report == "goals":
            calls = [Call({"method": "Goals.get"}, GOALS, "all")] + [
                Call({"method": "Goals.get", "idGoal": str(goal)}, GOAL_STEP, f"goal{goal}", step)
                for goal, step in self.goals.items()
            ]
        else:
            funnel = {"method": "Funnels.getFunnelFlow", "idFunnel": str(self.funnel_id)}
            calls = [Call(funnel, ("step_nb_visits",), f"funnel{self.funnel_id}", rows=True)]
        if not self.devices:
            return calls
        segments = {device: f"deviceType=={device}" for device in self.devices}
        segments[OTHER_DEVICES] = ";".join(f"deviceType!={device}" for device in self.devices)
        return [
            replace(
                call,
                params={**call.params, "segment": segment},
                key=f"{call.key}|{device}",
                device=device,
            )
            for call in calls
            for device, segment in segments.items()
        ]
