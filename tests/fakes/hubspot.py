"""A fake HubSpot CRM on 127.0.0.1: v3 list and search, v4 association batch read, the owners
list, errors.

It keeps contacts, deals and tickets in memory with HubSpot's shapes (string property values,
ISO timestamps, `paging.next.after`), enforces a configurable search cap (HubSpot's is 10,000)
and answers scripted faults: 429 with or without `Retry-After`, 5xx bursts, slow responses,
malformed JSON. Records can be changed between syncs to exercise incremental sync, and
archived: search and the list leave them out, the list with `archived=true` gives them with
`archivedAt`. Feedback submissions (read-only in HubSpot) are associated with contacts and
tickets. Owners (`owners`, `add_owner`) are listed by `GET /crm/v3/owners`, paged by `after`,
active and archived apart; tickets name them by `hubspot_owner_id`.
"""

from __future__ import annotations

import json
import uuid
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fakes.loopback import Answer, Fault, LoopbackServer

MODIFIED = {
    "contacts": "lastmodifieddate",
    "deals": "hs_lastmodifieddate",
    "tickets": "hs_lastmodifieddate",
    "feedback_submissions": "hs_lastmodifieddate",
}
SINGULAR = {
    "contacts": "contact",
    "deals": "deal",
    "tickets": "ticket",
    "feedback_submissions": "feedback_submission",
}
EPOCH = datetime(2025, 1, 1, tzinfo=UTC)


def iso(ms: int) -> str:
    """HubSpot's timestamp format: ISO 8601 in UTC with milliseconds and `Z`."""
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


@dataclass
class Record:
    id: str
    properties: dict[str, str | None]
    created: int
    modified: int
    contacts: list[str] = field(default_factory=list)
    archived: int | None = None
    tickets: list[str] = field(default_factory=list)

    def associated(self, kind: str) -> list[str]:
        """Ids of the records of `kind` (contacts, tickets) this one is associated with."""
        return {"contacts": self.contacts, "tickets": self.tickets}.get(kind, [])


class FakeHubSpot(LoopbackServer):
    """HubSpot on loopback; `url` is its base URL, `requests` what it was asked."""

    def __init__(self, token: str, search_cap: int = 10_000, interval_ms: int = 10_000):
        super().__init__()
        self.token = token
        self.search_cap = search_cap
        self.interval_ms = interval_ms
        self.objects: dict[str, dict[str, Record]] = {kind: {} for kind in MODIFIED}
        self.archived: dict[str, dict[str, Record]] = {kind: {} for kind in MODIFIED}
        self.requests: list[tuple[str, str, Any]] = []
        self.owners: dict[str, dict[str, Any]] = {}
        self._order: dict[tuple[str, bool], tuple[list[int], list[Record]]] = {}
        self._clock = ms(datetime.now(UTC))

    # --- data -------------------------------------------------------------------------------

    def add(
        self,
        kind: str,
        properties: dict[str, str | None],
        at: datetime,
        contacts: Iterable[str] = (),
        tickets: Iterable[str] = (),
    ) -> str:
        """A new record created and last modified at `at`; returns its id."""
        key = str(len(self.objects[kind]) + len(self.archived[kind]) + 1)
        record = Record(key, dict(properties), ms(at), ms(at), list(contacts))
        record.tickets = list(tickets)
        self.objects[kind][key] = record
        return key

    def add_owner(
        self,
        first: str | None,
        last: str | None,
        teams: Iterable[tuple[str, bool]] = (),
        archived: bool = False,
    ) -> str:
        """A new owner (a HubSpot user) in `teams` (name, primary); returns its owner id."""
        key = str(70_000_000 + len(self.owners) + 1)
        stamp = iso(ms(EPOCH))
        self.owners[key] = {
            "id": key,
            "email": f"agent{len(self.owners) + 1}@example.com",
            "type": "PERSON",
            "firstName": first,
            "lastName": last,
            "userId": 9_000 + len(self.owners),
            "userIdIncludingInactive": 9_000 + len(self.owners),
            "createdAt": stamp,
            "updatedAt": stamp,
            "archived": archived,
            "teams": [
                {"id": str(100 + i), "name": name, "primary": primary}
                for i, (name, primary) in enumerate(teams)
            ],
        }
        return key

    def change(self, kind: str, ids: Iterable[str], **properties: str | None) -> int:
        """Sets `properties` on records `ids`, all modified now, at the same millisecond."""
        with self._lock:
            self._clock = max(ms(datetime.now(UTC)), self._clock + 1)
            for key in ids:
                record = self.objects[kind][key]
                record.properties.update(properties)
                record.modified = self._clock
        return self._clock

    def archive(self, kind: str, ids: Iterable[str]) -> int:
        """Moves records `ids` to the archived list, archived now at the same millisecond."""
        with self._lock:
            self._clock = max(ms(datetime.now(UTC)), self._clock + 1)
            for key in ids:
                record = self.objects[kind].pop(key)
                record.archived = self._clock
                self.archived[kind][key] = record
            self._order.clear()
        return self._clock

    def seed(self, contacts: int, deals: int, tickets: int) -> None:
        """A small CRM: contacts, deals and tickets of those contacts, one hour apart; three
        owners (one archived) own the tickets, every fifth ticket has none."""
        owners = [
            self.add_owner("Olga", "Petrova", [("Delivery", False), ("Billing", True)]),
            self.add_owner("Ivan", None, [("Delivery", False)]),
            self.add_owner("Anna", "Smirnova", archived=True),
        ]
        for i in range(contacts):
            self.add(
                "contacts",
                {
                    "email": f"Person{i}@Example.com " if i % 7 == 0 else f"person{i}@example.com",
                    "createdate": None,
                    "lifecyclestage": "customer" if i % 3 else "lead",
                    "country": ["Russia", "Kazakhstan", None][i % 3],
                    "hs_analytics_source": ["ORGANIC_SEARCH", "PAID_SEARCH", "REFERRALS"][i % 3],
                    "hs_language": "ru",
                    "cx_device": ["mobile", "desktop", None][i % 3],  # a custom property
                },
                EPOCH + timedelta(hours=i),
            )
        for i in range(deals):
            self.add(
                "deals",
                {"amount": f"{1000 + i}.50", "dealstage": "closedwon", "createdate": None},
                EPOCH + timedelta(hours=i, minutes=30),
                [str(i % contacts + 1)],
            )
        for i in range(tickets):
            self.add(
                "tickets",
                {
                    "subject": f"Ticket {i}",
                    "content": f"Where is my order {i}?",
                    "source_type": ["EMAIL", "CHAT", "PHONE"][i % 3],
                    "hs_ticket_category": ["BILLING_ISSUE", "PRODUCT_ISSUE", "DELIVERY"][i % 3],
                    "hs_pipeline_stage": "4" if i % 4 else "1",
                    "createdate": None,
                    "first_agent_reply_date": iso(ms(EPOCH + timedelta(hours=i, minutes=20))),
                    "closed_date": iso(ms(EPOCH + timedelta(hours=i + 5))) if i % 4 else None,
                    "hubspot_owner_id": None if i % 5 == 4 else owners[i % 3],
                },
                EPOCH + timedelta(hours=i),
                [] if i % 10 == 9 else [str(i % contacts + 1)],
            )

    def public(
        self, kind: str, record: Record, properties: Iterable[str], associations: Iterable[str]
    ) -> dict[str, Any]:
        """A record as HubSpot sends it: requested properties (plus defaults) as strings."""
        values = record.properties | {
            "createdate": iso(record.created),
            MODIFIED[kind]: iso(record.modified),
            "hs_object_id": record.id,
        }
        wanted = {*properties, "createdate", MODIFIED[kind], "hs_object_id"}
        out: dict[str, Any] = {
            "id": record.id,
            "properties": {name: values.get(name) for name in sorted(wanted)},
            "createdAt": iso(record.created),
            "updatedAt": iso(record.modified),
            "archived": record.archived is not None,
        }
        if record.archived is not None:
            out["archivedAt"] = iso(record.archived)
        linked = {
            to: {"results": [{"id": i, "type": f"{SINGULAR[kind]}_to_{SINGULAR[to]}"} for i in ids]}
            for to in associations
            if (ids := record.associated(to))
        }
        if linked:
            out["associations"] = linked
        return out

    # --- endpoints --------------------------------------------------------------------------

    def answer(self, method: str, url: str, headers: dict[str, str], raw: bytes) -> Answer:
        parts = urlsplit(url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        body = json.loads(raw) if raw else None
        with self._lock:
            self.requests.append((method, parts.path, query or body))
        if headers.get("authorization") != f"Bearer {self.token}":
            return self._error(
                401,
                "Authentication credentials not found. This API supports OAuth 2.0 authentication.",
                "INVALID_AUTHENTICATION",
            )
        faulted = self.faulted(parts.path, self._internal)
        if faulted is not None:
            return faulted
        segments = parts.path.strip("/").split("/")
        if method == "GET" and parts.path == "/crm/v3/owners":
            return self._owners(query)
        if method == "GET" and segments[:3] == ["crm", "v3", "objects"] and len(segments) == 4:
            return self._list(segments[3], query)
        if (
            method == "POST"
            and segments[:3] == ["crm", "v3", "objects"]
            and segments[4:] == ["search"]
        ):
            return self._search(segments[3], body)
        if method == "POST" and segments[:3] == ["crm", "v4", "associations"]:
            return self._associations(segments[3], segments[4], body)
        return self._error(404, f"No route for {method} {parts.path}", "OBJECT_NOT_FOUND")

    def by_id(self, kind: str, archived: bool = False) -> tuple[list[int], list[Record]]:
        """Live (or archived) records of `kind` in id order (cached until records are added or
        archived), for paging."""
        records = (self.archived if archived else self.objects)[kind]
        cached = self._order.get((kind, archived))
        if cached is None or len(cached[0]) != len(records):
            ordered = sorted(records.values(), key=lambda r: int(r.id))
            self._order[kind, archived] = ([int(r.id) for r in ordered], ordered)
        return self._order[kind, archived]

    def _list(self, kind: str, query: dict[str, str]) -> Answer:
        limit = int(query.get("limit", 10))
        if limit > 100:
            return self._error(400, "limit must be at most 100", "VALIDATION_ERROR")
        ids, ordered = self.by_id(kind, query.get("archived") == "true")
        start = bisect_left(ids, int(query.get("after", 0)))
        page, rest = ordered[start : start + limit], ordered[start + limit : start + limit + 1]
        properties = query.get("properties", "").split(",")
        associations = [a for a in query.get("associations", "").split(",") if a]
        body: dict[str, Any] = {
            "results": [self.public(kind, r, properties, associations) for r in page]
        }
        if rest:
            body["paging"] = {"next": {"after": rest[0].id, "link": f"?after={rest[0].id}"}}
        return self._ok(body)

    def _owners(self, query: dict[str, str]) -> Answer:
        """Owners in id order, active or archived ones (`archived=true`), paged by `after`."""
        limit = int(query.get("limit", 100))
        if limit > 500:
            return self._error(400, "limit must be at most 500", "VALIDATION_ERROR")
        archived = query.get("archived") == "true"
        chosen = [o for o in self.owners.values() if o["archived"] == archived]
        start = int(query.get("after", 0))
        body: dict[str, Any] = {"results": chosen[start : start + limit]}
        if start + limit < len(chosen):
            after = str(start + limit)
            body["paging"] = {"next": {"after": after, "link": f"?after={after}"}}
        return self._ok(body)

    def _search(self, kind: str, body: dict[str, Any]) -> Answer:
        limit, after = int(body.get("limit", 10)), int(body.get("after", 0))
        if limit > 200:
            return self._error(400, "limit must be at most 200", "VALIDATION_ERROR")
        if after + limit > self.search_cap:
            return self._error(
                400,
                f"Search results beyond {self.search_cap} are not available; refine the query.",
                "VALIDATION_ERROR",
            )
        matches = [r for r in self.objects[kind].values() if self._matches(kind, r, body)]
        matches.sort(key=lambda r: (r.modified, int(r.id)))
        page = matches[after : after + limit]
        out: dict[str, Any] = {
            "total": len(matches),
            "results": [self.public(kind, r, body.get("properties", []), ()) for r in page],
        }
        if after + limit < len(matches):
            out["paging"] = {"next": {"after": str(after + limit)}}
        return self._ok(out)

    @staticmethod
    def _matches(kind: str, record: Record, body: dict[str, Any]) -> bool:
        groups = body.get("filterGroups") or [{"filters": []}]
        compare = {"GTE": int.__ge__, "GT": int.__gt__, "LTE": int.__le__, "LT": int.__lt__}
        for group in groups:
            if all(
                f["propertyName"] == MODIFIED[kind]
                and compare[f["operator"]](record.modified, int(f["value"]))
                for f in group["filters"]
            ):
                return True
        return False

    def _associations(self, kind: str, to: str, body: dict[str, Any]) -> Answer:
        results, missing = [], []
        for item in body["inputs"]:
            record = self.objects[kind].get(item["id"])
            if record and record.associated(to):
                to_list = [
                    {
                        "toObjectId": int(c),
                        "associationTypes": [
                            {"category": "HUBSPOT_DEFINED", "typeId": 16, "label": None}
                        ],
                    }
                    for c in record.associated(to)
                ]
                results.append({"from": {"id": item["id"]}, "to": to_list})
            else:
                missing.append(item["id"])
        out: dict[str, Any] = {"status": "COMPLETE", "results": results}
        if missing:
            out |= {
                "numErrors": 1,
                "errors": [
                    {
                        "status": "error",
                        "category": "OBJECT_NOT_FOUND",
                        "message": "No associations found",
                        "context": {"fromObjectId": missing},
                    }
                ],
            }
        return (207 if missing else 200), self._limits(), json.dumps(out)

    def _limits(self, remaining: int = 189) -> dict[str, str]:
        return {
            "X-HubSpot-RateLimit-Max": "190",
            "X-HubSpot-RateLimit-Remaining": str(remaining),
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(self.interval_ms),
        }

    def _ok(self, body: dict[str, Any]) -> Answer:
        return 200, self._limits(), json.dumps(body)

    def _internal(self, status: int) -> Answer:
        return self._error(status, "internal error", "ERROR")

    def _error(self, status: int, message: str, category: str) -> Answer:
        body = {
            "status": "error",
            "message": message,
            "correlationId": str(uuid.uuid4()),
            "category": category,
        }
        return status, {}, json.dumps(body)

    def rate_limited(self, path: str, retry_after: str | None = None, times: int = 1) -> Fault:
        """HubSpot's 429: `RATE_LIMIT` body, `X-HubSpot-RateLimit-*` headers, maybe Retry-After."""
        body = {
            "status": "error",
            "message": "You have reached your ten_secondly_rolling limit.",
            "errorType": "RATE_LIMIT",
            "correlationId": str(uuid.uuid4()),
            "policyName": "TEN_SECONDLY_ROLLING",
        }
        headers = self._limits(remaining=0)
        if retry_after is not None:
            headers["Retry-After"] = retry_after
        fault = Fault(path, 429, json.dumps(body), headers, times=times)
        self.fault(fault)
        return fault
