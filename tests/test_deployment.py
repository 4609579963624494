"""A team's deployment, as the README walks a newcomer through it, in a project directory
outside the checkout: `cxloop init`, a Prefect server on loopback, a process work pool,
`prefect deploy --all` and a process worker in the project, then a run of the cycle that
completes and leaves the reports and namespaced artifacts in that project."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, TypeVar

import httpx
import pytest

from flows.names import project_of
from tests.conftest import REPO, _free_port
from tests.test_cli import cxloop

pytestmark = pytest.mark.prefect

BIN = Path(sys.executable).parent
CUSTOMERS = 600
# Bounds, not pauses: each wait ends as soon as its state is reached. They are generous
# because a loaded machine starts a Prefect server (migrations included) in minutes.
SERVER_WITHIN = 420
RUN_WITHIN = 600
STOP_WITHIN = 20
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
T = TypeVar("T")


def _wait(check: Callable[[], T | None], seconds: float, what: str, log: Path) -> T:
    """What `check()` returns once it is not None; fails after `seconds` with `log`."""
    deadline = time.monotonic() + seconds
    while (found := check()) is None:
        assert time.monotonic() < deadline, f"no {what} in {seconds} s:\n{log.read_text()}"
        time.sleep(0.5)
    return found


@contextmanager
def _started(command: list[str], cwd: Path, env: dict[str, str], log: Path) -> Iterator[None]:
    """`command` running in its own process group while the block runs; then the whole
    group stopped (SIGTERM, then SIGKILL for what outlives `STOP_WITHIN`)."""
    with log.open("w") as out:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield
    finally:
        _stop_group(process)


def _stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the process group; SIGKILL to what is left of it after `STOP_WITHIN`
    (the worker's flow-run subprocesses included)."""
    _signal_group(process, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        process.wait(STOP_WITHIN)
    _signal_group(process, signal.SIGKILL)
    process.wait()


def _signal_group(process: subprocess.Popen, number: signal.Signals) -> None:
    with suppress(ProcessLookupError):  # raised once every process of the group has exited
        os.killpg(process.pid, number)


def _prefect(*args: str, cwd: Path, env: dict[str, str], out: IO[str]) -> None:
    done = subprocess.run(
        [str(BIN / "prefect"), "--no-prompt", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    out.write(done.stdout + done.stderr)
    assert done.returncode == 0, done.stdout + done.stderr


def _healthy(api: str) -> bool | None:
    try:
        return httpx.get(f"{api}/health", timeout=5).is_success or None
    except httpx.TransportError:
        return None


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project made by `cxloop init` outside the checkout, on a small demo company."""
    project = tmp_path / "acme-support"
    made = cxloop("init", str(project), cwd=tmp_path)
    assert made.returncode == 0, made.stdout + made.stderr
    assert not project.resolve().is_relative_to(REPO)
    config = project / "cxloop.yaml"
    text = config.read_text(encoding="utf-8")
    demo = "options: {customers: 20000, seed: 7}"
    assert demo in text, "the demo source of `cxloop init` changed; update this test"
    config.write_text(text.replace(demo, f"options: {{customers: {CUSTOMERS}, seed: 7}}"))
    return project


def test_cycle_deployed_from_an_init_project_completes_on_a_worker_in_that_directory(
    project: Path, tmp_path: Path
) -> None:
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    home = tmp_path / "prefect-home"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        # The schedules are registered, not run: only the run this test starts executes.
        "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
        # Poll often: the defaults (10–15 s) would dominate the runtime.
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
    }
    server = ["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    server_log, worker_log = tmp_path / "server.log", tmp_path / "worker.log"
    with _started([str(BIN / server[0]), *server[1:]], tmp_path, env, server_log):
        _wait(lambda: _healthy(api), SERVER_WITHIN, "healthy Prefect server", server_log)
        with (tmp_path / "prefect-cli.log").open("w") as out:
            pool = ("work-pool", "create", "cxloop-process", "--type", "process")
            _prefect(*pool, cwd=project, env=env, out=out)
            _prefect("deploy", "--all", cwd=project, env=env, out=out)
        worker = [str(BIN / "prefect"), "worker", "start", "--pool", "cxloop-process"]
        with _started(worker, project, env, worker_log), httpx.Client(base_url=api) as client:
            deployment = client.get("/deployments/name/improvement-cycle/improvement-cycle")
            deployment.raise_for_status()
            assert deployment.json()["work_pool_name"] == "cxloop-process"
            created = client.post(
                f"/deployments/{deployment.json()['id']}/create_flow_run", json={}
            )
            created.raise_for_status()
            run_id = created.json()["id"]

            def finished() -> dict | None:
                run = client.get(f"/flow_runs/{run_id}").json()
                return run if run["state_type"] in TERMINAL else None

            run = _wait(finished, RUN_WITHIN, "finished flow run", worker_log)
            assert run["state_type"] == "COMPLETED", worker_log.read_text()
            subflows = client.post(
                "/flow_runs/filter",
                json={"flow_runs": {"parent_flow_run_id": {"any_": [run_id]}}},
            ).json()
            runs = {"id": {"any_": [run_id, *(f["id"] for f in subflows)]}}
            artifacts = client.post(
                "/artifacts/filter", json={"artifacts": {"flow_run_id": runs["id"]}}
            ).json()
            tasks = client.post("/task_runs/filter", json={"flow_runs": runs}).json()

    namespace = project_of(project / "cxloop.yaml")
    assert namespace == "acme-support"
    assert run["name"].startswith(f"cycle {namespace} ")
    assert {f["name"].rsplit(" ", 1)[0] for f in subflows} == {
        f"{stage} {namespace}" for stage in ("ingest", "rank", "pilots", "reports")
    }
    keys = {a["key"] for a in artifacts if a["key"]}
    assert keys and all(k.startswith(f"{namespace}-") for k in keys), keys
    assert any(k.startswith(f"{namespace}-digest-") for k in keys), keys
    tables = [json.loads(a["data"]) for a in artifacts if a["type"] == "table"]
    cells = [(h, v) for rows in tables for row in rows for h, v in row.items()]
    assert cells and all(isinstance(v, str) for _, v in cells)
    raw = [c for c in cells if re.search(r"\d\.\d{4}", c[1]) or "_" in c[0]]
    raw += [c for c in cells if re.fullmatch(r"[a-z]+(?:_[a-z0-9]+)+", c[1])]
    assert not raw, f"cells as Python holds them, not as the reports show them: {raw}"
    # Every task run says what it did; none is Prefect's `function-3f2` or reads "None".
    names = {t["name"] for t in tasks}
    assert "sync demo/customers" in names and "snapshot by segment per month" in names, names
    assert not [n for n in names if "None" in n or re.fullmatch(r"\w+-[0-9a-f]{3}", n)], names
    # What the worker's run wrote landed in the project: the store and the reports.
    assert (project / ".cxloop" / "cxloop.db").exists()
    out = project / "reports" / "out"
    assert (out / "index.html").exists()
    assert list(out.glob("digest-*.html")), sorted(p.name for p in out.iterdir())
