"""A fake GA4 Data API for pytest-httpserver: `POST /properties/{id}:runReport`.

It holds daily cells (date × device × channel group × segment) with sessions, active users and
sessions per funnel event, and answers with GA4's shapes: string values, `YYYYMMDD` dates,
`rows` absent when empty, `rowCount`. `offset` is 0-based; as a strictness check the fake
refuses offsets that are not a multiple of `limit`, so a connector paging from 1 fails.
`plan` scripts the answer to chosen requests (429 RESOURCE_EXHAUSTED, 5xx, malformed pages).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta
from typing import Any

from werkzeug import Request, Response

from tests.fakes.loopback import PlannedAnswers, json_response

DEVICES = ("desktop", "mobile")
CHANNELS = ("Organic Search", "Direct")
EVENTS = ("view_item", "add_to_cart", "begin_checkout", "purchase")


def google_error(status: int, code: str, message: str) -> Response:
    return json_response({"error": {"code": status, "message": message, "status": code}}, status)


class FakeGA4(PlannedAnswers[dict[str, Any]]):
    """One GA4 property on loopback; `requests` holds each runReport body."""

    def __init__(self, token: str, property_id: str, segment_dimension: str = "newVsReturning"):
        super().__init__()
        self.token = token
        self.property_id = property_id
        self.segment_dimension = segment_dimension
        self.cells: dict[tuple[str, str, str, str], dict[str, Any]] = {}

    def seed(self, first: date, days: int, segments: Iterable[str] = ("new", "returning")) -> None:
        """Deterministic traffic for `days` days from `first`: every device, channel, segment."""
        for offset in range(days):
            day = (first + timedelta(days=offset)).strftime("%Y%m%d")
            for i, device in enumerate(DEVICES):
                for j, channel in enumerate(CHANNELS):
                    for k, segment in enumerate(segments):
                        sessions = 100 + 10 * offset + 5 * i + 3 * j + k
                        funnel = {e: sessions // (n + 2) for n, e in enumerate(EVENTS)}
                        self.cells[(day, device, channel, segment)] = {
                            "sessions": sessions,
                            "activeUsers": sessions - 20,
                            "events": funnel,
                        }

    def handle(self, request: Request) -> Response:
        body = request.get_json(silent=True) or {}
        planned = self.log(body)
        if planned is not None:
            return planned
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return google_error(401, "UNAUTHENTICATED", "Request had invalid authentication.")
        if request.method != "POST" or request.path != f"/properties/{self.property_id}:runReport":
            return google_error(404, "NOT_FOUND", f"No route for {request.path}")
        return self._report(body)

    def _report(self, body: dict[str, Any]) -> Response:
        limit, offset = int(body.get("limit", "10000")), int(body.get("offset", "0"))
        if not 1 <= limit <= 250_000 or offset < 0 or offset % limit:
            return google_error(400, "INVALID_ARGUMENT", f"bad limit/offset {limit}/{offset}")
        dimensions = [d["name"] for d in body["dimensions"]]
        metrics = [m["name"] for m in body["metrics"]]
        (dates,) = body["dateRanges"]
        start, end = (dates[k].replace("-", "") for k in ("startDate", "endDate"))
        wanted = body.get("dimensionFilter", {}).get("filter", {})
        events = wanted.get("inListFilter", {}).get("values", EVENTS)
        rows = []
        for (day, device, channel, segment), cell in sorted(self.cells.items()):
            if not start <= day <= end:
                continue
            names = {
                "date": day,
                "deviceCategory": device,
                "sessionDefaultChannelGroup": channel,
                self.segment_dimension: segment,
            }
            for event in events if "eventName" in dimensions else [None]:
                values = names | {"eventName": event}
                counts = {"sessions": cell["events"][event]} if event else cell
                rows.append(
                    {
                        "dimensionValues": [{"value": values[d]} for d in dimensions],
                        "metricValues": [{"value": str(counts[m])} for m in metrics],
                    }
                )
        out: dict[str, Any] = {
            "dimensionHeaders": [{"name": d} for d in dimensions],
            "metricHeaders": [{"name": m, "type": "TYPE_INTEGER"} for m in metrics],
            "rowCount": len(rows),
            "metadata": {"currencyCode": "RUB", "timeZone": "Europe/Moscow"},
            "kind": "analyticsData#runReport",
        }
        if rows[offset : offset + limit]:
            out["rows"] = rows[offset : offset + limit]
        return json_response(out)
