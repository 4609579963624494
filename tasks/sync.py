"""Sync a source into the store without Prefect: each stream from its saved cursor, page by page."""

from __future__ import annotations

import pandas as pd
from sqlalchemy.engine import Engine

from connectors.base import Source, Stream
from tasks.mapping import to_canonical
from tasks.store import INGESTED, load_page, read_cursor


def sync_stream(engine: Engine, source: str, stream: Stream) -> int:
    """Records written; each page's rows and the cursor after them commit in one transaction.

    A page without records still saves its cursor (e.g. a search window that only held
    records already stored).
    """
    written = 0
    for page in stream.read(read_cursor(engine, source, stream.name)):
        where = f"source {source}, stream {stream.name}, page {page.number}"
        rows = pd.DataFrame()
        if len(page.records):
            rows = to_canonical(stream.table, page.records, where)
        written += load_page(engine, INGESTED[stream.table], rows, source, stream.name, page.cursor)
    return written


def sync_source(engine: Engine, source: Source) -> dict[str, int]:
    """Records written per stream, in the order the source lists its streams."""
    return {stream.name: sync_stream(engine, source.name, stream) for stream in source.streams()}
