"""Vendor records into canonical rows: column names, identity hashing, timestamps in UTC."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from tasks.errors import SourceError
from tasks.store import INGESTED, timestamp_columns

log = logging.getLogger(__name__)


def email_hash(emails: pd.Series) -> pd.Series:
    """SHA-256 of each trimmed, lower-cased e-mail: the join key across sources."""
    normalised = emails.str.strip().str.lower()
    return normalised.map(lambda e: hashlib.sha256(e.encode()).hexdigest(), na_action="ignore")


def to_canonical(
    table: str, records: Sequence[Mapping[str, Any]] | pd.DataFrame, where: str
) -> pd.DataFrame:
    """Records already named canonically into a frame for `table`, ready to upsert.

    Raw e-mails become `email_hash` and are dropped; timestamps become naive UTC. `where`
    (source/stream/page) names the page in the error if a required column is missing.
    """
    frame = pd.DataFrame(records)
    model = INGESTED[table]
    if "email" in frame.columns:
        frame["email_hash"] = email_hash(frame.pop("email"))
    required = [
        name for name, info in model.model_fields.items()
        if info.is_required() and name not in ("source",)
    ]  # fmt: skip
    missing = [name for name in required if name not in frame.columns]
    if missing:
        raise SourceError(
            f"{where}: records lack {', '.join(missing)}; nothing of this page was saved."
        )
    for name in timestamp_columns(model):
        if name in frame.columns:
            frame[name] = pd.to_datetime(frame[name], utc=True).dt.tz_localize(None)
    return frame


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
        types = {c.name: c.type.python_type for c in INGESTED[table].__table__.columns}
        required = [
            name for name, info in INGESTED[table].model_fields.items()
            if info.is_required() and name != "source"
        ]  # fmt: skip
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
