"""The canonical store on SQLite and PostgreSQL: idempotent bulk upsert, atomic cursors, resume."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import JSON, Column, String, TypeDecorator, event
from sqlalchemy.engine import Engine

from connectors.base import Page
from connectors.canonical import TABLES
from connectors.demo import DemoSource, DemoStream
from connectors.errors import StoreError
from flows.sync import sync_source, sync_stream
from tasks import store
from tasks.mapping import to_canonical


def _python_type(column: Column) -> type:
    """What a store column holds, as canonical names it: SQLModel's text columns (`AutoString`,
    whose Python type is `object`) hold `str`, JSON columns `dict`."""
    if isinstance(column.type, JSON):
        return dict
    kind = column.type.impl if isinstance(column.type, TypeDecorator) else column.type
    return str if isinstance(kind, String) else kind.python_type


@pytest.mark.parametrize("name", sorted(store.INGESTED))
def test_each_ingested_table_has_the_canonical_columns_types_and_required_ones(name: str) -> None:
    model = store.INGESTED[name]
    assert {c.name: _python_type(c) for c in model.__table__.columns} == dict(TABLES[name].columns)
    # `source` is required too, but the sync sets it, not the records.
    required = {field for field, info in model.model_fields.items() if info.is_required()}
    assert required == {*TABLES[name].required, "source"}


KEYS = ("source", "source_id")


def _tickets(ids: list[str], topic: str = "delivery") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "source_id": ids,
            "customer_id": "C1",
            "topic": topic,
            "created_at": pd.Timestamp("2026-10-01 10:00"),
        }
    )


def test_upsert_twice_keeps_one_row_per_source_id_and_takes_the_new_values(store_url: str) -> None:
    engine = store.open_store(store_url)
    store.load_page(engine, store.Ticket, _tickets(["T1", "T2"]), "crm", "tickets", {"page": 1})
    store.load_page(
        engine, store.Ticket, _tickets(["T2", "T3"], "payment"), "crm", "tickets", {"page": 2}
    )

    rows = store.read_frame(engine, store.Ticket).set_index("source_id")
    assert sorted(rows.index) == ["T1", "T2", "T3"]
    assert rows.loc["T2", "topic"] == "payment"
    assert rows.loc["T1", "topic"] == "delivery"
    assert store.read_cursor(engine, "crm", "tickets") == {"page": 2}


def test_same_source_id_from_two_sources_is_two_rows(store_url: str) -> None:
    engine = store.open_store(store_url)
    store.load_page(engine, store.Ticket, _tickets(["T1"]), "hubspot", "tickets", {})
    store.load_page(engine, store.Ticket, _tickets(["T1"]), "bitrix24", "tickets", {})
    assert store.row_counts(engine)["ticket"] == 2


def test_failed_page_commits_neither_records_nor_cursor(store_url: str) -> None:
    engine = store.open_store(store_url)
    store.load_page(engine, store.Ticket, _tickets(["T1"]), "crm", "tickets", {"page": 1})
    broken = _tickets(["T2", "T3"]).assign(created_at=[pd.Timestamp("2026-10-02"), None])
    with pytest.raises(Exception, match=r"(?i)null"):
        store.load_page(engine, store.Ticket, broken, "crm", "tickets", {"page": 2})

    assert store.row_counts(engine)["ticket"] == 1
    assert store.read_cursor(engine, "crm", "tickets") == {"page": 1}


def test_deleted_ids_leave_with_their_page_and_cursor_or_not_at_all(store_url: str) -> None:
    engine = store.open_store(store_url)
    store.load_page(engine, store.Ticket, _tickets(["T1", "T2"]), "crm", "tickets", {"page": 1})
    store.load_page(engine, store.Ticket, _tickets(["T1"]), "web", "tickets", {})
    broken = _tickets(["T3"]).assign(created_at=[None])
    with pytest.raises(Exception, match=r"(?i)null"):
        store.load_page(engine, store.Ticket, broken, "crm", "tickets", {"page": 2}, ["T1"])
    assert store.row_counts(engine)["ticket"] == 3
    assert store.read_cursor(engine, "crm", "tickets") == {"page": 1}

    page = _tickets(["T3"]), "crm", "tickets", {"page": 2}, ["T1", "T9"]  # T9 was never stored
    assert store.load_page(engine, store.Ticket, *page) == (1, 1)
    assert store.load_page(engine, store.Ticket, *page) == (1, 0)  # a rerun removes nothing more
    rows = store.read_frame(engine, store.Ticket, ["source", "source_id"])
    assert sorted(map(tuple, rows.values)) == [("crm", "T2"), ("crm", "T3"), ("web", "T1")]
    assert store.read_cursor(engine, "crm", "tickets") == {"page": 2}


@dataclass
class CrashingStream:
    """A stream that dies after `budget[0]` pages in total, like a process killed mid-sync."""

    inner: DemoStream
    budget: list[int]

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def read(self, cursor: dict) -> Iterator[Page]:
        for page in self.inner.read(cursor):
            if self.budget[0] == 0:
                raise RuntimeError("simulated crash")
            self.budget[0] -= 1
            yield page


def _sync(engine: Engine, source: DemoSource, stop_after: int | None = None) -> None:
    if stop_after is None:
        sync_source(engine, source)
        return
    budget = [stop_after]
    for stream in source.streams():
        sync_stream(engine, source.name, CrashingStream(stream, budget))


def test_crash_mid_sync_resumes_without_gaps_or_duplicates(store_url: str) -> None:
    engine = store.open_store(store_url)
    source = DemoSource(customers=3_000, seed=11)
    with pytest.raises(RuntimeError):
        _sync(engine, source, stop_after=4)
    partial = store.row_counts(engine)
    _sync(engine, source)
    _sync(engine, source)  # a third run finds nothing new and changes nothing

    counts = store.row_counts(engine)
    for stream in source.streams():
        expected = source.company.frames[stream.name]
        assert counts[stream.table] == len(expected), stream.name
        stored = store.read_frame(engine, store.INGESTED[stream.table], ["source_id"])
        assert set(stored["source_id"]) == set(expected["source_id"]), stream.name
    assert sum(partial[t] for t in store.INGESTED) < sum(counts[t] for t in store.INGESTED)


def test_timestamps_round_trip_as_naive_utc(store_url: str) -> None:
    engine = store.open_store(store_url)
    aware = _tickets(["T1"]).assign(created_at=pd.Timestamp("2026-10-01 13:00", tz="Europe/Moscow"))
    rows = to_canonical("ticket", aware, "test")
    store.load_page(engine, store.Ticket, rows, "crm", "tickets", {})
    assert store.read_frame(engine, store.Ticket)["created_at"].iloc[0] == pd.Timestamp(
        "2026-10-01 10:00"
    )


def test_unreachable_database_is_one_clear_line_without_the_password() -> None:
    with pytest.raises(StoreError) as caught:
        store.open_store(store.database_url("postgresql://cx:s3cret@127.0.0.1:9/cx"))
    message = str(caught.value)
    assert "cannot reach the store at postgresql+psycopg://cx:***@127.0.0.1:9/cx" in message
    assert "s3cret" not in message and "\n" not in message


def test_a_store_made_by_an_older_cxloop_gains_the_new_columns(store_url: str) -> None:
    from sqlalchemy import create_engine, text

    old = create_engine(store.database_url(store_url))
    key = "INTEGER PRIMARY KEY" if store_url.startswith("sqlite") else "SERIAL PRIMARY KEY"
    with old.begin() as conn:
        conn.execute(
            text(
                f"CREATE TABLE ticket (id {key}, source VARCHAR NOT NULL, "
                "source_id VARCHAR NOT NULL, customer_id VARCHAR, created_at TIMESTAMP NOT NULL, "
                "reopened BOOLEAN NOT NULL, UNIQUE (source, source_id))"
            )
        )
    old.dispose()
    engine = store.open_store(store_url)
    store.load_page(engine, store.Ticket, _tickets(["T1"]), "crm", "tickets", {})
    assert store.read_frame(engine, store.Ticket)["topic"].tolist() == ["delivery"]


def test_one_relative_url_in_two_working_directories_opens_two_stores(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counts = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        engine = store.open_store("sqlite:///.cxloop/store.db")
        if name == "a":
            store.load_page(engine, store.Ticket, _tickets(["T1"]), "crm", "tickets", {})
        counts.append(store.row_counts(engine)["ticket"])
    assert counts == [1, 0]
    assert (tmp_path / "b" / ".cxloop" / "store.db").exists()


def test_analysis_data_is_reloaded_only_after_new_records_arrive(tmp_path) -> None:
    from tasks.loader import CxData

    engine = store.open_store(f"sqlite:///{tmp_path / 'store.db'}")
    store.load_page(engine, store.Ticket, _tickets(["T1"]), "crm", "tickets", {"page": 1})
    first = CxData.latest(engine)
    assert CxData.latest(engine) is first
    store.load_page(engine, store.Ticket, _tickets(["T2"]), "crm", "tickets", {"page": 2})
    again = CxData.latest(engine)
    assert again is not first and len(again.tickets) == 2


def test_a_webhook_update_of_a_stored_row_makes_the_cached_load_stale(tmp_path: Path) -> None:
    """A webhook can change a row without a page or a new id: its mapped event counts."""
    from tasks.loader import CxData

    engine = store.open_store(f"sqlite:///{tmp_path / 'store.db'}")
    store.load_page(engine, store.Ticket, _tickets(["T1"]), "crm", "tickets", {"page": 1})
    first = CxData.latest(engine)
    store.receive_event(engine, "crm", "e1", "{}")
    (event,) = store.pending_events(engine, failed_too=False)["id"]
    with engine.begin() as conn:
        store.upsert(conn, store.Ticket, _tickets(["T1"], "payment").assign(source="crm"), KEYS)
        store.settle_event(conn, int(event))
    again = CxData.latest(engine)
    assert again is not first and again.tickets["topic"].tolist() == ["payment"]


def test_read_frame_gives_what_sqlalchemy_reads_batch_after_batch(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same values and dtypes as pandas' `read_sql` through SQLAlchemy, which it replaced
    (a column with no value at all now keeps its declared type instead of `object`)."""
    from sqlalchemy import select

    monkeypatch.setattr(store, "READ_BATCH_ROWS", 2)
    engine = store.open_store(store_url)
    tickets = _tickets(["T1", "T2", "T3"]).assign(
        email_hash=["h1", None, "h3"],
        channel=["chat", "email", None],
        status=["open", None, "closed"],
        first_response_at=[pd.Timestamp("2026-10-01 10:30:00.123456"), None, pd.NaT],
        resolved_at=[None, pd.Timestamp("2026-10-02"), None],
        reopened=[True, False, True],
        escalated=[None, False, True],
        text=['ÿ "1", 2\nthree', None, ""],
        agent=["ann", None, "bob"],
        team=[None, "tier 2", "tier 1"],
    )
    store.load_page(engine, store.Ticket, tickets, "crm", "tickets", {})
    with engine.connect() as conn:
        expected = pd.read_sql(select(store.Ticket.__table__), conn)
    for name in store.timestamp_columns(store.Ticket):
        expected[name] = pd.to_datetime(expected[name])

    assert expected["text"].tolist()[::2] == ['ÿ "1", 2\nthree', ""]
    assert expected["text"].isna().tolist() == [False, True, False]
    pd.testing.assert_frame_equal(store.read_frame(engine, store.Ticket), expected)
    analysed = store.read_records(engine, store.Ticket)
    assert not {"id", "source", "source_id"} & set(analysed.columns)
    pd.testing.assert_frame_equal(analysed, expected[analysed.columns])


def test_read_frame_where_keeps_only_the_matching_rows_with_or_without_json(
    store_url: str,
) -> None:
    engine = store.open_store(store_url)
    tickets = _tickets(["T1", "T2", "T3"]).assign(topic=["delivery", "payment", "payment"])
    store.load_page(engine, store.Ticket, tickets.iloc[:2], "crm", "tickets", {})
    store.load_page(engine, store.Ticket, tickets.iloc[2:], "web", "tickets", {})
    crm_paid = {"source": "crm", "topic": "payment"}
    paid = store.read_frame(engine, store.Ticket, ["source_id"], crm_paid)
    assert paid["source_id"].tolist() == ["T2"]
    customers = pd.DataFrame({"source_id": ["C1", "C2"], "segment": ["new", "loyal"]})
    customers["attributes"] = [{"a": 1}, {"a": 2}]
    store.load_page(engine, store.Customer, customers, "crm", "customers", {})
    loyal = store.read_frame(engine, store.Customer, ["attributes"], {"segment": "loyal"})
    assert loyal["attributes"].tolist() == [{"a": 2}]


def test_a_key_repeated_within_one_page_ends_as_row_by_row_upserts_would(store_url: str) -> None:
    engine = store.open_store(store_url)
    page = pd.concat([_tickets(["T1"]), _tickets(["T2", "T1"], "payment")], ignore_index=True)
    page["topic"] = ["delivery", "payment", "returns"]
    with engine.begin() as conn:
        assert store.upsert(conn, store.Ticket, page.assign(source="crm"), ("source", "source_id"))
    topics = store.read_frame(engine, store.Ticket).set_index("source_id")["topic"]
    assert topics.sort_index().to_dict() == {"T1": "returns", "T2": "payment"}  # the last wins

    assignments = pd.DataFrame(
        {"hypothesis_id": "h", "customer_id": ["C1", "C1"], "arm": ["pilot", "control"]}
    ).assign(assigned_at=pd.Timestamp("2026-10-01"))
    store.save_rows(engine, store.Assignment, assignments, ("hypothesis_id", "customer_id"), False)
    stored = store.read_frame(engine, store.Assignment)
    assert stored["arm"].tolist() == ["pilot"]  # without update the first one stays


def test_timestamps_keep_whole_microseconds_on_both_backends(store_url: str) -> None:
    engine = store.open_store(store_url)
    fine = _tickets(["T1"]).assign(created_at=pd.Timestamp("2026-10-01 10:00:00.123456999"))
    store.load_page(engine, store.Ticket, fine, "crm", "tickets", {})
    stored = store.read_frame(engine, store.Ticket)["created_at"].iloc[0]
    assert stored == pd.Timestamp("2026-10-01 10:00:00.123456")


def test_floats_and_ids_read_as_numbers_come_back_exactly_on_both_backends(store_url: str) -> None:
    engine = store.open_store(store_url)
    amounts = [0.1 + 0.2, 1e-300, 123456789.12345679, -0.0, 5.0]
    orders = pd.DataFrame(
        {
            "source_id": ["O1", "O2", "O3", "O4", "O5"],
            "customer_id": [17, "C2", None, 2.5, "C5"],
            "amount": amounts,
            "created_at": pd.Timestamp("2026-10-01"),
        }
    )
    store.load_page(engine, store.Order, orders, "shop", "orders", {})
    stored = store.read_frame(engine, store.Order).sort_values("source_id")
    assert stored["amount"].tolist() == amounts
    assert stored["customer_id"].fillna("-").tolist() == ["17", "C2", "-", "2.5", "C5"]


def test_sqlite_writes_a_page_with_a_large_cache_and_the_pool_gets_the_default_back(
    tmp_path: Path,
) -> None:
    engine = store.open_store(f"sqlite:///{tmp_path / 'cache.db'}")
    during: list[int] = []

    def cache_of(conn, cursor, statement, *_args) -> None:
        if statement.startswith("INSERT INTO ticket"):
            during.append(cursor.connection.execute("PRAGMA cache_size").fetchone()[0])

    event.listen(engine, "before_cursor_execute", cache_of)
    store.load_page(engine, store.Ticket, _tickets(["T1", "T2"]), "crm", "tickets", {"page": 1})
    with engine.connect() as conn:
        after = conn.exec_driver_sql("PRAGMA cache_size").scalar()
    assert (during, after) == ([-store.WRITE_CACHE_KIB], -store.CACHE_KIB)
