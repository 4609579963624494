"""`cxloop serve` receiving webhooks beside its deployments: a project with a Typeform
webhook source gets the listener in the serve process, which stores a signed call and stops
with serve; `--no-listen` and a project without a webhook source get no listener."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml

from connectors.errors import ConfigError
from connectors.webhooks import signed, typeform_body
from flows.listen import listen_beside, open_listener, start_listening
from tasks import store
from tests import serve_process
from tests.conftest import REPO, _free_port

pytestmark = pytest.mark.prefect

SECRET = "tf-serve-secret-0c1"
FORM = "csat-after-ticket"
SURVEYS = {
    "name": "surveys",
    "kind": "typeform",
    "options": {"forms": [FORM], "questions": {"csat": "csat"}},
}
STOP_WITHIN = 30  # a bound, not a pause: the wait ends as soon as serve exits


@pytest.fixture(scope="module")
def prefect_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One Prefect home for the module, so the ephemeral server migrates its database once."""
    return tmp_path_factory.mktemp("prefect-home")


def _project(root: Path, sources: list[dict]) -> Path:
    """A project directory: one served deployment and a cxloop.yaml with `sources`."""
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text(encoding="utf-8"))
    spec["deployments"] = [d for d in spec["deployments"] if d["name"] == "rank-daily"]
    (root / "prefect.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    config = {"database_url": f"sqlite:///{root / 'store.db'}", "sources": sources}
    (root / "cxloop.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return root


def _env(prefect_home: Path) -> dict[str, str]:
    """Serve's environment: an ephemeral Prefect server in `prefect_home`, the runner's
    health endpoint on (Prefect's signal that the deployments are served), the secret set."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    return env | {
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_RUNNER_SERVER_ENABLE": "true",
        "PREFECT_RUNNER_SERVER_HOST": "127.0.0.1",
        "PREFECT_RUNNER_SERVER_PORT": str(_free_port()),
        "PREFECT_RUNNER_SERVER_LOG_LEVEL": "critical",
        "CXLOOP_WEBHOOK_SECRET_SURVEYS": SECRET,
    }


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _runner_healthy(env: dict[str, str]) -> bool:
    return _answers(f"http://127.0.0.1:{env['PREFECT_RUNNER_SERVER_PORT']}/health")


def _stops_cleanly(serving_process: subprocess.Popen, project: Path) -> None:
    serve_process.stop(serving_process, project, STOP_WITHIN)


def _stored_answer(url: str) -> Callable[[], pd.DataFrame]:
    def found() -> pd.DataFrame:
        answers = store.read_frame(store.open_store(url), store.SurveyResponse)
        return answers[answers["source_id"] == "resp-1:csat"]

    return found


def test_serve_listens_beside_its_deployments_stores_a_signed_call_and_stops_with_it(
    tmp_path: Path, prefect_home: Path
) -> None:
    project = _project(tmp_path, [SURVEYS])
    env, port = _env(prefect_home), _free_port()
    listener = f"http://127.0.0.1:{port}"
    body = typeform_body(
        "ev-serve-1", FORM, "resp-1", pd.Timestamp("2026-11-02 10:00"), {"csat": 2}, {}
    )
    raw, headers = signed(body, SECRET)
    stored = _stored_answer(f"sqlite:///{project / 'store.db'}")

    with serve_process.serving(project, env, "--listen-port", str(port)) as serving:
        serve_process.wait_for(
            lambda: _runner_healthy(env) and _answers(f"{listener}/health"),
            serving,
            project,
            "readiness",
        )
        out = (project / "serve.out").read_text()
        assert f"webhooks of surveys: POST {listener}/webhooks/typeform/surveys" in out
        assert "Serving 1 deployments (rank-daily)" in out

        answered = httpx.post(f"{listener}/webhooks/typeform/surveys", content=raw, headers=headers)
        assert answered.status_code == 200, answered.text
        serve_process.wait_for(lambda: len(stored()) == 1, serving, project, "readiness")
        assert stored()["score"].tolist() == [2.0]

        _stops_cleanly(serving, project)
    assert not _answers(f"{listener}/health")


@pytest.mark.parametrize("case", ["--no-listen", "no webhook source"])
def test_serve_without_listening_serves_the_deployments_and_binds_no_port(
    tmp_path: Path, prefect_home: Path, case: str
) -> None:
    sources = [SURVEYS] if case == "--no-listen" else [{"name": "demo", "kind": "demo"}]
    project = _project(tmp_path, sources)
    env, port = _env(prefect_home), _free_port()
    args = ["--listen-port", str(port)] + (["--no-listen"] if case == "--no-listen" else [])

    with serve_process.serving(project, env, *args) as serving:
        serve_process.wait_for(lambda: _runner_healthy(env), serving, project, "readiness")
        assert not _answers(f"http://127.0.0.1:{port}/health")
        out = (project / "serve.out").read_text()
        assert "webhooks of" not in out
        if case == "no webhook source":
            assert "Not listening for webhooks: no source in cxloop.yaml takes them." in out

        _stops_cleanly(serving, project)


def test_listen_beside_a_directory_without_cxloop_yaml_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert listen_beside(tmp_path / "cxloop.yaml", "127.0.0.1", _free_port()) is None
    assert "no " + str(tmp_path / "cxloop.yaml") in capsys.readouterr().out


def test_a_taken_port_is_refused_with_the_port_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CXLOOP_WEBHOOK_SECRET_SURVEYS", SECRET)
    listener = open_listener(_project(tmp_path, [SURVEYS]) / "cxloop.yaml")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"127.0.0.1:{port}"):
            start_listening(listener, "127.0.0.1", port)
