"""cxloop on a real Prefect server on loopback: deployments from prefect.yaml run by a process
worker, `cxloop serve` registering every schedule and stopping on a signal, and an ingest
cancelled mid-stream that the next run completes without gaps or duplicates.

One Prefect server (its own database on a throwaway PostgreSQL, as docs/orchestration.md
sets it up) and one process worker serve the whole module.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import httpx
import pandas as pd
import psycopg
import pytest
import yaml
from prefect import get_client
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Cancelling

from connectors.demo import STREAM_TABLES, generate
from flows.names import project_of
from tasks import store
from tasks.mapping import to_canonical
from tests import serve_process
from tests.conftest import REPO, _free_port

pytestmark = pytest.mark.prefect

PREFECT = str(Path(sys.executable).parent / "prefect")
SPEC = yaml.safe_load((REPO / "prefect.yaml").read_text(encoding="utf-8"))
BIG_CUSTOMERS = 40_000  # about 230,000 records: ingesting them takes ~10 s here


def _create_database(base: str, name: str) -> str:
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    return f"{base}/{name}"


def _prefect(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [PREFECT, "--no-prompt", *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def _stop(process: subprocess.Popen, seconds: float = 15) -> None:
    process.terminate()
    try:
        process.wait(seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def prefect_env(tmp_path_factory: pytest.TempPathFactory, postgres_server: str) -> Iterator[dict]:
    """Environment for processes that talk to a fresh Prefect server on 127.0.0.1."""
    home = tmp_path_factory.mktemp("prefect-home")
    database = _create_database(postgres_server, f"prefect_{os.getpid()}")
    port = _free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_DATABASE_CONNECTION_URL": database.replace(
            "postgresql://", "postgresql+asyncpg://"
        ),
        # Poll often: the defaults (10–15 s) would dominate these tests' runtime.
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
    }
    log = (home / "server.log").open("w")
    server = subprocess.Popen(
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (home / "server.log").read_text()
            assert time.monotonic() < deadline, (home / "server.log").read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).is_success:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}):
            yield env
    finally:
        _stop(server)
        log.close()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working directory as a team deploys from: the code, prefect.yaml, hypotheses and a
    cxloop.yaml on a small demo company with its store and reports in the directory."""
    root = tmp_path_factory.mktemp("project")
    for package in ("flows", "tasks", "connectors"):
        (root / package).symlink_to(REPO / package)
    shutil.copy(REPO / "prefect.yaml", root / "prefect.yaml")
    shutil.copytree(REPO / "hypotheses", root / "hypotheses")
    config = {
        "database_url": f"sqlite:///{root / 'store.db'}",
        "sources": [{"name": "demo", "kind": "demo", "options": {"customers": 2000, "seed": 7}}],
        "reports": {"out_dir": str(root / "reports")},
    }
    (root / "cxloop.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def worker(prefect_env: dict, project: Path) -> Iterator[subprocess.Popen]:
    """A process worker on the `cxloop-process` pool, as docs/orchestration.md starts it."""
    pool = ("work-pool", "create", "cxloop-process", "--type", "process")
    _prefect(*pool, cwd=project, env=prefect_env)
    log = (project / "worker.log").open("w")
    process = subprocess.Popen(
        [PREFECT, "worker", "start", "--pool", "cxloop-process"],
        cwd=project,
        env=prefect_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield process
    finally:
        _stop(process, 30)
        log.close()


@pytest.fixture
def deployed(prefect_env: dict, project: Path, worker: subprocess.Popen) -> Path:
    """The project deployed with `prefect deploy --all`, unless it still is (the serve test
    replaces the deployments with served ones, which have no work pool)."""
    with _client() as client:
        pools = {d.name: d.work_pool_name for d in client.read_deployments()}
    if pools != {e["name"]: "cxloop-process" for e in SPEC["deployments"]}:
        _prefect("deploy", "--all", cwd=project, env=prefect_env)
    return project


def _client() -> SyncPrefectClient:
    return get_client(sync_client=True)


def _schedules(deployment) -> set[tuple[str, str]]:
    return {(s.schedule.cron, s.schedule.timezone) for s in deployment.schedules if s.active}


def _expected_schedules(entry: dict) -> set[tuple[str, str]]:
    return {(s["cron"], s["timezone"]) for s in entry["schedules"]}


def _full_name(entry: dict) -> str:
    path, function = entry["entrypoint"].split(":")
    module = __import__(path.removesuffix(".py").replace("/", "."), fromlist=[function])
    return f"{getattr(module, function).name}/{entry['name']}"


def test_cycle_deployed_from_prefect_yaml_completes_on_a_process_worker_with_artifacts(
    deployed: Path,
) -> None:
    with _client() as client:
        for entry in SPEC["deployments"]:
            found = client.read_deployment_by_name(_full_name(entry))
            assert found.work_pool_name == "cxloop-process", entry["name"]
            assert _schedules(found) == _expected_schedules(entry), entry["name"]
            assert set(found.tags) == set(entry["tags"]) and found.parameters == entry["parameters"]

    run = run_deployment("improvement-cycle/improvement-cycle", timeout=180, poll_interval=1)

    assert run.state is not None and run.state.is_completed(), (deployed / "worker.log").read_text()
    with _client() as client:
        run = client.read_flow_run(run.id)
        subflows = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run.id])
            )
        )
        runs: list[UUID] = [run.id, *(f.id for f in subflows)]
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=runs))
        )
    assert run.work_pool_name == "cxloop-process"
    # named after the stage and the project (the project directory's name), then the day
    assert {f.name.rsplit(" ", 1)[0] for f in subflows} >= {
        f"{stage} {project_of(deployed / 'cxloop.yaml')}" for stage in ("ingest", "rank", "reports")
    }
    markdown = {a.key for a in artifacts if a.type == "markdown"}
    namespace = project_of(deployed / "cxloop.yaml")
    assert any(key.startswith(f"{namespace}-digest-") for key in markdown), markdown
    assert f"{namespace}-experiment-auto-route-tickets" in markdown, markdown
    counts = store.row_counts(store.open_store(f"sqlite:///{deployed / 'store.db'}"))
    assert counts["customer"] == 2000 and counts["pain_point"] > 0
    assert (deployed / "reports" / "index.html").exists()


STOP_WITHIN = 10  # seconds from the signal to the exit, at any point of `cxloop serve`
SIGNALS = pytest.mark.parametrize(
    "stop_with", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"]
)


@pytest.fixture
def serve_env(prefect_env: dict) -> dict:
    """`prefect_env` with no deployment registered and the served runner's health endpoint
    on (Prefect's readiness signal: 200 once the runner polls for scheduled runs; before
    the first poll it fails with a traceback, which its quiet log level keeps out of
    serve's stderr)."""
    with _client() as client:
        for deployment in client.read_deployments():
            client.delete_deployment(deployment.id)
    return {
        **prefect_env,
        "PREFECT_RUNNER_SERVER_ENABLE": "true",
        "PREFECT_RUNNER_SERVER_HOST": "127.0.0.1",
        "PREFECT_RUNNER_SERVER_PORT": str(_free_port()),
        "PREFECT_RUNNER_SERVER_LOG_LEVEL": "critical",
    }


def _healthy(env: dict) -> bool:
    url = f"http://127.0.0.1:{env['PREFECT_RUNNER_SERVER_PORT']}/health"
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _served() -> dict[str, object]:
    with _client() as client:
        return {
            f"{client.read_flow(d.flow_id).name}/{d.name}": d for d in client.read_deployments()
        }


def _signal_stops(serving: subprocess.Popen, stop_with: signal.Signals, project: Path) -> None:
    """Send `stop_with`; fail unless serve exits cleanly within `STOP_WITHIN` seconds with
    every registered schedule paused."""
    err = serve_process.stop(serving, project, STOP_WITHIN, stop_with)
    assert "never awaited" not in err, err
    assert all(d.paused for d in _served().values())  # no runs pile up unserved


@SIGNALS
def test_serve_registers_every_deployment_with_its_schedules_and_stops_on_signal(
    serve_env: dict, project: Path, stop_with: signal.Signals
) -> None:
    with serve_process.serving(project, serve_env) as serving:
        serve_process.wait_for(lambda: _healthy(serve_env), serving, project, "healthy runner")
        found = _served()
        expected = {_full_name(e): _expected_schedules(e) for e in SPEC["deployments"]}
        assert {name: _schedules(d) for name, d in found.items() if not d.paused} == expected
        assert all(d.work_pool_name is None for d in found.values())

        _signal_stops(serving, stop_with, project)


@SIGNALS
@pytest.mark.parametrize("moment", ["command started", "deployments registered"])
def test_serve_stops_within_ten_seconds_of_a_signal_during_start_up(
    serve_env: dict, project: Path, stop_with: signal.Signals, moment: str
) -> None:
    """Early: while Prefect still loads (the CLI's first line is out), or once a deployment
    is registered but before the runner is ready; what was registered ends paused."""
    started = lambda: "Using the Prefect server" in (project / "serve.out").read_text()  # noqa: E731
    ready = started if moment == "command started" else lambda: bool(_served())
    with serve_process.serving(project, serve_env) as serving:
        serve_process.wait_for(ready, serving, project, moment)
        assert not _healthy(serve_env), "the runner was ready before the signal"

        _signal_stops(serving, stop_with, project)
        if moment == "deployments registered":
            assert _served()


def _logs(flow_run: UUID, until: str) -> list[str]:
    """The run's log messages, once one containing `until` has arrived (they ship async)."""
    deadline = time.monotonic() + 20
    with _client() as client:
        while True:
            found = client.read_logs(
                LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run])), limit=200
            )
            messages = [log.message for log in found]
            if any(until in m for m in messages) or time.monotonic() > deadline:
                return messages
            time.sleep(0.5)


def _plain(rows: pd.DataFrame) -> pd.DataFrame:
    """`rows` sorted by source id as plain values: times to the store's microseconds, any
    missing value as None, so a frame from the source and one from the store compare."""
    rows = rows.sort_values("source_id", ignore_index=True)
    for column in rows.select_dtypes("datetime"):
        rows[column] = rows[column].astype("datetime64[us]")
    return rows.astype(object).where(rows.notna(), None)


def test_ingest_cancelled_mid_stream_is_resumed_by_the_next_run_without_gaps_or_duplicates(
    deployed: Path, postgres_server: str
) -> None:
    url = _create_database(postgres_server, f"cx_cancel_{os.getpid()}")
    config = {
        "database_url": url,
        "sources": [{"name": "demo", "kind": "demo", "options": {"customers": BIG_CUSTOMERS}}],
    }
    (deployed / "big.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    engine = store.open_store(store.database_url(url))
    parameters = {"config_path": "big.yaml"}

    first = run_deployment("ingest/ingest-hourly", parameters=parameters, timeout=0)
    deadline = time.monotonic() + 90
    while sum(store.row_counts(engine)[t] for t in store.INGESTED) == 0:
        assert time.monotonic() < deadline, (deployed / "worker.log").read_text()
        time.sleep(0.2)
    with _client() as client:
        client.set_flow_run_state(first.id, Cancelling(message="test cancels mid-stream"))
        while not (state := client.read_flow_run(first.id).state).is_final():
            assert time.monotonic() < deadline, (deployed / "worker.log").read_text()
            time.sleep(0.5)
    assert state.is_cancelled(), state
    partial = store.row_counts(engine)
    time.sleep(2)  # nothing writes after the run is cancelled
    assert store.row_counts(engine) == partial

    second = run_deployment(
        "ingest/ingest-hourly", parameters=parameters, timeout=180, poll_interval=1
    )

    assert second.state is not None and second.state.is_completed(), second.state
    logs = _logs(second.id, until="ingested ")
    for name, table in STREAM_TABLES.items():
        (line,) = [m for m in logs if m.startswith(f"demo/{name} → ")]
        assert ("(cursor start" in line) == (partial[table] == 0), line  # resumed, not redone
    frames = generate(BIG_CUSTOMERS, 7).frames
    expected = {name: to_canonical(STREAM_TABLES[name], f, name) for name, f in frames.items()}
    assert sum(partial[STREAM_TABLES[n]] for n in expected) < sum(len(f) for f in expected.values())
    for name, rows in expected.items():
        model = store.INGESTED[STREAM_TABLES[name]]
        stored = store.read_frame(engine, model, list(rows.columns))
        assert len(stored) == len(rows), name
        pd.testing.assert_frame_equal(_plain(stored), _plain(rows), obj=name)


def test_sample_automation_in_the_docs_starts_a_digest_run_on_an_alert_event(
    deployed: Path, prefect_env: dict
) -> None:
    docs = (REPO / "docs" / "orchestration.md").read_text(encoding="utf-8")
    sample = re.search(r"```yaml\n(name: cxloop extra digest.*?)```", docs, re.S)
    assert sample, "docs/orchestration.md lost its sample automation"
    with _client() as client:
        report = client.read_deployment_by_name("report/digest-weekly")
    automation = yaml.safe_load(sample.group(1).replace("DEPLOYMENT_ID", str(report.id)))
    automation["actions"][0]["schedule_after"] = 3600  # created is enough; the worker waits
    path = deployed / "alert-digest.yaml"
    path.write_text(yaml.safe_dump(automation), encoding="utf-8")
    _prefect("automation", "create", "--from-file", str(path), cwd=deployed, env=prefect_env)
    try:
        emit = ("event", "emit", "cxloop.alert.nps_drop", "--resource-id", "cxloop.alert.test")
        _prefect(*emit, cwd=deployed, env=prefect_env)
        deadline = time.monotonic() + 30
        with _client() as client:
            while not (
                runs := client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[report.id]))
                )
            ):
                assert time.monotonic() < deadline, "no report run after the alert event"
                time.sleep(0.5)
        assert runs[0].parameters == {"config_path": "cxloop.yaml", "kinds": ["digest"]}
    finally:
        with _client() as client:
            for found in client.read_automations_by_name(automation["name"]):
                client.delete_automation(found.id)
            for run in client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[report.id]))
            ):
                client.delete_flow_run(run.id)
