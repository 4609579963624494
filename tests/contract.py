"""What every HTTP vendor's contract case declares, and the checks run on it.

A `VendorCase` holds only what differs between vendors, in the spirit of the Singer SDK's
`testing/factory.py`: how to start its fake and put its secret in the environment, the source's
options, what the store should hold after a full sync, which request reads the first stream's
second page, the vendor's error shape and how to make it refuse the credentials.
`tests/test_vendor_contract.py` runs the same checks on every case.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from sqlalchemy.engine import Engine

from connectors import open_source
from connectors.base import Page, Source, Stream
from flows.sync import sync_source, sync_stream
from tasks import store
from tests.fakes.loopback import Fault, LoopbackServer, PlannedAnswers

Fake = LoopbackServer | PlannedAnswers[Any]
FAST = {"backoff_base": 0.01, "max_wait": 5.0, "timeout": 2.0, "rate_limit": [1000, 1]}
"""Retries and pacing a test need not wait for."""
NAME = "src"
"""The source's name in every contract case."""


@dataclass(frozen=True)
class SecondPage:
    """The request reading the first stream's second page: the one after `skip` requests
    whose path contains `path`; errors name it `where`, and `rows` rows of `table` are stored
    before it. `truncated` is what the error says of a page cut short."""

    path: str
    skip: int
    where: str
    table: str
    rows: int
    truncated: str = "not JSON"


@dataclass(frozen=True)
class CustomProperty:
    """A custom property the fake serves on the records of the source's customer stream: the
    `field_map` object it belongs to, its vendor field as the connector flattens it, and its
    value per customer source id (customers without it left out)."""

    object: str
    field: str
    values: Callable[[Any], dict[str, str]]


@dataclass(frozen=True)
class VendorCase:
    """One HTTP vendor as the contract suite sees it.

    `start` yields the seeded fake, running, with the secret in the environment; `options`
    are the source's options against it; `expected` maps each canonical table to the source ids
    a full sync stores (or to their number, where ids are not the fake's own); `secrets` are
    the values that must never be shown; `error` is the vendor's error answer (status, body)
    carrying a message; `refuse` puts refused credentials in the environment and returns the
    refused secret, which the error names the fix for with `fix`. `custom` is a custom property
    of its customer stream, for vendors that have one.
    """

    kind: str
    vendor: str
    start: Callable[[pytest.MonkeyPatch, HTTPServer], AbstractContextManager[Any]]
    options: Callable[[Any], dict[str, Any]]
    expected: Callable[[Any], dict[str, set[str] | int]]
    second: SecondPage
    secrets: Callable[[Any], tuple[str, ...]]
    error: Callable[[str], tuple[int, str]]
    refuse: Callable[[pytest.MonkeyPatch, Any], str]
    fix: str
    custom: CustomProperty | None = None

    def source(self, fake: Fake, **extra: Any) -> Source:
        """The vendor's source against `fake`, built as a configuration builds it."""
        return open_source(NAME, self.kind, self.options(fake) | extra)

    def sync(self, engine: Engine, fake: Fake, **extra: Any) -> dict[str, int]:
        """Records written per stream by one sync of the source into `engine`."""
        return sync_source(engine, self.source(fake, **extra))


def served(fake: PlannedAnswers[Any]) -> Callable[[HTTPServer], AbstractContextManager[Any]]:
    """A `start` step serving a pytest-httpserver fake."""

    @contextmanager
    def serve(httpserver: HTTPServer) -> Iterator[Any]:
        yield fake.serve(httpserver)

    return serve


@contextmanager
def running(fake: LoopbackServer) -> Iterator[Any]:
    """A `start` step running a fake on its own server."""
    with fake.running():
        yield fake


def stored_ids(engine: Engine, table: str) -> list[str]:
    """The source ids stored in canonical `table`, as stored (duplicates kept)."""
    return store.read_frame(engine, store.INGESTED[table])["source_id"].tolist()


def assert_store_equals_source(engine: Engine, case: VendorCase, fake: Fake) -> None:
    """Every table holds each expected record once, and nothing else."""
    for table, expected in case.expected(fake).items():
        ids = stored_ids(engine, table)
        assert len(ids) == len(set(ids)), f"{case.kind}: duplicate rows in {table}"
        if isinstance(expected, int):
            assert len(ids) == expected, f"{case.kind}: {table} holds {len(ids)} rows"
        else:
            assert set(ids) == expected, f"{case.kind}: {table} differs from the vendor's"


def stored_dimension(engine: Engine, name: str) -> dict[str, str]:
    """Declared dimension `name` per customer source id, as the store reads it back, for the
    customers that have it."""
    dimensions = store.read_dimensions(engine)
    if name not in dimensions.columns:
        return {}
    held = dimensions.dropna(subset=[name])
    return dict(zip(held["customer_id"], held[name], strict=True))


def requests_to(fake: Fake, path: str) -> int:
    """How many requests `fake` has answered whose path contains `path`."""
    return sum(path in seen for seen in fake.paths)


def error_fault(case: VendorCase, message: str, status: int | None = None, **where: Any) -> Fault:
    """A fault answering the vendor's error carrying `message`, with `status` instead of the
    error's own if given."""
    own, body = case.error(message)
    return Fault(case.second.path, status or own, body, **where)


class CrashesAfter:
    """`stream`, whose process dies once `pages` pages have been handed over."""

    def __init__(self, stream: Stream, pages: int) -> None:
        self.stream, self.pages = stream, pages
        self.name, self.table = stream.name, stream.table

    def read(self, cursor: dict) -> Iterator[Page]:
        for page in self.stream.read(cursor):
            yield page
            if page.number == self.pages:
                raise Crash(f"killed after page {page.number}")


class Crash(Exception):
    """The process syncing was killed."""


def crash_mid_sync(engine: Engine, case: VendorCase, fake: Fake) -> str:
    """The first stream's name, once a sync of it died after committing its first page."""
    stream = case.source(fake).streams()[0]
    with pytest.raises(Crash):
        sync_stream(engine, NAME, CrashesAfter(stream, 1))
    return stream.name


def pages_of_first_stream(engine: Engine, case: VendorCase, fake: Fake) -> int:
    """Pages of the first stream that a sync of every stream into `engine` read."""
    first, *others = case.source(fake).streams()
    counted = Counted(first)
    for stream in (counted, *others):
        sync_stream(engine, NAME, stream)
    return counted.pages


class Counted:
    """`stream`, counting the pages it hands over in `pages`."""

    def __init__(self, stream: Stream) -> None:
        self.stream, self.pages = stream, 0
        self.name, self.table = stream.name, stream.table

    def read(self, cursor: dict) -> Iterator[Page]:
        for page in self.stream.read(cursor):
            self.pages += 1
            yield page
