"""What every CRM source shares: the objects it reads, each with default fields that the
source's `field_map` and `value_map` override per object (`CrmOptions`), and the cursor of a
list read in passes by modification time (`PassCursor`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from connectors.canonical import FieldMap
from connectors.cursors import StoredCursor
from connectors.errors import ConfigError
from connectors.http_source import HttpSource


@dataclass(frozen=True)
class PassCursor(StoredCursor):
    """Where a list read in passes by modification time stands (amoCRM, Omnidesk, Usedesk):
    `since`, when the last pass began (less a margin for clocks), in the vendor's time format;
    within a pass also the next page, `page` (from 1) or, for Usedesk, `offset` (its page
    number, from 0), and `started`, when this pass began.

    Saved as the JSON `{"since"}` (`{}` before the first pass ends), or within a pass
    `{"since", "page", "started"}` (or `"offset"`), `since` left out on a first pass. Times
    as the vendor takes them: Unix seconds (amoCRM, Omnidesk), `YYYY-MM-DD HH:MM` (Usedesk).
    """

    since: int | str | None = None
    page: int | None = None
    offset: int | None = None
    started: int | str | None = None


@dataclass(kw_only=True)
class CrmOptions(HttpSource):
    """Options every CRM source takes besides the HTTP ones: the `objects` to read, of those the
    vendor's `FIELDS` gives default fields for, and per-object overrides of those fields."""

    FIELDS: ClassVar[Mapping[str, FieldMap]]
    objects: list[str]
    field_map: dict[str, dict[str, str]] = field(default_factory=dict)
    value_map: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)

    def check(self) -> None:
        named = {*self.objects, *self.field_map, *self.value_map}
        unknown = sorted(named - set(self.FIELDS))
        if unknown:
            raise ConfigError(
                f"sources.{self.name}.options: unknown {self.VENDOR} objects {unknown}; use "
                f"{list(self.FIELDS)}."
            )
        super().check()

    def object_fields(self, name: str) -> FieldMap:
        """Object `name`'s default fields with the source's `field_map` and `value_map` for it."""
        return self.FIELDS[name].override(self.field_map.get(name), self.value_map.get(name))
