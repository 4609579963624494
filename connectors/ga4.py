"""Google Analytics 4 Data API: daily traffic and funnel steps into `web_metric`.

Two reports per property through `properties/{id}:runReport`, paged by a 0-based `offset`:
`traffic` (sessions, active users) and `funnel` (sessions that fired each funnel event, the
event as `step`), both per date × device × default channel group (left out with
`traffic_source: false`) × an optional segment dimension. Web data arrives late, so each sync
re-pulls the last `lookback_days` days before the previous end; rows are keyed by date,
dimensions and metric, so re-pulled rows upsert.

Access tokens come from Google's token endpoint by an OAuth client's refresh token, renewed
before they expire (an hour) or when Google answers 401; else one token is used as given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import partial
from typing import Any

import httpx

from connectors.canonical import FieldMap
from connectors.daily_report import DailyReport, DailyReportOptions
from connectors.errors import ConfigError
from connectors.http import (
    HttpClient,
    Request,
    SecretHeader,
    Step,
    env_oauth,
    env_secret,
    json_error,
    vendor_client,
)
from connectors.paging import OffsetPaging

API = "https://analyticsdata.googleapis.com/v1beta"
TOKEN_URL = "https://oauth2.googleapis.com/token"
TOKEN_ENV = "GA4_TOKEN"
CLIENT_ID_ENV = "GA4_CLIENT_ID"
CLIENT_SECRET_ENV = "GA4_CLIENT_SECRET"
REFRESH_TOKEN_ENV = "GA4_REFRESH_TOKEN"
SCOPE = "https://www.googleapis.com/auth/analytics.readonly"
PAGE_LIMIT = 250_000
FUNNEL_EVENTS = ("view_item", "add_to_cart", "begin_checkout", "purchase")
CHANNEL_GROUP = "sessionDefaultChannelGroup"
DIMENSIONS = ("date", "deviceCategory", CHANNEL_GROUP)
PAGING = OffsetPaging(first=0)
REPORTS = {"traffic": ("sessions", "activeUsers"), "funnel": ("sessions",)}

GA4 = FieldMap(
    fields={
        "id": "source_id",
        "date": "date",
        "metric": "metric",
        "value": "value",
        "deviceCategory": "device",
        "sessionDefaultChannelGroup": "traffic_source",
        "eventName": "step",
        "segment": "segment",
    },
    values={
        "metric": {"sessions": "sessions", "activeUsers": "active_users"},
        "traffic_source": {
            "Direct": "direct",
            "Organic Search": "organic",
            "Paid Search": "paid_search",
            "Organic Social": "social",
            "Paid Social": "paid_social",
            "Email": "email",
            "Referral": "referral",
            "Display": "display",
            "Affiliates": "affiliates",
            "Unassigned": "unassigned",
        },
    },
)
"""GA4's default fields: one flattened row per report row and metric."""


def _message(body: Any) -> str:
    """Google's `STATUS: message` from its `{"error": {...}}` body."""
    problem = body["error"]
    return f"{problem['status']}: {problem['message']}"


class Report(DailyReport):
    """One runReport query over a date window.

    Cursor: `{"end"}` (last date read) between syncs; `{"start", "end", "offset"}` within one.
    """

    def __init__(
        self,
        source: str,
        client: HttpClient,
        name: str,
        property_id: str,
        fields: FieldMap,
        *,
        first_date: date,
        lookback_days: int,
        segment_dimension: str | None,
        funnel_events: Sequence[str],
        page_size: int,
        traffic_source: bool,
    ) -> None:
        super().__init__(source, client, fields, first_date, lookback_days, page_size)
        self.name = name
        self.path = f"/properties/{property_id}:runReport"
        self.segment_dimension = segment_dimension
        self.funnel_events = list(funnel_events)
        self.dimensions = [d for d in DIMENSIONS if traffic_source or d != CHANNEL_GROUP]
        self.dimensions += ["eventName"] if name == "funnel" else []
        self.dimensions += [segment_dimension] if segment_dimension else []

    def request(self, cursor: dict) -> Request:
        window = self.window(cursor)
        body: dict[str, Any] = {
            "dateRanges": [
                {"startDate": window.start.isoformat(), "endDate": window.end.isoformat()}
            ],
            "dimensions": [{"name": name} for name in self.dimensions],
            "metrics": [{"name": name} for name in REPORTS[self.name]],
            "orderBys": [{"dimension": {"dimensionName": name}} for name in self.dimensions],
            "limit": str(self.page_size),
            "offset": str(PAGING.offset(self.position(cursor).offset)),
        }
        if self.name == "funnel":
            body["dimensionFilter"] = {
                "filter": {"fieldName": "eventName", "inListFilter": {"values": self.funnel_events}}
            }
        return Request("POST", self.path, json=body)

    def parse(self, body: Any, cursor: dict) -> Step:
        dimensions = [h["name"] for h in body["dimensionHeaders"]]
        metrics = [h["name"] for h in body["metricHeaders"]]
        rows = body.get("rows", [])
        if dimensions != self.dimensions or not isinstance(rows, list):
            raise ValueError(f"dimensions {dimensions} are not the {self.dimensions} asked for")
        records = []
        for row in rows:
            values = dict(
                zip(dimensions, (v["value"] for v in row["dimensionValues"]), strict=True)
            )
            day = date(int(values["date"][:4]), int(values["date"][4:6]), int(values["date"][6:]))
            values["date"] = day.isoformat()
            key = "|".join(values[name] for name in self.dimensions)
            if self.segment_dimension:
                values["segment"] = values.pop(self.segment_dimension)
            for metric, cell in zip(metrics, row["metricValues"], strict=True):
                value = float(cell["value"])
                records.append(values | {"metric": metric, "value": value, "id": f"{key}|{metric}"})
        window = self.window(cursor)
        at = self.position(cursor).offset
        offset = PAGING.after(at, len(rows), int(body.get("rowCount", 0)))
        return Step(records, window.cursor(offset), done=offset is None)


@dataclass(kw_only=True)
class GA4Source(DailyReportOptions):
    """A GA4 property. Access tokens come from `token_url` by the refresh token in
    `refresh_token_env` of the OAuth client in `client_id_env` and `client_secret_env`; without
    a client id, the token is the one in `token_env`.

    `start_date` (ISO) is where the first sync begins; later syncs re-read `lookback_days`
    days. `segment_dimension` (e.g. `newVsReturning` or `customUser:segment`) adds a segment;
    `traffic_source: false` leaves the default channel group out (fewer, larger rows).
    """

    VENDOR = "GA4"
    PAGE_LIMIT = PAGE_LIMIT

    property_id: str = ""
    segment_dimension: str | None = None
    traffic_source: bool = True
    funnel_events: list[str] = field(default_factory=lambda: list(FUNNEL_EVENTS))
    reports: list[str] = field(default_factory=lambda: list(REPORTS))
    base_url: str = API
    token_url: str = TOKEN_URL
    token_env: str = TOKEN_ENV
    client_id_env: str = CLIENT_ID_ENV
    client_secret_env: str = CLIENT_SECRET_ENV
    refresh_token_env: str = REFRESH_TOKEN_ENV
    page_size: int = 100_000
    rate_limit: tuple[int, float] = (10, 1.0)
    kind: str = field(default="ga4", init=False)

    def check(self) -> None:
        where = f"sources.{self.name}.options"
        if not str(self.property_id).isdigit():
            raise ConfigError(f"{where}: property_id must be the GA4 property's number.")
        super().check()
        unknown = sorted(set(self.reports) - set(REPORTS))
        if unknown:
            raise ConfigError(f"{where}: unknown reports {unknown}; use {list(REPORTS)}.")

    def client(self) -> HttpClient:
        """The client, with renewed tokens or the one given; a refused request names the fix."""
        auth, auth_fix = self._auth()
        hooks = {"error_message": partial(json_error, read=_message, auth_fix=auth_fix)}
        return vendor_client(self.VENDOR, self, self.base_url, auth, **hooks)

    def build_streams(self, client: HttpClient) -> list[Report]:
        fields = GA4.override(self.field_map, self.value_map)
        return [
            Report(
                self.name,
                client,
                report,
                str(self.property_id),
                fields,
                first_date=self.first_day(),
                lookback_days=self.lookback_days,
                segment_dimension=self.segment_dimension,
                funnel_events=self.funnel_events,
                page_size=self.page_size,
                traffic_source=self.traffic_source,
            )
            for report in self.reports
        ]

    def _auth(self) -> tuple[httpx.Auth, str]:
        """Renewed tokens of the OAuth client in `client_id_env` if set, else the token in
        `token_env`; and the fix for a token Google refuses."""
        renewal = env_oauth(
            self.name,
            self.token_url,
            (self.client_id_env, self.client_secret_env, self.refresh_token_env),
            refresh_required=True,
            fix="they must hold an OAuth client of a Google Cloud project with the Analytics Data "
            f"API enabled, and a refresh token it issued with the scope {SCOPE} (one lapses "
            "when revoked, after six months unused, or after 7 days while the consent screen "
            "is in testing).",
        )
        if renewal is not None:
            return renewal, (
                f"check {self.refresh_token_env}: it must carry the scope {SCOPE}, for a user "
                "with the Viewer role on the property."
            )
        token = env_secret(
            self.name,
            self.token_env,
            f"an OAuth access token with the scope {SCOPE} (e.g. `gcloud auth print-access-token`)"
            f", or set {self.client_id_env}, {self.client_secret_env} and "
            f"{self.refresh_token_env} to have tokens renewed",
        )
        return SecretHeader(token), (
            f"check {self.token_env}: it must hold a current OAuth access token with the scope "
            f"{SCOPE}, for a user or service account with the Viewer role on the property. "
            f"Access tokens expire within an hour: set {self.client_id_env}, "
            f"{self.client_secret_env} and {self.refresh_token_env} to have them renewed."
        )
