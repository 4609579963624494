"""Omnidesk (Deskie): cases (with their messages, for the first staff reply), case ratings as
CSAT, and users, over HTTP Basic with a staff member's e-mail and API key.

Lists page by `page` (1-based, at most `MAX_PAGE`) and `limit` (at most 100) and answer an
object keyed `"0"`, `"1"`, … whose values wrap one record each (`{"case": {…}}`), with
`total_count`. A pass reads everything updated since the previous pass began, less
`CLOCK_SKEW`, through the filter `since_param` (a Unix time); records changed while a pass runs
are read again by the next one. Timestamps are RFC 2822 with an offset.

A case's first response is its earliest message from staff that is not a note or sent by a
rule. Staff and group ids become names through `/api/staff.json` and `/api/groups.json`, read
once per sync. A rated case gives one CSAT answer about that case (`ticket_id`), scored by
`rating_scores`; the rating's own time is not in the case, so its last update stands in.

Omnidesk counts requests per minute and answers 429 over the limit, with `retry_after`
(seconds) and `api_calls_left` headers; both are waited out.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from functools import partial
from typing import Any

import httpx
from pydantic import SecretStr

from connectors.canonical import FieldMap
from connectors.crm import CrmOptions, PassCursor
from connectors.errors import ConfigError, SourceError
from connectors.http import (
    HttpClient,
    HttpStream,
    Request,
    SecretHeader,
    Step,
    json_error,
)

log = logging.getLogger(__name__)

KEY_ENV = "OMNIDESK_API_KEY"
LIMIT = 100
MAX_PAGE = 500
CLOCK_SKEW = timedelta(minutes=5)
SINCE_PARAM = "from_updated_time"
TIMES = ("created_at", "updated_at", "closed_at")
RATING_SCORES = {"high": 5.0, "middle": 3.0, "low": 1.0}

OMNIDESK: dict[str, FieldMap] = {
    "cases": FieldMap(
        fields={
            "case_id": "source_id",
            "user_id": "customer_id",
            "channel": "channel",
            "status": "status",
            "subject": "text",
            "created_at": "created_at",
            "closed_at": "resolved_at",
            "first_response_at": "first_response_at",
            "agent": "agent",
            "team": "team",
        }
    ),
    "ratings": FieldMap(
        fields={
            "id": "source_id",
            "case_id": "ticket_id",
            "user_id": "customer_id",
            "survey": "survey",
            "kind": "kind",
            "score": "score",
            "rating_comment": "comment",
            "updated_at": "submitted_at",
            "channel": "channel",
        }
    ),
    "users": FieldMap(
        fields={"user_id": "source_id", "user_email": "email", "created_at": "created_at"}
    ),
}
"""Omnidesk's default fields per stream; `agent` and `team` are the staff member's and group's
names (their ids when Omnidesk does not list them)."""


@dataclass(frozen=True)
class Listing:
    """What differs between Omnidesk lists: path, the key wrapping each record, table."""

    path: str
    wrapper: str
    table: str


LISTINGS = {
    "cases": Listing("/api/cases.json", "case", "ticket"),
    "ratings": Listing("/api/cases.json", "case", "survey_response"),
    "users": Listing("/api/users.json", "user", "customer"),
}


class StaffKey(SecretHeader):
    """HTTP Basic with a staff member's e-mail and API key; redacts the key and its Basic form."""

    def __init__(self, email: str, key: SecretStr) -> None:
        super().__init__(key, scheme="Basic")
        self.email = email

    def _basic(self) -> str:
        pair = f"{self.email}:{self.secret.get_secret_value()}"
        return base64.b64encode(pair.encode()).decode()

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        request.headers["Authorization"] = f"Basic {self._basic()}"
        yield request

    def redact(self, text: str) -> str:
        return super().redact(text).replace(self._basic(), "***")


def error_message(response: httpx.Response, key_env: str = KEY_ENV) -> str:
    """Omnidesk's `error` (and `description`), with the fix for refused credentials."""
    return json_error(
        response,
        lambda body: ": ".join(str(body[k]) for k in ("error", "description") if body.get(k)),
        f"check staff_email and {key_env}: the API key of that staff member (Settings → API), "
        "with the API enabled for the account.",
    )


def wait_hint(response: httpx.Response) -> float | None:
    """Seconds Omnidesk's `retry_after` asks to pause, on a 429 or once no calls are left."""
    if response.status_code != 429 and response.headers.get("api_calls_left") != "0":
        return None
    try:
        return max(0.0, float(response.headers.get("retry_after", "")))
    except ValueError:
        return None if response.status_code == 429 else 60.0


def rfc2822_iso(value: Any) -> str | None:
    """An Omnidesk timestamp (`Mon, 05 May 2014 00:15:17 +0300`) as ISO 8601; None when empty."""
    if value in (None, "", "-"):
        return None
    return parsedate_to_datetime(str(value)).isoformat()


def listed(body: Any, wrapper: str) -> tuple[list[dict], int]:
    """The records of a list answer, in order, and `total_count`; an empty list may be `[]`."""
    if body == []:
        return [], 0
    keys = sorted((k for k in body if k != "total_count"), key=int)
    records = [body[k][wrapper] for k in keys]
    if not all(isinstance(r, dict) for r in records):
        raise TypeError(f"each item must wrap one record in `{wrapper}`")
    return records, int(body["total_count"])


def _normalised(record: Mapping[str, Any]) -> dict[str, Any]:
    """Ids as text, 0 (Omnidesk's "none") as None, timestamps as ISO 8601."""
    row = {
        k: (None if v == 0 else str(v)) if isinstance(v, int) and not isinstance(v, bool) else v
        for k, v in record.items()
    }
    return row | {name: rfc2822_iso(row.get(name)) for name in TIMES}


class OmnideskStream(HttpStream):
    """One Omnidesk list; records leave mapped to canonical columns by `fields`.

    Cursor: a `PassCursor` (Unix seconds; `since` is when the last pass began, less
    `CLOCK_SKEW`), with `page`.
    """

    page_size = LIMIT

    def __init__(
        self,
        source: str,
        client: HttpClient,
        name: str,
        fields: FieldMap,
        *,
        since_param: str = SINCE_PARAM,
        survey: str = "omnidesk-csat",
        rating_scores: Mapping[str, float] = RATING_SCORES,
    ) -> None:
        super().__init__(source, client)
        listing = LISTINGS[name]
        self.name, self.table, self.path = name, listing.table, listing.path
        self.wrapper = listing.wrapper
        self.fields = fields
        self.since_param = since_param
        self.survey = survey
        self.rating_scores = dict(rating_scores)
        self._names: dict[str, dict[str, str]] | None = None

    def request(self, cursor: dict) -> Request:
        position = PassCursor.from_dict(cursor)
        page = 1 if position.page is None else position.page
        params: dict[str, Any] = {"page": page, "limit": LIMIT}
        if position.since:
            params[self.since_param] = position.since
        return Request("GET", self.path, params=params)

    def parse(self, body: Any, cursor: dict) -> Step:
        records, total = listed(body, self.wrapper)
        position = PassCursor.from_dict(cursor)
        page = 1 if position.page is None else position.page
        started = position.started or int((datetime.now(UTC) - CLOCK_SKEW).timestamp())
        if page * LIMIT >= total or len(records) < LIMIT:
            return Step(records, PassCursor(started).to_dict(), done=True)
        if page == MAX_PAGE:
            raise SourceError(
                f"source {self.source}, stream {self.name}: {total:,} records changed since "
                f"the last pass, more than Omnidesk lists ({MAX_PAGE} pages of {LIMIT}). Set "
                f"sync_state's cursor for this stream to a later `since` and sync again."
            )
        window = PassCursor(position.since or None, page=page + 1, started=started)
        return Step(records, window.to_dict(), done=False)

    def transform(self, records: Sequence[Mapping[str, Any]], where: str) -> list[dict]:
        """Cases gain their first staff reply and staff and group names; rated cases become
        CSAT answers; then mapped to canonical columns."""
        rows = [_normalised(r) for r in records]
        if self.name == "ratings":
            rows = self._ratings(rows, where)
        elif self.name == "cases":
            names = self._directory(where)
            rows = [
                row
                | {
                    "first_response_at": self._first_reply(row["case_id"], where),
                    "agent": names["staff"].get(row.get("staff_id"), row.get("staff_id")),
                    "team": names["groups"].get(row.get("group_id"), row.get("group_id")),
                }
                for row in rows
            ]
        return self.fields.apply(rows, self.table, where)

    def _ratings(self, rows: list[dict], where: str) -> list[dict]:
        rated, unreadable = [], set()
        for row in rows:
            rating = row.get("rating")
            if rating in (None, "", "-", "none"):
                continue
            score = self.rating_scores.get(str(rating))
            if score is None and str(rating).replace(".", "", 1).isdigit():
                score = float(rating)
            if score is None:
                unreadable.add(str(rating))
                continue
            rated.append(
                row
                | {"id": f"{row['case_id']}:csat", "survey": self.survey, "kind": "csat"}
                | {"score": score}
            )
        if unreadable:
            log.warning(
                "%s: ratings %s are not in rating_scores %s; those cases were not stored as "
                "CSAT answers",
                where, sorted(unreadable), self.rating_scores,
            )  # fmt: skip
        return rated

    def _first_reply(self, case: str, where: str) -> str | None:
        page = 1
        while True:
            request = Request(
                "GET",
                f"/api/cases/{case}/messages.json",
                params={"page": page, "limit": LIMIT, "order": "asc"},
            )
            within = f"{where} (case {case} messages, page {page})"
            messages, total = self.client.fetch(
                request, within, "messages", partial(listed, wrapper="message")
            )
            for message in messages:
                human = not message.get("note") and not message.get("sent_via_rule")
                if message.get("staff_id") and human:
                    return rfc2822_iso(message["created_at"])
            if page * LIMIT >= total or len(messages) < LIMIT:
                return None
            page += 1

    def _directory(self, where: str) -> dict[str, dict[str, str]]:
        """Staff and group names by id, read on first use."""
        if self._names is None:
            self._names = {
                "staff": self._all("/api/staff.json", "staff", "staff_full_name", where),
                "groups": self._all("/api/groups.json", "group", "group_title", where),
            }
        return self._names

    def _all(self, path: str, wrapper: str, name: str, where: str) -> dict[str, str]:
        names, page = {}, 1
        while True:
            request = Request("GET", path, params={"page": page, "limit": LIMIT})
            within = f"{where} ({wrapper} page {page})"
            items, total = self.client.fetch(
                request, within, wrapper, partial(listed, wrapper=wrapper)
            )
            names |= {str(item[f"{wrapper}_id"]): item[name] for item in items}
            if page * LIMIT >= total or len(items) < LIMIT:
                return names
            page += 1


@dataclass(kw_only=True)
class OmnideskSource(CrmOptions):
    """An Omnidesk account at `base_url` (`https://<domain>.omnidesk.ru`), as the staff member
    `staff_email` whose API key is in the environment variable `key_env`.

    The rate limit defaults to the Basic plan's 50 requests a minute. `rating_scores` turns a
    case's `rating` into a CSAT score on the configured scale. Seconds for the time options.
    """

    VENDOR = "Omnidesk"
    SECRET_OPTION = "key_env"
    FIELDS = OMNIDESK

    base_url: str
    staff_email: str
    objects: list[str] = field(default_factory=lambda: list(LISTINGS))
    key_env: str = KEY_ENV
    since_param: str = SINCE_PARAM
    survey: str = "omnidesk-csat"
    rating_scores: dict[str, float] = field(default_factory=lambda: dict(RATING_SCORES))
    rate_limit: tuple[int, float] = (50, 60.0)
    kind: str = field(default="omnidesk", init=False)

    def check(self) -> None:
        super().check()
        if "@" not in self.staff_email:
            raise ConfigError(
                f"sources.{self.name}.options: staff_email must be the e-mail a staff member "
                "signs in to Omnidesk with."
            )

    def token(self) -> str:
        return f"the Omnidesk API key of {self.staff_email} (Settings → API)"

    def auth(self) -> httpx.Auth:
        return StaffKey(self.staff_email, self.secret())

    def hooks(self) -> dict[str, Any]:
        return {
            "error_message": partial(error_message, key_env=self.key_env),
            "wait_hint": wait_hint,
        }

    def build_streams(self, client: HttpClient) -> list[OmnideskStream]:
        return [
            OmnideskStream(
                self.name,
                client,
                name,
                self.object_fields(name),
                since_param=self.since_param,
                survey=self.survey,
                rating_scores=self.rating_scores,
            )
            for name in self.objects
        ]
