"""Omnidesk connector against a fake Omnidesk on loopback: full and incremental sync, first staff
reply from messages, staff and group names, case ratings as CSAT, 429 with `retry_after`, 5xx
on messages, pages of the wrong shape, refused credentials. The checks every vendor shares are
in test_vendor_contract.py."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest
from sqlalchemy.engine import Engine

from connectors.errors import ConfigError, SourceError
from connectors.omnidesk import OmnideskSource
from flows.sync import sync_source
from tasks import store
from tests.fakes.loopback import Fault
from tests.fakes.omnidesk import FakeOmnidesk

EMAIL = "support-lead@shop.ru"
KEY = "od0staff0api0key0c0ffee"
FAST = {"backoff_base": 0.01, "max_wait": 5.0, "timeout": 2.0, "rate_limit": [1000, 1]}
CASES = "/api/cases.json"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOmnidesk]:
    desk = FakeOmnidesk(EMAIL, KEY)
    desk.seed(users=20, cases=230)
    monkeypatch.setenv("OMNIDESK_API_KEY", KEY)
    with desk.running():
        yield desk


def options(fake: FakeOmnidesk, **extra: Any) -> dict[str, Any]:
    return {"base_url": fake.url, "staff_email": EMAIL, **FAST, **extra}


def sync(engine: Engine, fake: FakeOmnidesk, **extra: Any) -> dict[str, int]:
    return sync_source(engine, OmnideskSource(name="od", **options(fake, **extra)))


def table(engine: Engine, model: type[store.Record]) -> pd.DataFrame:
    return store.read_frame(engine, model).set_index("source_id").sort_index()


def rated(fake: FakeOmnidesk) -> set[str]:
    return {f"{k}:csat" for k, case in fake.cases.items() if case["rating"]}


def assert_store_equals_source(engine: Engine, fake: FakeOmnidesk) -> None:
    tickets = table(engine, store.Ticket)
    assert tickets.index.is_unique and set(tickets.index) == {str(k) for k in fake.cases}
    for key, case in fake.cases.items():
        assert tickets.loc[str(key), "text"] == case["subject"]
    answers = table(engine, store.SurveyResponse)
    assert answers.index.is_unique and set(answers.index) == rated(fake)


def queries(fake: FakeOmnidesk, path: str) -> list[dict[str, str]]:
    return [query for called, query in fake.requests if called == path]


def test_full_sync_maps_cases_replies_names_ratings_and_users(store_url: str, fake) -> None:
    engine = store.open_store(store_url)
    assert sync(engine, fake) == {"cases": 230, "ratings": len(rated(fake)), "users": 20}

    assert_store_equals_source(engine, fake)
    tickets = table(engine, store.Ticket)
    columns = ["customer_id", "channel", "status", "agent", "team", "created_at"]
    assert tickets.loc["1", columns].tolist() == [
        "1", "chat", "waiting", "Пётр Орлов", "Возвраты", pd.Timestamp("2025-01-01 00:00"),
    ]  # fmt: skip
    # The staff reply at +20 min; not the rule's auto-reply (+1 min) or the note (+10 min).
    assert tickets.loc["1", "first_response_at"] == pd.Timestamp("2025-01-01 00:20")
    assert pd.isna(tickets.loc["4", "first_response_at"])  # never answered
    assert tickets.loc["2", ["agent", "resolved_at"]].tolist() == [
        "13",
        pd.Timestamp("2025-01-01 03:00"),
    ]
    assert pd.isna(tickets.loc["3", "agent"]) and pd.isna(tickets.loc["1", "resolved_at"])
    answers = table(engine, store.SurveyResponse)
    columns = ["ticket_id", "customer_id", "survey", "kind", "score", "comment", "channel"]
    assert answers.loc["1:csat", columns].tolist() == [
        "1", "1", "omnidesk-csat", "csat", 3.0, "Спасибо 1", "chat",
    ]  # fmt: skip
    assert answers.loc["5:csat", "score"] == 5.0 and "3:csat" not in answers.index
    users = table(engine, store.Customer)
    assert users.loc["1", "email_hash"] == hashlib.sha256(b"user0@example.ru").hexdigest()
    assert [q["page"] for q in queries(fake, CASES)] == ["1", "2", "3"] * 2  # cases, ratings
    assert {q["limit"] for q in queries(fake, CASES)} == {"100"}
    assert queries(fake, "/api/cases/1/messages.json") == [
        {"page": "1", "limit": "100", "order": "asc"}
    ]
    assert set(store.read_cursor(engine, "od", "cases")) == {"since"}


def test_second_sync_asks_only_for_what_changed_since_the_last_pass(store_url: str, fake) -> None:
    engine = store.open_store(store_url)
    sync(engine, fake)
    since = store.read_cursor(engine, "od", "cases")["since"]
    assert since <= datetime.now(UTC).timestamp() - 299
    fake.change([2, 5], subject="Посылка потерялась", rating="low")
    new = fake.add_case(7, datetime.now(UTC))
    fake.requests.clear()

    assert sync(engine, fake) == {"cases": 3, "ratings": 3, "users": 0}
    assert queries(fake, CASES)[0] == {"page": "1", "limit": "100", "from_updated_time": str(since)}
    assert (
        table(engine, store.Ticket).loc[["2", "5"], "text"].tolist() == ["Посылка потерялась"] * 2
    )
    assert (
        table(engine, store.SurveyResponse).loc[["2:csat", "5:csat"], "score"].tolist() == [1.0] * 2
    )
    assert table(engine, store.Ticket).loc[str(new), "customer_id"] == "7"
    assert_store_equals_source(engine, fake)


def test_429_waits_the_retry_after_header_omnidesk_sends(sqlite_url: str, fake, caplog) -> None:
    fake.rate_limited("/api/users.json", "1")
    started = time.monotonic()
    assert sync(store.open_store(sqlite_url), fake, objects=["users"]) == {"users": 20}
    assert time.monotonic() - started >= 0.95  # backoff alone would be 0.01 s
    assert len(queries(fake, "/api/users.json")) == 2
    assert "HTTP 429: Too many requests: Rate limit exceeded; retry 1/5 in 1.00 s" in caplog.text


def test_bursts_of_5xx_on_messages_are_retried_with_backoff(store_url: str, fake) -> None:
    fake.fault(Fault("/messages.json", 500, skip=7, times=3))
    engine = store.open_store(store_url)
    assert sync(engine, fake, objects=["cases", "ratings"])["cases"] == 230
    assert len(queries(fake, CASES)) == 3 + 3
    assert_store_equals_source(engine, fake)


@pytest.mark.parametrize(
    ("path", "skip", "body", "where", "problem"),
    [
        (CASES, 1, '{"0": {"user": {"user_id": 1}}, "total_count": 1}', "page 2", "KeyError"),
        ("/api/cases/130/messages.json", 0, '{"0": {"message": 5}, "total_count": 1}',
         "page 2 (case 130 messages, page 1)", "TypeError"),
    ],
)  # fmt: skip
def test_malformed_page_saves_nothing_of_it_and_keeps_the_cursor(
    store_url: str, fake, path: str, skip: int, body: str, where: str, problem: str
) -> None:
    fake.fault(Fault(path, 200, body, skip=skip))
    engine = store.open_store(store_url)
    with pytest.raises(SourceError) as caught:
        sync(engine, fake, objects=["cases"])

    message = str(caught.value)
    assert f"source od, stream cases, {where}: " in message
    assert problem in message and "nothing of it was saved" in message
    assert store.row_counts(engine)["ticket"] == 100
    assert store.read_cursor(engine, "od", "cases")["page"] == 2


def test_refused_or_missing_credentials_name_what_to_fix(sqlite_url, fake, monkeypatch) -> None:
    monkeypatch.setenv("OMNIDESK_API_KEY", "revoked0key")
    with pytest.raises(SourceError) as caught:
        sync(store.open_store(sqlite_url), fake)
    message = str(caught.value)
    assert (
        "HTTP 401: Unauthorized: Wrong staff e-mail or API key — check staff_email and " in message
    )
    assert "OMNIDESK_API_KEY" in message
    monkeypatch.delenv("OMNIDESK_API_KEY")
    with pytest.raises(ConfigError, match=r"sources\.od: set OMNIDESK_API_KEY"):
        OmnideskSource(name="od", base_url=fake.url, staff_email=EMAIL)
    with pytest.raises(ConfigError, match="staff_email must be the e-mail"):
        OmnideskSource(name="od", base_url=fake.url, staff_email="lead")


def test_ratings_outside_rating_scores_are_skipped_with_a_warning(
    sqlite_url: str, fake, caplog
) -> None:
    fake.change([1], rating="excellent")
    engine = store.open_store(sqlite_url)
    scores = {"high": 4.0, "middle": 2.0, "low": 1.0}
    assert sync(engine, fake, objects=["ratings"], rating_scores=scores) == {
        "ratings": len(rated(fake)) - 1
    }
    assert "page 3: ratings ['excellent'] are not in rating_scores" in caplog.text
    assert table(engine, store.SurveyResponse).loc["5:csat", "score"] == 4.0
