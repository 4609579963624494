"""While a command runs Prefect flows: a line per stage on stderr, Prefect's log in a file.

A CX lead sees which stage runs and for how long, then the summary; the log lines Prefect
prints (about fifty per cycle) go to `LOG_FILE`, or to the terminal with `--verbose`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from flows.cli.terminal import errors

LOG_FILE = Path(".cxloop/cxloop.log")
STAGES = {
    "ingest": "Ingesting",
    "rank": "Ranking pain points",
    "experiments": "Evaluating pilots",
    "report": "Writing reports",
}
STARTING = "Starting Prefect"
# Besides the root logger, those Prefect's logging configuration gives a terminal handler.
TERMINAL_LOGGERS = ("uvicorn", "fastapi", "prefect._internal")


class StageProgress(logging.Handler):
    """A progress line per stage of the cycle, known by the flow a log record comes from, with
    the task running in it; a flow's or task's warning is printed above as a `warning:` line."""

    def __init__(self, progress: Progress) -> None:
        super().__init__(logging.INFO)
        self.progress = progress
        self.stage = STARTING
        self.line: TaskID = progress.add_task(STARTING, total=1)

    def emit(self, record: logging.LogRecord) -> None:
        flow = getattr(record, "flow_name", None)
        if flow is None:  # Prefect's own start-up and client lines: no stage of ours
            return
        if record.levelno == logging.WARNING:
            message = escape(record.getMessage())
            self.progress.console.print(
                f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True
            )
        stage = STAGES.get(flow, self.stage)
        if stage != self.stage:
            self.progress.update(self.line, description=self.stage, completed=1)
            self.stage, self.line = stage, self.progress.add_task(stage, total=1)
        task = getattr(record, "task_run_name", None)
        self.progress.update(self.line, description=f"{stage}: {task}" if task else stage)

    def close(self) -> None:
        self.progress.update(self.line, description=self.stage, completed=1)
        super().close()


def log_to_file(path: Path) -> None:
    """Prefect's terminal log handlers replaced, for the rest of the process, by one that
    appends the same lines to `path`."""
    import prefect  # noqa: F401  (importing it configures the handlers replaced here)

    path.parent.mkdir(parents=True, exist_ok=True)
    to_file = logging.FileHandler(path, encoding="utf-8")
    for logger in (logging.root, *map(logging.getLogger, TERMINAL_LOGGERS)):
        for handler in list(logger.handlers):
            if _prefects_terminal(handler):
                to_file.setFormatter(to_file.formatter or handler.formatter)
                logger.removeHandler(handler)
                logger.addHandler(to_file)


def _prefects_terminal(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and type(handler).__module__.startswith(
        "prefect."
    )


@contextmanager
def stage_progress(verbose: bool) -> Iterator[None]:
    """Stage lines on stderr while the block runs flows, their log in `LOG_FILE`; with
    `verbose`, Prefect's log lines on the terminal as Prefect prints them, and no stage lines."""
    if verbose:
        yield
        return
    log_to_file(LOG_FILE)
    columns = (
        SpinnerColumn(finished_text="[green]✓[/]"),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
    )
    root = logging.getLogger()
    # Off a terminal (CI, a redirected stderr) only the warnings are printed.
    with Progress(
        *columns, console=errors, transient=True, disable=not errors.is_terminal
    ) as progress:
        stages = StageProgress(progress)
        root.addHandler(stages)
        try:
            yield
        finally:
            root.removeHandler(stages)
            stages.close()
