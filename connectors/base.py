"""The connector contract: a source has named streams; a stream reads pages resumably.

`Stream.read(cursor)` yields `Page`s, each carrying its raw records and the cursor to save
once they are committed; the loader commits both in one transaction, so a crash resumes at
the last committed page with no gap and no duplicate.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Page:
    """Raw records of one page and the stream cursor to save after committing them.

    HTTP connectors give a list of vendor records (dicts); file and generated sources may
    give a DataFrame. `number` counts pages from 1 within one read, for error messages.
    """

    records: Sequence[Mapping[str, Any]] | Any
    cursor: dict = field(default_factory=dict)
    number: int = 1


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
