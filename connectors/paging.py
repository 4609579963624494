"""Paging strategies of the simple vendors, one small class per style (as dlt's paginators and
Airbyte's paginator strategies): what to ask for next, from what the last page said."""

from __future__ import annotations

from dataclasses import dataclass

import httpx


@dataclass(frozen=True)
class OffsetPaging:
    """Pages by the offset of their first row, counted from `first`: 0 (GA4) or 1 (Metrica)."""

    first: int = 0

    def offset(self, at: int | None) -> int:
        """The offset to ask for: `at`, or the first row's when nothing was read yet."""
        return self.first if at is None else at

    def after(self, at: int | None, rows: int, total: int) -> int | None:
        """The offset of the page after one of `rows` rows at `at`; None once a page came
        empty or all `total` rows are read."""
        following = self.offset(at) + rows
        return None if rows == 0 or following - self.first >= total else following


@dataclass(frozen=True)
class NextUrlPaging:
    """Pages by a number in the next page's URL the answer links, in its query `param`."""

    param: str

    def after(self, url: str | None) -> int | None:
        """The number the next page's `url` asks for; None on the last page (no link)."""
        return int(httpx.URL(url).params[self.param]) if url else None
