"""Bitrix24 connector against a fake portal on loopback: full and incremental sync into the
store, batch paging, the request bucket and time budget, 5xx in batches, timeouts, pages of the
wrong shape, a crash between batches, bad credentials, the OAuth token kept out of logs. The
checks every vendor shares are in test_vendor_contract.py."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest
from sqlalchemy.engine import Engine

from connectors.bitrix24 import BITRIX24, Bitrix24Source, php_query
from connectors.errors import ConfigError, SourceError
from flows.sync import sync_source, sync_stream
from tasks import store
from tests.fakes.bitrix24 import EPOCH, FakeBitrix24, php_params
from tests.fakes.loopback import Fault

CODE = "x7k2m9q4w8e1r5t3"
TOKEN = "a1b2c3d4e5f60000demo0000oauth0000token"
SIZES = {"contacts": 260, "deals": 120, "activities": 240}
TABLES = {"contacts": store.Customer, "deals": store.Order, "activities": store.Ticket}
FAST = {"backoff_base": 0.01, "max_wait": 5.0, "timeout": 2.0, "rate_limit": [1000, 1]}


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeBitrix24]:
    portal = FakeBitrix24(CODE, TOKEN)
    portal.seed(**SIZES)
    monkeypatch.setenv("BITRIX24_WEBHOOK_URL", portal.webhook_url)
    monkeypatch.delenv("BITRIX24_TOKEN", raising=False)
    with portal.running():
        yield portal


def crm(fake: FakeBitrix24, **options: Any) -> Bitrix24Source:
    return Bitrix24Source(name="b24", **{**FAST, **options})


def sync(engine: Engine, fake: FakeBitrix24, **options: Any) -> dict[str, int]:
    return sync_source(engine, crm(fake, **options))


def stored(engine: Engine, stream: str) -> pd.DataFrame:
    return store.read_frame(engine, TABLES[stream]).set_index("source_id").sort_index()


def expected_ids(fake: FakeBitrix24, stream: str) -> set[str]:
    return set(fake.tickets() if stream == "activities" else fake.records[stream])


def assert_store_equals_source(engine: Engine, fake: FakeBitrix24) -> None:
    for stream, model in TABLES.items():
        rows = store.read_frame(engine, model)
        assert rows["source_id"].is_unique, stream
        assert set(rows["source_id"]) == expected_ids(fake, stream), stream
    tickets = stored(engine, "activities")
    for key, record in fake.tickets().items():
        assert tickets.loc[key, "text"] == record["DESCRIPTION"]


def calls_to(fake: FakeBitrix24, method: str) -> list[dict[str, Any]]:
    return [params for name, params in fake.calls if name == method]


def test_full_sync_maps_every_record_to_canonical_columns(store_url: str, fake) -> None:
    engine = store.open_store(store_url)
    written = sync(engine, fake)

    assert written == {"contacts": 260, "deals": 120, "activities": len(fake.tickets())}
    assert_store_equals_source(engine, fake)
    contacts, deals, tickets = (stored(engine, s) for s in ("contacts", "deals", "activities"))
    expected_hash = hashlib.sha256(b"person0@example.com").hexdigest()
    assert contacts.loc["1", ["email_hash", "segment", "region", "channel"]].tolist() == [
        expected_hash, "client", "Новосибирская область", "phone",
    ]  # fmt: skip
    assert contacts.loc["1", "created_at"] == pd.Timestamp("2025-01-01 00:00")  # +03:00 → UTC
    assert deals.loc["2", ["amount", "customer_id", "status"]].tolist() == [1001.5, "2", "new"]
    assert deals.loc["3", "status"] == "C1:WON"  # not in the value map: passes through
    columns = ["customer_id", "channel", "topic", "status", "created_at", "resolved_at", "text"]
    assert tickets.loc["2", columns].tolist() == [
        "2", "email", "Оплата не прошла", "closed", pd.Timestamp("2025-01-01 01:00"),
        pd.Timestamp("2025-01-01 06:00"), "Где мой заказ 1?",
    ]  # fmt: skip
    assert pd.isna(tickets.loc["1", "resolved_at"])  # not completed
    assert pd.isna(tickets.loc["10", "customer_id"])  # owned by a deal, not a contact
    assert tickets.loc["1", "channel"] == "chat"  # open-line session
    # One plain page learns the total, then one batch of 50-record pages fetches the rest.
    assert [name for name, _ in fake.requests[:2]] == ["crm.contact.list", "batch"]
    # Two such per stream, then the activities' users and their departments, once.
    assert len(fake.requests) == 6 + 2
    contact_calls = calls_to(fake, "crm.contact.list")
    assert [(c["start"], c["filter"]) for c in contact_calls[:2]] == [(0, {}), ("0", {">ID": "50"})]
    assert {int(c["start"]) for c in contact_calls[1:]} == {0, 50, 100, 150, 200}
    assert "EMAIL" in contact_calls[0]["select"] and "PHONE" not in contact_calls[0]["select"]
    assert contact_calls[0]["order"] == {"ID": "ASC"}
    activity_filter = calls_to(fake, "crm.activity.list")[0]["filter"]
    assert activity_filter == {
        "PROVIDER_ID": ["IMOPENLINES_SESSION", "CRM_EMAIL", "VOXIMPLANT_CALL", "CRM_WEBFORM"],
        "DIRECTION": "1",
    }
    cursor = store.read_cursor(engine, "b24", "contacts")
    assert set(cursor) == {"since", "skip"} and cursor["skip"] == {}


def test_second_sync_fetches_only_changed_records(store_url: str, fake) -> None:
    engine = store.open_store(store_url)
    sync(engine, fake)
    fake.change("activities", ["2", "3", "5"], DESCRIPTION="Посылка потерялась")
    fake.change("contacts", ["3", "4"], ADDRESS_PROVINCE="Томская область")
    new = fake.add(
        "activities",
        {"OWNER_TYPE_ID": "3", "OWNER_ID": "9", "PROVIDER_ID": "IMOPENLINES_SESSION",
         "DIRECTION": "1", "SUBJECT": "Новый чат", "DESCRIPTION": "Здравствуйте", "COMPLETED": "N"},
        datetime.now(UTC),
    )  # fmt: skip
    fake.calls.clear()

    assert sync(engine, fake) == {"contacts": 2, "deals": 0, "activities": 4}
    since = calls_to(fake, "crm.activity.list")[0]["filter"][">=LAST_UPDATED"]
    assert datetime.fromisoformat(since) > EPOCH + timedelta(days=30)  # after every seeded change
    assert all(len(calls_to(fake, m)) == 1 for m in ("crm.contact.list", "crm.deal.list"))
    tickets = stored(engine, "activities")
    assert tickets.loc[["2", "3", "5"], "text"].tolist() == ["Посылка потерялась"] * 3
    assert tickets.loc[new, ["customer_id", "channel", "topic"]].tolist() == [
        "9", "chat", "Новый чат",
    ]  # fmt: skip
    assert stored(engine, "contacts").loc[["3", "4"], "region"].tolist() == ["Томская область"] * 2
    assert_store_equals_source(engine, fake)
    assert sync(engine, fake) == {"contacts": 0, "deals": 0, "activities": 0}


def test_records_changed_during_a_pass_are_read_by_the_next(sqlite_url: str, fake) -> None:
    engine = store.open_store(sqlite_url)
    stream = crm(fake, objects=["contacts"], batch_pages=1).streams()[0]
    read = stream.read

    def read_then_change(cursor: dict) -> Iterator[Any]:
        for page in read(cursor):
            yield page
            if page.number == 1:  # contact 1 is stored; contact 260 is not read yet
                fake.change("contacts", ["1"], ADDRESS_PROVINCE="Омская область")
                fake.change("contacts", ["260"], ADDRESS_PROVINCE="Алтайский край")

    stream.read = read_then_change
    assert sync_stream(engine, "b24", stream) == 260
    assert stored(engine, "contacts").loc["1", "region"] == "Новосибирская область"

    assert sync(engine, fake, objects=["contacts"]) == {"contacts": 1}  # 260 is skipped
    assert stored(engine, "contacts").loc[["1", "260"], "region"].tolist() == [
        "Омская область", "Алтайский край",
    ]  # fmt: skip


@pytest.mark.parametrize("retry_after", ["1", None])
def test_full_request_bucket_503_is_retried_after_the_wait_bitrix24_asks_for(
    sqlite_url: str, fake, retry_after: str | None, caplog
) -> None:
    fake.limit_exceeded("crm.deal.list", retry_after)
    engine = store.open_store(sqlite_url)

    started = time.monotonic()
    # 4 requests per second: without Retry-After the bucket drains one request in 0.25 s.
    assert sync(engine, fake, objects=["deals"], rate_limit=[4, 1]) == {"deals": 120}
    elapsed = time.monotonic() - started

    assert elapsed >= (0.95 if retry_after else 0.25)
    assert [name for name, _ in fake.requests] == ["crm.deal.list", "crm.deal.list", "batch"]
    assert "HTTP 503: QUERY_LIMIT_EXCEEDED: Too many requests" in caplog.text


def test_operation_time_limit_429_waits_until_the_budget_resets(sqlite_url: str, fake) -> None:
    fake.operating_reset_in = 2.0
    fake.time_limit("batch")
    engine = store.open_store(sqlite_url)

    started = time.monotonic()
    assert sync(engine, fake, objects=["deals"]) == {"deals": 120}
    assert time.monotonic() - started >= 0.5  # backoff alone would be 0.01 s
    assert [name for name, _ in fake.requests] == ["crm.deal.list", "batch", "batch"]


def test_nearly_spent_time_budget_pauses_before_the_next_request_and_says_so(
    sqlite_url: str, fake, caplog
) -> None:
    fake.operating, fake.operating_reset_in = 470.0, 2.0
    engine = store.open_store(sqlite_url)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="connectors.http"):
        assert sync(engine, fake, objects=["deals"]) == {"deals": 120}
    assert time.monotonic() - started >= 0.5
    assert len(fake.requests) == 2
    assert "Bitrix24 asks to pause 2 s" in caplog.text


def test_bursts_of_500_and_503_are_retried_with_backoff(store_url: str, fake) -> None:
    fake.fault(Fault("crm.activity.list", 500, times=2))
    fake.fault(Fault("batch", 503, skip=2, times=3))
    engine = store.open_store(store_url)

    assert sync(engine, fake)["activities"] == len(fake.tickets())
    assert len(fake.requests) == 6 + 2 + 5  # lists, users and departments, retries
    assert_store_equals_source(engine, fake)


def test_slow_response_times_out_and_is_retried(sqlite_url: str, fake) -> None:
    fake.fault(Fault("crm.contact.list", None, delay=1.0, skip=1))
    engine = store.open_store(sqlite_url)
    options = {"objects": ["contacts"], "batch_pages": 1, "timeout": 0.3}
    assert sync(engine, fake, **options) == {"contacts": 260}
    starts = [body["filter"].get(">ID") for _, body in fake.requests]
    assert starts == [None, 50, 50, 100, 150, 200, 250]


def test_timeouts_that_outlast_the_retries_fail_naming_the_page(sqlite_url: str, fake) -> None:
    fake.fault(Fault("crm.contact.list", None, delay=0.5, times=3))
    with pytest.raises(SourceError, match=r"stream contacts, page 1: .*ReadTimeout"):
        sync(store.open_store(sqlite_url), fake, timeout=0.2, max_retries=2)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ('{"result": {"result": {"c0": 7}}}', "documented shape"),
        ('{"result": [{"ID": "51"}], "total": 1}', "documented shape"),
    ],
)
def test_malformed_page_saves_nothing_of_it_and_keeps_the_cursor(
    store_url: str, fake, body: str, problem: str
) -> None:
    batched = body.startswith('{"result": {')
    fake.fault(
        Fault("batch" if batched else "crm.contact.list", 200, body, skip=0 if batched else 1)
    )
    engine = store.open_store(store_url)
    with pytest.raises(SourceError) as caught:
        sync(engine, fake, batch_pages=2 if batched else 1)

    assert "source b24, stream contacts, page 2" in str(caught.value)
    assert problem in str(caught.value) and "nothing of it was saved" in str(caught.value)
    assert store.row_counts(engine)["customer"] == 50
    assert store.read_cursor(engine, "b24", "contacts")["after_id"] == 50


@pytest.mark.parametrize(
    ("error", "description", "reset_in", "waited"),
    [
        ("QUERY_LIMIT_EXCEEDED", "Too many requests", 600.0, 0.25),  # the bucket drains
        ("OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit.", 2.0, 0.5),
    ],
)
def test_batch_command_over_a_limit_retries_the_whole_batch_from_the_same_cursor(
    store_url: str, fake, error: str, description: str, reset_in: float, waited: float, caplog
) -> None:
    fake.operating_reset_in = reset_in
    fake.command_error("crm.contact.list", error, description, skip=2)  # second batch, c0
    engine = store.open_store(store_url)

    started = time.monotonic()
    # A bucket of 8 never paces these 5 requests, and drains one request in 0.25 s.
    options = {"objects": ["contacts"], "batch_pages": 2, "rate_limit": [8, 2]}
    assert sync(engine, fake, **options) == {"contacts": 260}
    assert time.monotonic() - started >= waited  # backoff alone would be 0.01 s

    names = [name for name, _ in fake.requests]
    assert names == ["crm.contact.list", "batch", "batch", "batch", "crm.contact.list"]
    batches = [body["cmd"] for name, body in fake.requests if name == "batch"]
    assert batches[1] == batches[2] and "filter%5B%3EID%5D=150&" in batches[1]["c0"]
    assert f"HTTP 200: command c0: {error}: {description}; retry 1/5" in caplog.text
    rows = store.read_frame(engine, store.Customer)
    assert rows["source_id"].is_unique and set(rows["source_id"]) == set(fake.records["contacts"])
    cursor = store.read_cursor(engine, "b24", "contacts")
    assert set(cursor) == {"since", "skip"} and cursor["skip"] == {}
    assert sync(engine, fake, objects=["contacts"]) == {"contacts": 0}


@pytest.mark.parametrize(
    ("faults", "failure", "batches"),
    [
        (
            [("ACCESS_DENIED", "Access denied!", 2, 1)],
            "batch after ID 150: Bitrix24 answered command c0: ACCESS_DENIED: Access denied!; "
            "nothing of this batch was saved",
            2,
        ),
        (
            [("QUERY_LIMIT_EXCEEDED", "Too many requests", 2, 1), ("ACCESS_DENIED", "No!", 0, 1)],
            "batch after ID 150: Bitrix24 answered command c0: QUERY_LIMIT_EXCEEDED: Too many "
            "requests; command c1: ACCESS_DENIED: No!; nothing of this batch was saved",
            2,
        ),
        (
            [("QUERY_LIMIT_EXCEEDED", "Too many requests", 2, 99)],
            "page 3: Bitrix24 failed after 3 attempts: HTTP 200: command c0: "
            "QUERY_LIMIT_EXCEEDED: Too many requests",
            1 + 3,
        ),
    ],
    ids=["not-a-limit", "limit-and-not", "limit-outlasts-retries"],
)
def test_failed_batch_command_names_it_and_saves_nothing_of_the_batch(
    store_url: str, fake, faults: list[tuple[str, str, int, int]], failure: str, batches: int
) -> None:
    for error, description, skip, times in faults:  # the second batch's commands fail
        fake.command_error("crm.contact.list", error, description, skip=skip, times=times)
    engine = store.open_store(store_url)
    with pytest.raises(SourceError) as caught:
        sync(engine, fake, objects=["contacts"], batch_pages=2, max_retries=2)

    assert f"source b24, stream contacts, {failure}" in str(caught.value)
    assert [name for name, _ in fake.requests].count("batch") == batches
    assert store.row_counts(engine)["customer"] == 150
    assert store.read_cursor(engine, "b24", "contacts")["after_id"] == 150


def test_crash_mid_pagination_then_rerun_leaves_no_gap_and_no_duplicate(
    store_url: str, fake
) -> None:
    fake.fault(Fault("batch", 500, skip=1, times=99))  # contacts' second batch fails
    engine = store.open_store(store_url)
    with pytest.raises(SourceError, match="stream contacts, page 3"):
        sync(engine, fake, batch_pages=2, max_retries=1)
    assert store.row_counts(engine)["customer"] == 150
    fake.faults.clear()
    fake.calls.clear()

    assert sync(engine, fake, batch_pages=2) == {
        "contacts": 110, "deals": 120, "activities": len(fake.tickets()),
    }  # fmt: skip
    assert calls_to(fake, "crm.contact.list")[0]["filter"] == {">ID": "150"}
    assert_store_equals_source(engine, fake)
    assert sync(engine, fake) == {"contacts": 0, "deals": 0, "activities": 0}


def test_bad_webhook_fails_at_once_naming_the_variable(sqlite_url: str, fake, monkeypatch) -> None:
    monkeypatch.setenv("BITRIX24_WEBHOOK_URL", f"{fake.url}/rest/1/revoked0code/")
    with pytest.raises(SourceError) as caught:
        sync(store.open_store(sqlite_url), fake)
    message = str(caught.value)
    assert "HTTP 401: INVALID_CREDENTIALS: Invalid request credentials" in message
    assert "check BITRIX24_WEBHOOK_URL" in message and "crm, user and department scopes" in message
    assert len(fake.requests) == 1


def test_oauth_token_syncs_and_a_bad_one_names_bitrix24_token(
    sqlite_url: str, fake, monkeypatch, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.delenv("BITRIX24_WEBHOOK_URL")
    monkeypatch.setenv("BITRIX24_TOKEN", TOKEN)
    engine = store.open_store(sqlite_url)
    assert sync(engine, fake, base_url=fake.url, objects=["deals"]) == {"deals": 120}

    monkeypatch.setenv("BITRIX24_TOKEN", "expired0token")
    with pytest.raises(SourceError) as caught:
        sync(engine, fake, base_url=fake.url, objects=["contacts"])
    assert "invalid_token" in str(caught.value) and "check BITRIX24_TOKEN" in str(caught.value)
    assert "auth=***" in caplog.text
    for secret in (TOKEN, "expired0token"):
        assert secret not in str(caught.value) + caplog.text


def test_missing_or_malformed_credentials_are_config_errors(monkeypatch) -> None:
    monkeypatch.delenv("BITRIX24_WEBHOOK_URL", raising=False)
    monkeypatch.delenv("BITRIX24_TOKEN", raising=False)
    with pytest.raises(
        ConfigError, match=r"sources\.b24: set BITRIX24_WEBHOOK_URL .*BITRIX24_TOKEN"
    ):
        Bitrix24Source(name="b24")
    monkeypatch.setenv("BITRIX24_TOKEN", TOKEN)
    with pytest.raises(ConfigError, match="base_url"):
        Bitrix24Source(name="b24")
    monkeypatch.setenv("BITRIX24_WEBHOOK_URL", "https://portal.bitrix24.ru/rest/s3cr3t")
    with pytest.raises(ConfigError, match="BITRIX24_WEBHOOK_URL must look like") as caught:
        Bitrix24Source(name="b24")
    assert "s3cr3t" not in str(caught.value)


def test_config_overrides_fields_values_and_ticket_providers(sqlite_url: str, fake) -> None:
    engine = store.open_store(sqlite_url)
    sync(
        engine,
        fake,
        objects=["contacts", "activities"],
        ticket_providers=["IMOPENLINES_SESSION"],
        field_map={"contacts": {"UF_CRM_SEGMENT": "segment"}},
        value_map={"activities": {"channel": {"IMOPENLINES_SESSION": "livechat"}}},
    )
    assert stored(engine, "contacts").loc[["1", "2"], "segment"].tolist() == ["premium", "loyal"]
    tickets = stored(engine, "activities")
    assert set(tickets["channel"]) == {"livechat"}
    assert "UF_CRM_SEGMENT" in calls_to(fake, "crm.contact.list")[0]["select"]
    assert BITRIX24["contacts"].fields["TYPE_ID"] == "segment"  # defaults untouched


def test_unknown_objects_and_bad_batch_size_are_config_errors(fake) -> None:
    with pytest.raises(ConfigError, match="unknown Bitrix24 objects"):
        crm(fake, objects=["companies"])
    with pytest.raises(ConfigError, match="batch_pages must be 1–50"):
        crm(fake, batch_pages=51)


def test_batch_commands_round_trip_as_php_query_strings() -> None:
    since = "2026-01-01T00:00:00+03:00"
    params = {"filter": {">=DATE_MODIFY": since, ">ID": 7, "PROVIDER_ID": ["A", "B"]},
              "order": {"ID": "ASC"}, "start": 50}  # fmt: skip
    assert php_params(php_query(params)) == {
        "filter": {">=DATE_MODIFY": since, ">ID": "7",
                   "PROVIDER_ID": ["A", "B"]}, "order": {"ID": "ASC"}, "start": "50",
    }  # fmt: skip


def test_responsible_users_become_agents_and_departments_teams_once_per_sync(
    store_url: str, fake
) -> None:
    extra = [fake.add_user(f"Оператор{i}", "Тестов", [1]) for i in range(60)]  # two pages
    for key, user in zip(list(fake.tickets())[50:110], extra, strict=True):
        fake.records["activities"][key]["RESPONSIBLE_ID"] = user
    last = list(fake.tickets())[-1]
    fake.records["activities"][last]["RESPONSIBLE_ID"] = "999"  # a user since deleted
    fake.fault(Fault("user.get", 503))
    engine = store.open_store(store_url)

    sync(engine, fake, objects=["activities"])

    tickets = store.read_frame(engine, store.Ticket).set_index("source_id")
    names = {"1": "Мария Иванова", "2": "Пётр", "3": "Анна Кузнецова", "999": "999"}
    names |= {user: f"Оператор{i} Тестов" for i, user in enumerate(extra)}
    teams = {"1": "Поддержка", "3": "Поддержка"} | dict.fromkeys(extra, "Компания")
    owner = {k: r["RESPONSIBLE_ID"] for k, r in fake.tickets().items()}
    shown = tickets[["agent", "team"]].astype(object)
    shown = shown.where(shown.notna(), None)
    assert shown["agent"].to_dict() == {k: names[o] for k, o in owner.items()}
    assert shown["team"].to_dict() == {k: teams.get(o) for k, o in owner.items()}
    # Page 1 names the 3 seeded users (the 503 is retried), page 2 (the rest, in one batch) 61
    # users more, in two user.get pages; nobody is asked for twice.
    asked = [body for name, body in fake.requests if name == "user.get"]
    assert [(len(b["filter"]["@ID"]), b["start"]) for b in asked] == [
        (3, 0), (3, 0), (61, 0), (61, 50),
    ]  # fmt: skip
    departments = [body["ID"] for name, body in fake.requests if name == "department.get"]
    assert departments == [["7"], ["1"]]
