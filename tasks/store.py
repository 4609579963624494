"""Canonical store: SQLModel tables, engine, bulk idempotent upsert and per-stream sync state.

SQLite by default (`.cxloop/cxloop.db` under the working directory), PostgreSQL through
the configured `database_url`. Ingested rows are unique on (source, source_id); derived rows
(snapshots, pain points, results) on their natural key, so re-running never duplicates.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.csv as csv
from pydantic import NaiveDatetime
from sqlalchemy import (
    JSON,
    Column,
    String,
    TypeDecorator,
    UniqueConstraint,
    event,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Field, SQLModel, create_engine

from connectors.canonical import CONTROL, TABLES
from connectors.errors import StoreError

DEFAULT_URL = "sqlite:///.cxloop/cxloop.db"
BATCH_ROWS = 5_000
# The same characters as `json.dumps` escapes them (\b, \f, \u00XX); an escaped backslash
# is matched whole, so a literal backslash before "u0000" is not taken for an escape.
JSON_CONTROL = re.compile(r"\\\\|\\[bf]|\\u00(?:0[0-8bBcCeEfF]|1[0-9a-fA-F]|7[fF]|[89][0-9a-fA-F])")
TEXTUAL = ("string", "mixed", "mixed-integer")  # inferred dtypes whose values may be strings
WAL_WAIT_SECONDS = 30
# SQLite's page cache while a page of rows is written, and after (its default). A transaction
# rewrites each index page it touches once if the pages stay in the cache, and again each
# time the cache spills them; pooled connections give the memory back when they return.
WRITE_CACHE_KIB, CACHE_KIB = 262_144, 2_000
SCHEMA_LOCK = 0x63786C6F6F70  # "cxloop": the advisory lock key schema changes take


class Record(SQLModel):
    """Columns every ingested row carries: where it came from and its id there."""

    id: int | None = Field(default=None, primary_key=True)
    source: str
    source_id: str


class Customer(Record, table=True):
    __table_args__ = (UniqueConstraint("source", "source_id"),)
    segment: str | None = None
    region: str | None = None
    channel: str | None = None
    language: str | None = None
    created_at: NaiveDatetime | None = None
    email_hash: str | None = None
    attributes: dict = Field(default_factory=dict, sa_column=Column(JSON))


class Ticket(Record, table=True):
    __table_args__ = (UniqueConstraint("source", "source_id"),)
    customer_id: str | None = None
    email_hash: str | None = None
    channel: str | None = None
    topic: str | None = None
    status: str | None = None
    created_at: NaiveDatetime
    first_response_at: NaiveDatetime | None = None
    resolved_at: NaiveDatetime | None = None
    reopened: bool = False
    escalated: bool | None = None
    text: str | None = None
    agent: str | None = None
    team: str | None = None


class SurveyResponse(Record, table=True):
    __tablename__ = "survey_response"
    __table_args__ = (UniqueConstraint("source", "source_id"),)
    customer_id: str | None = None
    email_hash: str | None = None
    ticket_id: str | None = None  # the ticket's source_id, for a post-contact survey
    survey: str
    kind: str
    score: float
    comment: str | None = None
    submitted_at: NaiveDatetime
    channel: str | None = None


class WebMetric(Record, table=True):
    __tablename__ = "web_metric"
    __table_args__ = (UniqueConstraint("source", "source_id"),)
    date: date
    metric: str
    value: float
    segment: str | None = None
    device: str | None = None
    step: str | None = None
    traffic_source: str | None = None


class Order(Record, table=True):
    __tablename__ = "orders"
    __table_args__ = (UniqueConstraint("source", "source_id"),)
    customer_id: str | None = None
    amount: float
    created_at: NaiveDatetime
    status: str | None = None


class SyncState(SQLModel, table=True):
    __tablename__ = "sync_state"
    source: str = Field(primary_key=True)
    stream: str = Field(primary_key=True)
    cursor: dict = Field(default_factory=dict, sa_column=Column(JSON))
    updated_at: NaiveDatetime


class MetricSnapshot(SQLModel, table=True):
    __tablename__ = "metric_snapshot"
    __table_args__ = (UniqueConstraint("period", "metric", "dims"),)
    id: int | None = Field(default=None, primary_key=True)
    period: str
    metric: str
    dims: str
    value: float | None = None
    n: int
    ci_low: float | None = None
    ci_high: float | None = None
    computed_at: NaiveDatetime


class PainPoint(SQLModel, table=True):
    __tablename__ = "pain_point"
    __table_args__ = (UniqueConstraint("period", "key"),)
    id: int | None = Field(default=None, primary_key=True)
    period: str
    key: str
    kind: str
    title: str
    rank: int
    reach: int
    reach_share: float
    impact: float
    unit: str | None = None
    impact_ci_low: float
    impact_ci_high: float
    confidence: float
    effort: float
    effort_is_default: bool
    score: float
    evidence: dict = Field(default_factory=dict, sa_column=Column(JSON))
    computed_at: NaiveDatetime


class Alert(SQLModel, table=True):
    """An alert raised for a period, with its evidence."""

    __table_args__ = (UniqueConstraint("period", "key"),)
    id: int | None = Field(default=None, primary_key=True)
    period: str
    key: str
    kind: str
    message: str
    evidence: dict = Field(default_factory=dict, sa_column=Column(JSON))
    raised_at: NaiveDatetime


class StandardSnapshot(SQLModel, table=True):
    """A service standard's verdict for a period (see `tasks.standards`)."""

    __tablename__ = "standard_snapshot"
    __table_args__ = (UniqueConstraint("period", "standard"),)
    id: int | None = Field(default=None, primary_key=True)
    period: str
    standard: str
    metric: str
    target: float
    direction: str
    value: float | None = None
    n: int
    ci_low: float | None = None
    ci_high: float | None = None
    status: str
    computed_at: NaiveDatetime


class Assignment(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("hypothesis_id", "customer_id"),)
    id: int | None = Field(default=None, primary_key=True)
    hypothesis_id: str = Field(index=True)
    customer_id: str
    arm: str
    assigned_at: NaiveDatetime


class HypothesisStatus(SQLModel, table=True):
    """When each hypothesis was first seen in each lifecycle status."""

    __tablename__ = "hypothesis_status"
    __table_args__ = (UniqueConstraint("hypothesis_id", "status"),)
    id: int | None = Field(default=None, primary_key=True)
    hypothesis_id: str = Field(index=True)
    status: str
    first_seen_at: NaiveDatetime


class ExperimentResult(SQLModel, table=True):
    __tablename__ = "experiment_result"
    __table_args__ = (UniqueConstraint("hypothesis_id", "metric", "as_of"),)
    id: int | None = Field(default=None, primary_key=True)
    hypothesis_id: str = Field(index=True)
    metric: str
    role: str
    as_of: date
    relative: bool
    estimate: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    sequential: bool = False
    n_pilot: int
    n_control: int
    srm_p: float | None = None
    decision: str | None = None
    reason: str | None = None
    cells: dict = Field(default_factory=dict, sa_column=Column(JSON))
    evaluated_at: NaiveDatetime


class ChurnModelRun(SQLModel, table=True):
    """One churn model run: its time split, validation numbers and whether it is published."""

    __tablename__ = "churn_model_run"
    __table_args__ = (UniqueConstraint("run_at"),)
    id: int | None = Field(default=None, primary_key=True)
    run_at: NaiveDatetime
    model: str
    horizon_days: int
    published: bool
    reason: str
    cutoffs: dict = Field(default_factory=dict, sa_column=Column(JSON))
    n_train: int
    n_validation: int
    base_rate: float | None = None
    auc: float | None = None
    ece: float | None = None
    top_decile_lift: float | None = None
    calibration: list = Field(default_factory=list, sa_column=Column(JSON))
    coefficients: dict = Field(default_factory=dict, sa_column=Column(JSON))
    expected_revenue_lost: float | None = None


class CustomerChurnRisk(SQLModel, table=True):
    """The latest churn score of each customer (by CRM id, as `Customer.source_id`)."""

    __tablename__ = "customer_churn_risk"
    __table_args__ = (UniqueConstraint("customer_id"),)
    id: int | None = Field(default=None, primary_key=True)
    customer_id: str
    probability: float
    churn_risk: str
    value: float
    expected_loss: float
    run_at: NaiveDatetime


class Report(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("kind", "path"),)
    id: int | None = Field(default=None, primary_key=True)
    kind: str
    path: str
    created_at: NaiveDatetime
    delivered_to: list = Field(default_factory=list, sa_column=Column(JSON))


INGESTED: dict[str, type[Record]] = {
    "customer": Customer,
    "ticket": Ticket,
    "survey_response": SurveyResponse,
    "web_metric": WebMetric,
    "orders": Order,
}


def database_url(configured: str | None = None) -> str:
    """The store's SQLAlchemy URL: the configured one (`Config.database_url`, which already
    has `CXLOOP_DATABASE_URL` applied), else local SQLite."""
    url = configured or DEFAULT_URL
    return re.sub(r"^postgres(ql)?://", "postgresql+psycopg://", url)


def redact_url(url: str) -> str:
    """The URL with its password replaced by `***`, safe for logs and errors."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def open_store(url: str) -> Engine:
    """An engine on `url` with every table created; a clear `StoreError` if unreachable.

    A relative SQLite path is made absolute first: one engine per file, even when the
    process changes its working directory between two stores with the same relative URL."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        path = url.removeprefix("sqlite:///")
        if path and not path.startswith(":memory:"):
            url = f"sqlite:///{Path(path).resolve()}"
    return _open_store(url)


@cache
def _open_store(url: str) -> Engine:
    """`open_store` of an absolute URL, one engine per URL and process."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    # Streams load concurrently: SQLite writers queue for the lock instead of failing fast.
    connect_args = {"timeout": 120} if url.startswith("sqlite") else {}
    engine = create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "checkin", _default_cache)
    try:
        with engine.begin() as conn:
            _create_schema(conn)
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise StoreError(
            f"cannot reach the store at {redact_url(url)}: {reason}. "
            "Check CXLOOP_DATABASE_URL (or database_url in cxloop.yaml) and that the server runs."
        ) from None
    return engine


def _create_schema(conn: Connection) -> None:
    """Create the missing tables and columns, in `conn`'s transaction.

    Concurrent first runs take turns under a lock held to the end of the transaction (a
    PostgreSQL advisory lock, SQLite's write lock): without it both see no table and the
    second's `CREATE TABLE` fails ("already exists", or on `pg_type` in PostgreSQL). The
    one that waited then finds the tables made and creates nothing.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})
    else:  # the driver would begin only at the first write, after the tables were looked at
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    SQLModel.metadata.create_all(conn)
    _add_new_columns(conn)


def _add_new_columns(conn: Connection) -> None:
    """Add columns a newer cxloop defines to tables an older one created (all are nullable).

    The schema only ever grows by nullable columns, so this is the whole migration story.
    """
    existing = inspect(conn)
    for table in SQLModel.metadata.sorted_tables:
        have = {c["name"] for c in existing.get_columns(table.name)}
        for column in table.columns:
            if column.name not in have:
                kind = column.type.compile(dialect=conn.dialect)
                conn.execute(text(f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {kind}'))


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    _write_ahead_log(cursor)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _default_cache(dbapi_connection: Any, _record: Any) -> None:
    if dbapi_connection is not None:  # None once the pool has invalidated the connection
        dbapi_connection.execute(f"PRAGMA cache_size = -{CACHE_KIB}")


def _write_ahead_log(cursor: sqlite3.Cursor) -> None:
    """Put the database in WAL mode, waiting up to `WAL_WAIT_SECONDS` for another writer.

    SQLite answers a mode switch that meets a lock (a concurrent first run creating the
    tables) with "database is locked" at once, without its busy timeout.
    """
    deadline = time.monotonic() + WAL_WAIT_SECONDS
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def upsert(
    conn: Connection,
    model: type[SQLModel],
    rows: pd.DataFrame,
    keys: Sequence[str],
    update: bool = True,
) -> int:
    """Insert or update `rows` into `model`'s table on its unique `keys`; returns rows sent.

    One `INSERT … ON CONFLICT DO UPDATE` (or `DO NOTHING` without `update`) on columns
    converted in Arrow, no ORM, no dict per row: on SQLite a prepared statement run with the
    driver's `executemany`, on PostgreSQL fed by `COPY` as CSV that Arrow writes (see
    `_copy_upsert`). Columns the table lacks are ignored; columns `rows` lacks get their
    default on insert and keep their stored value on update.
    """
    table = model.__table__
    if rows.empty:
        return 0
    given = [c.name for c in table.columns if c.name in rows.columns and c.name != "id"]
    changed = [n for n in given if n not in keys]
    defaults = {
        c.name: c.default.arg
        for c in table.columns
        if c.name not in rows.columns and c.default is not None and c.default.is_scalar
    }
    rows = rows.assign(**defaults)
    columns = [c for c in table.columns if c.name in [*given, *defaults]]
    names = [c.name for c in columns]
    quote = conn.dialect.identifier_preparer.quote
    on_conflict = (
        "DO UPDATE SET " + ", ".join(f"{quote(n)} = excluded.{quote(n)}" for n in changed)
        if update and changed
        else "DO NOTHING"
    )
    insert = f"INSERT INTO {quote(table.name)} ({', '.join(quote(n) for n in names)})"
    conflict = f"ON CONFLICT ({', '.join(quote(k) for k in keys)}) {on_conflict}"
    converted = pa.table([_driver_column(rows[c.name], c) for c in columns], names=names)
    if conn.dialect.name == "postgresql":
        _copy_upsert(conn, table.name, converted, insert, conflict, keys, update)
        return len(rows)
    sql = f"{insert} VALUES ({', '.join([_marker(conn.dialect)] * len(names))}) {conflict}"
    values = list(zip(*(column.to_pylist() for column in converted.columns), strict=True))
    for start in range(0, len(values), BATCH_ROWS):
        conn.exec_driver_sql(sql, values[start : start + BATCH_ROWS])
    return len(values)


def _marker(dialect: Dialect) -> str:
    """The driver's placeholder for one parameter."""
    return "?" if dialect.paramstyle == "qmark" else "%s"


def _copy_upsert(
    conn: Connection,
    table: str,
    rows: pa.Table,
    insert: str,
    conflict: str,
    keys: Sequence[str],
    last_wins: bool,
) -> None:
    """PostgreSQL: `COPY` the rows into a temporary table, then one `INSERT … SELECT … ON
    CONFLICT` (several times faster than a statement per row).

    Arrow writes the rows as CSV in one call, which `COPY … (FORMAT csv)` reads as they are:
    every string quoted, so `""` is an empty text and an unquoted empty field is NULL. Rows
    repeating a key end as a statement per row would leave them: the last one wins when
    updating, the first when not.
    """
    quote = conn.dialect.identifier_preparer.quote
    stage, columns = quote(f"cxloop_stage_{table}"), ", ".join(quote(n) for n in rows.column_names)
    key_list = ", ".join(quote(k) for k in keys)
    numbered = rows.append_column("cxloop_row", pa.array(range(rows.num_rows), pa.int64()))
    text = pa.BufferOutputStream()
    csv.write_csv(numbered, text, csv.WriteOptions(include_header=False))
    cursor = conn.connection.dbapi_connection.cursor()
    cursor.execute(
        f"CREATE TEMP TABLE {stage} ON COMMIT DROP AS "
        f"SELECT {columns}, 0::bigint AS cxloop_row FROM {quote(table)} WITH NO DATA"
    )
    with cursor.copy(f"COPY {stage} ({columns}, cxloop_row) FROM STDIN (FORMAT csv)") as copy:
        copy.write(text.getvalue())
    order = "DESC" if last_wins else "ASC"
    cursor.execute(  # in the page's order, which is the order later reads return them in
        f"{insert} SELECT {columns} FROM (SELECT DISTINCT ON ({key_list}) * FROM {stage} "
        f"ORDER BY {key_list}, cxloop_row {order}) AS kept ORDER BY cxloop_row {conflict}"
    )
    cursor.execute(f"DROP TABLE {stage}")
    cursor.close()


def _driver_column(column: pd.Series, spec: Any) -> pa.Array:
    """A column as both stores take it, in Arrow: text and JSON without control characters
    (see `CONTROL`), other values in text columns as text, JSON as text, timestamps in whole
    microseconds as SQLAlchemy's SQLite text (which PostgreSQL reads too), booleans as 0/1.

    Finer digits of a timestamp are cut, not rounded, on both stores."""
    kind = dict if isinstance(spec.type, JSON) else spec.type.python_type
    if kind is dict:
        out = _replaced(column.map(json.dumps, na_action="ignore"), JSON_CONTROL, _kept_backslash)
        return pa.array(out, pa.string(), from_pandas=True)
    if _is_text(spec):
        return pa.array(_as_text(_replaced(column, CONTROL, "")), pa.string(), from_pandas=True)
    if kind is datetime or kind is date:
        out = pd.to_datetime(column).dt.floor("us").dt.as_unit("us")
        wall = out.dt.tz_localize(None) if out.dt.tz is not None else out
        as_type = pa.date32() if kind is date else pa.timestamp("us")
        return pa.array(wall, from_pandas=True).cast(as_type).cast(pa.string())
    if kind is bool:
        return pa.array(column.astype("boolean").astype("Int64"), from_pandas=True)
    if kind is int:  # a count computed in floats (38.0) is stored as 38
        return pa.array(column.astype("Int64"), from_pandas=True)
    return pa.array(column, from_pandas=True)


def _as_text(column: pd.Series) -> pd.Series:
    """`column` with its values that are not strings (an id read as a number) as text."""
    if pd.api.types.infer_dtype(column, skipna=True) in ("string", "empty"):
        return column
    return column.where(column.isna(), column.astype(str))


def _replaced(column: pd.Series, pattern: re.Pattern, by: str | Callable) -> pd.Series:
    """`column` with `pattern` replaced `by` in its strings; its other values as they were.

    Only the strings that match are rewritten, so a clean column costs one regex scan.
    """
    if pd.api.types.infer_dtype(column, skipna=True) not in TEXTUAL:
        return column
    hit = column.str.contains(pattern, na=False).astype(bool)
    if not hit.any():
        return column
    return column.mask(hit, column[hit].str.replace(pattern, by, regex=True))


def _kept_backslash(match: re.Match) -> str:
    """An escaped backslash as it was; a control character's escape dropped."""
    return match[0] if match[0] == "\\\\" else ""


def load_page(
    engine: Engine,
    model: type[Record],
    rows: pd.DataFrame,
    source: str,
    stream: str,
    cursor: dict,
    deleted: Sequence[str] = (),
) -> tuple[int, int]:
    """Rows written and rows removed: one page of canonical rows upserted, the source's rows
    with a `source_id` in `deleted` removed after them, and the stream's cursor saved, in one
    transaction. Deleting an id that is not stored does nothing."""
    rows = rows.assign(source=source)
    gone = pd.DataFrame({"source": source, "source_id": list(deleted)}, dtype=object)
    state = pd.DataFrame(
        [{"source": source, "stream": stream, "cursor": cursor, "updated_at": now_utc()}]
    )
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql(f"PRAGMA cache_size = -{WRITE_CACHE_KIB}")
        written = upsert(conn, model, rows, ("source", "source_id"))
        removed = delete(conn, model, gone)
        upsert(conn, SyncState, state, ("source", "stream"))
    return written, removed


def read_cursor(engine: Engine, source: str, stream: str) -> dict:
    """The cursor saved after the last committed page of a stream, `{}` if none."""
    with engine.connect() as conn:
        row = conn.execute(
            select(SyncState.cursor).where(SyncState.source == source, SyncState.stream == stream)
        ).first()
    return dict(row[0]) if row else {}


def save_rows(
    engine: Engine,
    model: type[SQLModel],
    rows: pd.DataFrame,
    keys: Sequence[str],
    update: bool = True,
) -> int:
    """Upsert derived rows (snapshots, pain points, results) in one transaction."""
    with engine.begin() as conn:
        return upsert(conn, model, rows, keys, update)


def delete_rows(engine: Engine, model: type[SQLModel], rows: pd.DataFrame) -> int:
    """Rows deleted: those of `model`'s table matching a row of `rows` on all its columns, in
    one transaction."""
    with engine.begin() as conn:
        return delete(conn, model, rows)


def delete(conn: Connection, model: type[SQLModel], rows: pd.DataFrame) -> int:
    """Rows deleted from `model`'s table: those matching a row of `rows` on all its columns."""
    if rows.empty:
        return 0
    rows = rows.apply(_replaced, args=(CONTROL, ""))  # ids as `upsert` stored them
    table, quote = model.__table__.name, conn.dialect.identifier_preparer.quote
    match = " AND ".join(f"{quote(c)} = {_marker(conn.dialect)}" for c in rows.columns)
    result = conn.exec_driver_sql(
        f"DELETE FROM {quote(table)} WHERE {match}",
        list(rows.itertuples(index=False, name=None)),
    )
    return result.rowcount


def timestamp_columns(model: type[SQLModel]) -> list[str]:
    """Names of `model`'s date and time columns."""
    return [c.name for c in model.__table__.columns if c.type.python_type in (datetime, date)]


def read_frame(
    engine: Engine,
    model: type[SQLModel],
    columns: Iterable[str] | None = None,
    where: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """All rows of `model`'s table (or those whose columns equal `where`'s values; only
    `columns` if given) as a DataFrame, timestamps parsed (naive UTC).

    Rows come from the driver's cursor a batch at a time and become typed Arrow columns, so
    only one batch ever exists as Python objects: that keeps loading millions of rows fast
    and small. Reads with a JSON column (small derived tables) go through SQLAlchemy, which
    parses the JSON.
    """
    table = model.__table__
    selected = [table.c[name] for name in columns] if columns else list(table.columns)
    where = where or {}
    if any(isinstance(c.type, JSON) for c in selected):
        query = select(*selected).where(*(table.c[k] == v for k, v in where.items()))
        with engine.connect() as conn:
            frame = pd.read_sql(query, conn)
    else:
        frame = _read_arrow(engine, table.name, selected, where).to_pandas()
    for name in timestamp_columns(model):
        if name in frame.columns:
            frame[name] = pd.to_datetime(frame[name])
    return frame


def read_records(
    engine: Engine, model: type[Record], leave_out: Sequence[str] = (), id_as: str | None = None
) -> pd.DataFrame:
    """An ingested table as analyses read it: every column but the bookkeeping ones (`id`,
    `source`, `source_id`, a third of the load at millions of rows) and `leave_out`; with
    `id_as`, `source_id` stays under that name (a ticket's id, which answers link to)."""
    skipped = {*BOOKKEEPING, *leave_out}
    columns = [c.name for c in model.__table__.columns if c.name not in skipped]
    if id_as is None:
        return read_frame(engine, model, columns)
    return read_frame(engine, model, ["source_id", *columns]).rename(columns={"source_id": id_as})


BOOKKEEPING = ("id", "source", "source_id")
ARROW_TYPES = {
    int: pa.int64(),
    float: pa.float64(),
    bool: pa.bool_(),
    datetime: pa.timestamp("us"),
    date: pa.date32(),
}
READ_BATCH_ROWS = 100_000


def _sql_type(column: Column) -> Any:
    """`column`'s SQL type, under any decorator (SQLModel's `AutoString` is a `String`)."""
    return column.type.impl if isinstance(column.type, TypeDecorator) else column.type


def _is_text(column: Column) -> bool:
    """Whether `column` holds text."""
    return isinstance(_sql_type(column), String)


def _arrow_type(column: Column) -> pa.DataType:
    """The Arrow type `column`'s values are read as."""
    kind = _sql_type(column)
    return pa.large_string() if isinstance(kind, String) else ARROW_TYPES[kind.python_type]


def _read_arrow(
    engine: Engine, table: str, columns: Sequence[Column], where: dict[str, Any]
) -> pa.Table:
    """`columns` of `table`'s rows matching `where` as Arrow, each cast to its type (SQLite
    returns timestamps as text and booleans as integers; Arrow parses and casts them in bulk)."""
    quote = engine.dialect.identifier_preparer.quote
    sql = f"SELECT {', '.join(quote(c.name) for c in columns)} FROM {quote(table)}"
    if where:
        sql += " WHERE " + " AND ".join(f"{quote(k)} = {_marker(engine.dialect)}" for k in where)
    names, types = [c.name for c in columns], [_arrow_type(c) for c in columns]
    return _fetch_arrow(engine, sql, tuple(where.values()), names, types)


def _fetch_arrow(
    engine: Engine, sql: str, params: tuple, names: Sequence[str], types: Sequence[pa.DataType]
) -> pa.Table:
    """The rows of a query as Arrow columns `names` of `types`, a batch at a time."""
    batches: list[list[pa.Array]] = [[] for _ in names]
    with engine.connect() as conn:
        cursor = conn.connection.dbapi_connection.cursor()
        cursor.execute(sql, params)
        while rows := cursor.fetchmany(READ_BATCH_ROWS):
            for i, (batch, kind) in enumerate(zip(batches, types, strict=True)):
                batch.append(pa.array([row[i] for row in rows], from_pandas=True).cast(kind))
        cursor.close()
    arrays = [pa.chunked_array(b, type=kind) for b, kind in zip(batches, types, strict=True)]
    return pa.table(arrays, names=list(names))


def read_churn_risk(engine: Engine) -> pd.DataFrame:
    """`customer_id`, `churn_risk` and `probability` of the published churn model's scores
    (none when the last model was not published)."""
    return read_frame(engine, CustomerChurnRisk, ["customer_id", "churn_risk", "probability"])


def read_dimensions(engine: Engine) -> pd.DataFrame:
    """Each customer's declared dimensions: `customer_id` (its `source_id`) and one text column
    per key stored in `customer.attributes` (a list value as its JSON text), None where a
    customer lacks it. Keys that are canonical customer columns are left out.

    The database's own JSON functions find the keys and extract the values, so cutting by a
    dimension reads about like reading `segment`.
    """
    table, marker = Customer.__table__.name, _marker(engine.dialect)
    postgres = engine.dialect.name == "postgresql"
    keys_sql = (
        f"SELECT DISTINCT k FROM {table}, json_object_keys({table}.attributes) AS k "
        f"WHERE json_typeof({table}.attributes) = 'object'"
        if postgres
        else f"SELECT DISTINCT j.key FROM {table}, json_each({table}.attributes) AS j "
        f"WHERE json_type({table}.attributes) = 'object'"
    )
    with engine.connect() as conn:
        found = sorted(str(key) for (key,) in conn.exec_driver_sql(keys_sql))
    keys = [key for key in found if key not in TABLES["customer"].columns]
    if postgres:
        extract, params = f"attributes->>{marker}", tuple(keys)
    else:
        extract = f"CAST(json_extract(attributes, {marker}) AS TEXT)"
        params = tuple(f'$."{key}"' for key in keys)
    sql = f"SELECT source_id{f', {extract}' * len(keys)} FROM {table}"
    names = ["customer_id", *keys]
    return _fetch_arrow(engine, sql, params, names, [pa.string()] * len(names)).to_pandas()


def ingest_version(engine: Engine) -> tuple:
    """Changes whenever ingestion commits a page, a webhook event's rows are stored or a
    churn model run is stored (its scores are the customers' `churn_risk`): (streams, last
    cursor time, last mapped event, highest row id per ingested table, model runs).

    Each part is one index lookup: counting the rows of a table of millions took seconds."""
    with engine.connect() as conn:
        streams, last = conn.execute(select(func.count(), func.max(SyncState.updated_at))).one()
        mapped = conn.execute(select(func.max(Inbox.mapped_at))).scalar_one()
        highest = tuple(
            conn.execute(select(func.max(model.__table__.c.id))).scalar_one()
            for model in INGESTED.values()
        )
        runs = conn.execute(select(func.count()).select_from(ChurnModelRun)).scalar_one()
    return streams, str(last), str(mapped), highest, runs


def row_counts(engine: Engine) -> dict[str, int]:
    """Rows per table, for idempotency checks and the CLI summary."""
    with engine.connect() as conn:
        return {
            name: conn.execute(select(func.count()).select_from(table)).scalar_one()
            for name, table in SQLModel.metadata.tables.items()
        }


def now_utc() -> datetime:
    """The current time as naive UTC, the store's convention."""
    return datetime.now(UTC).replace(tzinfo=None)


class Delivery(SQLModel, table=True):
    """One report sent (or still to send) on one channel to one target; failures are retried."""

    __table_args__ = (UniqueConstraint("report", "channel", "target"),)
    id: int | None = Field(default=None, primary_key=True)
    report: str
    kind: str
    channel: str
    target: str
    title: str
    summary: str
    news: str | None = None  # the report goes out again when this changes
    status: str
    attempts: int = 0
    last_error: str | None = None
    updated_at: NaiveDatetime


class Inbox(SQLModel, table=True):
    """A webhook event as it arrived, kept before it is acknowledged: once per source and
    vendor event id, so a vendor's retry adds nothing. `mapped_at` is set once its rows are
    in the store; `error` says why mapping it failed, until a later pass maps it."""

    __table_args__ = (UniqueConstraint("source", "event_id"),)
    id: int | None = Field(default=None, primary_key=True)
    source: str
    event_id: str
    received_at: NaiveDatetime
    payload: str
    mapped_at: NaiveDatetime | None = None
    error: str | None = None


def receive_event(engine: Engine, source: str, event_id: str, payload: str) -> None:
    """Stores one raw event, committed on return; a retry of a stored event changes nothing."""
    row = {"source": source, "event_id": event_id, "received_at": now_utc(), "payload": payload}
    save_rows(engine, Inbox, pd.DataFrame([row]), ("source", "event_id"), update=False)


def pending_events(engine: Engine, failed_too: bool) -> pd.DataFrame:
    """Unmapped events (`id`, `source`, `event_id`, `payload`) in the order they arrived;
    with `failed_too`, those whose mapping failed before as well."""
    table = Inbox.__table__
    query = select(table.c.id, table.c.source, table.c.event_id, table.c.payload).where(
        table.c.mapped_at.is_(None)
    )
    if not failed_too:
        query = query.where(table.c.error.is_(None))
    with engine.connect() as conn:
        return pd.read_sql(query.order_by(table.c.id), conn)


def settle_event(conn: Connection, event: int, error: str | None = None) -> None:
    """Marks inbox row `event` mapped (no `error`) or failed with `error`, in `conn`'s
    transaction."""
    table = Inbox.__table__
    done = {"mapped_at": now_utc(), "error": None} if error is None else {"error": error}
    conn.execute(table.update().where(table.c.id == event).values(**done))
