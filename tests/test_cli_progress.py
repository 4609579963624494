"""What the terminal shows while a command works: a line per stage, warnings above it, and
`sources check` reading a page of every stream."""

from __future__ import annotations

import logging
from contextlib import chdir
from pathlib import Path

import yaml
from rich.console import Console
from rich.progress import Progress
from typer.testing import CliRunner

from connectors import open_source
from flows.cli import app
from flows.cli.progress import STARTING, StageProgress
from flows.config import load_config
from flows.sync import sync_source
from tests.test_cli import cxloop
from tests.test_init_project import init, uncommented_files_source, write_csvs


def flow_record(
    flow: str, message: str, level: int = logging.INFO, task: str = ""
) -> logging.LogRecord:
    """A log record as Prefect's run loggers make it: the flow's name, a task's run name."""
    extra = {"flow_name": flow} | ({"task_run_name": task} if task else {})
    logger = logging.getLogger("prefect.task_runs" if task else "prefect.flow_runs")
    return logger.makeRecord(logger.name, level, __file__, 1, message, (), None, extra=extra)


def test_a_line_per_stage_names_its_running_task_and_warnings_print_above() -> None:
    terminal = Console(width=80, record=True)
    progress = Progress(console=terminal)
    stages = StageProgress(progress)
    stages.emit(flow_record("improvement-cycle", "Beginning flow run"))
    stages.emit(flow_record("ingest", "Finished", task="sync demo/tickets"))
    lines = {t.description: t.finished for t in progress.tasks}
    assert lines == {STARTING: True, "Ingesting: sync demo/tickets": False}
    stages.emit(flow_record("rank", "alert: CSAT top-2 fell", logging.WARNING))
    stages.emit(logging.makeLogRecord({"msg": "Starting temporary server", "levelno": 30}))
    stages.close()
    lines = {t.description: t.finished for t in progress.tasks}
    assert lines == {STARTING: True, "Ingesting": True, "Ranking pain points": True}
    printed = terminal.export_text()
    assert "warning: alert: CSAT top-2 fell" in printed
    assert "temporary server" not in printed  # Prefect's own lines belong to no stage


def test_sources_check_reads_a_page_of_every_stream_and_names_the_one_that_fails(
    tmp_path: Path,
) -> None:
    project = init(tmp_path / "acme")
    config = yaml.safe_load((project / "cxloop.yaml").read_text(encoding="utf-8"))
    source = uncommented_files_source((project / "cxloop.yaml").read_text(encoding="utf-8"))
    config["sources"] = [source]
    (project / "cxloop.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    write_csvs(project, source)
    *present, last = source["options"]["files"]
    (project / source["options"]["base_dir"] / last["path"]).unlink()
    result = cxloop("sources", "check", cwd=project)
    assert result.returncode == 1, result.stdout + result.stderr
    rows = [line.split("│")[1:-1] for line in result.stdout.splitlines() if line.startswith("│")]
    cells = {cell[2].strip(): cell for cell in rows if cell[2].strip()}
    assert set(cells) == {e["name"] for e in source["options"]["files"]}
    for entry in present:
        status, detail = (c.strip() for c in cells[entry["name"]][3:])
        assert (status, detail) == ("OK", "3 records on the first page")
    status, detail = (c.strip() for c in cells[last["name"]][3:])
    assert status == "failed" and "no file at" in detail


def test_themes_on_too_few_comments_say_how_many_there_are_and_how_many_are_needed(
    tmp_path: Path,
) -> None:
    project = init(tmp_path / "acme")
    config = yaml.safe_load((project / "cxloop.yaml").read_text(encoding="utf-8"))
    source = uncommented_files_source((project / "cxloop.yaml").read_text(encoding="utf-8"))
    config["sources"] = [source]
    (project / "cxloop.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    write_csvs(project, source)  # three comments, "v0" to "v2": no word two of them share
    with chdir(project):
        sync_source(load_config(Path("cxloop.yaml")).store(), open_source(**source))
        result = CliRunner().invoke(app, ["themes"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    said = " ".join(result.stdout.split())  # however wide the console wraps it
    assert "No themes: of 3 comments, 3 distinct ones have no topic" in said
    assert "a theme needs at least 2 of those sharing a word" in said
    assert "Untagged comment themes" not in result.stdout
