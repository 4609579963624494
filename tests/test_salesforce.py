"""Salesforce connector against a fake org on loopback: full and incremental sync into the store,
`nextRecordsUrl` paging, API usage limits, 503 with Retry-After, 5xx on first pages, timeouts,
pages of the wrong shape, crashes with expired query locators, bad tokens, sessions renewed by
a connected app (refresh-token and client-credentials flows) with their secrets kept out of
errors. The checks every vendor shares are in test_vendor_contract.py."""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest
from sqlalchemy.engine import Engine

from connectors.agents import Agent
from connectors.errors import ConfigError, SourceError
from connectors.salesforce import SALESFORCE, SalesforceSource, case_owners
from flows.sync import sync_source
from tasks import store
from tests.fakes.loopback import Fault
from tests.fakes.salesforce import (
    CLIENT_ID,
    CLIENT_SECRET,
    CONCURRENT_LIMIT,
    EPOCH,
    REFRESH_TOKEN,
    TOKEN_PATH,
    FakeSalesforce,
)

TOKEN = "00D5g000004XyZ1!AQ0AQFakeSessionTokenValue0123456789abcdef"
SIZES = {"contacts": 250, "cases": 230, "opportunities": 120}
SOBJECTS = {"contacts": "Contact", "cases": "Case", "opportunities": "Opportunity"}
TABLES = {"contacts": store.Customer, "cases": store.Ticket, "opportunities": store.Order}
FAST = {"backoff_base": 0.01, "max_wait": 5.0, "timeout": 2.0, "rate_limit": [1000, 1]}
QUERY = "/services/data/v62.0/query"
QUERY_ALL = "/services/data/v62.0/queryAll"
OAUTH_ENV = ("SALESFORCE_CLIENT_ID", "SALESFORCE_CLIENT_SECRET", "SALESFORCE_REFRESH_TOKEN")


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSalesforce]:
    org = FakeSalesforce(TOKEN, batch_size=100)
    org.seed(**SIZES)
    monkeypatch.setenv("SALESFORCE_TOKEN", TOKEN)
    monkeypatch.setenv("SALESFORCE_INSTANCE_URL", org.url)
    for variable in OAUTH_ENV:
        monkeypatch.delenv(variable, raising=False)
    with org.running():
        yield org


def connected_app(
    monkeypatch: pytest.MonkeyPatch,
    refresh_token: str | None = REFRESH_TOKEN,
    client_secret: str = CLIENT_SECRET,
) -> None:
    """The connected app's credentials in the environment instead of SALESFORCE_TOKEN."""
    monkeypatch.delenv("SALESFORCE_TOKEN")
    monkeypatch.setenv("SALESFORCE_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("SALESFORCE_CLIENT_SECRET", client_secret)
    if refresh_token:
        monkeypatch.setenv("SALESFORCE_REFRESH_TOKEN", refresh_token)


def org(**options: Any) -> SalesforceSource:
    return SalesforceSource(name="sf", **{**FAST, **options})


def sync(engine: Engine, **options: Any) -> dict[str, int]:
    return sync_source(engine, org(**options))


def stored(engine: Engine, stream: str) -> pd.DataFrame:
    return store.read_frame(engine, TABLES[stream]).set_index("source_id").sort_index()


def live(fake: FakeSalesforce, sobject: str) -> dict[str, dict[str, Any]]:
    """The org's records of `sobject` that are not in the Recycle Bin."""
    return {k: r for k, r in fake.records[sobject].items() if not r.get("IsDeleted")}


def assert_store_equals_source(engine: Engine, fake: FakeSalesforce) -> None:
    for stream, model in TABLES.items():
        rows = store.read_frame(engine, model)
        assert rows["source_id"].is_unique, stream
        assert set(rows["source_id"]) == set(live(fake, SOBJECTS[stream])), stream
    cases = stored(engine, "cases")
    for key, record in live(fake, "Case").items():
        assert cases.loc[key, "text"] == record["Description"]


def queries(fake: FakeSalesforce) -> list[str]:
    """The SOQL of the record reads, leaving out the reads of deleted records."""
    return [soql for path, soql in fake.requests if soql and path == QUERY]


def deletion_queries(fake: FakeSalesforce) -> list[str]:
    """The SOQL of the reads of deleted records."""
    return [soql for path, soql in fake.requests if soql and path == QUERY_ALL]


def case_id(n: int) -> str:
    return f"500{n:012d}AAA"


def contact_id(n: int) -> str:
    return f"003{n:012d}AAA"


def test_full_sync_maps_every_record_to_canonical_columns(store_url: str, fake) -> None:
    engine = store.open_store(store_url)
    assert sync(engine) == SIZES
    assert_store_equals_source(engine, fake)

    cases, contacts, deals = (stored(engine, s) for s in ("cases", "contacts", "opportunities"))
    columns = ["customer_id", "channel", "topic", "status", "created_at", "resolved_at", "text"]
    assert cases.loc[case_id(2), columns].tolist() == [
        f"003{2:012d}AAA", "email", "Billing", "closed", pd.Timestamp("2025-01-01 00:00"),
        pd.Timestamp("2025-01-01 05:00"), "Where is my order 1?",
    ]  # fmt: skip
    assert pd.isna(cases.loc[case_id(1), "resolved_at"])
    assert pd.isna(cases.loc[case_id(10), "customer_id"])
    assert cases.loc[case_id(3), "topic"] == "Product quality"  # not in the value map
    first = f"003{1:012d}AAA"
    expected_hash = hashlib.sha256(b"person0@example.com").hexdigest()
    assert contacts.loc[first, ["email_hash", "segment", "region", "channel"]].tolist() == [
        expected_hash, "Customer - Direct", "Novosibirsk", "web",
    ]  # fmt: skip
    assert pd.isna(contacts.loc[f"003{3:012d}AAA", "segment"])  # contact without an account
    assert deals.loc[f"006{1:012d}AAA", ["amount", "status"]].tolist() == [1000.5, "won"]
    soql = queries(fake)
    assert soql[0].startswith("SELECT Account.Type, CreatedDate, Email, Id, LeadSource")
    assert soql[0].endswith("FROM Contact ORDER BY SystemModstamp, Id")
    pages = [path for path, _ in fake.requests if path.startswith(f"{QUERY}/")]
    assert len(pages) == 2 + 2 + 1  # nextRecordsUrl: 250, 230 and 120 records by 100
    assert store.read_cursor(engine, "sf", "cases") == {
        "since": fake.records["Case"][case_id(230)]["SystemModstamp"],
        "after_id": case_id(230),
        "deleted": {},  # no record in the Recycle Bin yet
    }


def test_second_sync_fetches_only_changed_records(store_url: str, fake) -> None:
    engine = store.open_store(store_url)
    sync(engine)
    fake.change("Case", [case_id(5), case_id(6), case_id(7)], Description="Parcel lost")
    fake.change("Contact", [f"003{3:012d}AAA"], MailingState="Tomsk")
    new = fake.add("Case", {"Description": "New one", "Origin": "Chat"}, datetime.now(UTC))
    fake.requests.clear()

    assert sync(engine) == {"contacts": 1, "cases": 4, "opportunities": 0}
    last = fake.records["Case"][case_id(230)]["SystemModstamp"][:19]
    assert (
        f"WHERE (SystemModstamp > {last}Z OR (SystemModstamp = {last}Z AND Id > '"
        in (queries(fake)[1])
    )
    cases = stored(engine, "cases")
    assert cases.loc[[case_id(5), case_id(6), case_id(7)], "text"].tolist() == ["Parcel lost"] * 3
    assert cases.loc[new, "channel"] == "chat"
    assert_store_equals_source(engine, fake)
    assert sync(engine) == {"contacts": 0, "cases": 0, "opportunities": 0}


@pytest.mark.parametrize(("status", "retry_after"), [(503, "1")])
def test_503_is_retried_honouring_retry_after(
    sqlite_url: str, fake, status: int, retry_after: str | None
) -> None:
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    fake.fault(Fault(QUERY, status, headers=headers, skip=1))
    engine = store.open_store(sqlite_url)

    started = time.monotonic()
    assert sync(engine, objects=["opportunities"]) == {"opportunities": 120}
    elapsed = time.monotonic() - started

    assert (elapsed >= 0.95) == bool(retry_after)
    assert len(fake.requests) == 3 + 1  # and the read of deleted records


def test_api_usage_near_the_limit_slows_requests_and_is_logged(
    sqlite_url: str, fake, caplog
) -> None:
    caplog.set_level(logging.DEBUG, logger="connectors.salesforce")
    fake.api_used = 13_600  # past 90% of 15,000
    engine = store.open_store(sqlite_url)
    started = time.monotonic()
    assert sync(engine, objects=["cases"], limit_pause=0.3) == {"cases": 230}
    assert time.monotonic() - started >= 0.6  # paused before the two nextRecordsUrl pages
    assert "Salesforce API usage 13601/15000" in caplog.text
    assert caplog.text.count("past 90% of the org's 24-hour allowance") == 1


@pytest.mark.parametrize(
    "message",
    ["ConcurrentPerOrgLongTxn Limit exceeded.", "ConcurrentRequests (Concurrent API Requests) "
     "Limit exceeded."],
)  # fmt: skip
def test_concurrent_request_limit_403_is_retried_like_a_429(
    store_url: str, fake, message: str, caplog
) -> None:
    fake.refuse(f"{QUERY}/", 403, "REQUEST_LIMIT_EXCEEDED", message, skip=1)
    engine = store.open_store(store_url)

    assert sync(engine) == SIZES
    assert_store_equals_source(engine, fake)
    pages = [path for path, _ in fake.requests if path.startswith(f"{QUERY}/")]
    assert pages[1] == pages[2] and pages[1].endswith("-200")  # the refused page, asked again
    # Pages, reads of deleted records, case owners (users, then queues), the retry.
    assert len(fake.requests) == 8 + 3 + 2 + 1
    assert f"HTTP 403: REQUEST_LIMIT_EXCEEDED: {message}" in caplog.text
    assert "retry 1/5" in caplog.text


def test_concurrent_limit_that_outlasts_the_retries_names_the_page(sqlite_url, fake) -> None:
    fake.refuse(QUERY, 403, "REQUEST_LIMIT_EXCEEDED", CONCURRENT_LIMIT, times=99)
    with pytest.raises(SourceError) as caught:
        sync(store.open_store(sqlite_url), max_retries=2)
    message = str(caught.value)
    assert "source sf, stream contacts, page 1" in message
    assert f"failed after 3 attempts: HTTP 403: REQUEST_LIMIT_EXCEEDED: {CONCURRENT_LIMIT}" in (
        message
    )
    assert "long-running requests" in message and "daily" not in message
    assert len(fake.requests) == 3


@pytest.mark.parametrize(
    ("refusal", "usage"),
    [
        (None, "api-usage=15001/15000"),  # the fake's allowance runs out after one request
        (("Limit exceeded.", "api-usage=15000/15000"), "api-usage=15000/15000"),
        (("TotalRequests Limit exceeded.", ""), "usage not reported"),
    ],
    ids=["allowance-runs-out", "usage-header-at-maximum", "total-requests-message"],
)
def test_spent_daily_allowance_fails_at_once_saying_when_the_window_frees_up(
    store_url: str, fake, refusal: tuple[str, str] | None, usage: str
) -> None:
    if refusal is None:
        fake.api_used = fake.api_max - 1
    else:
        text, header = refusal
        headers = {"Sforce-Limit-Info": header}
        fake.refuse(f"{QUERY}/", 403, "REQUEST_LIMIT_EXCEEDED", text, headers)
    engine = store.open_store(store_url)

    started = time.monotonic()
    with pytest.raises(SourceError) as caught:
        sync(engine, backoff_base=1.0, limit_pause=0.0)  # a retry would wait 0.5 s or more
    elapsed = time.monotonic() - started

    message = str(caught.value)
    assert "source sf, stream contacts, page 2: Salesforce answered HTTP 403: " in message
    assert f"daily API limit is spent (Sforce-Limit-Info: {usage})" in message
    assert "Not retried" in message and "rerun later" in message
    window = re.search(r"out of the window by (\d{4}-\d\d-\d\d \d\d:\d\d) UTC", message)
    assert window, message
    frees = datetime.strptime(window[1], "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
    assert abs(frees - datetime.now(UTC) - timedelta(hours=24)) < timedelta(minutes=2)
    assert elapsed < 0.5 and len(fake.requests) == 2
    assert store.row_counts(engine)["customer"] == 100
    cursor = store.read_cursor(engine, "sf", "contacts")
    assert cursor["after_id"] == f"003{100:012d}AAA" and cursor["next"].endswith("-100")


def test_other_403_fails_at_once_with_salesforce_message(sqlite_url: str, fake) -> None:
    refusal = "insufficient access rights on object id"
    fake.refuse(QUERY, 403, "INSUFFICIENT_ACCESS", refusal, skip=1)
    engine = store.open_store(sqlite_url)
    with pytest.raises(SourceError) as caught:
        sync(engine, backoff_base=1.0)
    message = str(caught.value)
    assert message.endswith(
        f"source sf, stream contacts, page 2: Salesforce answered HTTP 403: INSUFFICIENT_ACCESS: "
        f"{refusal}"
    )
    assert len(fake.requests) == 2
    assert store.row_counts(engine)["customer"] == 100


def test_bursts_of_500_and_503_are_retried_with_backoff(store_url: str, fake) -> None:
    fake.fault(Fault(QUERY, 500, times=2))
    fake.fault(Fault(f"{QUERY}/", 503, skip=1, times=3))
    engine = store.open_store(store_url)

    assert sync(engine) == SIZES
    assert len(fake.requests) == 8 + 3 + 2 + 5  # pages, deleted records, case owners, retries
    assert_store_equals_source(engine, fake)


def test_slow_response_times_out_and_is_retried(sqlite_url: str, fake) -> None:
    fake.fault(Fault(f"{QUERY}/", None, delay=1.0))
    engine = store.open_store(sqlite_url)
    assert sync(engine, objects=["contacts"], timeout=0.3) == {"contacts": 250}
    paths = [path.rsplit("-", 1)[-1] for path, _ in fake.requests]
    assert paths == [QUERY, "100", "100", "200", QUERY_ALL]


def test_timeouts_that_outlast_the_retries_fail_naming_the_page(sqlite_url: str, fake) -> None:
    fake.fault(Fault(QUERY, None, delay=0.5, times=3))
    with pytest.raises(SourceError, match=r"stream contacts, page 1: .*ReadTimeout"):
        sync(store.open_store(sqlite_url), timeout=0.2, max_retries=2)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ('{"totalSize": 250, "done": false, "records": {"Id": 1}}', "documented shape"),
    ],
)
def test_malformed_page_saves_nothing_of_it_and_keeps_the_cursor(
    store_url: str, fake, body: str, problem: str
) -> None:
    fake.fault(Fault(f"{QUERY}/", 200, body))
    engine = store.open_store(store_url)
    with pytest.raises(SourceError) as caught:
        sync(engine)

    assert "source sf, stream contacts, page 2" in str(caught.value)
    assert problem in str(caught.value) and "nothing of it was saved" in str(caught.value)
    assert store.row_counts(engine)["customer"] == 100
    cursor = store.read_cursor(engine, "sf", "contacts")
    assert cursor["after_id"] == f"003{100:012d}AAA" and "-100" in cursor["next"]


def test_crash_mid_pagination_then_rerun_leaves_no_gap_and_no_duplicate(
    store_url: str, fake
) -> None:
    fake.fault(Fault(f"{QUERY}/", 500, skip=2, times=99))  # cases' second page fails
    engine = store.open_store(store_url)
    with pytest.raises(SourceError, match="stream cases, page 2"):
        sync(engine, max_retries=1)
    assert store.row_counts(engine)["ticket"] == 100
    fake.faults.clear()
    fake.expire_locators()  # a saved nextRecordsUrl would now fail
    fake.requests.clear()

    assert sync(engine) == {"contacts": 0, "cases": 130, "opportunities": 120}
    assert f"AND Id > '{case_id(100)}'" in queries(fake)[1]
    assert_store_equals_source(engine, fake)
    assert sync(engine) == {"contacts": 0, "cases": 0, "opportunities": 0}


def test_records_deleted_in_salesforce_leave_the_store_and_nothing_else(
    store_url: str, fake, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="flows.sync")
    engine = store.open_store(store_url)
    sync(engine)
    fake.delete("Contact", [contact_id(3), contact_id(120)])
    fake.delete("Case", [case_id(7), case_id(8), case_id(230)])
    fake.delete("Opportunity", [f"006{5:012d}AAA"])

    assert sync(engine) == {"contacts": 0, "cases": 0, "opportunities": 0}
    assert_store_equals_source(engine, fake)
    assert "stream contacts: 2 records deleted at the vendor, 2 rows removed from customer" in (
        caplog.text
    )
    assert "stream cases: 3 records deleted at the vendor, 3 rows removed" in caplog.text
    assert contact_id(3) in set(stored(engine, "cases")["customer_id"])  # kept, unmatched
    caplog.clear()
    fake.requests.clear()

    assert sync(engine) == {"contacts": 0, "cases": 0, "opportunities": 0}
    assert "deleted at the vendor" not in caplog.text  # nothing passed on twice
    assert "IsDeleted = true AND (SystemModstamp > " in deletion_queries(fake)[0]
    assert f"AND Id > '{contact_id(120)}'))" in deletion_queries(fake)[0]
    assert_store_equals_source(engine, fake)


def test_crash_between_pages_of_deleted_records_removes_each_row_once(
    store_url: str, fake, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="flows.sync")
    engine = store.open_store(store_url)
    sync(engine, objects=["contacts"])
    gone = [contact_id(n) for n in range(1, 251) if n % 5]  # 200: two batches of 100
    fake.delete("Contact", gone)
    binned = sorted(gone, key=lambda key: (fake.records["Contact"][key]["SystemModstamp"], key))
    fake.fault(Fault(f"{QUERY}/", 500, times=99))  # the second batch of queryAll
    with pytest.raises(SourceError, match=r"stream contacts \(deleted\), page 2"):
        sync(engine, objects=["contacts"], max_retries=1)

    applied = store.read_cursor(engine, "sf", "contacts")["deleted"]
    assert applied["after_id"] == binned[99]
    assert set(stored(engine, "contacts").index) == set(live(fake, "Contact")) | set(binned[100:])
    fake.faults.clear()
    fake.expire_locators()
    fake.requests.clear()

    assert sync(engine, objects=["contacts"]) == {"contacts": 0}
    assert f"AND Id > '{binned[99]}'))" in deletion_queries(fake)[0]
    assert "100 records deleted at the vendor, 100 rows removed" in caplog.text
    assert set(stored(engine, "contacts").index) == set(live(fake, "Contact"))
    assert store.read_cursor(engine, "sf", "contacts")["deleted"]["after_id"] == binned[-1]
    caplog.clear()
    sync(engine, objects=["contacts"])
    assert "deleted at the vendor" not in caplog.text


def test_bad_token_fails_at_once_naming_salesforce_token(
    sqlite_url: str, fake, monkeypatch
) -> None:
    monkeypatch.setenv("SALESFORCE_TOKEN", "00D5g000004XyZ1!expired")
    with pytest.raises(SourceError) as caught:
        sync(store.open_store(sqlite_url))
    message = str(caught.value)
    assert "HTTP 401: INVALID_SESSION_ID: Session expired or invalid" in message
    assert "check SALESFORCE_TOKEN" in message
    assert "set SALESFORCE_CLIENT_ID and SALESFORCE_CLIENT_SECRET" in message  # renewal
    assert len(fake.requests) == 1 and not fake.token_requests


def test_missing_token_or_instance_is_a_config_error_naming_the_variable(monkeypatch) -> None:
    for variable in ("SALESFORCE_TOKEN", "SALESFORCE_INSTANCE_URL", *OAUTH_ENV):
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(ConfigError, match="set base_url or SALESFORCE_INSTANCE_URL"):
        org()
    monkeypatch.setenv("SALESFORCE_INSTANCE_URL", "https://x.my.salesforce.com")
    with pytest.raises(
        ConfigError, match=r"sources\.sf: set SALESFORCE_TOKEN .*api scope.*SALESFORCE_CLIENT_ID"
    ):
        org()
    monkeypatch.setenv("SALESFORCE_CLIENT_ID", CLIENT_ID)
    with pytest.raises(ConfigError, match=r"sources\.sf: set SALESFORCE_CLIENT_SECRET to"):
        org()
    with pytest.raises(ConfigError, match=r"api_version looks like v62\.0"):
        org(api_version="62")


@pytest.mark.parametrize("flow", ["refresh_token", "client_credentials"])
def test_expired_sessions_are_renewed_mid_sync_without_gap_or_duplicate(
    store_url: str, fake, monkeypatch, flow: str
) -> None:
    connected_app(monkeypatch, REFRESH_TOKEN if flow == "refresh_token" else None)
    fake.token_uses = 3  # each session answers three requests, then has expired
    engine = store.open_store(store_url)
    source = org()

    assert sync_source(engine, source) == SIZES
    assert_store_equals_source(engine, fake)
    # 8 pages, 3 reads of deleted records and 2 of case owners: sessions answer requests
    # 1-3, 4-6, 7-9, 10-12 and 13; requests 4, 7, 10 and 13 are refused once each
    assert len(fake.token_requests) == 5 and len(fake.requests) == 13 + 4
    assert [r["grant_type"] for r in fake.token_requests] == [flow] * 5
    assert {r.get("refresh_token") for r in fake.token_requests} == {
        REFRESH_TOKEN if flow == "refresh_token" else None
    }
    issued = " ".join(fake.issued)
    assert source.streams()[0].client.auth.redact(issued) == " ".join(["***"] * 5)


def test_streams_on_threads_share_one_session(fake, monkeypatch) -> None:
    connected_app(monkeypatch)
    fake.fault(Fault(TOKEN_PATH, None, delay=0.5))  # the other streams ask meanwhile
    streams = org().streams()
    with ThreadPoolExecutor(len(streams)) as pool:
        read = pool.map(lambda s: [r["source_id"] for p in s.read({}) for r in p.records], streams)
        ids = dict(zip([s.name for s in streams], read, strict=True))

    assert {name: len(set(found)) for name, found in ids.items()} == SIZES
    assert sum(map(len, ids.values())) == sum(SIZES.values())
    assert len(fake.token_requests) == 1


def test_session_refused_even_when_new_fails_after_one_renewal(
    sqlite_url: str, fake, monkeypatch
) -> None:
    connected_app(monkeypatch)
    fake.token_uses = 0  # the org refuses every session it issues (e.g. another org's app)
    with pytest.raises(SourceError) as caught:
        sync(store.open_store(sqlite_url))
    message = str(caught.value)
    assert "page 1: Salesforce answered HTTP 401: INVALID_SESSION_ID" in message
    assert "check the connected app in SALESFORCE_CLIENT_ID" in message
    assert len(fake.token_requests) == 2 and len(fake.requests) == 2


@pytest.mark.parametrize(
    ("refresh_token", "client_secret", "refusal"),
    [
        ("5Aep861revokedRefreshToken.x", CLIENT_SECRET, "invalid_grant: expired access/refresh"),
        (REFRESH_TOKEN, "WR0NG5ECRET0123456789", "invalid_client: invalid client credentials"),
    ],
    ids=["revoked-refresh-token", "wrong-client-secret"],
)
def test_refused_credentials_name_source_and_variables_never_the_secrets(
    sqlite_url: str, fake, monkeypatch, caplog, refresh_token, client_secret, refusal
) -> None:
    caplog.set_level(logging.DEBUG)
    connected_app(monkeypatch, refresh_token, client_secret)
    with pytest.raises(ConfigError) as caught:
        sync(store.open_store(sqlite_url))

    message = str(caught.value)
    assert message.startswith(f"sources.sf: the OAuth token endpoint {fake.url}{TOKEN_PATH} ")
    assert f"(HTTP 400: {refusal}" in message
    assert "SALESFORCE_CLIENT_ID, SALESFORCE_CLIENT_SECRET and SALESFORCE_REFRESH_TOKEN" in message
    assert len(fake.token_requests) == 1 and not fake.requests
    assert "HTTP Request: POST" in caplog.text
    for secret in (refresh_token, client_secret):
        assert secret not in message and secret not in caplog.text


def test_token_endpoint_5xx_is_retried_like_the_api(
    sqlite_url: str, fake, monkeypatch, caplog
) -> None:
    connected_app(monkeypatch, refresh_token=None)
    fake.fault(Fault(TOKEN_PATH, 503, times=2))
    engine = store.open_store(sqlite_url)
    assert sync(engine, objects=["opportunities"]) == {"opportunities": 120}
    assert "HTTP 503: UNKNOWN_EXCEPTION" in caplog.text and "retry 2/5" in caplog.text
    assert len(fake.token_requests) == 1 and len(fake.requests) == 2 + 1


def test_config_overrides_fields_and_a_bad_field_is_the_vendor_error(sqlite_url, fake) -> None:
    engine = store.open_store(sqlite_url)
    sync(engine, objects=["cases"], field_map={"cases": {"Type": "topic"}})
    assert stored(engine, "cases").loc[[case_id(1), case_id(2)], "topic"].tolist() == [
        "Problem", "Question",
    ]  # fmt: skip
    assert SALESFORCE["cases"].fields["Reason"] == "topic"  # defaults untouched

    with pytest.raises(SourceError, match="INVALID_FIELD: No such column 'Topic__c' on entity"):
        sync(engine, objects=["cases"], field_map={"cases": {"Topic__c": "topic"}})


def owner_queries(fake: FakeSalesforce, sobject: str) -> list[int]:
    """How many ids each query of `fake` for owners of kind `sobject` listed."""
    asked = [q for _, q in fake.requests if q and f" FROM {sobject} " in q]
    return [q.split("IN (")[1].count("'") // 2 for q in asked]


def shown(tickets: pd.DataFrame, column: str) -> dict[str, Any]:
    values = tickets[column].astype(object)
    return values.where(values.notna(), None).to_dict()


def test_case_owners_become_agents_and_queues_teams_looked_up_once_per_sync(
    store_url: str, fake
) -> None:
    olga, ivan = fake.records["User"]
    (queue,) = fake.records["Group"]
    users = [
        fake.add("User", {"Name": f"Agent {i}", "Department": "Billing"}, EPOCH) for i in range(150)
    ]
    cases = list(fake.records["Case"])
    for case, user in zip(cases, users, strict=False):
        fake.records["Case"][case]["OwnerId"] = user
    gone = "005000000000999AAA"  # a user since deleted
    fake.records["Case"][cases[-1]]["OwnerId"] = gone
    fake.fault(Fault("from=User", 503))
    engine = store.open_store(store_url)

    sync(engine, objects=["cases"])

    tickets = store.read_frame(engine, store.Ticket).set_index("source_id")
    owner = {k: r["OwnerId"] for k, r in fake.records["Case"].items()}
    names = {olga: "Olga Petrova", ivan: "Ivan Sidorov", gone: gone}
    names |= {u: f"Agent {i}" for i, u in enumerate(users)}
    teams = {olga: "Delivery", queue: "Tier 1 Support"} | {u: "Billing" for u in users}
    assert shown(tickets, "agent") == {k: names.get(o) for k, o in owner.items()}
    assert shown(tickets, "team") == {k: teams.get(o) for k, o in owner.items()}
    # Pages of 100 cases: owners first named on each page are asked for once (the 503 again),
    # users first, then queues among the rest.
    assert owner_queries(fake, "User") == [100, 100, 53, 1]
    assert owner_queries(fake, "Group") == [1, 1]


def test_case_owners_are_asked_for_200_to_a_query_and_their_batches_followed(fake) -> None:
    users = [fake.add("User", {"Name": f"Agent {i}"}, EPOCH) for i in range(250)]
    (queue,) = fake.records["Group"]
    client = org().client()

    found = case_owners(client, "v62.0", sorted([*users, queue]), "source sf, stream cases")

    assert found == {u: Agent(f"Agent {i}") for i, u in enumerate(users)} | {
        queue: Agent(None, "Tier 1 Support")
    }
    # 200 users in two batches of 100, then 50 and the queue; the queue among queues.
    assert owner_queries(fake, "User") == [200, 51]
    assert owner_queries(fake, "Group") == [1]
    assert [path.startswith(f"{QUERY}/") for path, _ in fake.requests] == [0, 1, 0, 0]
