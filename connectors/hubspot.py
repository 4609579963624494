"""HubSpot CRM v3: contacts, deals, tickets and feedback submissions with a private-app token.

The first sync pages the list endpoints by `after`; once a stream has been read to its end it
switches to incremental sync through the search endpoint on the last-modified property,
sorted ascending. Search refuses results beyond its cap (10,000) for one query, so before the
next page would cross it the stream restarts the search at the last modified time it saw,
skipping the records already seen at that millisecond.

After the changed records, each read pages the list of archived (deleted or merged-away)
records, which no time filter narrows, and passes on as deleted those archived since the last
read (`ArchivedRecords`).

A ticket's owner (`hubspot_owner_id`) becomes its `agent` by the owner's name and its `team`
by the owner's primary team, from the owners list, read once per sync (`owners`).
Feedback submissions (NPS, CSAT, CES surveys; read-only) become survey responses, with the
contact and ticket they are associated with.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import httpx

from connectors.agents import Agent, AgentDirectory, full_name
from connectors.base import Page, with_deletions
from connectors.canonical import FieldMap, utc_naive
from connectors.crm import CrmOptions
from connectors.cursors import StoredCursor
from connectors.errors import ConfigError, SourceError
from connectors.http import (
    HttpClient,
    HttpStream,
    RateLimiter,
    Request,
    Step,
    json_body,
    json_error,
    rate_limiter,
)
from connectors.paging import TokenPaging
from connectors.scales import survey_scales

API = "https://api.hubapi.com"
TOKEN_ENV = "HUBSPOT_TOKEN"
LIST_LIMIT = 100
SEARCH_LIMIT = 200
SEARCH_CAP = 10_000
# Incremental sync starts this long before the full sync began, in case clocks disagree.
CLOCK_SKEW_MS = 5 * 60_000
RECORD_KEYS = frozenset({"id", "createdAt", "updatedAt", "archived"})
PAGING = TokenPaging("after")  # lists, search and owners all take the `after` the last page named


@dataclass(frozen=True)
class CrmObject:
    """What differs between HubSpot object types: target table, modified property, read scope."""

    table: str
    modified: str
    scope: str


OBJECTS = {
    "contacts": CrmObject("customer", "lastmodifieddate", "crm.objects.contacts.read"),
    "deals": CrmObject("orders", "hs_lastmodifieddate", "crm.objects.deals.read"),
    "tickets": CrmObject("ticket", "hs_lastmodifieddate", "tickets"),
    "feedback_submissions": CrmObject(
        "survey_response", "hs_lastmodifieddate", "crm.objects.feedback_submissions.read"
    ),
}
OWNERS = "/crm/v3/owners"
OWNERS_SCOPE = "crm.objects.owners.read"
SURVEY_KINDS = {"NPS": "nps", "CSAT": "csat", "CES": "ces"}
"""HubSpot's survey types (`hs_survey_type`) that are score kinds; custom and knowledge-base
surveys have none, so their submissions are not stored."""

HUBSPOT: dict[str, FieldMap] = {
    "contacts": FieldMap(
        fields={
            "id": "source_id",
            "email": "email",
            "createdate": "created_at",
            "lifecyclestage": "segment",
            "country": "region",
            "hs_analytics_source": "channel",
            "hs_language": "language",
        },
        values={
            "channel": {
                "ORGANIC_SEARCH": "organic",
                "PAID_SEARCH": "paid_search",
                "SOCIAL_MEDIA": "social",
                "PAID_SOCIAL": "paid_social",
                "REFERRALS": "referral",
                "DIRECT_TRAFFIC": "direct",
                "EMAIL_MARKETING": "email",
                "OFFLINE": "offline",
                "OTHER_CAMPAIGNS": "other_campaigns",
            }
        },
    ),
    "deals": FieldMap(
        fields={
            "id": "source_id",
            "associations.contacts": "customer_id",
            "amount": "amount",
            "createdate": "created_at",
            "dealstage": "status",
        }
    ),
    "tickets": FieldMap(
        fields={
            "id": "source_id",
            "associations.contacts": "customer_id",
            "source_type": "channel",
            "hs_ticket_category": "topic",
            "hs_pipeline_stage": "status",
            "createdate": "created_at",
            "first_agent_reply_date": "first_response_at",
            "closed_date": "resolved_at",
            "content": "text",
            "hubspot_owner_id": "agent",
        },
        values={
            "channel": {"EMAIL": "email", "CHAT": "chat", "PHONE": "phone", "FORM": "form"},
            "topic": {
                "PRODUCT_ISSUE": "product_quality",
                "BILLING_ISSUE": "payment",
                "GENERAL_INQUIRY": "general",
                "FEATURE_REQUEST": "feature_request",
            },
            # HubSpot's default support pipeline stages.
            "status": {"1": "new", "2": "waiting_on_contact", "3": "waiting_on_us", "4": "closed"},
        },
    ),
    "feedback_submissions": FieldMap(
        fields={
            "id": "source_id",
            "associations.contacts": "customer_id",
            "associations.tickets": "ticket_id",
            "hs_survey_name": "survey",
            "hs_survey_type": "kind",
            "hs_value": "score",
            "hs_content": "comment",
            "hs_submission_timestamp": "submitted_at",
            "hs_survey_channel": "channel",
        },
        values={"kind": SURVEY_KINDS},
    ),
}
"""HubSpot's default fields per stream; `associations.<type>` is a record's first associated
record of that type."""


def error_message(response: httpx.Response, token_env: str = TOKEN_ENV) -> str:
    """HubSpot's own error message, with the fix for authentication and scope errors."""
    path = response.request.url.path
    scopes = ", ".join(o.scope for name, o in OBJECTS.items() if f"/{name}" in path)
    scopes = OWNERS_SCOPE if path.startswith(OWNERS) else scopes
    return json_error(
        response,
        lambda body: body["message"],
        f"check {token_env}: it must hold a valid HubSpot private-app access token (Settings → "
        f"Integrations → Private apps) with the scope {scopes or 'for it'}.",
    )


def wait_hint(response: httpx.Response) -> float | None:
    """Seconds HubSpot's `X-HubSpot-RateLimit-*` headers (or a daily-limit 429) ask to pause."""
    headers = response.headers
    if response.status_code == 429 and (
        headers.get("X-HubSpot-RateLimit-Daily-Remaining") == "0" or _policy(response) == "DAILY"
    ):
        now = datetime.now(UTC)
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
        return (midnight - now).total_seconds()
    if headers.get("X-HubSpot-RateLimit-Remaining") == "0":
        return int(headers.get("X-HubSpot-RateLimit-Interval-Milliseconds", "10000")) / 1000
    if headers.get("X-HubSpot-RateLimit-Secondly-Remaining") == "0":
        return 1.0
    return None


def _policy(response: httpx.Response) -> str | None:
    body = json_body(response)
    return body.get("policyName") if isinstance(body, dict) else None


def next_after(body: Any) -> Any:
    """The token HubSpot names for the next page (`paging.next.after`); None on the last."""
    return (body.get("paging") or {}).get("next", {}).get("after")


def owners(client: HttpClient, where: str) -> dict[str, Agent]:
    """Every owner, active and archived (their tickets keep them), by owner id: the owner's
    name (its email when it has none) and primary team (else its first)."""
    found: dict[str, Agent] = {}
    for archived in ("false", "true"):
        after: str | None = None
        while True:
            params = {"limit": LIST_LIMIT, "archived": archived} | PAGING.ask(after)
            request = Request("GET", OWNERS, params=params)
            parse = partial(_owners_page, sent=after)
            page, after = client.fetch(request, f"{where} (owners)", "owners", parse)
            found |= page
            if after is None:
                break
    return found


def _owners_page(body: Any, sent: str | None) -> tuple[dict[str, Agent], str | None]:
    """One page of owners by id, and the token of the next page (None on the last) after the
    page asked for with `sent`."""
    agents = {}
    for owner in body["results"]:
        teams = owner.get("teams") or []
        team = next((t for t in teams if t.get("primary")), teams[0] if teams else None)
        name = full_name(owner.get("firstName"), owner.get("lastName")) or owner.get("email")
        agents[str(owner["id"])] = Agent(name, team["name"] if team else None)
    return agents, PAGING.after(next_after(body), sent)


def feedback_rows(rows: list[dict], csat_scale: int) -> list[dict]:
    """Submissions of NPS, CSAT and CES surveys (custom ones have no score kind), HubSpot's
    three-point CSAT (0 not satisfied, 1 neutral, 2 satisfied) spread over 1–`csat_scale`; a
    value that is no number is kept as sent, for the store's checks to reject."""
    kept = []
    for row in rows:
        kind = SURVEY_KINDS.get(str(row.get("hs_survey_type")))
        if kind is None:
            continue
        if kind == "csat" and (value := _number(row.get("hs_value"))) is not None:
            row = row | {"hs_value": 1 + value * (csat_scale - 1) / 2}
        kept.append(row)
    return kept


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _ms(value: str) -> int:
    return round(utc_naive(value).replace(tzinfo=UTC).timestamp() * 1000)


@dataclass(frozen=True)
class ObjectCursor(StoredCursor):
    """Where an object stream's reads stand. During the full sync, the list's next-page token
    `after` and `started`, when the full sync began; after it, search from `since`, passing
    over the ids in `skip`, already stored at that millisecond; while search pages through
    records that all share one millisecond, also its offset `after` and the newest time read
    (`high`) with the ids read at it (`high_ids`).

    Saved as the JSON `{"after", "started"}`, `{"since"}` (the full sync read through),
    `{"since", "skip"}` or `{"since", "skip", "after", "high", "high_ids"}`: times in epoch
    ms, `after` and ids as text.
    """

    since: int | None = None
    skip: tuple[str, ...] | None = None
    after: str | None = None
    started: int | None = None
    high: int | None = None
    high_ids: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ArchivedCursor(StoredCursor):
    """Where reads of the archived list stand: `since`, epoch ms, and the ids `applied` (each
    with its `archivedAt`, epoch ms) archived at or after it already passed on; while a read
    pages, also the list's next-page token `after`, and the `next_since` and `next_applied`
    the next read starts from.

    Saved as the JSON `{"since", "applied"}` (`{}` reads as since 0, nothing applied), plus
    `"after"`, `"next_since"` and `"next_applied"` while a read pages.
    """

    since: int = 0
    applied: Mapping[str, int] = field(default_factory=dict)
    after: str | None = None
    next_since: int | None = None
    next_applied: Mapping[str, int] | None = None


class HubSpotStream(HttpStream):
    """One CRM object type; records leave mapped to canonical columns by `fields`.

    Cursor: an `ObjectCursor`, plus `deleted`, the cursor of the stream's `ArchivedRecords`.
    """

    def __init__(
        self,
        source: str,
        client: HttpClient,
        name: str,
        fields: FieldMap,
        *,
        page_size: int = LIST_LIMIT,
        search_page_size: int = SEARCH_LIMIT,
        search_cap: int = SEARCH_CAP,
        search_limiter: RateLimiter | None = None,
        agents: AgentDirectory | None = None,
        csat_scale: int = 5,
    ) -> None:
        super().__init__(source, client)
        self.agents, self.csat_scale = agents, csat_scale
        crm = OBJECTS[name]
        self.name, self.table, self.cursor_field = name, crm.table, crm.modified
        self.path = f"/crm/v3/objects/{name}"
        self.page_size = page_size
        self.search_page_size = search_page_size
        self.search_cap = search_cap
        self.search_limiter = search_limiter
        self.fields = fields
        self.associations = [f.split(".", 1)[1] for f in fields.fields if "." in f]
        self.properties = sorted(
            {f for f in fields.fields if f not in RECORD_KEYS and "." not in f} | {crm.modified}
        )
        self.deletions = ArchivedRecords(source, client, name, page_size)

    def read(self, cursor: dict) -> Iterator[Page]:
        """Pages of records changed after `cursor`, then of ids archived since the last read
        (`cursor["deleted"]` is the `ArchivedRecords` cursor)."""
        return with_deletions(super().read, self.deletions, cursor)

    def request(self, cursor: dict) -> Request:
        position = ObjectCursor.from_dict(cursor)
        if position.since is None:
            params = {"limit": self.page_size, "properties": ",".join(self.properties)}
            params |= {"archived": "false"}
            if self.associations:
                params["associations"] = ",".join(self.associations)
            params |= PAGING.ask(position.after)
            return Request("GET", self.path, params=params)
        modified = {"propertyName": self.cursor_field}
        body: dict[str, Any] = {
            "filterGroups": [
                {"filters": [modified | {"operator": "GTE", "value": str(position.since)}]}
            ],
            "sorts": [modified | {"direction": "ASCENDING"}],
            "properties": self.properties,
            "limit": self.search_page_size,
        }
        body |= PAGING.ask(position.after)
        return Request("POST", f"{self.path}/search", json=body, limiter=self.search_limiter)

    def parse(self, body: Any, cursor: dict) -> Step:
        results = body["results"]
        if not isinstance(results, list) or not all(
            isinstance(r, dict) and r["id"] and isinstance(r["properties"], dict) for r in results
        ):
            raise TypeError("`results` must be a list of objects with `id` and `properties`")
        position = ObjectCursor.from_dict(cursor)
        after = PAGING.after(next_after(body), position.after)
        if position.since is not None:
            return self._window_step(results, after, position)
        started = int(time.time() * 1000) if position.started is None else position.started
        if after is None:
            return Step(results, ObjectCursor(since=started - CLOCK_SKEW_MS).to_dict(), done=True)
        return Step(results, ObjectCursor(after=after, started=started).to_dict(), done=False)

    def _window_step(self, results: list[dict], after: str | None, position: ObjectCursor) -> Step:
        since, skip = position.since, set(position.skip or ())
        high = since if position.high is None else position.high
        high_ids = list(sorted(skip) if position.high_ids is None else position.high_ids)
        fresh = []
        for record in results:
            modified, key = _ms(record["properties"][self.cursor_field]), str(record["id"])
            if modified == since and key in skip:
                continue
            fresh.append(record)
            if modified > high:
                high, high_ids = modified, [key]
            elif modified == high:
                high_ids.append(key)
        if after is None or high > since:
            # Search again from the newest time read, not by offset: a record changed while
            # paging moves to the end of the order and would shift an unread one past `after`.
            return Step(fresh, ObjectCursor(high, tuple(high_ids)).to_dict(), done=after is None)
        if int(after) + self.search_page_size > self.search_cap:
            raise SourceError(
                f"source {self.source}, stream {self.name}: more than {self.search_cap:,} "
                f"records share {self.cursor_field} = {since} ms, so search cannot page past "
                "them. Delete this stream's row in sync_state to run a full sync instead."
            )
        # The whole page shares `since`: only an offset gets past it.
        window = ObjectCursor(
            since, tuple(sorted(skip)), after, high=high, high_ids=tuple(high_ids)
        )
        return Step(fresh, window.to_dict(), done=False)

    def transform(self, records: Sequence[Mapping[str, Any]], where: str) -> list[dict]:
        """Flattened (`id`, properties, `associations.<type>` = first associated id) and mapped;
        search results carry no associations, so those come from the v4 batch endpoint."""
        listed = any("associations" in r for r in records)
        looked_up = {
            kind: self._associated(kind, [str(r["id"]) for r in records], where)
            for kind in self.associations
            if records and not listed
        }
        flat = []
        for record in records:
            row = {key: record.get(key) for key in RECORD_KEYS} | record["properties"]
            row["id"] = key = str(record["id"])
            for kind in self.associations:
                if listed:
                    found = (record.get("associations") or {}).get(kind, {}).get("results", [])
                    row[f"associations.{kind}"] = str(found[0]["id"]) if found else None
                else:
                    row[f"associations.{kind}"] = looked_up[kind].get(key)
            flat.append(row)
        if self.table == "survey_response":
            flat = feedback_rows(flat, self.csat_scale)
        rows = self.fields.apply(flat, self.table, where)
        return rows if self.agents is None else self.agents.named(rows, where)

    def _associated(self, kind: str, ids: list[str], where: str) -> dict[str, str]:
        path = f"/crm/v4/associations/{self.name}/{kind}/batch/read"
        request = Request("POST", path, json={"inputs": [{"id": i} for i in ids]})
        within = f"{where} ({kind} associations)"
        return self.client.fetch(request, within, f"{kind} associations", _first_associated)


class ArchivedRecords(HttpStream):
    """Ids of one object type's records archived (deleted, or merged into another) since the
    last read, from the list with `archived=true`, which cannot be filtered by time.

    Cursor: an `ArchivedCursor`; `{}` passes on every archived record. A read's `next_since` is
    when it began, less `CLOCK_SKEW_MS`: the list is not in archival order, so a record archived
    during a read may land behind the page being read, and the next read starts from when this
    one began to find it, skipping what this one passed on.
    """

    def __init__(self, source: str, client: HttpClient, name: str, page_size: int) -> None:
        super().__init__(source, client)
        self.name, self.table = f"{name} (archived)", OBJECTS[name].table
        self.path, self.page_size = f"/crm/v3/objects/{name}", page_size

    def request(self, cursor: dict) -> Request:
        params = {"limit": self.page_size, "archived": "true", "properties": "hs_object_id"}
        params |= PAGING.ask(ArchivedCursor.from_dict(cursor).after)
        return Request("GET", self.path, params=params)

    def parse(self, body: Any, cursor: dict) -> Step:
        results = body["results"]
        if not isinstance(results, list) or not all(
            isinstance(r, dict) and r["id"] and r["archivedAt"] for r in results
        ):
            raise TypeError("`results` must be a list of objects with `id` and `archivedAt`")
        position = ArchivedCursor.from_dict(cursor)
        next_since = position.next_since
        if next_since is None:
            next_since = int(time.time() * 1000) - CLOCK_SKEW_MS
        next_applied, gone = dict(position.next_applied or {}), []
        for record in results:
            key, archived = str(record["id"]), _ms(record["archivedAt"])
            if archived >= position.since and position.applied.get(key) != archived:
                gone.append(record)
            if archived >= next_since:
                next_applied[key] = archived
        after = PAGING.after(next_after(body), position.after)
        if after is None:
            return Step(gone, ArchivedCursor(next_since, next_applied).to_dict(), done=True)
        paging = replace(position, after=after, next_since=next_since, next_applied=next_applied)
        return Step(gone, paging.to_dict(), done=False)

    def transform(self, records: Sequence[Mapping[str, Any]], where: str) -> list[dict]:
        return [{"source_id": str(record["id"])} for record in records]


def _first_associated(body: Any) -> dict[str, str]:
    """Each record's first associated id, from a v4 association batch read."""
    return {
        str(result["from"]["id"]): str(result["to"][0]["toObjectId"])
        for result in body["results"]
        if result["to"]
    }


@dataclass(kw_only=True)
class HubSpotSource(CrmOptions):
    """A HubSpot account; the token comes from the environment variable `token_env`.

    Limits default to HubSpot's documented ones for private apps (100 requests per 10 s,
    search 5 per second); raise them for higher tiers. Seconds for the time options.
    `objects` may add `feedback_submissions`, whose CSAT answers are spread over 1–`csat_scale`.
    """

    VENDOR = "HubSpot"
    TOKEN = "a HubSpot private-app access token (Settings → Integrations → Private apps)"
    FIELDS = HUBSPOT

    base_url: str = API
    objects: list[str] = field(default_factory=lambda: ["contacts", "deals", "tickets"])
    token_env: str = TOKEN_ENV
    rate_limit: tuple[int, float] = (100, 10.0)
    search_rate_limit: tuple[int, float] = (5, 1.0)
    page_size: int = LIST_LIMIT
    search_page_size: int = SEARCH_LIMIT
    search_cap: int = SEARCH_CAP
    csat_scale: int = 5
    kind: str = field(default="hubspot", init=False)

    def check(self) -> None:
        super().check()
        survey_scales(f"sources.{self.name}.options", self.csat_scale, 7, [])
        self._search_limiter = rate_limiter(self.name, self.search_rate_limit, "search_rate_limit")

    def check_page_size(self) -> None:
        if not 1 <= self.page_size <= LIST_LIMIT or not 1 <= self.search_page_size <= SEARCH_LIMIT:
            raise ConfigError(
                f"sources.{self.name}.options: page_size must be 1–{LIST_LIMIT} and "
                f"search_page_size 1–{SEARCH_LIMIT} (HubSpot's maxima)."
            )

    def token(self) -> str:
        scopes = ", ".join([OBJECTS[o].scope for o in self.objects] + [OWNERS_SCOPE])
        return f"{self.TOKEN} with the scopes {scopes}"

    def hooks(self) -> dict[str, Any]:
        return {
            "error_message": partial(error_message, token_env=self.token_env),
            "wait_hint": wait_hint,
        }

    def build_streams(self, client: HttpClient) -> list[HubSpotStream]:
        """One stream per object; tickets share one owners directory for the sync."""
        agents = AgentDirectory(lambda _, where: owners(client, where), complete=True)
        return [
            HubSpotStream(
                self.name,
                client,
                name,
                self.object_fields(name),
                page_size=self.page_size,
                search_page_size=self.search_page_size,
                search_cap=self.search_cap,
                search_limiter=self._search_limiter,
                agents=agents if name == "tickets" else None,
                csat_scale=self.csat_scale,
            )
            for name in self.objects
        ]
