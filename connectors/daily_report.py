"""What every daily web-analytics report shares (GA4, Yandex Metrica, Matomo): the date
window one sync reads (`Window`), the stream over it (`DailyReport`) and the options
(`DailyReportOptions`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, ClassVar

from connectors.canonical import FieldMap
from connectors.errors import ConfigError
from connectors.http import HttpClient, HttpStream
from connectors.http_source import HttpSource


@dataclass(frozen=True)
class ReportCursor:
    """Where a daily report's reads stand: `end`, the last date read, between syncs; while a
    sync pages, also its window's `start`, the `offset` of the next page (in rows, or in days
    for Matomo) and, within a Matomo step table, its `row`.

    Saved as the JSON `{"end"}` or `{"start", "end", "offset"}` (plus `"row"`), ISO dates.
    """

    end: date | None = None
    start: date | None = None
    offset: int | None = None
    row: int | None = None

    @classmethod
    def from_dict(cls, cursor: Mapping[str, Any]) -> ReportCursor:
        """The cursor a stored JSON object holds (`{}`: nothing read yet)."""
        day = {k: date.fromisoformat(cursor[k]) for k in ("end", "start") if k in cursor}
        number = {k: int(cursor[k]) for k in ("offset", "row") if k in cursor}
        return cls(**day, **number)

    def to_dict(self) -> dict:
        """The JSON object to store, without the keys that are unset."""
        saved = {"start": self.start, "end": self.end, "offset": self.offset, "row": self.row}
        return {
            key: value.isoformat() if isinstance(value, date) else value
            for key, value in saved.items()
            if value is not None
        }


@dataclass(frozen=True)
class Window:
    """The dates one sync of a daily report reads, inclusive; web analytics data arrives late,
    so later syncs re-read the last days."""

    start: date
    end: date

    @classmethod
    def after(cls, cursor: ReportCursor, first: date, lookback_days: int) -> Window:
        """The window a cursor leaves open, else from `first` (first sync) or the last
        `lookback_days` days before the previous end (later syncs), through today."""
        if cursor.offset is not None and cursor.start and cursor.end:
            return cls(cursor.start, cursor.end)
        start = first
        if cursor.end is not None:
            start = cursor.end - timedelta(days=lookback_days - 1)
        return cls(max(first, start), date.today())

    def cursor(self, offset: int | None, row: int | None = None) -> dict:
        """The cursor to save: the open window at `offset` (and `row`), or its end once read
        through."""
        if offset is None:
            return ReportCursor(self.end).to_dict()
        return ReportCursor(self.end, self.start, offset, row).to_dict()


class DailyReport(HttpStream):
    """A web-analytics report read over a date window (see `Window`); its records leave mapped
    by `fields` as canonical `web_metric` rows."""

    table = "web_metric"

    def __init__(
        self,
        source: str,
        client: HttpClient,
        fields: FieldMap,
        first_date: date,
        lookback_days: int,
        page_size: int,
    ) -> None:
        super().__init__(source, client)
        self.fields = fields
        self.first_date = first_date
        self.lookback_days = lookback_days
        self.page_size = page_size

    def position(self, cursor: dict) -> ReportCursor:
        """The stored `cursor`, typed."""
        return ReportCursor.from_dict(cursor)

    def window(self, cursor: dict) -> Window:
        """The dates the sync that saved `cursor` (or a new one) reads."""
        return Window.after(self.position(cursor), self.first_date, self.lookback_days)

    def transform(self, records: Sequence[Mapping[str, Any]], where: str) -> list[dict]:
        return self.fields.apply(records, self.table, where)


@dataclass(kw_only=True)
class DailyReportOptions(HttpSource):
    """Options every daily web-analytics report source takes, besides the HTTP ones.

    `start_date` (ISO) is where the first sync begins; later syncs re-read `lookback_days` days,
    as web data arrives late. `field_map` and `value_map` override the vendor's default fields.
    Report APIs are slow and quota-bound, so requests may take longer and retries wait longer
    than for other vendors.
    """

    FIELD_MAP_TABLE: ClassVar[str] = "web_metric"
    PAGE_LIMIT: ClassVar[int]
    KEEP_STREAMS = True

    start_date: str = ""
    lookback_days: int = 3
    page_size: int
    timeout: float = 60.0
    backoff_base: float = 2.0
    max_wait: float = 120.0
    field_map: dict[str, str] = field(default_factory=dict)
    value_map: dict[str, dict[str, str]] = field(default_factory=dict)

    def check(self) -> None:
        self.first_day()
        super().check()

    def check_page_size(self) -> None:
        if self.lookback_days < 1 or not 1 <= self.page_size <= self.PAGE_LIMIT:
            raise ConfigError(
                f"sources.{self.name}.options: lookback_days must be at least 1 and page_size "
                f"1–{self.PAGE_LIMIT:,}."
            )

    def first_day(self) -> date:
        """The first day the source reads; `ConfigError` when `start_date` is no date."""
        try:
            return date.fromisoformat(self.start_date)
        except ValueError:
            raise ConfigError(
                f"sources.{self.name}.options: start_date must be a date like 2026-01-01."
            ) from None
