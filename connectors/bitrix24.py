"""Bitrix24 CRM REST: contacts, deals and incoming activities (open-line chats, e-mails, calls,
web forms) through an inbound webhook or an OAuth access token.

Every stream pages `crm.*.list` in ID order, 50 records a page. After the first page of a pass
tells how many records match, the next pages go as up to `batch_pages` list commands in one
`batch` call. Offsets (`start`) always count from the last stored ID (`>ID`), so records
deleted between calls cannot shift a page past unread records. A pass reads everything
modified since the previous pass began (`>=DATE_MODIFY`, activities `>=LAST_UPDATED`), by the
portal's own clock (`time.date_start` of the pass's first answer), so records changed while a
pass ran are read again by the next one; records already stored unchanged are skipped.

A `batch` answers HTTP 200 even when commands fail, listing them in `result_error`. When all
of them hit a rate or time limit the whole batch is retried like a 429 (its commands page from
the same cursor, so a rerun reads exactly the same pages); any other failed command stops the
stream with Bitrix24's message, saving nothing of that batch.

An activity's responsible user (`RESPONSIBLE_ID`) becomes its ticket's `agent` by name and
`team` by the user's first department, through `user.get` (filtered by the ids a page names
first) and `department.get`, once per sync.

Companies are not loaded: the store's customer is a person, and loading accounts as well would
double-count reach; deals and activities point at contacts.

The webhook URL holds its secret in the path and an OAuth token travels as `?auth=`, so both
are put into each request by the auth step only, and httpx's request log lines are redacted.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any
from urllib.parse import urlencode

import httpx
from pydantic import SecretStr

from connectors.agents import Agent, AgentDirectory, full_name
from connectors.canonical import FieldMap, utc_naive
from connectors.crm import CrmOptions
from connectors.cursors import StoredCursor
from connectors.errors import ConfigError, SourceError
from connectors.http import (
    HttpClient,
    HttpStream,
    Request,
    SecretHeader,
    Step,
    body_text,
    json_body,
    rate_limiter,
    vendor_client,
)

WEBHOOK_ENV = "BITRIX24_WEBHOOK_URL"
TOKEN_ENV = "BITRIX24_TOKEN"
PAGE = 50
MAX_BATCH = 50
# Bitrix24 allows 480 s of execution per method in 10 minutes; pause before it runs out.
OPERATING_BUDGET_S = 480.0
OPERATING_MARGIN = 0.9
WEBHOOK = re.compile(
    r"(?P<portal>https?://[^/\s]+(?:/[^\s]*?)?)/rest/(?P<user>\d+)/(?P<code>[^/\s]+)/?"
)
SECRET_IN_URL = re.compile(r"(/rest/\d+/)[^/\s\"']+|([?&]auth=)[^&\s\"']+")
CONTACT_OWNER = "3"  # crm.enum.ownertype: 1 lead, 2 deal, 3 contact, 4 company
INCOMING = "1"  # crm.enum.activitydirection
TICKET_PROVIDERS = ("IMOPENLINES_SESSION", "CRM_EMAIL", "VOXIMPLANT_CALL", "CRM_WEBFORM")
QUERY_LIMIT, TIME_LIMIT = "QUERY_LIMIT_EXCEEDED", "OPERATION_TIME_LIMIT"
AUTH_ERRORS = frozenset(
    {"INVALID_CREDENTIALS", "NO_AUTH_FOUND", "invalid_token", "expired_token", "WRONG_AUTH_TYPE"}
)


def _activity_fields(record: Mapping[str, Any]) -> dict[str, Any]:
    contact = record.get("OWNER_ID") if str(record.get("OWNER_TYPE_ID")) == CONTACT_OWNER else None
    closed = record.get("END_TIME") if record.get("COMPLETED") == "Y" else None
    return {"OWNER_CONTACT_ID": contact, "CLOSED_AT": closed}


@dataclass(frozen=True)
class Entity:
    """What differs between Bitrix24 CRM entities: method prefix, table, modified field, and
    fields the connector derives from others (never asked for in `select`)."""

    method: str
    table: str
    modified: str
    derived: tuple[str, ...] = ()


ENTITIES = {
    "contacts": Entity("crm.contact", "customer", "DATE_MODIFY"),
    "deals": Entity("crm.deal", "orders", "DATE_MODIFY"),
    "activities": Entity(
        "crm.activity", "ticket", "LAST_UPDATED", ("OWNER_CONTACT_ID", "CLOSED_AT")
    ),
}

BITRIX24: dict[str, FieldMap] = {
    "contacts": FieldMap(
        fields={
            "ID": "source_id",
            "EMAIL": "email",
            "DATE_CREATE": "created_at",
            "TYPE_ID": "segment",
            "ADDRESS_PROVINCE": "region",
            "SOURCE_ID": "channel",
        },
        values={
            "segment": {"CLIENT": "client", "SUPPLIER": "supplier", "PARTNER": "partner"},
            "channel": {
                "CALL": "phone",
                "EMAIL": "email",
                "WEB": "web",
                "WEBFORM": "form",
                "CALLBACK": "callback",
                "ADVERTISING": "advertising",
                "RECOMMENDATION": "referral",
                "PARTNER": "partner",
                "TRADE_SHOW": "trade_show",
                "STORE": "store",
                "OTHER": "other",
            },
        },
    ),
    "deals": FieldMap(
        fields={
            "ID": "source_id",
            "CONTACT_ID": "customer_id",
            "OPPORTUNITY": "amount",
            "DATE_CREATE": "created_at",
            "STAGE_ID": "status",
        },
        # The default pipeline's closing stages; other pipelines' stages ("C1:WON") pass through.
        values={"status": {"NEW": "new", "WON": "won", "LOSE": "lost"}},
    ),
    "activities": FieldMap(
        fields={
            "ID": "source_id",
            "OWNER_CONTACT_ID": "customer_id",
            "PROVIDER_ID": "channel",
            "SUBJECT": "topic",
            "COMPLETED": "status",
            "CREATED": "created_at",
            "CLOSED_AT": "resolved_at",
            "DESCRIPTION": "text",
            "RESPONSIBLE_ID": "agent",
        },
        values={
            "channel": {
                "IMOPENLINES_SESSION": "chat",
                "CRM_EMAIL": "email",
                "VOXIMPLANT_CALL": "phone",
                "CRM_WEBFORM": "form",
            },
            "status": {"Y": "closed", "N": "open"},
        },
    ),
}
"""Bitrix24's default fields per stream. `OWNER_CONTACT_ID` is an activity's owner when that
is a contact; `CLOSED_AT` its `END_TIME` once completed. Map your own topic field (e.g. a
deal's `UF_CRM_…`) with `field_map`."""


class WebhookAuth(SecretHeader):
    """Puts an inbound webhook's user id and secret code into each request's path
    (`…/rest/{user}/{code}/{method}`), so the client's base URL holds no secret."""

    def __init__(self, code: SecretStr, user_id: str):
        super().__init__(code, header="", scheme="")
        self.user_id = user_id

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        head, method = request.url.path.rsplit("/", 1)
        code = self.secret.get_secret_value()
        request.url = request.url.copy_with(path=f"{head}/{self.user_id}/{code}/{method}")
        yield request


class QueryTokenAuth(SecretHeader):
    """Puts an OAuth access token into each request's query (`?auth=…`), as Bitrix24 expects."""

    def __init__(self, token: SecretStr):
        super().__init__(token, header="", scheme="")

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        request.url = request.url.copy_merge_params({"auth": self.secret.get_secret_value()})
        yield request


class RedactBitrix24Urls(logging.Filter):
    """Replaces webhook codes and `auth=` tokens in log lines (httpx logs every request URL)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = SECRET_IN_URL.sub(lambda m: f"{m[1] or m[2]}***", message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


URL_REDACTION = RedactBitrix24Urls()


def error_message(response: httpx.Response, credential_env: str = WEBHOOK_ENV) -> str:
    """Bitrix24's `error: error_description` (per failed command in a `batch` answer), with the
    fix for authentication errors."""
    body = json_body(response)
    error = body.get("error") if isinstance(body, dict) else None
    if not error:
        failed = command_errors(body)
        return describe(failed) if failed else body_text(response)
    message = _error_text(body)
    if response.status_code in (401, 403) or error in AUTH_ERRORS or error == "insufficient_scope":
        fix = (
            "an inbound webhook URL (Developer resources → Other → Inbound webhook)"
            if credential_env == WEBHOOK_ENV
            else "a valid OAuth access token of an app (tokens expire after an hour)"
        )
        message += (
            f" — check {credential_env}: it must hold {fix} with the crm, user and department "
            "scopes."
        )
    return message


def command_errors(body: Any) -> dict[str, Any]:
    """A `batch` answer's failed commands (`result.result_error`: command → `{error,
    error_description}`); empty for any other answer (PHP writes an empty one as `[]`)."""
    batch = body.get("result") if isinstance(body, dict) else None
    errors = batch.get("result_error") if isinstance(batch, dict) else None
    return errors if isinstance(errors, dict) else {}


def _error_text(error: Any) -> str:
    if not isinstance(error, dict):
        return str(error)
    return f"{error.get('error')}: {error.get('error_description') or ''}".rstrip(": ")


def describe(errors: Mapping[str, Any]) -> str:
    """`command c1: ERROR: description; …` for a batch's failed commands."""
    return "; ".join(f"command {name}: {_error_text(error)}" for name, error in errors.items())


def limited_batch(response: httpx.Response) -> bool:
    """Whether an HTTP-200 `batch` answer failed only on rate or time limits, so is retried."""
    errors = command_errors(json_body(response)) if response.status_code == 200 else {}
    return bool(errors) and all(
        isinstance(error, dict) and error.get("error") in (QUERY_LIMIT, TIME_LIMIT)
        for error in errors.values()
    )


class Bitrix24Limits:
    """Seconds Bitrix24's limits ask to pause: a full request bucket (503
    `QUERY_LIMIT_EXCEEDED`, or a batch command's) drains one request per `drain` seconds; a
    method's time budget (429 `OPERATION_TIME_LIMIT` or a batch command's, or nearly spent per
    an answer's `time.operating`) resets at the `time.operating_reset_at` last reported."""

    def __init__(self, drain: float):
        self.drain = drain
        self._reset_at: float | None = None

    def __call__(self, response: httpx.Response) -> float | None:
        body = json_body(response)
        if not isinstance(body, dict):
            return None
        timing = body.get("time") if isinstance(body.get("time"), dict) else {}
        if timing.get("operating_reset_at"):
            self._reset_at = float(timing["operating_reset_at"])
        failed = [e.get("error") for e in command_errors(body).values() if isinstance(e, dict)]
        errors = {body.get("error"), *failed}
        if QUERY_LIMIT in errors:
            return self.drain
        spent = float(timing.get("operating") or 0) >= OPERATING_BUDGET_S * OPERATING_MARGIN
        if TIME_LIMIT in errors or spent:
            return self._until_reset()
        return None

    def _until_reset(self) -> float | None:
        wait = (self._reset_at or 0) - time.time()
        return wait if wait > 0 else None


def php_query(params: Mapping[str, Any]) -> str:
    """`params` as PHP's `http_build_query` writes them (`filter[>ID]=5&select[0]=*`): the form
    a `batch` command carries its parameters in."""
    pairs: list[tuple[str, str]] = []

    def walk(value: Any, key: str) -> None:
        if isinstance(value, Mapping):
            for name, item in value.items():
                walk(item, f"{key}[{name}]")
        elif isinstance(value, list | tuple):
            for index, item in enumerate(value):
                walk(item, f"{key}[{index}]")
        else:
            pairs.append((key, str(value)))

    for name, value in params.items():
        walk(value, name)
    return urlencode(pairs)


def listed(client: HttpClient, method: str, params: Mapping[str, Any], where: str) -> list[dict]:
    """Every record a list method (`user.get`, `department.get`) gives, paged by `next`."""
    records: list[dict] = []
    start: int | None = 0
    while start is not None:
        request = Request("POST", method, json={**params, "start": start})
        body = client.fetch(request, where, f"a {method} page", _list_page)
        records += body["result"]
        start = None if body.get("next") is None else int(body["next"])
    return records


def _list_page(body: Any) -> dict[str, Any]:
    if not isinstance(body["result"], list) or not all(isinstance(r, dict) for r in body["result"]):
        raise TypeError("`result` must be a list of records")
    return body


def responsible_users(client: HttpClient, ids: list[str], where: str) -> dict[str, Agent]:
    """Users among `ids` by ID: their name and their first department's name as the team."""
    users = listed(client, "user.get", {"filter": {"@ID": ids}}, f"{where} (users)")
    first = {str(u["ID"]): [str(d) for d in u.get("UF_DEPARTMENT") or []][:1] for u in users}
    wanted = sorted({d for departments in first.values() for d in departments})
    departments = (
        listed(client, "department.get", {"ID": wanted}, f"{where} (departments)") if wanted else []
    )
    teams = {str(d["ID"]): d.get("NAME") for d in departments}
    return {
        str(u["ID"]): Agent(
            full_name(u.get("NAME"), u.get("LAST_NAME")) or u.get("EMAIL"),
            next((teams.get(d) for d in first[str(u["ID"])]), None),
        )
        for u in users
    }


@dataclass(frozen=True)
class EntityCursor(StoredCursor):
    """Where reads of a CRM entity stand: `since`, the portal time the last pass began, and
    `skip`, the ids (→ modified time) of records stored from then on; within a pass also
    `after_id` (the last ID stored), `started` (this pass's portal start time), `seen` (the
    next `skip`) and `pages` (how many list pages the next call asks for).

    Saved as the JSON `{"since", "skip"}` (`{}` before the first pass ends), or within a pass
    `{"since", "skip", "after_id", "started", "seen", "pages"}`, `since` and `skip` left out
    on a first pass. Times as the portal writes them (ISO 8601 with its offset), IDs as
    numbers.
    """

    since: str | None = None
    skip: Mapping[str, str] | None = None
    after_id: int | None = None
    started: str | None = None
    seen: Mapping[str, str] | None = None
    pages: int | None = None


class Bitrix24Stream(HttpStream):
    """One CRM entity; records leave flattened (multi-fields → first value) and mapped.
    Cursor: an `EntityCursor`.
    """

    page_size = PAGE

    def __init__(
        self,
        source: str,
        client: HttpClient,
        name: str,
        fields: FieldMap,
        *,
        batch_pages: int = MAX_BATCH,
        filters: Mapping[str, Any] | None = None,
        agents: AgentDirectory | None = None,
    ) -> None:
        super().__init__(source, client)
        self.agents = agents
        entity = ENTITIES[name]
        self.name, self.table, self.cursor_field = name, entity.table, entity.modified
        self.path = f"{entity.method}.list"
        self.derived = entity.derived
        self.fields = fields
        self.batch_pages = batch_pages
        self.filters = dict(filters or {})
        wanted = {f for f in fields.fields if f not in entity.derived} | {"ID", entity.modified}
        self.select = ["*", *sorted(wanted)]

    def request(self, cursor: dict) -> Request:
        position = EntityCursor.from_dict(cursor)
        pages = _asked(position)
        if pages == 1:
            return Request("POST", self.path, json=self._list_params(position, 0))
        commands = {
            f"c{i}": f"{self.path}?{php_query(self._list_params(position, i * PAGE))}"
            for i in range(pages)
        }
        return Request("POST", "batch", json={"halt": 0, "cmd": commands})

    def _list_params(self, position: EntityCursor, start: int) -> dict[str, Any]:
        filters = dict(self.filters)
        if position.since:
            filters[f">={self.cursor_field}"] = position.since
        if position.after_id:
            filters[">ID"] = position.after_id
        return {"select": self.select, "filter": filters, "order": {"ID": "ASC"}, "start": start}

    def parse(self, body: Any, cursor: dict) -> Step:
        position = EntityCursor.from_dict(cursor)
        pages = self._pages(body, position)
        started = position.started or body["time"]["date_start"]
        since, skip = position.since, {} if position.skip is None else position.skip
        seen, after_id = dict(position.seen or {}), position.after_id or 0
        fresh, fetched, start = [], 0, utc_naive(started)
        for records, _, _ in pages:
            if not isinstance(records, list):
                raise TypeError("a page's `result` must be a list of records")
            fetched += len(records)
            for record in records:
                key, modified = str(record["ID"]), record[self.cursor_field]
                after_id = max(after_id, int(key))
                if skip.get(key) == modified:
                    continue
                fresh.append(record)
                if utc_naive(modified) >= start:
                    seen[key] = modified
        _, more, total = pages[-1]
        if not more:
            return Step(fresh, EntityCursor(started, seen).to_dict(), done=True)
        remaining = int(total) - fetched
        window = EntityCursor(since, skip) if since else EntityCursor()
        following = replace(
            window,
            after_id=after_id,
            started=started,
            seen=seen,
            pages=min(self.batch_pages, max(1, math.ceil(remaining / PAGE))),
        )
        return Step(fresh, following.to_dict(), done=False)

    def _pages(self, body: Any, position: EntityCursor) -> list[tuple[Any, bool, Any]]:
        """(records, whether more follow, total matching) per list page in the answer."""
        asked = _asked(position)
        if asked == 1:
            return [(body["result"], body.get("next") is not None, body.get("total", 0))]
        batch = body["result"]
        errors = command_errors(body)
        if errors:
            raise SourceError(
                f"source {self.source}, stream {self.name}, batch after ID "
                f"{position.after_id or 0}: Bitrix24 answered {describe(errors)}; nothing "
                "of this batch was saved, and a rerun resumes from it once that is fixed."
            )
        results, more = batch["result"], batch.get("result_next") or {}
        totals = batch.get("result_total") or {}
        return [(results[f"c{i}"], f"c{i}" in more, totals.get(f"c{i}", 0)) for i in range(asked)]

    def transform(self, records: Sequence[Mapping[str, Any]], where: str) -> list[dict]:
        """Multi-fields (`EMAIL`, `PHONE`: lists of `{VALUE, VALUE_TYPE}`) become their first
        value; activities gain their derived fields; then mapped to canonical columns."""
        flat = []
        for record in records:
            row = {key: _first_value(value) for key, value in record.items()}
            if self.derived:
                row |= _activity_fields(row)
            flat.append(row)
        rows = self.fields.apply(flat, self.table, where)
        return rows if self.agents is None else self.agents.named(rows, where, str.isdigit)


def _asked(position: EntityCursor) -> int:
    """How many list pages the call after `position` asks for."""
    return 1 if position.pages is None else position.pages


def _first_value(value: Any) -> Any:
    if isinstance(value, list) and value and isinstance(value[0], dict) and "VALUE" in value[0]:
        return value[0]["VALUE"]
    return value


@dataclass(kw_only=True)
class Bitrix24Source(CrmOptions):
    """A Bitrix24 portal, through an inbound webhook (URL in `webhook_env`) or an OAuth access
    token (in `token_env`, with the portal's `base_url`); the webhook wins when both are set.

    The rate limit defaults to Bitrix24's leaky bucket (2 requests/s, bursts of 50).
    `ticket_providers` are the activity providers that are customer contacts; only incoming
    activities count. Seconds for the time options.
    """

    VENDOR = "Bitrix24"
    FIELDS = BITRIX24

    base_url: str | None = None
    objects: list[str] = field(default_factory=lambda: list(ENTITIES))
    webhook_env: str = WEBHOOK_ENV
    token_env: str = TOKEN_ENV
    ticket_providers: list[str] = field(default_factory=lambda: list(TICKET_PROVIDERS))
    rate_limit: tuple[int, float] = (50, 25.0)
    batch_pages: int = MAX_BATCH
    kind: str = field(default="bitrix24", init=False)

    def check(self) -> None:
        super().check()
        if not 1 <= self.batch_pages <= MAX_BATCH:
            raise ConfigError(
                f"sources.{self.name}.options: batch_pages must be 1–{MAX_BATCH} (Bitrix24's "
                "maximum)."
            )

    def client(self) -> HttpClient:
        """The client, authorised by the webhook or the OAuth token; it redacts the webhook's
        secret from httpx's request logs."""
        base_url, auth, credential_env = self._auth()
        logging.getLogger("httpx").addFilter(URL_REDACTION)
        drain = 1 / rate_limiter(self.name, self.rate_limit).rate
        return vendor_client(
            self.VENDOR,
            self,
            base_url,
            auth,
            error_message=partial(error_message, credential_env=credential_env),
            wait_hint=Bitrix24Limits(drain),
            transient=limited_batch,
        )

    def _auth(self) -> tuple[str, SecretHeader, str]:
        webhook = os.environ.get(self.webhook_env, "").strip()
        token = os.environ.get(self.token_env, "").strip()
        if webhook:
            match = WEBHOOK.fullmatch(webhook)
            if not match:
                raise ConfigError(
                    f"sources.{self.name}: {self.webhook_env} must look like "
                    "https://<portal>/rest/<user id>/<code>/ (Bitrix24 → Developer resources → "
                    "Other → Inbound webhook, with the crm, user and department scopes)."
                )
            auth = WebhookAuth(SecretStr(match["code"]), match["user"])
            return f"{match['portal']}/rest/", auth, self.webhook_env
        if token:
            if not self.base_url:
                raise ConfigError(
                    f"sources.{self.name}.options: base_url (the portal, e.g. "
                    f"https://example.bitrix24.ru) is needed with {self.token_env}."
                )
            auth = QueryTokenAuth(SecretStr(token))
            return f"{self.base_url.rstrip('/')}/rest/", auth, self.token_env
        raise ConfigError(
            f"sources.{self.name}: set {self.webhook_env} to an inbound webhook URL "
            "(Bitrix24 → Developer resources → Other → Inbound webhook, with the crm, user and "
            f"department scopes), or {self.token_env} to an OAuth access token with those "
            "scopes plus base_url."
        )

    def build_streams(self, client: HttpClient) -> list[Bitrix24Stream]:
        """One stream per entity; activities name their responsible users, once per sync."""
        filters = {"activities": {"PROVIDER_ID": self.ticket_providers, "DIRECTION": INCOMING}}
        agents = AgentDirectory(partial(responsible_users, client))
        return [
            Bitrix24Stream(
                self.name,
                client,
                name,
                self.object_fields(name),
                batch_pages=self.batch_pages,
                filters=filters.get(name),
                agents=agents if name == "activities" else None,
            )
            for name in self.objects
        ]
