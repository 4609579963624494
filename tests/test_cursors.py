"""Typed stream cursors read the JSON a store holds and write it back unchanged, key for key
and in order, so a store written before they were typed resumes where it stood. The shapes are
the ones each stream saved before (between syncs and mid-pass)."""

from __future__ import annotations

import json

import pytest

from connectors.bitrix24 import EntityCursor
from connectors.crm import PassCursor
from connectors.cursors import StoredCursor
from connectors.hubspot import ArchivedCursor, ObjectCursor
from connectors.salesforce import SoqlCursor
from connectors.surveys import SurveyCursor

STORED: list[tuple[type[StoredCursor], dict]] = [
    (ObjectCursor, {"after": "MTAw", "started": 1772355600000}),
    (ObjectCursor, {"since": 1772355300000}),
    (ObjectCursor, {"since": 1772355300000, "skip": ["17", "4"]}),
    (
        ObjectCursor,
        {
            "since": 1772355300000,
            "skip": ["4"],
            "after": "200",
            "high": 1772355300000,
            "high_ids": ["4", "9"],
        },
    ),
    (ArchivedCursor, {"since": 0, "applied": {}}),
    (
        ArchivedCursor,
        {
            "since": 1772355000000,
            "applied": {"8": 1772355100000},
            "after": "MTAw",
            "next_since": 1772355300000,
            "next_applied": {"9": 1772355400000},
        },
    ),
    (SurveyCursor, {}),
    (SurveyCursor, {"since": "2026-03-01T09:29:00Z"}),
    (SurveyCursor, {"before": "4f772028a24648aa", "high": "2026-03-01T09:34:00Z"}),
    (SurveyCursor, {"since": "2026-03-01T09:29:00", "page": 2, "high": "2026-03-01T09:34:00Z"}),
    (SurveyCursor, {"since": "2026-03-01T09:29:00Z", "after": ["2026-03-01T09:31:00Z", "R_1"]}),
    (PassCursor, {"since": 1772355600}),
    (PassCursor, {"since": 1772355600, "page": 3, "started": 1772359200}),
    (PassCursor, {"offset": 1, "started": "2026-03-01 09:00"}),
    (SoqlCursor, {"since": "2026-03-01T09:00:00.000+0000", "after_id": "0035g00000AbCdEAAZ"}),
    (
        SoqlCursor,
        {
            "since": "2026-03-01T09:00:00.000+0000",
            "after_id": "0035g00000AbCdEAAZ",
            "next": "/services/data/v61.0/query/01gD0000002HU6KIAW-2000",
        },
    ),
    (
        EntityCursor,
        {"since": "2026-03-01T12:00:00+03:00", "skip": {"5": "2026-03-01T12:01:00+03:00"}},
    ),
    (
        EntityCursor,
        {
            "since": "2026-03-01T12:00:00+03:00",
            "skip": {},
            "after_id": 50,
            "started": "2026-03-02T12:00:00+03:00",
            "seen": {"7": "2026-03-02T12:05:00+03:00"},
            "pages": 3,
        },
    ),
]


@pytest.mark.parametrize(("kind", "saved"), STORED, ids=lambda v: getattr(v, "__name__", ""))
def test_stored_cursor_reads_and_writes_back_the_same_json(
    kind: type[StoredCursor], saved: dict
) -> None:
    text = json.dumps(saved)
    assert json.dumps(kind.from_dict(json.loads(text)).to_dict()) == text


def test_fields_read_typed_and_keys_of_other_cursors_left_to_them() -> None:
    cursor = ObjectCursor.from_dict({"since": 5, "skip": ["1"], "deleted": {"since": 0}})
    assert cursor == ObjectCursor(since=5, skip=("1",))
    assert cursor.to_dict() == {"since": 5, "skip": ["1"]}
    assert SurveyCursor.from_dict({"after": ["d", "R_1"]}).after == ("d", "R_1")
    assert ArchivedCursor.from_dict({}).applied == {}
