"""Concurrent first runs: two processes opening the same brand-new store at the same moment
both succeed and leave the whole schema, on SQLite and PostgreSQL."""

from __future__ import annotations

import multiprocessing
import os
import traceback
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import create_engine, inspect
from sqlmodel import SQLModel

from tasks import store

ROUNDS = 5  # fresh stores per backend: one race may pass by luck, five in a row do not
PROCESSES = 2


def _open_each(urls: list[str], barrier, results) -> None:
    """In a child process: open each store right after every process is ready to."""
    for url in urls:
        barrier.wait(timeout=120)
        try:
            store.open_store(store.database_url(url))
            results.put((url, "ok"))
        except Exception:
            results.put((url, traceback.format_exc()))


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[str]]:
    """`ROUNDS` URLs of new, empty stores on one backend; PostgreSQL ones dropped afterwards."""
    if request.param == "sqlite":
        yield [f"sqlite:///{tmp_path / f'store{i}.db'}" for i in range(ROUNDS)]
        return
    base = request.getfixturevalue("postgres_server")
    names = [f"race_{os.getpid()}_{i}" for i in range(ROUNDS)]
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        for name in names:
            conn.execute(f"DROP DATABASE IF EXISTS {name}")
            conn.execute(f"CREATE DATABASE {name}")
    yield [f"{base}/{name}" for name in names]
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        for name in names:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _missing_schema(url: str) -> dict[str, set[str]]:
    """Columns the model defines that the store at `url` lacks, by table."""
    engine = create_engine(store.database_url(url))
    found = inspect(engine)
    tables = set(found.get_table_names())
    missing = {}
    for table in SQLModel.metadata.sorted_tables:
        have = {c["name"] for c in found.get_columns(table.name)} if table.name in tables else set()
        if lacking := {c.name for c in table.columns} - have:
            missing[table.name] = lacking
    engine.dispose()
    return missing


def test_two_first_runs_at_once_both_open_the_store_and_the_schema_is_whole(
    fresh_urls: list[str],
) -> None:
    # Processes, not threads: `open_store` is cached per process, and each run is one.
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(PROCESSES), context.Queue()
    children = [
        context.Process(target=_open_each, args=(fresh_urls, barrier, results))
        for _ in range(PROCESSES)
    ]
    for child in children:
        child.start()
    outcomes = [results.get(timeout=300) for _ in range(PROCESSES * len(fresh_urls))]
    for child in children:
        child.join(60)
        assert child.exitcode == 0

    failures = [f"{url}:\n{outcome}" for url, outcome in outcomes if outcome != "ok"]
    assert not failures, "\n".join(failures)
    for url in fresh_urls:
        assert _missing_schema(url) == {}, url
