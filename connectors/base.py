"""The connector contract: a source has named streams; a stream reads pages resumably.

`Stream.read(cursor)` yields `Page`s, each carrying its raw records, the vendor ids of records
deleted at the vendor, and the cursor to save once they are committed; the loader commits all
three in one transaction, so a crash resumes at the last committed page with no gap and no
duplicate. A page also names the records it left out (`rejected`); the loader asks for the next
page only after committing one, so a stream reports a page's rejections when it is asked for
the next: once, however often a crash makes it read the file again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

log = logging.getLogger(__name__)

SHOWN_REJECTIONS = 5
# Rows per page of the sources read in bulk (files, SQL queries, the demo). The loader commits
# each page in one transaction, and a store's key index gets ids in any order: every commit
# rewrites the index pages it touched, so small pages made a large load cost more per row
# the larger the table grew.
BULK_PAGE_ROWS = 200_000


@dataclass(frozen=True)
class Rejection:
    """A record left out of the store: where it was (line, row number, response id) and why."""

    where: str
    reason: str


def log_rejections(rejected: Sequence[Rejection], where: str, what: str) -> None:
    """A warning naming `where`, how many `what` were rejected and the first reasons."""
    if not rejected:
        return
    shown = "; ".join(f"{r.where}: {r.reason}" for r in rejected[:SHOWN_REJECTIONS])
    more = len(rejected) - SHOWN_REJECTIONS
    log.warning(
        "%s: rejected %d %s, the rest loaded — %s%s",
        where,
        len(rejected),
        what,
        shown,
        f"; and {more} more" if more > 0 else "",
    )


@dataclass(frozen=True)
class Page:
    """Raw records of one page, the vendor ids (`source_id`) of the stream's records deleted at
    the vendor, the stream cursor to save after committing them, and the records of the page
    left out as invalid (`rejected`, counted in the run summary once the page commits).

    HTTP connectors give a list of vendor records (dicts); file and generated sources may
    give a DataFrame. `number` counts pages from 1 within one read, for error messages.
    """

    records: Sequence[Mapping[str, Any]] | Any
    cursor: dict = field(default_factory=dict)
    number: int = 1
    deleted: Sequence[str] = ()
    rejected: Sequence[Rejection] = ()


class Stream(Protocol):
    """One kind of record from a source, e.g. HubSpot tickets."""

    name: str
    table: str

    def read(self, cursor: dict) -> Iterator[Page]:
        """Pages after `cursor` (an empty dict means from the beginning)."""
        ...


class Source(Protocol):
    """A configured vendor account, file drop or database with its streams."""

    name: str
    kind: str

    def streams(self) -> list[Stream]:
        """The streams this source offers, in the order they should be loaded."""
        ...


DELETIONS = "deleted"
"""The key of a stream's cursor that holds the cursor of its deletions (`with_deletions`)."""


def with_deletions(
    read: Callable[[dict], Iterator[Page]], deletions: Stream, cursor: dict
) -> Iterator[Page]:
    """The pages `read` gives after `cursor`, then a page per page of `deletions`, whose records
    are `{"source_id"}` rows of records deleted at the vendor, as `Page.deleted`.

    `cursor[DELETIONS]` is the deletions' own cursor (empty: every deletion the vendor still
    lists). Every page's cursor holds both cursors, so a crash in either read resumes there.
    """
    deletions_cursor = cursor.get(DELETIONS, {})
    after = {key: value for key, value in cursor.items() if key != DELETIONS}
    for page in read(after):
        after = page.cursor
        yield replace(page, cursor=after | {DELETIONS: deletions_cursor})
    for page in deletions.read(deletions_cursor):
        ids = [row["source_id"] for row in page.records]
        yield Page((), after | {DELETIONS: page.cursor}, page.number, ids)
