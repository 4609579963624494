"""The canonical tables every source maps into, and how a vendor's fields become their columns.

This module imports nothing heavy: connectors use it without loading pandas or SQLAlchemy,
and the store's SQLModel tables (`tasks.store`) are checked against it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

log = logging.getLogger(__name__)

# C0 and C1 control characters (and DEL) but tab, newline and carriage return: PostgreSQL
# refuses NUL in text and SQLite readers cut at it, so both stores get text without them.
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# What a declared customer dimension (`dimensions:` in the config) may be called.
DIMENSION_NAME = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True)
class Table:
    """One canonical table: each column's Python type, and the columns a record must have.

    Every table also has `id` (the store's key), `source` (the configured source's name,
    set by the sync) and `source_id` (the record's id at its source).
    """

    columns: Mapping[str, type]
    required: tuple[str, ...]

    @property
    def targets(self) -> set[str]:
        """The columns a field map may fill: all but the bookkeeping ones, plus `email`,
        which becomes `email_hash`."""
        names = set(self.columns) - {"id", "source", "attributes"}
        return names | ({"email"} if "email_hash" in names else set())


def _table(columns: Mapping[str, type], required: tuple[str, ...]) -> Table:
    return Table({"id": int, "source": str, "source_id": str, **columns}, ("source_id", *required))


TABLES: dict[str, Table] = {
    "customer": _table(
        {
            "segment": str,
            "region": str,
            "channel": str,
            "language": str,
            "created_at": datetime,
            "email_hash": str,
            "attributes": dict,
        },
        (),
    ),
    "ticket": _table(
        {
            "customer_id": str,
            "email_hash": str,
            "channel": str,
            "topic": str,
            "status": str,
            "created_at": datetime,
            "first_response_at": datetime,
            "resolved_at": datetime,
            "reopened": bool,
            "escalated": bool,
            "text": str,
            "agent": str,
            "team": str,
        },
        ("created_at",),
    ),
    "survey_response": _table(
        {
            "customer_id": str,
            "email_hash": str,
            "ticket_id": str,
            "survey": str,
            "kind": str,
            "score": float,
            "comment": str,
            "submitted_at": datetime,
            "channel": str,
        },
        ("survey", "kind", "score", "submitted_at"),
    ),
    "web_metric": _table(
        {
            "date": date,
            "metric": str,
            "value": float,
            "segment": str,
            "device": str,
            "step": str,
            "traffic_source": str,
        },
        ("date", "metric", "value"),
    ),
    "orders": _table(
        {"customer_id": str, "amount": float, "created_at": datetime, "status": str},
        ("amount", "created_at"),
    ),
}


@dataclass(frozen=True)
class FieldMap:
    """How one vendor stream's flat fields become canonical columns.

    `fields` maps a vendor field to a column; `values` maps a column's vendor values to
    canonical ones (values not listed pass through). Config overrides both (`override`).
    """

    fields: Mapping[str, str]
    values: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def override(
        self, fields: Mapping[str, str] | None, values: Mapping[str, Mapping[str, str]] | None
    ) -> FieldMap:
        """This map with config overrides; a field mapped to a column replaces that column's
        default field, and value maps are merged per column."""
        fields, values = fields or {}, values or {}
        taken = set(fields.values())
        kept = {name: column for name, column in self.fields.items() if column not in taken}
        merged = {column: dict(mapping) for column, mapping in self.values.items()}
        for column, mapping in values.items():
            merged.setdefault(column, {}).update(mapping)
        return FieldMap({**kept, **fields}, merged)

    def apply(self, records: Iterable[Mapping[str, Any]], table: str, where: str) -> list[dict]:
        """Canonical records for `table`: renamed, value-mapped, typed by the table's columns
        (timestamps naive UTC, amounts float). Records without a value the table requires are
        dropped with a warning naming `where`."""
        types = TABLES[table].columns
        required = list(TABLES[table].required)
        out, dropped = [], 0
        for record in records:
            row = {}
            for name, column in self.fields.items():
                value = record.get(name)
                value = self.values.get(column, {}).get(value, value)
                row[column] = _typed(value, types.get(column, str))
            if any(row.get(name) is None for name in required):
                dropped += 1
                continue
            out.append(row)
        if dropped:
            log.warning(
                "%s: %d records lack one of %s and were not stored", where, dropped, required
            )
        return out


def _typed(value: Any, kind: type) -> Any:
    if value is None or value == "":
        return None
    if kind is datetime:
        return utc_naive(value)
    if kind is float:
        return float(value)
    if kind is bool:
        return str(value).lower() in ("true", "1", "yes")
    return value if kind is dict else str(value)


def utc_naive(value: str | int | float | datetime) -> datetime:
    """A naive UTC datetime from ISO 8601 text (any offset, `Z`) or epoch milliseconds."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, int | float) or str(value).isdigit():
        parsed = datetime.fromtimestamp(int(value) / 1000, UTC)
    else:
        parsed = datetime.fromisoformat(str(value))
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed
