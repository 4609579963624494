"""Usedesk: tickets (with their comments, for the first agent reply) and clients, through the
token of an API channel.

Every method is a POST whose JSON body carries the token (`api_token`), so it is never in a URL.
Lists answer at most 100 records a call and page by `offset`, a 0-based page index (documented
for clients, assumed for tickets). A pass reads everything changed since the previous pass
began (tickets: `updated_after`; clients have only `created_after`, so a client's later edits
are not read again), less `CLOCK_SKEW`, in UTC+0 as the whole API works; records changed while
a pass runs are read again by the next one, and the store upserts them.

Each ticket's comments come from `/ticket`: the earliest public comment from an agent
(`from: user`) is its first response. Assignee and group ids become names through `/users` and
`/groups`, read once per sync. Usedesk documents no endpoint that lists ticket ratings (CSAT):
they come only by webhook, so this connector reads none.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import httpx
from pydantic import SecretStr

from connectors.canonical import FieldMap, utc_naive
from connectors.crm import CrmOptions, PassCursor
from connectors.http import (
    HttpClient,
    HttpStream,
    Request,
    SecretHeader,
    Step,
    json_error,
)

API = "https://api.usedesk.ru"
TOKEN_ENV = "USEDESK_API_TOKEN"
PAGE = 100
CLOCK_SKEW = timedelta(minutes=5)
USER_TYPES = ("admin", "employee", "support")
TIME_FORMAT = "%Y-%m-%d %H:%M"

STATUSES = {
    "1": "open",
    "2": "solved",
    "3": "closed",
    "4": "deleted",
    "5": "on_hold",
    "6": "pending",
    "7": "spam",
    "8": "new",
    "9": "mailing",
    "10": "merged",
}

USEDESK: dict[str, FieldMap] = {
    "tickets": FieldMap(
        fields={
            "id": "source_id",
            "client_id": "customer_id",
            "channel_id": "channel",
            "status": "status",
            "subject": "text",
            "created_at": "created_at",
            "first_response_at": "first_response_at",
            "agent": "agent",
            "team": "team",
        },
        values={"status": STATUSES},
    ),
    "clients": FieldMap(fields={"id": "source_id", "email": "email"}),
}
"""Usedesk's default fields per stream. Channel ids are the account's own: name them with
`value_map: {tickets: {channel: {"123": email}}}`. `agent` and `team` are the assignee's and
group's names (their ids when Usedesk does not list them); `email` is a client's first."""


@dataclass(frozen=True)
class Listing:
    """What differs between Usedesk lists: the table, and the filter that narrows a pass."""

    path: str
    table: str
    since: str


LISTINGS = {
    "tickets": Listing("/tickets", "ticket", "updated_after"),
    "clients": Listing("/clients", "customer", "created_after"),
}


class BodyToken(SecretHeader):
    """Adds the token to each request's JSON body as `api_token`, where Usedesk reads it."""

    requires_request_body = True

    def __init__(self, secret: SecretStr) -> None:
        super().__init__(secret, header="", scheme="")

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        body = json.loads(request.content or b"{}")
        body["api_token"] = self.secret.get_secret_value()
        headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
        yield httpx.Request(
            request.method,
            request.url,
            headers=headers,
            json=body,
            extensions=request.extensions,
        )


def error_message(response: httpx.Response, token_env: str = TOKEN_ENV) -> str:
    """Usedesk's `error` (or `message`), with the fix for a refused token."""
    return json_error(
        response,
        lambda body: body.get("error") or body.get("message"),
        f"check {token_env}: it must hold the token of a Usedesk API channel (Channels → API).",
    )


def usedesk_time(moment: datetime) -> str:
    """A filter's date as Usedesk takes it: UTC+0, to the minute (the filters are inclusive)."""
    return moment.astimezone(UTC).strftime(TIME_FORMAT)


def _text_ids(record: Mapping[str, Any]) -> dict[str, Any]:
    """`record` with integer values as text, as value maps and name lookups key them."""
    return {
        k: str(v) if isinstance(v, int) and not isinstance(v, bool) else v
        for k, v in record.items()
    }


def _first_email(emails: Any) -> str | None:
    first = emails[0] if isinstance(emails, list) and emails else None
    return first.get("email") if isinstance(first, dict) else first


def first_agent_reply(comments: Sequence[Mapping[str, Any]]) -> str | None:
    """The `published_at` of the earliest public comment an agent wrote, if any."""
    replies = [
        c["published_at"]
        for c in comments
        if c.get("from") == "user" and c.get("type") == "public" and c.get("published_at")
    ]
    return min(replies, key=utc_naive, default=None)


class UsedeskStream(HttpStream):
    """One Usedesk list; records leave mapped to canonical columns by `fields`.

    Cursor: a `PassCursor` (Usedesk time; `since` is when the last pass began, less
    `CLOCK_SKEW`), with `offset`.
    """

    page_size = PAGE

    def __init__(self, source: str, client: HttpClient, name: str, fields: FieldMap) -> None:
        super().__init__(source, client)
        listing = LISTINGS[name]
        self.name, self.table, self.path = name, listing.table, listing.path
        self.since = listing.since
        self.fields = fields
        self._names: dict[str, dict[str, str]] | None = None

    def request(self, cursor: dict) -> Request:
        position = PassCursor.from_dict(cursor)
        body: dict[str, Any] = {"offset": 0 if position.offset is None else position.offset}
        if position.since:
            body[self.since] = position.since
        return Request("POST", self.path, json=body)

    def parse(self, body: Any, cursor: dict) -> Step:
        if not isinstance(body, list) or not all(isinstance(r, dict) and r["id"] for r in body):
            raise TypeError("a list page must be a JSON array of records with an `id`")
        position = PassCursor.from_dict(cursor)
        started = position.started or usedesk_time(datetime.now(UTC) - CLOCK_SKEW)
        if len(body) < PAGE:
            return Step(body, PassCursor(started).to_dict(), done=True)
        offset = 1 + (0 if position.offset is None else position.offset)
        window = PassCursor(position.since or None, offset=offset, started=started)
        return Step(body, window.to_dict(), False)

    def transform(self, records: Sequence[Mapping[str, Any]], where: str) -> list[dict]:
        """Tickets gain their first agent reply and the names of assignee and group; clients
        their first e-mail. Then mapped to canonical columns."""
        records = [_text_ids(r) for r in records]
        if self.name == "clients":
            rows = [r | {"email": _first_email(r.get("emails"))} for r in records]
            return self.fields.apply(rows, self.table, where)
        names = self._directory(where)
        rows = []
        for record in records:
            key = record["id"]
            comments = self.client.fetch(
                Request("POST", "/ticket", json={"ticket_id": key}),
                f"{where} (ticket {key})",
                "a ticket",
                _comments,
            )
            assignee, group = record.get("assignee_id"), record.get("group")
            rows.append(
                record
                | {
                    "first_response_at": first_agent_reply(comments),
                    "agent": names["users"].get(assignee, assignee),
                    "team": names["groups"].get(group, group),
                }
            )
        return self.fields.apply(rows, self.table, where)

    def _directory(self, where: str) -> dict[str, dict[str, str]]:
        """Agents' and groups' names by id, read on first use."""
        if self._names is None:
            users: dict[str, str] = {}
            for kind in USER_TYPES:
                request = Request("POST", "/users", json={"user_type": kind})
                users |= self.client.fetch(request, f"{where} ({kind} users)", "users", _names)
            groups = self.client.fetch(
                Request("POST", "/groups", json={}), f"{where} (groups)", "groups", _names
            )
            self._names = {"users": users, "groups": groups}
        return self._names


def _comments(body: Any) -> list[dict]:
    comments = body["comments"]
    if not isinstance(comments, list) or not all(isinstance(c, dict) for c in comments):
        raise TypeError("`comments` must be a list of objects")
    return comments


def _names(body: Any) -> dict[str, str]:
    if not isinstance(body, list):
        raise TypeError("the answer must be a JSON array")
    return {str(item["id"]): item["name"] for item in body}


@dataclass(kw_only=True)
class UsedeskSource(CrmOptions):
    """A Usedesk account through an API channel's token in the environment variable
    `token_env`; `base_url` for the English cloud (`https://secure.usedesk.com/uapi`) or an
    on-premise install.

    The rate limit defaults to the stricter of Usedesk's documented ones (0.4 requests/s; the
    other is 150/min). Seconds for the time options.
    """

    VENDOR = "Usedesk"
    TOKEN = "the token of a Usedesk API channel (Channels → API)"
    AUTH = BodyToken
    FIELDS = USEDESK

    base_url: str = API
    objects: list[str] = field(default_factory=lambda: list(LISTINGS))
    token_env: str = TOKEN_ENV
    rate_limit: tuple[int, float] = (2, 5.0)
    kind: str = field(default="usedesk", init=False)

    def hooks(self) -> dict[str, Any]:
        return {"error_message": partial(error_message, token_env=self.token_env)}

    def build_streams(self, client: HttpClient) -> list[UsedeskStream]:
        return [
            UsedeskStream(self.name, client, name, self.object_fields(name))
            for name in self.objects
        ]
