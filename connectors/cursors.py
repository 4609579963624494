"""Stream cursors as typed values: each vendor's cursor is a frozen dataclass of JSON values
that `StoredCursor` reads from and writes to the JSON object the store keeps (as
`daily_report.ReportCursor` does by hand for its dates)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any, Self


class StoredCursor:
    """`from_dict` and `to_dict` for a frozen dataclass of JSON values: a key left out is a
    field left unset (None), and a tuple is stored as a JSON list."""

    @classmethod
    def from_dict(cls, cursor: Mapping[str, Any]) -> Self:
        """The cursor a stored JSON object holds (`{}`: nothing read yet); keys that are no
        field of it (another cursor's, nested in it) are left to their reader."""
        known = {f.name for f in fields(cls)}
        return cls(
            **{
                key: tuple(value) if isinstance(value, list) else value
                for key, value in cursor.items()
                if key in known
            }
        )

    def to_dict(self) -> dict:
        """The JSON object to store: the set fields in their order, tuples as lists."""
        saved = ((f.name, getattr(self, f.name)) for f in fields(self))
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in saved
            if value is not None
        }
