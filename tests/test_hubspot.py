"""HubSpot connector against a fake HubSpot on loopback: full and incremental sync into the store,
the search cap, HubSpot's rate-limit headers and daily limit, timeouts, pages of the wrong
shape, archived records, bad tokens. The checks every vendor shares are in
test_vendor_contract.py."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pandas as pd
import pytest
from sqlalchemy.engine import Engine

from connectors import open_source
from connectors.errors import ConfigError, SourceError
from connectors.http import RateLimiter
from connectors.hubspot import HUBSPOT
from flows.sync import check_source, sync_source, sync_stream
from tasks import store
from tests.fakes.hubspot import EPOCH, FakeHubSpot, iso, ms
from tests.fakes.loopback import Fault

TOKEN = "pat-na1-0f3c2a7e-5b1d-4c9a-8e6f-1a2b3c4d5e6f"
SIZES = {"contacts": 250, "deals": 120, "tickets": 230}
TABLES = {"contacts": store.Customer, "deals": store.Order, "tickets": store.Ticket}
FAST = {
    "backoff_base": 0.01,
    "max_wait": 5.0,
    "timeout": 2.0,
    "rate_limit": [1000, 1],
    "search_rate_limit": [1000, 1],
}


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHubSpot]:
    monkeypatch.setenv("HUBSPOT_TOKEN", TOKEN)
    hubspot = FakeHubSpot(TOKEN, interval_ms=300)
    hubspot.seed(**SIZES)
    with hubspot.running():
        yield hubspot


def crm(fake: FakeHubSpot, **options: Any) -> Any:
    return open_source("crm", "hubspot", {"base_url": fake.url, **FAST, **options})


def sync(engine: Engine, fake: FakeHubSpot, **options: Any) -> dict[str, int]:
    return sync_source(engine, crm(fake, **options))


def stored(engine: Engine, stream: str) -> pd.DataFrame:
    return store.read_frame(engine, TABLES[stream]).set_index("source_id").sort_index()


def assert_store_equals_source(engine: Engine, fake: FakeHubSpot) -> None:
    for stream, model in TABLES.items():
        rows = store.read_frame(engine, model)
        assert rows["source_id"].is_unique, stream
        assert set(rows["source_id"]) == set(fake.objects[stream]), stream
    tickets = stored(engine, "tickets")
    for key, record in fake.objects["tickets"].items():
        assert tickets.loc[key, "text"] == record.properties["content"]


def requests_to(fake: FakeHubSpot, path_part: str) -> list[tuple[str, str, Any]]:
    """Requests to `path_part`, leaving out the reads of the archived list."""
    return [r for r in fake.requests if path_part in r[1] and r[2].get("archived") != "true"]


def test_full_sync_maps_every_record_to_canonical_columns(store_url: str, fake) -> None:
    engine = store.open_store(store_url)
    written = sync(engine, fake)

    assert written == SIZES
    assert_store_equals_source(engine, fake)
    tickets, contacts, deals = (stored(engine, s) for s in ("tickets", "contacts", "deals"))
    columns = ["customer_id", "channel", "topic", "status", "created_at", "first_response_at"]
    assert tickets.loc["1", [*columns, "text"]].tolist() == [
        "1", "email", "payment", "new", pd.Timestamp("2025-01-01 00:00"),
        pd.Timestamp("2025-01-01 00:20"), "Where is my order 0?",
    ]  # fmt: skip
    assert pd.isna(tickets.loc["1", "resolved_at"])
    assert tickets.loc["2", "resolved_at"] == pd.Timestamp("2025-01-01 06:00")
    assert tickets.loc["3", "topic"] == "DELIVERY"  # not in the value map: passes through
    assert pd.isna(tickets.loc["10", "customer_id"])  # ticket without a contact
    expected_hash = hashlib.sha256(b"person0@example.com").hexdigest()
    assert contacts.loc["1", ["email_hash", "segment", "region", "channel"]].tolist() == [
        expected_hash,
        "lead",
        "Russia",
        "organic",
    ]
    assert deals.loc["2", ["amount", "customer_id", "status"]].tolist() == [
        1001.5,
        "2",
        "closedwon",
    ]
    listed = requests_to(fake, "/crm/v3/objects/tickets")
    assert [r[2].get("after") for r in listed] == [None, "101", "201"]
    assert {r[2]["limit"] for r in listed} == {"100"} and listed[0][2]["associations"] == "contacts"
    assert "since" in store.read_cursor(engine, "crm", "tickets")


def test_second_sync_fetches_only_changed_records(store_url: str, fake) -> None:
    engine = store.open_store(store_url)
    sync(engine, fake)
    fake.change("tickets", ["5", "6", "7"], content="Parcel lost", hs_ticket_category="DELIVERY")
    fake.change("contacts", ["3", "4"], country="Armenia")
    new = fake.add(
        "tickets", {"content": "New one", "source_type": "CHAT"}, datetime.now(UTC), ["9"]
    )
    fake.requests.clear()

    assert sync(engine, fake) == {"contacts": 2, "deals": 0, "tickets": 4}
    methods = {method for method, *_ in requests_to(fake, "/crm/v3/objects/tickets")}
    assert methods == {"POST"}  # search only, no list paging
    tickets = stored(engine, "tickets")
    assert tickets.loc[["5", "6", "7"], "text"].tolist() == ["Parcel lost"] * 3
    assert tickets.loc[new, ["customer_id", "channel"]].tolist() == ["9", "chat"]
    assert stored(engine, "contacts").loc[["3", "4"], "region"].tolist() == ["Armenia"] * 2
    assert_store_equals_source(engine, fake)
    assert sync(engine, fake) == {"contacts": 0, "deals": 0, "tickets": 0}


def test_search_cap_is_crossed_by_moving_the_time_window(sqlite_url: str, monkeypatch) -> None:
    monkeypatch.setenv("HUBSPOT_TOKEN", TOKEN)
    fake = FakeHubSpot(TOKEN, search_cap=50)
    fake.seed(contacts=20, deals=0, tickets=300)
    with fake.running():
        engine = store.open_store(sqlite_url)
        options = {"objects": ["tickets"], "search_page_size": 20, "search_cap": 50}
        sync(engine, fake, **options)
        ids = sorted(fake.objects["tickets"], key=int)
        for start in range(0, len(ids), 3):  # three records share each modified millisecond
            fake.change("tickets", ids[start : start + 3], content=f"changed {start}")
        fake.requests.clear()

        assert sync(engine, fake, **options) == {"tickets": 300}

    searches = [r[2] for r in requests_to(fake, "/tickets/search")]
    assert all(int(s.get("after", 0)) + s["limit"] <= 50 for s in searches)
    assert sum("after" not in s for s in searches) >= 300 // 40
    assert_store_equals_source_tickets(engine, fake)


class ChangesAfterFirstPage:
    """`stream`, calling `change` once its first page has been handed over."""

    def __init__(self, stream: Any, change: Any) -> None:
        self.stream, self.change = stream, change
        self.name, self.table = stream.name, stream.table

    def read(self, cursor: dict) -> Iterator[Any]:
        for number, page in enumerate(self.stream.read(cursor)):
            yield page
            if number == 0:
                self.change()


def test_a_record_changed_while_search_pages_pushes_no_other_out(sqlite_url, monkeypatch) -> None:
    monkeypatch.setenv("HUBSPOT_TOKEN", TOKEN)
    fake = FakeHubSpot(TOKEN)
    fake.seed(contacts=5, deals=0, tickets=0)
    options = {"objects": ["contacts"], "search_page_size": 2}
    with fake.running():
        engine = store.open_store(sqlite_url)
        sync(engine, fake, **options)
        for key in ["1", "2", "3", "4", "5"]:  # each at its own millisecond
            fake.change("contacts", [key], country="Changed")
        (stream,) = crm(fake, **options).streams()
        # Contact 1, already read, changes again: it moves to the end of the search order.
        again = ChangesAfterFirstPage(
            stream, lambda: fake.change("contacts", ["1"], country="Again")
        )
        sync_stream(engine, "crm", again)
    regions = stored(engine, "contacts")["region"].to_dict()
    assert regions == {"1": "Again", "2": "Changed", "3": "Changed", "4": "Changed", "5": "Changed"}


def assert_store_equals_source_tickets(engine: Engine, fake: FakeHubSpot) -> None:
    tickets = stored(engine, "tickets")
    assert tickets.index.is_unique and len(tickets) == len(fake.objects["tickets"])
    for key, record in fake.objects["tickets"].items():
        assert tickets.loc[key, "text"] == record.properties["content"]


@pytest.mark.parametrize("retry_after", ["1", "http-date", None])
def test_rate_limit_429_is_retried_after_the_wait_hubspot_asks_for(
    sqlite_url: str, fake, retry_after: str | None, caplog
) -> None:
    if retry_after == "http-date":
        retry_after = format_datetime(datetime.now(UTC) + timedelta(seconds=2), usegmt=True)
    fake.rate_limited("/objects/deals", retry_after)
    engine = store.open_store(sqlite_url)

    started = time.monotonic()
    assert sync(engine, fake, objects=["deals"]) == {"deals": 120}
    elapsed = time.monotonic() - started

    # Without Retry-After the X-HubSpot-RateLimit-Interval-Milliseconds header (300) applies.
    assert elapsed >= (0.9 if retry_after else 0.3)
    assert len(requests_to(fake, "/objects/deals")) == 3
    assert "ten_secondly_rolling" in caplog.text


def test_daily_limit_fails_at_once_instead_of_waiting_until_midnight(sqlite_url, fake) -> None:
    body = {"status": "error", "message": "You have reached your daily limit.",
            "errorType": "RATE_LIMIT", "policyName": "DAILY"}  # fmt: skip
    fake.fault(Fault("/objects/contacts", 429, json.dumps(body)))
    with pytest.raises(SourceError, match=r"daily limit.*more than max_wait"):
        sync(store.open_store(sqlite_url), fake)
    assert len(fake.requests) == 1


def test_slow_response_times_out_and_is_retried(sqlite_url: str, fake) -> None:
    fake.fault(Fault("/objects/contacts", None, delay=1.0, skip=1))
    engine = store.open_store(sqlite_url)
    assert sync(engine, fake, objects=["contacts"], timeout=0.3) == {"contacts": 250}
    assert [r[2].get("after") for r in requests_to(fake, "/objects/contacts")] == [
        None, "101", "101", "201",
    ]  # fmt: skip


def test_timeouts_that_outlast_the_retries_fail_naming_the_page(sqlite_url: str, fake) -> None:
    fake.fault(Fault("/objects/contacts", None, delay=0.5, times=3))
    with pytest.raises(SourceError, match=r"stream contacts, page 1: .*ReadTimeout"):
        sync(store.open_store(sqlite_url), fake, timeout=0.2, max_retries=2)


@pytest.mark.parametrize(
    ("body", "problem"),
    [('{"results": 7}', "documented shape")],
)
def test_malformed_page_saves_nothing_of_it_and_keeps_the_cursor(
    store_url: str, fake, body: str, problem: str
) -> None:
    fake.fault(Fault("/objects/contacts", 200, body, skip=1))
    engine = store.open_store(store_url)
    with pytest.raises(SourceError) as caught:
        sync(engine, fake)

    assert "source crm, stream contacts, page 2" in str(caught.value)
    assert problem in str(caught.value) and "nothing of it was saved" in str(caught.value)
    assert store.row_counts(engine)["customer"] == 100
    assert store.read_cursor(engine, "crm", "contacts")["after"] == "101"


def archived_reads(fake: FakeHubSpot, kind: str) -> list[dict[str, str]]:
    """Query parameters of the reads of `kind`'s archived list."""
    return [
        r[2]
        for r in fake.requests
        if r[1] == f"/crm/v3/objects/{kind}" and r[2].get("archived") == "true"
    ]


class ArchivesWhileListing:
    """`stream`, calling `archive` once its first page of deletions has been handed over."""

    def __init__(self, stream: Any, archive: Any) -> None:
        self.stream, self.archive = stream, archive
        self.name, self.table = stream.name, stream.table

    def read(self, cursor: dict) -> Iterator[Any]:
        archived = False
        for page in self.stream.read(cursor):
            yield page
            if page.deleted and not archived:
                self.archive()
                archived = True


def test_records_archived_at_hubspot_leave_the_store_and_nothing_else(
    store_url: str, fake, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="flows.sync")
    engine = store.open_store(store_url)
    sync(engine, fake)
    fake.archive("contacts", ["3", "120"])
    fake.archive("deals", ["5"])
    fake.archive("tickets", ["7", "8", "230"])

    assert sync(engine, fake) == {"contacts": 0, "deals": 0, "tickets": 0}
    assert_store_equals_source(engine, fake)
    assert "stream contacts: 2 records deleted at the vendor, 2 rows removed from customer" in (
        caplog.text
    )
    assert "stream tickets: 3 records deleted at the vendor, 3 rows removed" in caplog.text
    assert "3" in set(stored(engine, "tickets")["customer_id"])  # kept, now without a customer
    caplog.clear()
    fake.requests.clear()

    assert sync(engine, fake) == {"contacts": 0, "deals": 0, "tickets": 0}
    assert "deleted at the vendor" not in caplog.text  # nothing passed on twice
    assert [len(archived_reads(fake, kind)) for kind in SIZES] == [1, 1, 1]
    assert_store_equals_source(engine, fake)


def test_crash_between_pages_of_the_archived_list_removes_each_row_once(
    store_url: str, fake, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="flows.sync")
    engine = store.open_store(store_url)
    sync(engine, fake, objects=["contacts"])
    gone = [str(n) for n in range(1, 251) if n % 5]  # 200: two pages of the archived list
    fake.archive("contacts", gone)
    fake.fault(Fault("/objects/contacts", 500, skip=2, times=99))  # after search and page 1
    with pytest.raises(SourceError, match=r"stream contacts \(archived\), page 2"):
        sync(engine, fake, objects=["contacts"], max_retries=1)

    applied = store.read_cursor(engine, "crm", "contacts")["deleted"]
    assert set(applied["next_applied"]) == set(gone[:100])
    assert set(stored(engine, "contacts").index) == set(fake.objects["contacts"]) | set(gone[100:])
    fake.faults.clear()
    fake.requests.clear()

    assert sync(engine, fake, objects=["contacts"]) == {"contacts": 0}
    assert [r.get("after") for r in archived_reads(fake, "contacts")] == [applied["after"]]
    assert "100 records deleted at the vendor, 100 rows removed" in caplog.text
    assert set(stored(engine, "contacts").index) == set(fake.objects["contacts"])
    assert set(store.read_cursor(engine, "crm", "contacts")["deleted"]["applied"]) == set(gone)
    caplog.clear()
    sync(engine, fake, objects=["contacts"])
    assert "deleted at the vendor" not in caplog.text


def test_a_record_archived_behind_the_page_being_listed_leaves_at_the_next_sync(
    sqlite_url: str, monkeypatch, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="flows.sync")
    monkeypatch.setenv("HUBSPOT_TOKEN", TOKEN)
    fake = FakeHubSpot(TOKEN)
    fake.seed(contacts=10, deals=0, tickets=0)
    options = {"objects": ["contacts"], "page_size": 2}
    with fake.running():
        engine = store.open_store(sqlite_url)
        sync(engine, fake, **options)
        fake.archive("contacts", ["2", "4", "6"])
        (stream,) = crm(fake, **options).streams()

        def archive_around_the_next_page() -> None:
            fake.archive("contacts", ["1"])  # behind the page listed next
            fake.archive("contacts", ["9"])  # on it, archived later

        sync_stream(engine, "crm", ArchivesWhileListing(stream, archive_around_the_next_page))
        assert set(stored(engine, "contacts").index) == {"1", "3", "5", "7", "8", "10"}
        caplog.clear()

        sync(engine, fake, **options)
    assert set(stored(engine, "contacts").index) == {"3", "5", "7", "8", "10"}
    assert "1 records deleted at the vendor, 1 rows removed" in caplog.text


def test_bad_token_fails_at_once_naming_hubspot_token_and_the_scope(
    sqlite_url: str, fake, monkeypatch
) -> None:
    monkeypatch.setenv("HUBSPOT_TOKEN", "pat-na1-revoked")
    with pytest.raises(SourceError) as caught:
        sync(store.open_store(sqlite_url), fake)
    message = str(caught.value)
    assert "HTTP 401: Authentication credentials not found" in message
    assert "check HUBSPOT_TOKEN" in message and "crm.objects.contacts.read" in message
    assert len(fake.requests) == 1


def test_missing_token_is_a_config_error_naming_the_variable(monkeypatch) -> None:
    monkeypatch.delenv("HUBSPOT_TOKEN", raising=False)
    with pytest.raises(ConfigError, match=r"sources\.crm: set HUBSPOT_TOKEN .* tickets"):
        open_source("crm", "hubspot", {})


def test_config_overrides_fields_and_values(sqlite_url: str, fake) -> None:
    engine = store.open_store(sqlite_url)
    sync(
        engine,
        fake,
        objects=["tickets"],
        field_map={"tickets": {"subject": "text"}},
        value_map={"tickets": {"topic": {"DELIVERY": "delivery"}}},
    )
    tickets = stored(engine, "tickets")
    assert tickets.loc[["1", "3"], ["text", "topic"]].values.tolist() == [
        ["Ticket 0", "payment"],
        ["Ticket 2", "delivery"],
    ]
    assert "subject" in requests_to(fake, "/objects/tickets")[0][2]["properties"]
    assert HUBSPOT["tickets"].fields["content"] == "text"  # defaults untouched


def test_deals_without_amount_are_not_orders(caplog) -> None:
    at = "2026-03-01T10:00:00.000Z"
    records = [{"id": "1", "amount": "10", "createdate": at}, {"id": "2", "createdate": at}]
    rows = HUBSPOT["deals"].apply(records, "orders", "source crm, stream deals, page 1")
    assert [r["source_id"] for r in rows] == ["1"]
    assert "source crm, stream deals, page 1: 1 records lack" in caplog.text


def test_unknown_objects_and_options_are_config_errors(fake) -> None:
    with pytest.raises(ConfigError, match="unknown HubSpot objects"):
        crm(fake, objects=["companies"])
    with pytest.raises(ConfigError, match=r"sources\.crm\.options: .*page_sise"):
        crm(fake, page_sise=10)
    with pytest.raises(ConfigError, match=r"sources\.crm\.options: max_retries must be 0"):
        crm(fake, max_retries=-1)


def test_rate_limiter_holds_requests_to_the_configured_rate() -> None:
    limiter = RateLimiter(5, 0.25)  # 20 per second, bursts of 5
    started = time.monotonic()
    for _ in range(15):
        limiter.acquire()
    assert 0.45 <= time.monotonic() - started < 1.0


def test_sources_check_reads_one_page_and_says_what_to_fix(fake, monkeypatch) -> None:
    options = {"base_url": fake.url, **FAST}
    good = check_source("crm", "hubspot", options)
    assert good.ok and good.detail == "contacts: 100 records on the first page"
    assert len(fake.requests) == 1
    monkeypatch.setenv("HUBSPOT_TOKEN", "pat-na1-revoked")
    bad = check_source("crm", "hubspot", options)
    assert not bad.ok and "check HUBSPOT_TOKEN" in bad.detail
    monkeypatch.delenv("HUBSPOT_TOKEN")
    missing = check_source("crm", "hubspot", options)
    assert not missing.ok and "set HUBSPOT_TOKEN" in missing.detail


def test_ticket_owners_become_agent_names_and_primary_teams_read_once_per_sync(
    store_url: str, fake
) -> None:
    for i in range(120):  # more than a page of owners
        fake.add_owner(f"Agent{i}", "Extra")
    olga, ivan, anna = list(fake.owners)[:3]
    gone = fake.add("tickets", {"content": "x", "hubspot_owner_id": "12345"}, datetime.now(UTC))
    fake.rate_limited("/crm/v3/owners", retry_after="0")
    engine = store.open_store(store_url)

    sync(engine, fake)

    tickets = stored(engine, "tickets")
    owned = {
        key: record.properties.get("hubspot_owner_id")
        for key, record in fake.objects["tickets"].items()
    }
    names = {olga: "Olga Petrova", ivan: "Ivan", anna: "Anna Smirnova", "12345": "12345"}
    teams = {olga: "Billing", ivan: "Delivery"}  # primary, else the only team
    shown = (
        tickets[["agent", "team"]].astype(object).where(tickets[["agent", "team"]].notna(), None)
    )
    assert shown["agent"].to_dict() == {key: names.get(o) for key, o in owned.items()}
    assert shown["team"].to_dict() == {key: teams.get(o) for key, o in owned.items()}
    assert tickets.loc[gone, "agent"] == "12345"  # an unknown owner stays as its id
    assert pd.isna(tickets.loc["5", "agent"])  # a ticket without an owner
    listed = [
        (r[2].get("archived"), r[2].get("after")) for r in fake.requests if r[1] == "/crm/v3/owners"
    ]
    # The 429 is retried; active owners take two pages, archived ones one: read once.
    assert listed == [("false", None), ("false", None), ("false", "100"), ("true", None)]


def test_feedback_submissions_are_survey_responses_with_their_contact_and_ticket(
    store_url: str, fake
) -> None:
    at = EPOCH + timedelta(days=3)
    kinds = [("NPS", "9"), ("CSAT", "0"), ("CSAT", "2"), ("CES", "6"), ("CUSTOM", "3")]
    for i, (kind, value) in enumerate(kinds * 30):
        fake.add(
            "feedback_submissions",
            {
                "hs_survey_type": kind,
                "hs_survey_name": f"{kind} after ticket",
                "hs_value": value,
                "hs_content": f"comment {i}",
                "hs_submission_timestamp": iso(ms(at + timedelta(minutes=i))),
                "hs_survey_channel": "EMAIL",
            },
            at + timedelta(minutes=i),
            contacts=[str(i % 50 + 1)],
            tickets=[] if i % 7 == 0 else [str(i % 200 + 1)],
        )
    engine = store.open_store(store_url)

    written = sync(engine, fake, objects=["feedback_submissions"])

    assert written == {"feedback_submissions": 120}  # custom surveys carry no score kind
    rows = store.read_frame(engine, store.SurveyResponse).set_index("source_id")
    first = rows.loc["1"]
    assert [first[c] for c in ("kind", "score", "survey", "customer_id", "comment")] == [
        "nps", 9.0, "NPS after ticket", "1", "comment 0",
    ]  # fmt: skip
    assert pd.isna(first["ticket_id"])  # submission 1 is about no ticket
    assert rows.loc["2", "ticket_id"] == "2" and rows.loc["2", "score"] == 1.0  # not satisfied
    assert rows.loc["3", "score"] == 5.0  # HubSpot's satisfied, on a 1–5 scale
    assert rows.loc["4", ["kind", "score"]].tolist() == ["ces", 6.0]
    assert rows.loc["1", "submitted_at"] == pd.Timestamp("2025-01-04 00:00")
    assert "5" not in rows.index
    listed = requests_to(fake, "/crm/v3/objects/feedback_submissions")
    assert listed[0][2]["associations"] == "contacts,tickets"

    later = fake.add(
        "feedback_submissions",
        {"hs_survey_type": "NPS", "hs_survey_name": "NPS after ticket", "hs_value": "3"}
        | {"hs_submission_timestamp": iso(ms(datetime.now(UTC)))},
        datetime.now(UTC),
        contacts=["7"],
        tickets=["8"],
    )
    assert sync(engine, fake, objects=["feedback_submissions"]) == {"feedback_submissions": 1}
    rows = store.read_frame(engine, store.SurveyResponse).set_index("source_id")
    assert rows.loc[later, ["customer_id", "ticket_id", "score"]].tolist() == ["7", "8", 3.0]
