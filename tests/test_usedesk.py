"""Usedesk connector against a fake Usedesk on loopback: full and incremental sync, first agent
reply from comments, agent and group names, 5xx on ticket details, pages of the wrong shape, a
bad token. The checks every vendor shares are in test_vendor_contract.py."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest
from sqlalchemy.engine import Engine

from connectors.errors import ConfigError, SourceError
from connectors.usedesk import UsedeskSource
from flows.sync import sync_source
from tasks import store
from tests.fakes.loopback import Fault
from tests.fakes.usedesk import FakeUsedesk

TOKEN = "ud0api0channel0token0f00d"
FAST = {"backoff_base": 0.01, "max_wait": 5.0, "timeout": 2.0, "rate_limit": [1000, 1]}


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeUsedesk]:
    desk = FakeUsedesk(TOKEN)
    desk.seed(clients=30, tickets=250)
    monkeypatch.setenv("USEDESK_API_TOKEN", TOKEN)
    with desk.running():
        yield desk


def options(fake: FakeUsedesk, **extra: Any) -> dict[str, Any]:
    return {"base_url": fake.url, **FAST, **extra}


def sync(engine: Engine, fake: FakeUsedesk, **extra: Any) -> dict[str, int]:
    return sync_source(engine, UsedeskSource(name="ud", **options(fake, **extra)))


def tickets(engine: Engine) -> pd.DataFrame:
    return store.read_frame(engine, store.Ticket).set_index("source_id").sort_index()


def assert_store_equals_source(engine: Engine, fake: FakeUsedesk) -> None:
    rows = store.read_frame(engine, store.Ticket)
    assert rows["source_id"].is_unique
    assert set(rows["source_id"]) == {str(k) for k in fake.tickets}
    stored = tickets(engine)
    for key, ticket in fake.tickets.items():
        assert stored.loc[str(key), "text"] == ticket["subject"]


def bodies(fake: FakeUsedesk, path: str) -> list[dict[str, Any]]:
    return [body for called, body in fake.requests if called == path]


def test_full_sync_maps_tickets_replies_names_and_clients(store_url: str, fake) -> None:
    engine = store.open_store(store_url)
    assert sync(engine, fake) == {"tickets": 250, "clients": 30}

    assert_store_equals_source(engine, fake)
    rows = tickets(engine)
    columns = ["customer_id", "channel", "status", "agent", "team", "created_at"]
    assert rows.loc["1", columns].tolist() == [
        "1", "22", "solved", "Иван Смирнов", "Оплата", pd.Timestamp("2025-01-01 00:00"),
    ]  # fmt: skip
    assert rows.loc["2", ["agent", "team", "status"]].tolist() == [
        "Ольга Админ",
        "Логистика",
        "closed",
    ]
    assert pd.isna(rows.loc["3", "agent"])  # unassigned
    # The public agent reply at +30 min, not the private note at +10 min.
    assert rows.loc["1", "first_response_at"] == pd.Timestamp("2025-01-01 00:30")
    assert pd.isna(rows.loc["5", "first_response_at"])  # never answered
    customers = store.read_frame(engine, store.Customer).set_index("source_id")
    assert customers.loc["1", "email_hash"] == hashlib.sha256(b"client0@example.com").hexdigest()
    assert [b["offset"] for b in bodies(fake, "/tickets")] == [0, 1, 2]
    assert len(bodies(fake, "/ticket")) == 250
    assert bodies(fake, "/users") == [{"user_type": t} for t in ("admin", "employee", "support")]
    cursor = store.read_cursor(engine, "ud", "tickets")
    assert set(cursor) == {"since"}
    assert datetime.strptime(cursor["since"], "%Y-%m-%d %H:%M") <= datetime.now(UTC).replace(
        tzinfo=None
    )


def test_second_sync_asks_only_for_tickets_updated_since_the_last_pass(
    store_url: str, fake
) -> None:
    engine = store.open_store(store_url)
    sync(engine, fake)
    since = store.read_cursor(engine, "ud", "tickets")["since"]
    # Each stream keeps its own cursor, taken when that stream's pass began.
    clients_since = store.read_cursor(engine, "ud", "clients")["since"]
    fake.change([4, 8, 15], subject="Посылка потерялась")
    new = fake.add_ticket(3, datetime.now(UTC))
    fake.requests.clear()

    assert sync(engine, fake) == {"tickets": 4, "clients": 0}
    assert bodies(fake, "/tickets") == [{"offset": 0, "updated_after": since}]
    assert bodies(fake, "/clients") == [{"offset": 0, "created_after": clients_since}]
    assert tickets(engine).loc[["4", "8", "15"], "text"].tolist() == ["Посылка потерялась"] * 3
    assert tickets(engine).loc[str(new), "customer_id"] == "3"
    assert_store_equals_source(engine, fake)


def test_bursts_of_5xx_on_details_are_retried_with_backoff(store_url: str, fake) -> None:
    fake.fault(Fault("/ticket", 500, skip=10, times=3))
    engine = store.open_store(store_url)
    assert sync(engine, fake, objects=["tickets"]) == {"tickets": 250}
    assert len(bodies(fake, "/tickets")) == 3
    assert_store_equals_source(engine, fake)


@pytest.mark.parametrize(
    ("path", "body", "where", "problem"),
    [
        ("/tickets", '{"tickets": []}', "page 2", "documented shape"),
        ("/ticket", '{"ticket": {"id": "150"}}', "page 2 (ticket 150)", "KeyError: 'comments'"),
    ],
)
def test_malformed_page_saves_nothing_of_it_and_keeps_the_cursor(
    store_url: str, fake, path: str, body: str, where: str, problem: str
) -> None:
    # "/ticket" matches the list's path too: past page 1, its 100 tickets, then page 2.
    fake.fault(Fault(path, 200, body, skip=1 if path == "/tickets" else 102))
    engine = store.open_store(store_url)
    with pytest.raises(SourceError) as caught:
        sync(engine, fake, objects=["tickets"])

    message = str(caught.value)
    assert f"source ud, stream tickets, {where}: " in message
    assert problem in message and "nothing of it was saved" in message
    assert store.row_counts(engine)["ticket"] == 100
    assert store.read_cursor(engine, "ud", "tickets")["offset"] == 1


def test_bad_or_missing_token_names_the_variable(sqlite_url, fake, monkeypatch) -> None:
    monkeypatch.setenv("USEDESK_API_TOKEN", "revoked0token")
    with pytest.raises(SourceError) as caught:
        sync(store.open_store(sqlite_url), fake)
    message = str(caught.value)
    assert "HTTP 401: Invalid api token — check USEDESK_API_TOKEN" in message
    assert len(fake.requests) == 1
    monkeypatch.delenv("USEDESK_API_TOKEN")
    with pytest.raises(ConfigError, match=r"sources\.ud: set USEDESK_API_TOKEN"):
        UsedeskSource(name="ud")


def test_config_names_channels_and_rejects_unknown_objects(sqlite_url: str, fake) -> None:
    engine = store.open_store(sqlite_url)
    sync(engine, fake, objects=["tickets"], value_map={"tickets": {"channel": {"21": "email"}}})
    assert set(tickets(engine)["channel"]) == {"email", "22"}
    with pytest.raises(ConfigError, match="unknown Usedesk objects"):
        UsedeskSource(name="ud", objects=["ratings"])
