"""SQL source against real databases (a SQLite file, a PostgreSQL server): query rows mapped
with the files column map, incremental reads past a cursor column in bounded chunks, resuming
after a crash mid-stream, no duplicates, and errors that name the source and stream but never
the password."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, create_engine
from sqlalchemy.engine import Engine

from connectors import open_source
from connectors.base import Rejection
from connectors.errors import ConfigError, SourceError
from connectors.sql import SqlSource
from flows.sync import check_source, sync_source, sync_stream
from tasks import store
from tasks.mapping import email_hash
from tests.test_files import CrashAfter

T0 = datetime(2026, 3, 2, 9, 0)
TICKET_COLUMNS = {
    "ticket_id": "source_id",
    "customer_ref": "customer_id",
    "opened": "created_at",
    "first_reply": "first_response_at",
    "kanal": "channel",
    "thema": "topic",
    "body": "text",
}
# A colon in the query reaches the database as written, not as a bind parameter.
TICKETS_QUERY = (
    "SELECT ticket_id, customer_ref, opened, first_reply, kanal, thema, updated_at, body "
    "FROM tickets WHERE kanal <> 'fax :b'"
)

metadata = MetaData()
TICKETS = Table(
    "tickets",
    metadata,
    Column("ticket_id", Integer, primary_key=True),
    Column("customer_ref", String(20)),
    Column("opened", DateTime),
    Column("first_reply", DateTime),
    Column("kanal", String(20)),
    Column("thema", String(40)),
    Column("updated_at", DateTime),
    Column("body", String(200)),
)
CLIENTS = Table(
    "clients",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("mail", String(80)),
    Column("tier", String(20)),
    Column("since", DateTime),
)
ANSWERS = Table(
    "answers",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("client", String(20)),
    Column("grade", String(10)),
    Column("at", DateTime),
)


@pytest.fixture
def database(store_url: str) -> str:
    """A fresh, empty database to read from, on SQLite (a file) and on PostgreSQL."""
    return store_url.replace("postgresql://", "postgresql+psycopg://")


@pytest.fixture
def sqlite_db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'crm.db'}"


def ticket(i: int, updated: datetime | None = None) -> dict[str, Any]:
    """Ticket `i`: opened `i` hours after T0, answered `i` × 10 minutes later."""
    opened = T0 + timedelta(hours=i)
    return {
        "ticket_id": i,
        "customer_ref": f"c{i % 4}",
        "opened": opened,
        "first_reply": opened + timedelta(minutes=10 * i),
        "kanal": ["email", "chat", "phone"][i % 3],
        "thema": ["delivery", "payment"][i % 2],
        "updated_at": updated or opened,
        "body": f"Где мой заказ {i}?",
    }


def seeded(url: str, tickets: list[dict[str, Any]]) -> Engine:
    engine = create_engine(url)
    metadata.create_all(engine)
    if tickets:
        with engine.begin() as conn:
            conn.execute(TICKETS.insert(), tickets)
    return engine


def tickets_source(url: str, **options: Any) -> SqlSource:
    entry = {
        "name": "tickets",
        "query": TICKETS_QUERY,
        "table": "ticket",
        "columns": TICKET_COLUMNS,
        "cursor_column": "updated_at",
    }
    entry |= options.pop("entry", {})
    return SqlSource("warehouse", queries=[entry], url=url, **options)


def stored_tickets(engine: Engine) -> pd.DataFrame:
    rows = store.read_frame(engine, store.Ticket)
    assert rows["source_id"].is_unique
    return rows.set_index("source_id").sort_index()


def test_query_rows_become_canonical_tickets(database: str, tmp_path: Path) -> None:
    seeded(database, [ticket(i) for i in range(1, 8)])
    engine = store.open_store(f"sqlite:///{tmp_path / 'store.db'}")

    assert sync_source(engine, tickets_source(database, page_rows=3)) == {"tickets": 7}

    rows = stored_tickets(engine)
    assert sorted(rows.index) == [str(i) for i in range(1, 8)]
    five = rows.loc["5"]
    assert five[["customer_id", "channel", "topic", "text"]].tolist() == [
        "c1", "phone", "payment", "Где мой заказ 5?",
    ]  # fmt: skip
    assert five["created_at"] == pd.Timestamp(T0 + timedelta(hours=5))
    assert five["first_response_at"] - five["created_at"] == pd.Timedelta(minutes=50)
    cursor = store.read_cursor(engine, "warehouse", "tickets")
    assert pd.Timestamp(cursor["after"]) == pd.Timestamp(T0 + timedelta(hours=7))


def test_second_run_reads_only_newer_rows_and_updates_changed_ones(
    database: str, tmp_path: Path
) -> None:
    source_db = seeded(database, [ticket(i) for i in range(1, 6)])
    engine = store.open_store(f"sqlite:///{tmp_path / 'store.db'}")
    assert sync_source(engine, tickets_source(database)) == {"tickets": 5}
    with source_db.begin() as conn:
        conn.execute(TICKETS.insert(), [ticket(6), ticket(7)])
        conn.execute(
            TICKETS.update()
            .where(TICKETS.c.ticket_id == 2)
            .values(thema="returns", updated_at=T0 + timedelta(days=1))
        )

    assert sync_source(engine, tickets_source(database)) == {"tickets": 3}
    assert sync_source(engine, tickets_source(database)) == {"tickets": 0}

    rows = stored_tickets(engine)
    assert len(rows) == 7 and rows.loc["2", "topic"] == "returns"
    assert rows.loc["1", "topic"] == "payment"


def test_rows_sharing_a_cursor_value_stay_in_one_page(sqlite_db: str) -> None:
    same = [T0, T0, T0, T0 + timedelta(hours=1), T0 + timedelta(hours=2), T0 + timedelta(hours=2)]
    seeded(sqlite_db, [ticket(i, updated) for i, updated in enumerate(same, start=1)])
    stream = tickets_source(sqlite_db, page_rows=2).streams()[0]

    pages = list(stream.read({}))

    assert [p.records["source_id"].tolist() for p in pages] == [["1", "2", "3"], ["4"], ["5", "6"]]
    assert [pd.Timestamp(p.cursor["after"]) for p in pages] == [
        pd.Timestamp(T0 + timedelta(hours=h)) for h in (0, 1, 2)
    ]


def test_crash_mid_stream_resumes_after_the_last_committed_chunk(
    store_url: str, sqlite_db: str
) -> None:
    updates = [0, 1, 1, 2, 3, 3, 3, 4, 5, 6]
    seeded(sqlite_db, [ticket(i, T0 + timedelta(hours=h)) for i, h in enumerate(updates, 1)])
    engine = store.open_store(store_url)
    stream = tickets_source(sqlite_db, page_rows=2).streams()[0]

    with pytest.raises(RuntimeError):
        sync_stream(engine, "warehouse", CrashAfter(stream, pages=2))
    assert sorted(stored_tickets(engine).index, key=int) == ["1", "2", "3"]
    cursor = store.read_cursor(engine, "warehouse", "tickets")
    assert pd.Timestamp(cursor["after"]) == pd.Timestamp(T0 + timedelta(hours=1))

    resumed = [p.records["source_id"].tolist() for p in stream.read(cursor)]
    assert resumed == [["4"], ["5", "6", "7", "8"], ["9"], ["10"]]
    assert sync_stream(engine, "warehouse", stream) == 7
    assert sorted(stored_tickets(engine).index, key=int) == [str(i) for i in range(1, 11)]


def test_without_cursor_column_each_run_reads_everything_and_upserts(
    sqlite_db: str, tmp_path: Path
) -> None:
    source_db = seeded(sqlite_db, [])
    with source_db.begin() as conn:
        conn.execute(
            CLIENTS.insert(),
            [
                {"id": 1, "mail": " Anna@Example.com", "tier": "premium", "since": T0},
                {"id": 2, "mail": "boris@example.com", "tier": "new", "since": T0},
                {"id": 3, "mail": None, "tier": "loyal", "since": None},
            ],
        )
    entry = {
        "name": "clients",
        "query": "SELECT id, mail, tier, since FROM clients",
        "table": "customer",
        "columns": {"id": "source_id", "mail": "email", "tier": "segment", "since": "created_at"},
    }
    engine = store.open_store(f"sqlite:///{tmp_path / 'store.db'}")
    source = SqlSource("warehouse", queries=[entry], url=sqlite_db)
    assert sync_source(engine, source) == {"clients": 3}
    with source_db.begin() as conn:
        conn.execute(CLIENTS.update().where(CLIENTS.c.id == 2).values(tier="loyal"))

    assert sync_source(engine, source) == {"clients": 3}

    customers = store.read_frame(engine, store.Customer).set_index("source_id").sort_index()
    assert customers["segment"].tolist() == ["premium", "loyal", "loyal"]
    assert customers.loc["1", "email_hash"] == email_hash(pd.Series(["anna@example.com"]))[0]
    assert pd.isna(customers.loc["3", "created_at"])


def test_invalid_rows_are_rejected_by_id_and_the_rest_load(
    sqlite_db: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source_db = seeded(sqlite_db, [])
    grades = ["9", "eleven", "11", "", "7"]
    with source_db.begin() as conn:
        conn.execute(
            ANSWERS.insert(),
            [{"id": i, "client": f"c{i}", "grade": g, "at": T0} for i, g in enumerate(grades, 1)],
        )
    entry = {
        "name": "nps",
        "query": "SELECT id, client, grade, at FROM answers",
        "table": "survey_response",
        "columns": {
            "id": "source_id",
            "client": "customer_id",
            "grade": "score",
            "at": "submitted_at",
        },
        "constants": {"survey": "relationship_nps", "kind": "nps"},
        "cursor_column": "id",
    }
    source = SqlSource("warehouse", queries=[entry], url=sqlite_db)
    engine = store.open_store(f"sqlite:///{tmp_path / 'store.db'}")

    assert sync_source(engine, source) == {"nps": 2}

    assert source.streams()[0].rejected == [
        Rejection("id 2", "column grade = 'eleven' is not a number"),
        Rejection("id 3", "nps score 11 is outside 0–10"),
        Rejection("id 4", "score is empty"),
    ]
    assert "source warehouse, stream nps, page 1: rejected 3 rows" in caplog.text
    assert store.read_cursor(engine, "warehouse", "nps") == {"after": 5, "type": "int"}


def test_password_comes_from_the_environment_and_is_never_shown(
    postgres_server: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    host = postgres_server.removeprefix("postgresql://cxloop@")
    monkeypatch.setenv("WAREHOUSE_PASSWORD", "hunter2-secret")
    # Trust authentication ignores the password, so the password path runs for real.
    options = {
        "url": f"postgresql+psycopg://cxloop@{host}/postgres",
        "password_env": "WAREHOUSE_PASSWORD",
        "queries": [
            {
                "name": "one",
                "query": "SELECT 1 AS id, 9 AS score, now() AS at",
                "table": "survey_response",
                "columns": {"id": "source_id", "score": "score", "at": "submitted_at"},
                "constants": {"survey": "relationship_nps", "kind": "nps"},
            }
        ],
    }
    check = check_source("warehouse", "sql", options)
    assert check.ok and check.detail == "one: 1 records on the first page", check.detail
    (page,) = open_source("warehouse", "sql", options).streams()[0].read({})
    assert page.records[["source_id", "score"]].values.tolist() == [["1", 9.0]]

    monkeypatch.setenv("WAREHOUSE_URL", "postgresql+psycopg://cxloop:hunter2-secret@127.0.0.1:9/x")
    broken = tickets_source(None, url_env="WAREHOUSE_URL")
    with pytest.raises(SourceError) as caught:
        list(broken.streams()[0].read({}))
    message = str(caught.value)
    assert message.startswith("source warehouse, stream tickets: cannot connect to ")
    assert "cxloop:***@127.0.0.1:9/x" in message
    assert "hunter2" not in message + caplog.text


def test_failing_query_names_source_stream_and_the_database_message(
    database: str, tmp_path: Path
) -> None:
    seeded(database, [ticket(1)])
    engine = store.open_store(f"sqlite:///{tmp_path / 'store.db'}")
    broken = tickets_source(database, entry={"query": "SELECT * FROM no_such_table"})
    with pytest.raises(SourceError) as caught:
        sync_source(engine, broken)
    message = str(caught.value)
    assert message.startswith("source warehouse, stream tickets: the query failed on ")
    assert "no_such_table" in message and "Fix `query`" in message
    assert store.read_cursor(engine, "warehouse", "tickets") == {}


def test_missing_mapped_column_names_it_and_what_the_query_has(sqlite_db: str) -> None:
    seeded(sqlite_db, [ticket(1)])
    columns = TICKET_COLUMNS | {"priority": "status"}
    stream = tickets_source(sqlite_db, entry={"columns": columns}).streams()[0]
    with pytest.raises(ConfigError) as caught:
        list(stream.read({}))
    message = str(caught.value)
    assert "source warehouse, stream tickets: its query has no column 'priority'" in message
    assert "'ticket_id'" in message and "'updated_at'" in message

    missing_cursor = tickets_source(sqlite_db, entry={"cursor_column": "changed"}).streams()[0]
    with pytest.raises(SourceError, match=r"stream tickets: the query failed on .*changed"):
        list(missing_cursor.read({}))


def test_config_errors_never_echo_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAREHOUSE_URL", "not a url with hunter2 inside")
    with pytest.raises(ConfigError) as caught:
        tickets_source(None, url_env="WAREHOUSE_URL")
    assert "the value of WAREHOUSE_URL is not a SQLAlchemy URL" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    with pytest.raises(ConfigError, match="`url` holds a password"):
        tickets_source("postgresql+psycopg://reader:hunter2@db/crm")
    with pytest.raises(ConfigError, match="knows no dialect 'nosuchdb'"):
        tickets_source("nosuchdb://reader@db/crm")
    with pytest.raises(ConfigError, match="set WAREHOUSE_DSN to the database's SQLAlchemy URL"):
        tickets_source(None, url_env="WAREHOUSE_DSN")
    with pytest.raises(ConfigError, match=r"queries\[0\]: ticket needs source_id"):
        tickets_source("sqlite://", entry={"columns": {"opened": "created_at"}})
    with pytest.raises(ConfigError, match=r"queries\[0\]: unknown option `sql`; .*query"):
        tickets_source("sqlite://", entry={"sql": "SELECT 1"})


@pytest.mark.parametrize(
    "ending",
    ["\n-- only open tickets", " -- kanal <> 'x'", "; -- done", ";\n-- a; b\n  -- c\n", " ;"],
)
def test_query_ending_in_a_comment_or_semicolon_reads_incrementally(
    database: str, ending: str
) -> None:
    seeded(database, [ticket(i) for i in range(1, 6)])
    source = tickets_source(database, page_rows=2, entry={"query": TICKETS_QUERY + ending})

    pages = list(source.streams()[0].read({}))

    assert [i for p in pages for i in p.records["source_id"]] == ["1", "2", "3", "4", "5"]
    after = list(source.streams()[0].read(pages[0].cursor))
    assert [i for p in after for i in p.records["source_id"]] == ["2", "3", "4", "5"]


def test_comment_marks_inside_quoted_text_stay_in_the_query(sqlite_db: str) -> None:
    seeded(sqlite_db, [ticket(1), ticket(2) | {"kanal": "a--b"}])
    query = TICKETS_QUERY.replace("'fax :b'", "'a--b'") + " -- not 'a--b'"
    source = tickets_source(sqlite_db, entry={"query": query})

    assert [p.records["source_id"].tolist() for p in source.streams()[0].read({})] == [["1"]]
