"""The messy files real companies export (tests/data/messy/), each loaded into SQLite and
PostgreSQL and compared with its hand-written outcome in expected.yaml: the rows stored, the
rows rejected with their line and reason, or the configuration error that stops the read."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from connectors.errors import ConfigError
from connectors.files import FilesSource
from flows.ingest import UntilStopped
from flows.sync import sync_stream
from tasks import store

MESSY = Path(__file__).parent / "data" / "messy"
CASES: dict[str, dict[str, Any]] = yaml.safe_load(
    (MESSY / "expected.yaml").read_text(encoding="utf-8")
)
COLUMNS = {
    "id": "source_id",
    "Дата": "submitted_at",
    "Клиент": "customer_id",
    "Оценка": "score",
    "Комментарий": "comment",
}


def messy_source(case: dict[str, Any]) -> FilesSource:
    entry = {
        "name": "messy",
        "path": case["file"],
        "table": "survey_response",
        "columns": COLUMNS,
        "constants": {"survey": "q-nps", "kind": "nps"},
    } | case.get("options", {})
    return FilesSource("drop", files=[entry], base_dir=str(MESSY), **case.get("source_options", {}))


def stored_rows(engine: Any) -> dict[str, list]:
    rows = store.read_frame(engine, store.SurveyResponse)
    return {
        row.source_id: [
            str(row.submitted_at),
            row.score,
            None if pd.isna(row.comment) else row.comment,
        ]
        for row in rows.itertuples()
    }


def test_the_corpus_covers_every_kind_of_mess_the_issue_names() -> None:
    files = {case["file"] for case in CASES.values()}
    assert files == {p.name for p in MESSY.glob("*.csv")}
    for phrase in ("encodings", "bom", "nul", "quotes", "extra_columns", "iso", "empty",
                   "header_only", "duplicate", "fractional", "three_date_conventions"):  # fmt: skip
        assert any(phrase in name for name in CASES), phrase


@pytest.mark.parametrize("name", list(CASES))
def test_messy_file_loads_as_expected(name: str, store_url: str) -> None:
    case = CASES[name]
    engine = store.open_store(store_url)
    stream = messy_source(case).streams()[0]
    counted = UntilStopped(stream, threading.Event())

    if "error" in case:
        with pytest.raises(ConfigError) as caught:
            sync_stream(engine, "drop", counted)
        assert case["error"] in str(caught.value)
        assert "set `date_format`" in str(caught.value)
        assert stored_rows(engine) == {}
        return
    written = sync_stream(engine, "drop", counted)

    assert stored_rows(engine) == case["stored"]
    assert written == len(case["stored"])
    expected = case.get("rejected", [])
    assert [r.where for r in stream.rejected] == [f"line {line}" for line, _ in expected]
    for rejection, (_, phrase) in zip(stream.rejected, expected, strict=True):
        assert phrase in rejection.reason, rejection
    assert counted.rejected == len(expected)  # what the run summary shows
    assert store.read_cursor(engine, "drop", "messy")["complete"] is True


def test_a_second_run_of_an_unchanged_messy_file_rejects_nothing_again(sqlite_url: str) -> None:
    engine = store.open_store(sqlite_url)
    case = CASES["stray_quotes"]
    first = UntilStopped(messy_source(case).streams()[0], threading.Event())
    sync_stream(engine, "drop", first)
    again = UntilStopped(messy_source(case).streams()[0], threading.Event())

    assert sync_stream(engine, "drop", again) == 0
    assert (first.rejected, again.rejected) == (2, 0)
