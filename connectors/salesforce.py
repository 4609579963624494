"""Salesforce REST: contacts, cases and opportunities by SOQL with OAuth access tokens.

Each stream runs `SELECT … ORDER BY SystemModstamp, Id` and follows `nextRecordsUrl` until
`done`. The cursor is the last stored record's (`SystemModstamp`, `Id`), so the next run, or a
rerun after a crash, asks only for what comes after it (`WHERE (SystemModstamp > t OR
(SystemModstamp = t AND Id > 'id'))`) instead of reusing a query locator that may have expired.

Access tokens come from the org's token endpoint when a connected app's consumer key and
secret are set (the refresh-token flow with a refresh token, else client credentials), renewed
when Salesforce answers 401 `INVALID_SESSION_ID`; else one session token is used as given.

After the changed records, each stream asks queryAll for its records deleted since the last
read (`IsDeleted = true`, after a cursor of its own like the records'). A deletion is seen only
by a sync while the record is in the Recycle Bin (15 days; less if the bin overflows or is
emptied).

A case's owner (`OwnerId`) becomes its `agent` by the user's name, and its `team` by the
user's department; a case owned by a queue has no agent yet and the queue's name as its team.
Owners are looked up by id (`Id IN (…)` on User, then on queue Groups) the first time a page
names them, once per sync.

Accounts are not loaded: the store's customer is a person, and loading accounts as well would
double-count reach; a contact's segment defaults to its account's `Type` instead.
Every answer's `Sforce-Limit-Info` (`api-usage=used/max`, the org's 24-hour API requests) is
logged, and requests slow down once usage passes `limit_margin` of the maximum.

Salesforce answers 403 `REQUEST_LIMIT_EXCEEDED` for two limits. Too many long-running
requests at once (the concurrent limit) clears as they finish, so it is retried like a 429.
A spent 24-hour allowance (`TotalRequests`, or `api-usage` at its maximum) clears only as
requests age out of the rolling 24 hours, so it fails at once, saying so.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import httpx

from connectors.agents import Agent, AgentDirectory
from connectors.base import Page, with_deletions
from connectors.canonical import FieldMap, utc_naive
from connectors.crm import CrmOptions
from connectors.cursors import StoredCursor
from connectors.errors import ConfigError
from connectors.http import (
    HttpClient,
    HttpStream,
    Request,
    SecretHeader,
    Step,
    body_text,
    env_oauth,
    env_secret,
    json_body,
    vendor_client,
)

log = logging.getLogger(__name__)

TOKEN_ENV = "SALESFORCE_TOKEN"
INSTANCE_ENV = "SALESFORCE_INSTANCE_URL"
CLIENT_ID_ENV = "SALESFORCE_CLIENT_ID"
CLIENT_SECRET_ENV = "SALESFORCE_CLIENT_SECRET"
REFRESH_TOKEN_ENV = "SALESFORCE_REFRESH_TOKEN"
TOKEN_PATH = "/services/oauth2/token"
API_VERSION = "v62.0"
MODIFIED = "SystemModstamp"
USAGE = re.compile(r"api-usage=(\d+)/(\d+)")
REQUEST_LIMIT = "REQUEST_LIMIT_EXCEEDED"
DAILY, CONCURRENT = "daily", "concurrent"
WINDOW = timedelta(hours=24)
VERSION = re.compile(r"v\d+\.\d")
RECORD_ID = re.compile(r"[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?")
OWNERS_PER_QUERY = 200  # ids per `IN (…)`, well inside SOQL's query length limit

OBJECTS = {"contacts": ("Contact", "customer"), "cases": ("Case", "ticket")}
OBJECTS |= {"opportunities": ("Opportunity", "orders")}

SALESFORCE: dict[str, FieldMap] = {
    "contacts": FieldMap(
        fields={
            "Id": "source_id",
            "Email": "email",
            "CreatedDate": "created_at",
            "Account.Type": "segment",
            "MailingState": "region",
            "LeadSource": "channel",
        },
        values={
            "channel": {
                "Web": "web",
                "Phone Inquiry": "phone",
                "Partner Referral": "referral",
                "Purchased List": "purchased_list",
                "Other": "other",
            }
        },
    ),
    "cases": FieldMap(
        fields={
            "Id": "source_id",
            "ContactId": "customer_id",
            "Origin": "channel",
            "Reason": "topic",
            "Status": "status",
            "CreatedDate": "created_at",
            "ClosedDate": "resolved_at",
            "IsEscalated": "escalated",
            "Description": "text",
            "OwnerId": "agent",
        },
        values={
            "channel": {"Phone": "phone", "Email": "email", "Web": "web", "Chat": "chat"},
            "status": {"New": "new", "Working": "working", "Escalated": "escalated"}
            | {"Closed": "closed"},
        },
    ),
    "opportunities": FieldMap(
        fields={
            "Id": "source_id",
            "ContactId": "customer_id",
            "Amount": "amount",
            "CreatedDate": "created_at",
            "StageName": "status",
        },
        values={"status": {"Closed Won": "won", "Closed Lost": "lost"}},
    ),
}
"""Salesforce's default fields per stream; `Account.Type` is a relationship field. For a case
topic from `Type` instead of `Reason`, map `{cases: {Type: topic}}`."""


def _errors(response: httpx.Response) -> list[dict[str, Any]] | None:
    """Salesforce's error array (`[{"message", "errorCode"}]`), or None for another body."""
    body = json_body(response)
    if not isinstance(body, list) or not body or not all(isinstance(e, dict) for e in body):
        return None
    return body


def _usage(response: httpx.Response) -> tuple[int, int] | None:
    found = USAGE.search(response.headers.get("Sforce-Limit-Info", ""))
    return (int(found[1]), int(found[2])) if found else None


def request_limit(response: httpx.Response) -> str | None:
    """Which limit a `REQUEST_LIMIT_EXCEEDED` answer reports: `DAILY` when the org's 24-hour
    allowance is spent (Salesforce names `TotalRequests`, or `Sforce-Limit-Info` shows usage at
    its maximum), else `CONCURRENT` (too many long-running requests at once); None otherwise."""
    limits = [e for e in _errors(response) or [] if e.get("errorCode") == REQUEST_LIMIT]
    if not limits:
        return None
    usage = _usage(response)
    if (usage and usage[0] >= usage[1]) or any(
        "TotalRequests" in str(e.get("message")) for e in limits
    ):
        return DAILY
    return CONCURRENT


def concurrent_limit(response: httpx.Response) -> bool:
    """Whether an answer is the 403 for too many long-running requests at once, which clears as
    they finish and so is retried."""
    return response.status_code == 403 and request_limit(response) == CONCURRENT


def error_message(response: httpx.Response, session_fix: str) -> str:
    """Salesforce's `errorCode: message` (its errors are a JSON array), with `session_fix` for
    an invalid session and the fix for either request limit."""
    body = _errors(response)
    if body is None:
        return body_text(response)
    codes = {error.get("errorCode") for error in body}
    limit = request_limit(response)
    message = "; ".join(f"{e.get('errorCode')}: {e.get('message')}" for e in body)
    if "INVALID_SESSION_ID" in codes:
        message += f" — {session_fix}"
    elif limit == DAILY:
        usage = response.headers.get("Sforce-Limit-Info") or "usage not reported"
        free = (datetime.now(UTC) + WINDOW).strftime("%Y-%m-%d %H:%M UTC")
        message += (
            f" — the org's daily API limit is spent (Sforce-Limit-Info: {usage}). Salesforce "
            "counts requests over a rolling 24 hours, so room returns as requests turn 24 hours "
            f"old, and every request made so far is out of the window by {free}. Not retried: "
            "rerun later, pause other integrations of this org, or ask the Salesforce admin "
            "for a larger allowance."
        )
    elif limit == CONCURRENT:
        message += (
            " — too many long-running requests (20 s or more) run in the org at once; this "
            "clears as they finish. Rerun later if it persists."
        )
    return message


class LimitInfo:
    """Reads `Sforce-Limit-Info` on every answer: logs the usage, and asks for `pause` seconds
    between requests once usage reaches `margin` of the org's allowance."""

    def __init__(self, source: str, margin: float, pause: float):
        self.source, self.margin, self.pause = source, margin, pause
        self._warned = False

    def __call__(self, response: httpx.Response) -> float | None:
        usage = _usage(response)
        if usage is None:
            return None
        used, allowed = usage
        log.debug("source %s: Salesforce API usage %d/%d", self.source, used, allowed)
        if not allowed or used < self.margin * allowed:
            return None
        if not self._warned:
            log.warning(
                "source %s: Salesforce API usage %d/%d is past %.0f%% of the org's 24-hour "
                "allowance; pausing %.1f s between requests",
                self.source, used, allowed, self.margin * 100, self.pause,
            )  # fmt: skip
            self._warned = True
        return self.pause


def soql_datetime(value: str) -> str:
    """A Salesforce timestamp (`2026-01-05T10:00:00.000+0000`) as a SOQL literal in UTC."""
    return utc_naive(value).strftime("%Y-%m-%dT%H:%M:%SZ")


def _flat(record: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    row: dict[str, Any] = {}
    for key, value in record.items():
        if key == "attributes":
            continue
        if isinstance(value, Mapping):
            row |= _flat(value, f"{prefix}{key}.")
        else:
            row[f"{prefix}{key}"] = value
    return row


def query_records(client: HttpClient, path: str, soql: str, where: str) -> list[dict]:
    """Every record `soql` selects, following `nextRecordsUrl` until `done`."""
    request, records = Request("GET", path, params={"q": soql}), []
    while True:
        body = client.fetch(request, where, "query results", _batch)
        records += body["records"]
        if body["done"]:
            return records
        request = Request("GET", str(body["nextRecordsUrl"]))


def _batch(body: Any) -> dict[str, Any]:
    if not isinstance(body["records"], list) or not isinstance(body["done"], bool):
        raise TypeError("`records` must be a list and `done` a boolean")
    return body


def case_owners(
    client: HttpClient, api_version: str, ids: list[str], where: str
) -> dict[str, Agent]:
    """Owners among `ids` by id: users by name and department, the rest that are queues by
    their name as the team (their cases have no agent yet)."""
    path, found = f"/services/data/{api_version}/query", dict[str, Agent]()
    for start in range(0, len(ids), OWNERS_PER_QUERY):
        chunk = ids[start : start + OWNERS_PER_QUERY]
        listed = ", ".join(f"'{i}'" for i in chunk)
        users = f"SELECT Id, Name, Department FROM User WHERE Id IN ({listed})"
        for user in query_records(client, path, users, f"{where} (case owners)"):
            found[user["Id"]] = Agent(user["Name"], user.get("Department") or None)
        rest = ", ".join(f"'{i}'" for i in chunk if i not in found)
        if not rest:
            continue
        queues = f"SELECT Id, Name FROM Group WHERE Type = 'Queue' AND Id IN ({rest})"
        for queue in query_records(client, path, queues, f"{where} (case queues)"):
            found[queue["Id"]] = Agent(None, queue["Name"])
    return found


@dataclass(frozen=True)
class SoqlCursor(StoredCursor):
    """Where a SOQL stream's reads stand: the last stored record's SystemModstamp (`since`, as
    Salesforce wrote it) and Id (`after_id`); while a query is paged in this run, also `next`,
    the `nextRecordsUrl` to follow.

    Saved as the JSON `{"since", "after_id"}` (`{}` before a record is stored), plus `"next"`
    while paging.
    """

    since: str | None = None
    after_id: str | None = None
    next: str | None = None


class SoqlStream(HttpStream):
    """One sObject's records by SOQL through the `resource` (query or queryAll) that match
    `condition`, oldest change first. Cursor: a `SoqlCursor`.
    """

    resource = "query"
    condition: str | None = None

    def __init__(
        self, source: str, client: HttpClient, name: str, select: list[str], api_version: str
    ) -> None:
        super().__init__(source, client)
        self.name, self.select = name, select
        self.sobject, self.table = OBJECTS[name]
        self.path = f"/services/data/{api_version}/{self.resource}"

    def read(self, cursor: dict) -> Iterator[Page]:
        """Pages after `cursor`; a saved `nextRecordsUrl` is not reused, as it may have expired."""
        return super().read(replace(SoqlCursor.from_dict(cursor), next=None).to_dict())

    def soql(self, position: SoqlCursor) -> str:
        """The query for records after `position`, oldest change first."""
        where = [self.condition] if self.condition else []
        if position.since is not None:
            since, after = soql_datetime(position.since), position.after_id
            where.append(f"({MODIFIED} > {since} OR ({MODIFIED} = {since} AND Id > '{after}'))")
        query = f"SELECT {', '.join(self.select)} FROM {self.sobject}"
        if where:
            query += f" WHERE {' AND '.join(where)}"
        return f"{query} ORDER BY {MODIFIED}, Id"

    def request(self, cursor: dict) -> Request:
        position = SoqlCursor.from_dict(cursor)
        if position.next is not None:
            return Request("GET", position.next)
        return Request("GET", self.path, params={"q": self.soql(position)})

    def parse(self, body: Any, cursor: dict) -> Step:
        records = body["records"]
        if not isinstance(records, list) or not all(
            isinstance(r, dict) and r["Id"] and r[MODIFIED] for r in records
        ):
            raise TypeError(f"`records` must be a list of objects with `Id` and `{MODIFIED}`")
        after = replace(SoqlCursor.from_dict(cursor), next=None)
        if records:
            after = SoqlCursor(records[-1][MODIFIED], records[-1]["Id"])
        if body["done"]:
            return Step(records, after.to_dict(), done=True)
        following = replace(after, next=str(body["nextRecordsUrl"]))
        return Step(records, following.to_dict(), done=False)


class DeletedRecords(SoqlStream):
    """Ids of one sObject's records deleted (or merged into another) after the cursor: those in
    the Recycle Bin, which only queryAll reads; deleting a record sets its SystemModstamp."""

    resource = "queryAll"
    condition = "IsDeleted = true"

    def __init__(self, source: str, client: HttpClient, name: str, api_version: str) -> None:
        super().__init__(source, client, name, ["Id", MODIFIED], api_version)
        self.name = f"{name} (deleted)"

    def transform(self, records: Sequence[Mapping[str, Any]], where: str) -> list[dict]:
        return [{"source_id": record["Id"]} for record in records]


class SalesforceStream(SoqlStream):
    """One sObject's records, flattened (`Account.Type`) and mapped, then the ids of those
    deleted since the last read; its cursor's `deleted` is the `DeletedRecords` cursor."""

    def __init__(
        self,
        source: str,
        client: HttpClient,
        name: str,
        fields: FieldMap,
        api_version: str,
        agents: AgentDirectory | None = None,
    ) -> None:
        super().__init__(
            source, client, name, sorted({*fields.fields, "Id", MODIFIED}), api_version
        )
        self.fields, self.agents = fields, agents
        self.deletions = DeletedRecords(source, client, name, api_version)

    def read(self, cursor: dict) -> Iterator[Page]:
        return with_deletions(super().read, self.deletions, cursor)

    def transform(self, records: Sequence[Mapping[str, Any]], where: str) -> list[dict]:
        """Without `attributes`, relationship fields flattened (`Account.Type`), then mapped;
        case owners named."""
        rows = self.fields.apply([_flat(r) for r in records], self.table, where)
        if self.agents is None:
            return rows
        return self.agents.named(rows, where, valid=RECORD_ID.fullmatch)


@dataclass(kw_only=True)
class SalesforceSource(CrmOptions):
    """A Salesforce org at `base_url` or the instance URL in `instance_env`. Access tokens come
    from the org's token endpoint for the connected app in `client_id_env` and
    `client_secret_env` (by the refresh token in `refresh_token_env` when set, else by client
    credentials); without a client id, the token is the one in `token_env`. `rate_limit` paces
    requests client-side; once the org's 24-hour API usage passes `limit_margin`, each request
    waits `limit_pause` seconds more.
    """

    VENDOR = "Salesforce"
    FIELDS = SALESFORCE

    base_url: str | None = None
    api_version: str = API_VERSION
    objects: list[str] = field(default_factory=lambda: list(OBJECTS))
    token_env: str = TOKEN_ENV
    instance_env: str = INSTANCE_ENV
    client_id_env: str = CLIENT_ID_ENV
    client_secret_env: str = CLIENT_SECRET_ENV
    refresh_token_env: str = REFRESH_TOKEN_ENV
    rate_limit: tuple[int, float] = (25, 1.0)
    limit_margin: float = 0.9
    limit_pause: float = 5.0
    kind: str = field(default="salesforce", init=False)

    def check(self) -> None:
        super().check()
        where = f"sources.{self.name}.options"
        if not VERSION.fullmatch(self.api_version):
            raise ConfigError(f"{where}: api_version looks like {API_VERSION}.")
        if not 0 < self.limit_margin <= 1:
            raise ConfigError(f"{where}: limit_margin is a share of the allowance, 0–1.")

    def client(self) -> HttpClient:
        """The client of the instance in `base_url` or `instance_env`, with renewed sessions of
        the connected app or the session in `token_env`."""
        base_url = (self.base_url or os.environ.get(self.instance_env, "")).strip().rstrip("/")
        if not base_url:
            raise ConfigError(
                f"sources.{self.name}: set base_url or {self.instance_env} to the org's "
                "instance URL (the `instance_url` of the OAuth token answer), e.g. "
                "https://mycompany.my.salesforce.com."
            )
        auth, session_fix = self._auth(base_url)
        return vendor_client(
            self.VENDOR,
            self,
            base_url,
            auth,
            error_message=partial(error_message, session_fix=session_fix),
            wait_hint=LimitInfo(self.name, self.limit_margin, self.limit_pause),
            transient=concurrent_limit,
        )

    def _auth(self, base_url: str) -> tuple[httpx.Auth, str]:
        """Renewed sessions of the connected app in `client_id_env` if set, else the session in
        `token_env`; and the fix for a session Salesforce refuses."""
        where = f"for the instance URL in {self.instance_env} or base_url, with the api scope"
        renewal = env_oauth(
            self.name,
            f"{base_url}{TOKEN_PATH}",
            (self.client_id_env, self.client_secret_env, self.refresh_token_env),
            refresh_required=False,
            fix="they must hold the connected app's consumer key and secret, and a refresh token "
            "it issued (scopes api and refresh_token); without a refresh token, the app needs "
            "the client credentials flow enabled, with a run-as user.",
        )
        if renewal is not None:
            return (
                renewal,
                f"check the connected app in {self.client_id_env}: its tokens must be {where}.",
            )
        token = env_secret(
            self.name,
            self.token_env,
            "an OAuth access token of a connected app with the api scope (and a user with "
            "API Enabled and read access to Contact, Case, Opportunity, User), or set "
            f"{self.client_id_env} and {self.client_secret_env} to have sessions renewed",
        )
        return SecretHeader(token), (
            f"check {self.token_env}: it must hold a current OAuth access token of this org "
            f"{where}. Sessions expire: set {self.client_id_env} and {self.client_secret_env} "
            f"(and {self.refresh_token_env} for the refresh-token flow) to have them renewed."
        )

    def build_streams(self, client: HttpClient) -> list[SalesforceStream]:
        """One stream per object; cases name their owners, looked up once per sync."""
        agents = AgentDirectory(partial(case_owners, client, self.api_version))
        return [
            SalesforceStream(
                self.name,
                client,
                name,
                self.object_fields(name),
                self.api_version,
                agents if name == "cases" else None,
            )
            for name in self.objects
        ]
