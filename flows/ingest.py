"""Ingest flow: every configured source, stream by stream, page by page into the store.

Streams of all sources run concurrently as tasks (threads: the work is waiting on vendors and
the database). Each stream task carries the tag `source:<name>`, so a Prefect concurrency
limit on that tag caps how many streams hit one vendor at once across all flow runs
(`prefect concurrency-limit create source:hubspot 1`; see docs/orchestration.md).

A crash loses at most the page in flight: `sync_stream` commits each page's rows with the
cursor after them, and the next run resumes from the saved cursors. Rows a page rejects count
once that page has committed, so a rerun after a crash counts each rejection once. On
cancellation (SIGTERM from the worker or `serve`) the streams stop at the next page boundary,
so the run ends within a page instead of finishing every stream while the process is already
being stopped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prefect import flow, get_run_logger, tags, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun
from prefect.futures import wait
from prefect.tasks import Task

from connectors import open_source
from connectors.base import Page, Stream
from connectors.errors import ConfigError, SourceError
from flows.config import DEFAULT_CONFIG, Config, SourceConfig, given_or_loaded
from flows.names import flow_run_name
from flows.sync import sync_stream
from tasks.store import open_store, read_cursor

# Streams hold live connectors and page through DataFrames: nothing to cache or persist.
io_task = task(cache_policy=NO_CACHE, persist_result=False)


def _worth_retrying(task: Task, run: TaskRun, state: State) -> bool:
    """A source whose configuration is wrong fails at once: waiting will not fix it."""
    return not isinstance(state.result(raise_on_failure=False), ConfigError)


@io_task(
    task_run_name="open {source.name}",
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_condition_fn=_worth_retrying,
)
def open_streams(source: SourceConfig) -> list[Stream]:
    """The source's streams, in its load order (for the demo this generates the company)."""
    return open_source(source.name, source.kind, source.options).streams()


@dataclass(frozen=True)
class Synced:
    """One stream's sync: records written and rows rejected, in the pages that committed."""

    written: int
    rejected: int


class UntilStopped:
    """`stream`, ending at the next page boundary once `stop` is set, counting the rows rejected
    in the pages that committed (the loader asks for the next page only after committing one)."""

    def __init__(self, stream: Stream, stop: threading.Event) -> None:
        self.name, self.table = stream.name, stream.table
        self.stream, self.stop, self.stopped = stream, stop, False
        self.rejected = 0

    def read(self, cursor: dict) -> Iterator[Page]:
        for page in self.stream.read(cursor):
            if self.stop.is_set():
                self.stopped = True
                return
            yield page
            self.rejected += len(page.rejected)


@io_task(
    task_run_name="sync {source}/{stream.name}",
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_condition_fn=_worth_retrying,
    tags=["ingest"],
)
def sync_one(url: str, source: str, stream: Stream, stop: threading.Event) -> Synced:
    """Records written and rows rejected; a retry resumes from the cursor the failed attempt
    committed last (and counts from there)."""
    logger = get_run_logger()
    engine = open_store(url)
    before = read_cursor(engine, source, stream.name)
    started = time.monotonic()
    stoppable = UntilStopped(stream, stop)
    written = sync_stream(engine, source, stoppable)
    (logger.warning if stoppable.stopped else logger.info)(
        "%s/%s → %s: %s new or changed records, %s rows rejected in %.1f s (cursor %s → %s)%s",
        source,
        stream.name,
        stream.table,
        f"{written:,}",
        f"{stoppable.rejected:,}",
        time.monotonic() - started,
        _shown(before) if before else "start",
        _shown(read_cursor(engine, source, stream.name)),
        "; stopped early, the flow run is ending" if stoppable.stopped else "",
    )
    return Synced(written, stoppable.rejected)


def _shown(cursor: dict, chars: int = 160) -> str:
    """A cursor for the log, cut short (a deletions cursor can list many ids)."""
    text = str(cursor)
    return text if len(text) <= chars else text[: chars - 1] + "…"


@flow(name="ingest", flow_run_name=flow_run_name("ingest"))
def ingest(
    config_path: Path = DEFAULT_CONFIG, config: Config | None = None
) -> dict[str, dict[str, Synced]]:
    """Records written and rows rejected per source and stream, from `config` if given (the
    cycle's, already loaded), else from the file at `config_path`.

    A source or stream that fails does not stop the others: they all finish, then the run
    fails with the error (one), or with every error (several).
    """
    logger = get_run_logger()
    config = given_or_loaded(config_path, config)
    url = config.store_url
    config.store()  # create the tables once, before the stream tasks race to
    opened = {source.name: open_streams.submit(source) for source in config.sources}
    futures, failed = {}, {}
    stop = threading.Event()
    try:
        for name, streams in opened.items():
            try:
                found = streams.result()
            except Exception as exc:
                failed[name] = exc
                continue
            with tags(f"source:{name}"):
                for stream in found:
                    futures[name, stream.name] = sync_one.submit(url, name, stream, stop)
        wait(list(futures.values()))
    except BaseException:
        # Cancellation arrives here as a signal in this thread; the stream tasks run on in
        # theirs, so tell them to stop after the page they are committing.
        stop.set()
        raise
    written: dict[str, dict[str, Synced]] = {name: {} for name in opened if name not in failed}
    for (name, stream), future in futures.items():
        try:
            written[name][stream] = future.result()
        except Exception as exc:
            failed[f"{name}/{stream}"] = exc
    synced = [one for streams in written.values() for one in streams.values()]
    logger.info(
        "ingested %s records, rejected %s rows: %d streams of %d source(s)",
        f"{sum(s.written for s in synced):,}",
        f"{sum(s.rejected for s in synced):,}",
        len(futures),
        len(opened),
    )
    if len(failed) == 1:
        raise next(iter(failed.values()))
    if failed:
        raise SourceError(f"{len(failed)} sources or streams failed: " + "; ".join(
            f"{where}: {exc}" for where, exc in failed.items()
        ))  # fmt: skip
    return written
