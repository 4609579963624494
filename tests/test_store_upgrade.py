"""Upgrade in place: a store written by the last release's code opens in this one with every
row kept, gains the new columns and tables, and runs a whole cycle, on SQLite and PostgreSQL.

The stores in `tests/data/upgrade/` were written by release 8fd2577 (`cxloop demo
--customers 500`): the SQLite file as it left it, and a `pg_dump --inserts` of the same run on
PostgreSQL (where that release's ranking stopped on a float count, so it holds no pain points;
its ingested data is whole), its psql-only `\\restrict` lines removed.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
import yaml
from sqlmodel import SQLModel

from tasks import store

RELEASE = Path(__file__).parent / "data" / "upgrade"
REPO = Path(__file__).resolve().parents[1]
CXLOOP = str(Path(sys.executable).parent / "cxloop")


def release_store(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """The release's store restored on `backend`; its URL."""
    if backend == "sqlite":
        path = tmp_path / "release.db"
        with gzip.open(RELEASE / "release-sqlite.db.gz") as packed, path.open("wb") as out:
            shutil.copyfileobj(packed, out)
        return f"sqlite:///{path}"
    base = request.getfixturevalue("postgres_server")
    name = f"upgrade_{os.getpid()}"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    dump = gzip.decompress((RELEASE / "release-postgres.sql.gz").read_bytes()).decode()
    with psycopg.connect(f"{base}/{name}", autocommit=True) as conn:
        conn.execute(dump)
    request.addfinalizer(lambda: store.open_store(f"{base}/{name}").dispose())
    return f"{base}/{name}"


def stored_keys(url: str) -> dict[str, set[tuple]]:
    """Every row's key per table, read with plain SQL (no model of this release)."""
    engine = sa.create_engine(url)
    keys: dict[str, set[tuple]] = {}
    with engine.connect() as conn:
        for table in sa.inspect(conn).get_table_names():
            columns = [c["name"] for c in sa.inspect(conn).get_columns(table)]
            key = ["source", "source_id"] if "source_id" in columns else columns[:1]
            if "source" in key and "source" not in columns:
                key = ["source_id"]
            rows = conn.execute(sa.text(f'SELECT {", ".join(key)} FROM "{table}"'))
            keys[table] = {tuple(map(str, row)) for row in rows}
    engine.dispose()
    return keys


def ranked_at(url: str) -> str:
    """When pain points were last ranked in the store at `url`."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        newest = conn.execute(sa.text("SELECT max(computed_at) FROM pain_point")).scalar_one()
    engine.dispose()
    return str(newest or "")


@pytest.mark.prefect
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_last_releases_store_opens_keeps_every_row_and_runs_a_cycle(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = release_store(backend, tmp_path, request)
    before, ranked_at_before = stored_keys(url), ranked_at(url)
    assert len(before["customer"]) == 500 and len(before["ticket"]) > 100

    engine = store.open_store(url)
    inspector = sa.inspect(engine)
    for name, table in SQLModel.metadata.tables.items():
        stored = {c["name"] for c in inspector.get_columns(name)}
        assert {c.name for c in table.columns} <= stored, f"{name} lacks new columns"
    assert {t: k for t, k in stored_keys(url).items() if t in before} == before

    config = {
        "database_url": url,
        "sources": [{"name": "demo", "kind": "demo", "options": {"customers": 500, "seed": 7}}],
        "hypotheses_dir": str(REPO / "hypotheses"),
        "reports": {"out_dir": str(tmp_path / "out")},
    }
    (tmp_path / "cxloop.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("CXLOOP_DATABASE_URL", None)
    run = subprocess.run(
        [CXLOOP, "run", "--config", "cxloop.yaml"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    after = stored_keys(url)
    for table in ("customer", "ticket", "survey_response", "web_metric", "orders", "report"):
        assert before[table] <= after[table], f"rows of {table} were lost"
    assert ranked_at(url) > ranked_at_before  # this release ranked anew, on the old store
