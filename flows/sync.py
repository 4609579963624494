"""Sync a source into the store without Prefect: each stream from its saved cursor, page by page.

It sits in `flows` because it joins the connectors (which import nothing of ours) to the store.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd
from sqlalchemy.engine import Engine

from connectors import open_source
from connectors.base import Source, Stream
from connectors.errors import CxloopError
from tasks.mapping import to_canonical
from tasks.store import INGESTED, load_page, read_cursor

log = logging.getLogger(__name__)


def sync_stream(engine: Engine, source: str, stream: Stream) -> int:
    """Records written; each page's rows, the removal of the rows it says were deleted at the
    vendor, and the cursor after them commit in one transaction.

    A page without records still saves its cursor (e.g. a search window that only held
    records already stored). How many rows deletions removed is logged.
    """
    written = listed = removed = 0
    model = INGESTED[stream.table]
    for page in stream.read(read_cursor(engine, source, stream.name)):
        where = f"source {source}, stream {stream.name}, page {page.number}"
        rows = pd.DataFrame()
        if len(page.records):
            rows = to_canonical(stream.table, page.records, where)
        added, gone = load_page(engine, model, rows, source, stream.name, page.cursor, page.deleted)
        written += added
        removed += gone
        listed += len(page.deleted)
    if listed:
        log.info(
            "source %s, stream %s: %d records deleted at the vendor, %d rows removed from %s",
            source, stream.name, listed, removed, stream.table,
        )  # fmt: skip
    return written


def sync_source(engine: Engine, source: Source) -> dict[str, int]:
    """Records written per stream, in the order the source lists its streams."""
    return {stream.name: sync_stream(engine, source.name, stream) for stream in source.streams()}


@dataclass(frozen=True)
class Check:
    """Whether a configured source answers: its first page, or the error and how to fix it."""

    source: str
    kind: str
    ok: bool
    detail: str


def check_source(name: str, kind: str, options: dict) -> Check:
    """Connect, authenticate and read one page of the source's first stream; nothing is saved."""
    try:
        source = open_source(name, kind, options)
        stream = source.streams()[0]
        page = next(iter(stream.read({})), None)
    except CxloopError as exc:
        return Check(name, kind, False, str(exc))
    records = len(page.records) if page is not None else 0
    return Check(name, kind, True, f"{stream.name}: {records:,} records on the first page")
