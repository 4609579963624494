"""Paging strategies of the simple vendors, one small class per style (as dlt's paginators and
Airbyte's paginator strategies): what to ask for next, from what the last page said."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True)
class TokenPaging:
    """Pages by an opaque token the last answer names (HubSpot's `paging.next.after`, the last
    response's token that Typeform's `before` takes), sent back as the field `param`."""

    param: str

    def ask(self, token: str | None) -> dict[str, str]:
        """The field asking for the page after `token`; none for the first page (no token)."""
        return {} if token is None else {self.param: token}

    def after(self, named: Any, sent: str | None) -> str | None:
        """The token of the next page, as text: the one `named` by the answer to the request
        that `sent` its token; None on the last page (nothing named).

        `ValueError` when `named` repeats `sent`: the vendor would answer the same page again,
        and paging would never end.
        """
        if named is None:
            return None
        token = str(named)
        if token == sent:
            raise ValueError(
                f"the next page's `{self.param}` token {token!r} is the one this page was asked "
                "for with, so paging would not advance"
            )
        return token
