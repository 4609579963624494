"""Shared fixtures: stores on SQLite and on a real PostgreSQL server, the demo company."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from connectors.demo import STREAM_TABLES, DemoCompany, generate
from tasks.loader import CxData
from tasks.mapping import to_canonical
from tasks.metrics import with_ticket_measures

REPO = Path(__file__).resolve().parents[1]

# Under pytest-xdist each worker gets a Prefect home of its own (every subprocess inherits it),
# so two workers' ephemeral servers never share one Prefect database.
if worker := os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix=f"cxloop-prefect-{worker}-")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.fail(
            "PostgreSQL server binaries not found: run the README test command "
            "(tests/run.sh), which installs Debian's postgresql package."
        )
    return Path(found[-1]).parent


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL server on loopback; yields its base URL (no database)."""
    bin_dir = _pg_bin()
    root = Path(tempfile.mkdtemp(prefix="cxloop-pg-"))
    data, port = root / "data", _free_port()
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(root, "postgres")
        as_postgres = ["runuser", "-u", "postgres", "--"]
    run = lambda *cmd: subprocess.run([*as_postgres, *cmd], check=True, capture_output=True)  # noqa: E731
    run(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "cxloop", "-E", "UTF8")
    # Each test database's engine keeps a small pool; the margin covers the vendor tests' own.
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    options += " -c max_connections=300"
    run(
        str(bin_dir / "pg_ctl"),
        "-D",
        str(data),
        "-o",
        options,
        "-l",
        str(root / "log"),
        "-w",
        "start",
    )
    try:
        yield f"postgresql://cxloop@127.0.0.1:{port}"
    finally:
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite store URL, for tests that need only one backend."""
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty store URL on each backend; a PostgreSQL one is dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    import psycopg

    from tasks import store

    base = request.getfixturevalue("postgres_server")
    name = f"t_{os.getpid()}_{abs(hash(request.node.nodeid)) % 10**8}"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    yield f"{base}/{name}"
    store.open_store(f"{base}/{name}").dispose()  # the cached engine's idle connections
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's console 200 columns wide for this test, whatever width it was created with
    (rich fixes it at creation when COLUMNS is set then); undone after the test."""
    from flows.cli import terminal

    monkeypatch.setattr(terminal.console, "_width", 200)


@pytest.fixture(scope="session")
def company() -> DemoCompany:
    return generate(20_000, 7)


def cx_data(company: DemoCompany) -> CxData:
    """The demo company as analysis frames, mapped exactly as ingestion maps it."""
    tables = {
        STREAM_TABLES[name]: to_canonical(STREAM_TABLES[name], frame, name)
        for name, frame in company.frames.items()
    }
    customers = tables["customer"].rename(columns={"source_id": "customer_id"})
    declared = pd.DataFrame(list(customers["attributes"]), index=customers.index)
    return CxData(
        customers=customers.join(declared),  # a column per declared dimension, as the store's
        tickets=with_ticket_measures(tables["ticket"]),
        responses=tables["survey_response"],
        orders=tables["orders"],
        web=tables["web_metric"],
    )


@pytest.fixture(scope="session")
def demo_data(company: DemoCompany) -> CxData:
    return cx_data(company)


def frame_equal_ignoring_order(a: pd.DataFrame, b: pd.DataFrame, key: str) -> None:
    pd.testing.assert_frame_equal(
        a.sort_values(key).reset_index(drop=True), b.sort_values(key).reset_index(drop=True)
    )
