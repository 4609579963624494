"""Yandex Metrica Reporting API: daily visits, users and goal visits into `web_metric`.

One stream reads `/stat/v1/data` for a counter per date × device × last traffic source (the
traffic source left out with `traffic_source: false`), paged by a **1-based** `offset`,
re-pulling the last `lookback_days` days each sync like GA4. A goal's funnel step counts the
visits that reached it (`ym:s:goal<id>visits`), as GA4 counts sessions per step, not its reaches
(events: one visit may reach a goal many times). When Metrica samples a report, the stream logs
a warning; every page also yields one `sample_share` row per date it covers (1.0 when not
sampled), so analyses can tell sampled days from exact ones and a later unsampled re-pull
overwrites it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
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
    json_error,
)
from connectors.paging import OffsetPaging

log = logging.getLogger(__name__)

API = "https://api-metrika.yandex.net"
TOKEN_ENV = "YANDEX_METRICA_TOKEN"
PAGE_LIMIT = 100_000
PAGING = OffsetPaging(first=1)  # Metrica counts rows from 1
DIMENSIONS = {
    "ym:s:date": "date",
    "ym:s:deviceCategory": "device",
    "ym:s:lastTrafficSource": "traffic_source",
}
METRICS = {"ym:s:visits": "visits", "ym:s:users": "users"}

YANDEX_METRICA = FieldMap(
    fields={
        "id": "source_id",
        "date": "date",
        "metric": "metric",
        "value": "value",
        "device": "device",
        "traffic_source": "traffic_source",
        "step": "step",
    },
    values={
        "device": {"Desktop": "desktop", "Smartphones": "mobile", "Tablets": "tablet", "TV": "tv"},
        "traffic_source": {
            "ad": "paid",
            "organic": "organic",
            "direct": "direct",
            "referral": "referral",
            "social": "social",
            "email": "email",
            "internal": "internal",
            "messenger": "messenger",
            "recommend": "recommendation",
        },
    },
)
"""Metrica's default fields; devices by English name, traffic sources by their id."""


def _message(body: Any) -> str:
    return "; ".join(f"{e['error_type']}: {e['message']}" for e in body["errors"])


def error_message(response: httpx.Response, token_env: str = TOKEN_ENV) -> str:
    """Metrica's `error_type: message` for each error, with the fix for access errors."""
    return json_error(
        response,
        _message,
        f"check {token_env}: it must hold an OAuth token of an app with the metrika:read "
        "permission, from a user with access to the counter.",
    )


class Traffic(DailyReport):
    """A counter's daily traffic; `sampled_pages` counts the pages Metrica sampled. Cursor as
    GA4's: `{"end"}`, or `{"start", "end", "offset"}`."""

    name = "traffic"
    path = "/stat/v1/data"

    def __init__(
        self,
        source: str,
        client: HttpClient,
        counter: str,
        goals: Mapping[str, str],
        fields: FieldMap,
        *,
        first_date: date,
        lookback_days: int,
        page_size: int,
        accuracy: str,
        traffic_source: bool,
    ) -> None:
        super().__init__(source, client, fields, first_date, lookback_days, page_size)
        self.counter = counter
        self.metrics = METRICS | {f"ym:s:goal{g}visits": "goal_visits" for g in goals}
        self.steps = {f"ym:s:goal{g}visits": step for g, step in goals.items()}
        self.dimensions = {
            name: canonical
            for name, canonical in DIMENSIONS.items()
            if traffic_source or canonical != "traffic_source"
        }
        self.accuracy = accuracy
        self.sampled_pages = 0

    def request(self, cursor: dict) -> Request:
        window = self.window(cursor)
        params = {
            "ids": self.counter,
            "metrics": ",".join(self.metrics),
            "dimensions": ",".join(self.dimensions),
            "date1": window.start.isoformat(),
            "date2": window.end.isoformat(),
            "sort": ",".join(self.dimensions),
            "limit": self.page_size,
            "offset": PAGING.offset(self.position(cursor).offset),
            "accuracy": self.accuracy,
            "lang": "en",
        }
        return Request("GET", self.path, params=params)

    def parse(self, body: Any, cursor: dict) -> Step:
        data, share = body["data"], float(body.get("sample_share", 1.0))
        if not isinstance(data, list):
            raise TypeError("`data` must be a list of rows")
        records, dates = [], set()
        for row in data:
            asked = dict(zip(self.dimensions.values(), row["dimensions"], strict=True))
            values = {
                "date": date.fromisoformat(asked["date"]["name"]).isoformat(),
                "device": asked["device"]["name"],
            }
            if "traffic_source" in asked:  # by id: names are in the report's language
                values["traffic_source"] = (
                    asked["traffic_source"].get("id") or asked["traffic_source"]["name"]
                )
            dates.add(values["date"])
            key = "|".join(str(v) for v in values.values())
            for (name, metric), value in zip(self.metrics.items(), row["metrics"], strict=True):
                step = self.steps.get(name)
                records.append(
                    values
                    | {"metric": metric, "value": float(value), "step": step}
                    | {"id": f"{key}|{step or ''}|{metric}"}
                )
        if body.get("sampled"):
            self.sampled_pages += 1
            log.warning(
                "source %s, stream %s: Metrica sampled this report (sample_share %.3f); the "
                "numbers are estimates. Narrow the dates or set accuracy: full.",
                self.source,
                self.name,
                share,
            )
        records += [
            {"id": f"{d}|sample_share", "date": d, "metric": "sample_share", "value": share}
            for d in sorted(dates)
        ]
        window = self.window(cursor)
        offset = PAGING.after(self.position(cursor).offset, len(data), int(body["total_rows"]))
        return Step(records, window.cursor(offset), done=offset is None)


@dataclass(kw_only=True)
class YandexMetricaSource(DailyReportOptions):
    """A Metrica counter; the OAuth token comes from the environment variable `token_env`.

    `goals` maps goal ids to the funnel step whose visits they count (e.g. `{"123": purchase}`).
    `traffic_source: false` leaves the last traffic source out of the report (fewer, larger
    rows). `start_date` (ISO) is where the first sync begins; later syncs re-read
    `lookback_days` days.
    """

    VENDOR = "Yandex Metrica"
    TOKEN = "a Yandex OAuth token of an app with the metrika:read permission"
    PAGE_LIMIT = PAGE_LIMIT
    AUTH = partial(SecretHeader, scheme="OAuth")

    counter: str = ""
    goals: dict[str, str] = field(default_factory=dict)
    accuracy: str = "full"
    traffic_source: bool = True
    base_url: str = API
    token_env: str = TOKEN_ENV
    page_size: int = 10_000
    rate_limit: tuple[int, float] = (10, 1.0)
    kind: str = field(default="yandex_metrica", init=False)

    def check(self) -> None:
        if not str(self.counter).isdigit():
            raise ConfigError(
                f"sources.{self.name}.options: counter must be the Metrica counter's number."
            )
        super().check()

    def url(self) -> str:
        return self.base_url

    def hooks(self) -> dict[str, Any]:
        return {"error_message": partial(error_message, token_env=self.token_env)}

    def build_streams(self, client: HttpClient) -> list[Traffic]:
        return [
            Traffic(
                self.name,
                client,
                str(self.counter),
                {str(goal): step for goal, step in self.goals.items()},
                YANDEX_METRICA.override(self.field_map, self.value_map),
                first_date=self.first_day(),
                lookback_days=self.lookback_days,
                page_size=self.page_size,
                accuracy=self.accuracy,
                traffic_source=self.traffic_source,
            )
        ]
