"""Every problem a user can fix stops `cxloop run`, `ingest` and `hypotheses validate` with exit
code 2 and a message naming file, line, field and fix, before the store is touched."""

from __future__ import annotations

import re
import shutil
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect
from sqlmodel import Session
from typer.testing import CliRunner, Result

from connectors import open_source
from connectors.errors import ConfigError
from flows.cli import app
from flows.config import example_text
from tasks import store
from tasks.hypotheses import stored_ranking
from tests.conftest import REPO

STORE = Path(".cxloop") / "cxloop.db"  # the example configuration's SQLite store
DEMO = "options: {customers: 20000, seed: 7}"
ROUTE = Path("hypotheses") / "auto-route-tickets.yaml"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The working directory: the example configuration and the shipped hypotheses."""
    shutil.copytree(REPO / "hypotheses", tmp_path / "hypotheses")
    (tmp_path / "cxloop.yaml").write_text(example_text(), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CXLOOP_DATABASE_URL", raising=False)
    monkeypatch.delenv("CXLOOP_HYPOTHESES_DIR", raising=False)
    return tmp_path


def cxloop(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def edit(path: Path, old: str, new: str) -> str:
    """`path` with `old` replaced by `new`; returns the new text."""
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new), encoding="utf-8")
    return text.replace(old, new)


def line(text: str, fragment: str) -> int:
    return next(i for i, row in enumerate(text.splitlines(), 1) if fragment in row)


def refused(result: Result, *fragments: str) -> str:
    """The error of a command that stopped with exit code 2, having written nothing."""
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
    assert not Path(".cxloop").exists() and not Path("reports").exists()
    return result.stderr


@pytest.mark.parametrize("command", ["run", "ingest"])
def test_a_misspelt_file_option_stops_before_the_store_exists(project: Path, command: str):
    files = (
        "name: crm\n    kind: files\n    options:\n      files:\n"
        "        - {path: t.csv, table: ticket, columns: {id: source_id}, delimeter: ';'}"
    )
    text = edit(project / "cxloop.yaml", f"name: demo\n    kind: demo\n    {DEMO}", files)
    at = f"cxloop.yaml:{line(text, 'options:')}: sources.crm.options.files[0]"
    refused(cxloop(command), at, "delimeter", "delimiter")


@pytest.mark.parametrize("command", ["run", "ingest"])
@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ("{customers: lots, seed: 7}", "sources.demo.options.customers: got 'lots'"),
        ("{customers: 50}", "sources.demo.options.customers: got 50; write a whole number"),
        ("{customer: 500}", "did you mean `customers`?"),
    ],
)
def test_a_bad_demo_option_stops_before_the_store_exists(project, command, options, expected):
    text = edit(project / "cxloop.yaml", DEMO, f"options: {options}")
    refused(cxloop(command), f"cxloop.yaml:{line(text, options)}: ", expected)


def test_a_bad_demo_option_is_a_config_error_so_the_flow_does_not_retry_it() -> None:
    with pytest.raises(ConfigError, match=r"sources\.demo\.options\.seed: got -1"):
        open_source("demo", "demo", {"seed": -1})


@pytest.mark.parametrize("command", ["run", "ingest"])
def test_a_key_given_twice_stops_before_either_store_exists(project: Path, command: str):
    text = edit(
        project / "cxloop.yaml",
        "database_url: sqlite:///.cxloop/cxloop.db",
        "database_url: sqlite:///.cxloop/cxloop.db\ndatabase_url: sqlite:///.cxloop/other.db",
    )
    first, second = line(text, "cxloop.db"), line(text, "other.db")
    refused(cxloop(command), f"cxloop.yaml:{second}: `database_url` is given twice, on lines "
            f"{first} and {second}")  # fmt: skip


@pytest.mark.parametrize("command", ["run", "ingest"])
@pytest.mark.parametrize(
    ("appended", "at", "expected"),
    [
        (
            "business_hours: {holidays: [2026-02-30]}",
            "2026-02-30",
            "`business_hours.holidays.0`: 2026-02-30 is not a calendar date",
        ),
        ("business_hours:\n  start: 19\n  end: 9", "end: 9", "`business_hours.end`: the working"),
    ],
)
def test_impossible_dates_and_hours_stop_before_the_store_exists(
    project, command, appended, at, expected
):
    config = project / "cxloop.yaml"
    config.write_text(example_text() + appended + "\n", encoding="utf-8")
    refused(cxloop(command), f"cxloop.yaml:{line(config.read_text(), at)}: {expected}")


@pytest.mark.parametrize("command", [("run",), ("ingest",), ("hypotheses", "validate")])
def test_a_hypothesis_key_given_twice_or_an_impossible_date_stop_the_command(project, command):
    text = edit(project / ROUTE, "status: running", "status: running\nstatus: draft")
    twice = f"auto-route-tickets.yaml:{line(text, 'status: draft')}: `status` is given twice"
    refused(cxloop(*command), twice)
    edit(project / ROUTE, "status: running\nstatus: draft", "status: running")
    text = edit(project / ROUTE, "end: 2026-10-31", "end: 2026-10-32")
    at = f"auto-route-tickets.yaml:{line(text, '2026-10-32')}: `schedule.pilot.end`: 2026-10-32"
    refused(cxloop(*command), at)


def test_a_missing_hypotheses_directory_is_a_clear_error_to_validate(project: Path) -> None:
    shutil.rmtree(project / "hypotheses")
    refused(cxloop("hypotheses", "validate"), "hypotheses: no such directory of hypotheses")


def test_a_cycle_without_hypotheses_directory_warns_and_goes_on(
    project: Path, capsys: pytest.CaptureFixture
) -> None:
    from flows.cli.loading import checked as _checked

    shutil.rmtree(project / "hypotheses")
    assert _checked(project / "cxloop.yaml").hypotheses_dir == Path("hypotheses")
    assert "no folder hypotheses, so no pilots are evaluated" in capsys.readouterr().err


def test_yml_hypotheses_are_validated_too(project: Path) -> None:
    (project / ROUTE).rename(project / ROUTE.with_suffix(".yml"))
    result = cxloop("hypotheses", "validate")
    assert result.exit_code == 0 and "4 hypotheses valid" in result.stdout, result.output


def rank(url: str, *ranked: tuple[str, str]) -> None:
    """Store pain points as `cxloop rank` does, one (period, key) each."""
    with Session(store.open_store(url)) as session:
        for number, (period, key) in enumerate(ranked, 1):
            session.add(store.PainPoint(
                period=period, key=key, kind=key.split(":")[0], title=key, rank=number,
                reach=100, reach_share=0.1, impact=5.0, impact_ci_low=2.0, impact_ci_high=8.0,
                confidence=0.5, effort=2.0, effort_is_default=True, score=1.0,
                computed_at=datetime(2026, 11, 1),
            ))  # fmt: skip
        session.commit()


def test_a_fresh_project_accepts_any_pain_point_with_a_warning_and_creates_no_store(project):
    edit(project / ROUTE, "pain_point: ticket:delivery", "pain_point: ticket:anything")
    result = cxloop("hypotheses", "validate")
    assert result.exit_code == 0 and "4 hypotheses valid" in result.stdout, result.output
    assert "no pain-point ranking yet" in result.stderr and "cxloop rank" in result.stderr
    assert not (project / ".cxloop").exists()


@pytest.mark.parametrize("command", [("run",), ("ingest",), ("hypotheses", "validate")])
def test_an_unranked_pain_point_stops_the_command_unless_declared_new(project, command):
    rank(
        f"sqlite:///{project / STORE}", ("2026-10", "ticket:delivery"), ("2026-10", "ticket:login")
    )
    text = edit(project / ROUTE, "pain_point: ticket:delivery", "pain_point: ticket:delivry")
    result = cxloop(*command)
    assert result.exit_code == 2, result.output
    where = f"auto-route-tickets.yaml:{line(text, 'pain_point:')}: `pain_point` 'ticket:delivry'"
    assert where in result.stderr and "did you mean `ticket:delivery`?" in result.stderr
    assert "new: true" in result.stderr
    engine = store.open_store(f"sqlite:///{project / STORE}")
    assert store.row_counts(engine)["customer"] == 0  # the run stopped before ingesting
    edit(project / ROUTE, "pain_point: ticket:delivry", "pain_point: ticket:delivry\nnew: true")
    valid = cxloop("hypotheses", "validate")
    assert valid.exit_code == 0 and "4 hypotheses valid" in valid.stdout, valid.output
    assert "warning" not in valid.stderr


def test_stored_ranking_reads_without_creating_the_store(store_url: str, tmp_path: Path) -> None:
    url = store.database_url(store_url)
    assert stored_ranking(url) is None
    assert not (tmp_path / "store.db").exists()
    if url.startswith("postgresql"):
        engine = create_engine(url)
        assert inspect(engine).get_table_names() == []  # no tables were created either
        engine.dispose()
    rank(url, ("2026-09", "ticket:returns"), ("2026-10", "ticket:delivery"))
    ranking = stored_ranking(url)
    assert ranking is not None and ranking.period == "2026-10"
    assert ranking.latest == {"ticket:delivery"}
    assert ranking.ever == {"ticket:delivery", "ticket:returns"}


def test_an_unreachable_store_is_a_one_line_error(project: Path, monkeypatch) -> None:
    monkeypatch.setenv("CXLOOP_DATABASE_URL", "postgresql://cx:hunter2@127.0.0.1:9/cx")
    result = cxloop("hypotheses", "validate")
    assert result.exit_code == 2 and "cannot read the ranking" in result.stderr, result.output
    assert "hunter2" not in result.output and re.search(r"\*\*\*@127\.0\.0\.1", result.stderr)
