"""The store's floor: the least any SQLite-backed cycle spends before it computes anything.

The same Parquet rows are written into fresh, unindexed SQLite tables in one transaction
and read back whole: no upserts, no cursors, no indexes, no analysis. Two routes: Python's
`sqlite3` (cxloop's driver: every value becomes a Python object on the way in and out) and
ADBC (Arrow to SQLite and back in C, the fastest route from Python). Timestamps are written
as text, as the store keeps them.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import adbc_driver_sqlite.dbapi as adbc
import pyarrow as pa
import pyarrow.parquet as pq
from adbc_driver_sqlite import StatementOptions

from benchmarks.rss import Timed, timed
from connectors.demo import STREAM_TABLES

BATCH_ROWS = StatementOptions.BATCH_ROWS.value


def _tables(data_dir: Path) -> dict[str, pa.Table]:
    """Each stream's Parquet file, timestamps as ISO text."""
    tables = {}
    for name in STREAM_TABLES:
        table = pq.read_table(data_dir / f"{name}.parquet")
        columns = [
            c.cast(pa.string()) if pa.types.is_timestamp(c.type) else c for c in table.columns
        ]
        tables[name] = pa.table(columns, names=table.column_names)
    return tables


def _fresh(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def with_sqlite3(tables: dict[str, pa.Table], path: Path) -> dict[str, Timed]:
    """Write (Arrow → Python tuples → `executemany`) and read back (`fetchall`)."""
    _fresh(path)
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    for name, table in tables.items():
        con.execute(f"CREATE TABLE {name} ({', '.join(table.column_names)})")
    with timed() as write, con:
        for name, table in tables.items():
            rows = zip(*(c.to_pylist() for c in table.columns), strict=True)
            marks = ", ".join("?" * table.num_columns)
            con.executemany(f"INSERT INTO {name} VALUES ({marks})", rows)
    with timed() as read:
        read.extra["rows"] = sum(
            len(con.execute(f"SELECT * FROM {name}").fetchall()) for name in tables
        )
    con.close()
    return {"sqlite3 write": write, "sqlite3 read": read}


def with_adbc(tables: dict[str, pa.Table], path: Path) -> dict[str, Timed]:
    """Write (`adbc_ingest` of the Arrow tables) and read back (`fetch_arrow_table`)."""
    _fresh(path)
    with adbc.connect(str(path)) as con, con.cursor() as cursor:
        with timed() as write:
            for name, table in tables.items():
                cursor.adbc_ingest(name, table, mode="create")
            con.commit()
        with timed() as read:
            read.extra["rows"] = 0
            for name, table in tables.items():
                # One batch per table: the driver infers each column's type from its first
                # batch, and a column empty in the first rows would be read as integers.
                cursor.adbc_statement.set_options(**{BATCH_ROWS: str(max(table.num_rows, 1))})
                cursor.execute(f"SELECT * FROM {name}")
                read.extra["rows"] += cursor.fetch_arrow_table().num_rows
    return {"adbc write": write, "adbc read": read}


def run(data_dir: Path, work: Path) -> dict[str, Timed]:
    """Both routes on the files in `data_dir`, each with its write + read total; each read
    counts the rows it got back (`extra["rows"]`), the others the rows written."""
    tables = _tables(data_dir)
    timings = with_sqlite3(tables, work / "floor-sqlite3.db")
    timings |= with_adbc(tables, work / "floor-adbc.db")
    for route in ("sqlite3", "adbc"):
        write, read = timings[f"{route} write"], timings[f"{route} read"]
        timings[f"{route} total"] = Timed(
            write.seconds + read.seconds, max(write.peak_mib, read.peak_mib)
        )
    rows = sum(t.num_rows for t in tables.values())
    for t in timings.values():
        t.extra.setdefault("rows", rows)
    return timings
