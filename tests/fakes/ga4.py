"""A fake GA4 Data API for pytest-httpserver: `POST /properties/{id}:runReport`.

It holds daily cells (date × device × channel group × segment) with sessions, active users and
sessions per funnel event, summed over the dimensions a report does not ask for (active users
too, as this fake knows no user ids), and answers with GA4's shapes: string values, `YYYYMMDD`
dates, `rows` absent when empty, `rowCount`. `offset` is 0-based; as a strictness check the
fake refuses offsets that are not a multiple of `limit`, so a connector paging from 1 fails.
`plan` scripts the answer to chosen requests (429 RESOURCE_EXHAUSTED, 5xx, malformed pages).

`POST /token` is Google's OAuth token endpoint: it issues access tokens for `REFRESH_TOKEN` to
the client `CLIENT_ID` / `CLIENT_SECRET` and refuses others as Google does (401
`invalid_client`, 400 `invalid_grant`). An issued token lives `expires_in` seconds and answers
at most `token_uses` runReport requests (any number when None); after either, or when unknown,
the API answers 401 UNAUTHENTICATED.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable
from datetime import date, timedelta
from typing import Any

from werkzeug import Request, Response

from tests.fakes.loopback import PlannedAnswers, json_response

DEVICES = ("desktop", "mobile")
CHANNELS = ("Organic Search", "Direct")
EVENTS = ("view_item", "add_to_cart", "begin_checkout", "purchase")
CLIENT_ID = "123456789012-cxloopfake.apps.googleusercontent.com"
CLIENT_SECRET = "GOCSPX-fakeClientSecret0123456789"
REFRESH_TOKEN = "1//0gFakeRefreshToken-cxloop-ga4"
SCOPE = "https://www.googleapis.com/auth/analytics.readonly"


def google_error(status: int, code: str, message: str) -> Response:
    return json_response({"error": {"code": status, "message": message, "status": code}}, status)


def oauth_error(status: int, error: str, description: str) -> Response:
    return json_response({"error": error, "error_description": description}, status)


class FakeGA4(PlannedAnswers[dict[str, Any]]):
    """One GA4 property on loopback; `requests` holds each runReport body, `token_requests`
    each token request's form, `issued` each issued token's expiry (monotonic) and uses."""

    def __init__(
        self,
        token: str,
        property_id: str,
        segment_dimension: str = "newVsReturning",
        *,
        expires_in: int = 3599,
        token_uses: int | None = None,
    ):
        super().__init__()
        self.token = token
        self.property_id = property_id
        self.segment_dimension = segment_dimension
        self.expires_in = expires_in
        self.token_uses = token_uses
        self.token_requests: list[dict[str, str]] = []
        self.issued: dict[str, tuple[float, int]] = {}
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
        if request.method == "POST" and request.path == "/token":
            return self._issue(request.form.to_dict())
        body = request.get_json(silent=True) or {}
        planned = self.log(body)
        if planned is not None:
            return planned
        if not self._authorized(request.headers.get("Authorization", "")):
            return google_error(401, "UNAUTHENTICATED", "Request had invalid authentication.")
        if request.method != "POST" or request.path != f"/properties/{self.property_id}:runReport":
            return google_error(404, "NOT_FOUND", f"No route for {request.path}")
        return self._report(body)

    def _authorized(self, authorization: str) -> bool:
        """Whether `authorization` carries `token` or a live issued token, counting its use."""
        scheme, _, token = authorization.partition(" ")
        if scheme != "Bearer":
            return False
        if token == self.token:
            return True
        expires, used = self.issued.get(token, (0.0, 0))
        if time.monotonic() >= expires or used == self.token_uses:
            return False
        self.issued[token] = (expires, used + 1)
        return True

    def _issue(self, form: dict[str, str]) -> Response:
        self.token_requests.append(form)
        if (form.get("client_id"), form.get("client_secret")) != (CLIENT_ID, CLIENT_SECRET):
            return oauth_error(401, "invalid_client", "Unauthorized")
        if form.get("grant_type") != "refresh_token":
            return oauth_error(400, "unsupported_grant_type", "Invalid grant_type")
        if form.get("refresh_token") != REFRESH_TOKEN:
            return oauth_error(400, "invalid_grant", "Token has been expired or revoked.")
        token = f"ya29.a0{secrets.token_urlsafe(32)}"
        self.issued[token] = (time.monotonic() + self.expires_in, 0)
        body = {
            "access_token": token,
            "expires_in": self.expires_in,
            "scope": SCOPE,
            "token_type": "Bearer",
        }
        return json_response(body)

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
        summed: dict[tuple[str, ...], dict[str, int]] = {}
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
                total = summed.setdefault(
                    tuple(values[d] for d in dimensions), dict.fromkeys(metrics, 0)
                )
                for metric in metrics:
                    total[metric] += counts[metric]
        rows = [
            {
                "dimensionValues": [{"value": value} for value in key],
                "metricValues": [{"value": str(total[m])} for m in metrics],
            }
            for key, total in summed.items()
        ]
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
