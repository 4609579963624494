"""The `cxloop` command as a user runs it: the demo end to end, bad input, a fast --help."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows.config import example_text
from tasks import store
from tests.conftest import REPO

CXLOOP = str(Path(sys.executable).parent / "cxloop")


def cxloop(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CXLOOP, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "COLUMNS": "200", **env},
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """An empty working directory holding only the shipped hypotheses."""
    shutil.copytree(REPO / "hypotheses", tmp_path / "hypotheses")
    return tmp_path


@pytest.mark.prefect
def test_demo_recovers_planted_truths_and_a_rerun_changes_no_row_count(tmp_path: Path) -> None:
    project = tmp_path  # an empty directory: the demo brings its own hypotheses
    first = cxloop("demo", cwd=project)
    assert first.returncode == 0, first.stdout + first.stderr
    out = first.stdout
    positions = [out.index(key) for key in ("ticket:delivery", "ticket:payment", "ticket:login")]
    assert positions == sorted(positions), out
    assert "auto-route-tickets: adopt" in out, out
    assert "chat-greeting-script: adopt" not in out, out
    out_dir = project / "reports" / "out"
    (digest,) = out_dir.glob("digest-*.html")
    assert "Tickets about delivery" in digest.read_text(encoding="utf-8")
    index = (out_dir / "index.html").read_text(encoding="utf-8")
    assert digest.name in index and "experiment-auto-route-tickets.html" in index

    engine = store.open_store(f"sqlite:///{project / '.cxloop' / 'demo-20000-7.db'}")
    counts = store.row_counts(engine)
    assert counts["customer"] == 20_000 and counts["pain_point"] > 5  # topics and other kinds
    second = cxloop("demo", cwd=project)
    assert second.returncode == 0, second.stdout + second.stderr
    assert store.row_counts(engine) == counts

    config = ".cxloop/demo-20000-7.yaml"
    table = cxloop("metrics", "--metric", "csi,escalation", "--config", config, cwd=project)
    assert table.returncode == 0, table.stderr
    rows = [line for line in table.stdout.splitlines() if " csi " in line]
    assert len(rows) == 4 and all(s in table.stdout for s in ("new", "b2b", "escalation"))
    themes = cxloop("themes", "--count", "3", "--config", config, cwd=project)
    assert themes.returncode == 0, themes.stderr
    proposed = yaml.safe_load(themes.stdout[themes.stdout.index("topics:") :])["topics"]
    assert any("упаковка" in t.get("ru", []) for t in proposed.values()), themes.stdout
    assert any("box" in t.get("en", []) for t in proposed.values()), themes.stdout


def test_broken_config_exits_2_naming_file_line_and_key_and_writes_nothing(project: Path) -> None:
    config = project / "cxloop.yaml"
    config.write_text(example_text().replace("csat_scale: 5", "csat_scale: lots"), encoding="utf-8")
    result = cxloop("run", cwd=project)
    assert result.returncode == 2
    assert "cxloop.yaml:" in result.stderr and "`csat_scale`" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (project / ".cxloop").exists() and not (project / "reports").exists()


def test_broken_hypothesis_exits_2_before_anything_is_written(project: Path) -> None:
    (project / "cxloop.yaml").write_text(example_text(), encoding="utf-8")
    path = project / "hypotheses" / "auto-route-tickets.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("salt:", "slat:"), encoding="utf-8")
    result = cxloop("run", cwd=project)
    assert result.returncode == 2
    assert "auto-route-tickets.yaml:" in result.stderr and "did you mean `salt`" in result.stderr
    assert not (project / ".cxloop").exists()


def test_unreachable_database_is_one_line_not_a_traceback(project: Path) -> None:
    (project / "cxloop.yaml").write_text(example_text(), encoding="utf-8")
    result = cxloop(
        "db", "init", cwd=project, CXLOOP_DATABASE_URL="postgresql://cx:hunter2@127.0.0.1:9/cx"
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "cannot reach the store" in result.stderr
    assert "hunter2" not in result.stderr and "Traceback" not in result.stderr


@pytest.mark.prefect
def test_a_source_that_cannot_open_fails_the_run_but_not_the_other_sources(project: Path) -> None:
    config = {
        "database_url": "sqlite:///cx.db",
        "sources": [
            {"name": "crm", "kind": "hubspot"},
            {"name": "demo", "kind": "demo", "options": {"customers": 300}},
        ],
    }
    (project / "cxloop.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "HUBSPOT_TOKEN"}
    result = subprocess.run(
        [CXLOOP, "ingest"], cwd=project, capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 2 and "HUBSPOT_TOKEN" in result.stderr, result.stderr
    assert "Retry" not in result.stdout + result.stderr  # a configuration error is not retried
    counts = store.row_counts(store.open_store(f"sqlite:///{project / 'cx.db'}"))
    assert counts["customer"] == 300 and counts["ticket"] > 0


def test_hypotheses_validate_and_list_commands(project: Path) -> None:
    valid = cxloop("hypotheses", "validate", cwd=project)
    assert valid.returncode == 0 and "4 hypotheses valid" in valid.stdout
    listed = cxloop("hypotheses", "list", cwd=project)
    assert "auto-route-tickets" in listed.stdout and "-40%" in listed.stdout


def test_help_loads_neither_prefect_nor_pandas() -> None:
    probe = "import sys, flows.cli; print(sorted({'prefect', 'pandas'} & set(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
    assert "demo" in cxloop("--help", cwd=REPO).stdout
