"""File source: CSV encodings and delimiters, Parquet, Excel, rejected rows with their row
numbers, unchanged files skipped, resuming after a crash mid-file."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy.engine import Engine

from connectors.base import Page
from connectors.files import FilesSource, Rejection, csv_delimiter, csv_encoding
from tasks import store
from tasks.errors import ConfigError
from tasks.sync import sync_source, sync_stream

SURVEY_HEADER = ["Дата", "Клиент", "Оценка", "Комментарий"]
SURVEY_ROWS = [
    ["05.01.2026 10:00", "c1", "9", "Всё отлично"],
    ["06.01.2026 11:30", "c2", "3", "Курьер опоздал; заказ помят"],
    ["07.01.2026 09:15", "c3", "10", ""],
    ["08.01.2026 18:00", "c4", "7", "Нормально"],
    ["09.01.2026 12:00", "c5", "8,0", "Хорошо"],
]
SURVEY_COLUMNS = {
    "Дата": "submitted_at",
    "Клиент": "customer_id",
    "Оценка": "score",
    "Комментарий": "comment",
}


def write_csv(
    path: Path, header: list[str], rows: list[list[str]], encoding: str, sep: str
) -> Path:
    frame = pd.DataFrame(rows, columns=header)
    frame.to_csv(path, sep=sep, index=False, encoding=encoding)
    return path


def survey_source(path: Path, **options: Any) -> FilesSource:
    entry = {
        "name": "nps",
        "path": str(path),
        "table": "survey_response",
        "columns": SURVEY_COLUMNS,
        "constants": {"survey": "q1-nps", "kind": "nps"},
        "dayfirst": True,
    }
    return FilesSource("drop", files=[entry], **options)


def stored(engine: Engine) -> pd.DataFrame:
    rows = store.read_frame(engine, store.SurveyResponse)
    return rows.set_index("customer_id").sort_index()


@pytest.mark.parametrize(
    ("encoding", "sep"), [("cp1251", ";"), ("utf-8-sig", ","), ("utf-8", "\t")]
)
def test_encoding_and_delimiter_are_detected(tmp_path: Path, encoding: str, sep: str) -> None:
    path = write_csv(tmp_path / "nps.csv", SURVEY_HEADER, SURVEY_ROWS, encoding, sep)
    found = csv_encoding(path)
    assert found == ("cp1251" if encoding == "cp1251" else "utf-8-sig")
    assert csv_delimiter(path, found) == sep

    pages = list(survey_source(path).streams()[0].read({}))
    rows = pd.concat([p.records for p in pages])
    assert rows["comment"].tolist()[:2] == ["Всё отлично", "Курьер опоздал; заказ помят"]
    assert rows["score"].tolist() == [9.0, 3.0, 10.0, 7.0, 8.0]


def test_cp1251_semicolon_csv_loads_into_the_store(store_url: str, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "опрос.csv", SURVEY_HEADER, SURVEY_ROWS, "cp1251", ";")
    engine = store.open_store(store_url)

    assert sync_source(engine, survey_source(path)) == {"nps": 5}

    rows = stored(engine)
    assert rows.loc["c2", ["survey", "kind", "score", "comment"]].tolist() == [
        "q1-nps", "nps", 3.0, "Курьер опоздал; заказ помят",
    ]  # fmt: skip
    assert rows.loc["c2", "submitted_at"] == pd.Timestamp("2026-01-06 11:30")
    assert pd.isna(rows.loc["c3", "comment"])
    assert set(rows["source_id"]) == {f"nps:{n}" for n in range(2, 7)}


def test_rows_with_bad_scores_are_rejected_with_row_number_and_reason(
    store_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = [
        *SURVEY_ROWS[:2],
        ["07.01.2026 09:15", "c3", "десять", "?"],
        ["07.01.2026 09:16", "c6", "11", "too high"],
        ["32.01.2026 09:17", "c7", "5", "bad date"],
        ["07.01.2026 09:18", "c8", "", "no score"],
        *SURVEY_ROWS[3:],
    ]
    path = write_csv(tmp_path / "nps.csv", SURVEY_HEADER, bad, "cp1251", ";")
    engine = store.open_store(store_url)
    source = survey_source(path)

    assert sync_source(engine, source) == {"nps": 4}

    assert source.streams()[0].rejected == [
        Rejection("row 4", "column Оценка = 'десять' is not a number"),
        Rejection("row 5", "nps score 11 is outside 0–10"),
        Rejection("row 6", "column Дата = '32.01.2026 09:17' is not a timestamp"),
        Rejection("row 7", "score is empty"),
    ]
    assert sorted(stored(engine).index) == ["c1", "c2", "c4", "c5"]
    assert "source drop, stream nps, page 1: rejected 4 rows, the rest loaded" in caplog.text
    assert "row 4: column Оценка = 'десять' is not a number" in caplog.text


def test_unchanged_file_is_not_read_again_and_an_appended_one_is(
    store_url: str, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "nps.csv", SURVEY_HEADER, SURVEY_ROWS[:3], "utf-8", ",")
    engine = store.open_store(store_url)
    assert sync_source(engine, survey_source(path, page_rows=2)) == {"nps": 3}
    cursor = store.read_cursor(engine, "drop", "nps")
    assert cursor["complete"] and cursor["offset"] == 3

    assert list(survey_source(path).streams()[0].read(cursor)) == []
    assert sync_source(engine, survey_source(path)) == {"nps": 0}

    write_csv(path, SURVEY_HEADER, SURVEY_ROWS, "utf-8", ",")
    assert sync_source(engine, survey_source(path, page_rows=2)) == {"nps": 5}
    assert len(stored(engine)) == 5
    assert store.read_cursor(engine, "drop", "nps")["fingerprint"] != cursor["fingerprint"]


class CrashAfter:
    """A stream that dies after yielding `pages` pages, as a killed worker would."""

    def __init__(self, stream: Any, pages: int) -> None:
        self.stream, self.pages = stream, pages
        self.name, self.table = stream.name, stream.table

    def read(self, cursor: dict) -> Iterator[Page]:
        for page in self.stream.read(cursor):
            if page.number > self.pages:
                raise RuntimeError("worker killed")
            yield page


def test_crash_mid_file_resumes_at_the_last_committed_page(store_url: str, tmp_path: Path) -> None:
    rows = [[f"0{d}.02.2026 10:00", f"c{d}", str(d), ""] for d in range(1, 8)]
    path = write_csv(tmp_path / "nps.csv", SURVEY_HEADER, rows, "cp1251", ";")
    engine = store.open_store(store_url)
    stream = survey_source(path, page_rows=3).streams()[0]
    with pytest.raises(RuntimeError):
        sync_stream(engine, "drop", CrashAfter(stream, pages=2))
    assert len(stored(engine)) == 6
    assert store.read_cursor(engine, "drop", "nps")["offset"] == 6

    resumed = list(stream.read(store.read_cursor(engine, "drop", "nps")))
    assert [p.records["customer_id"].tolist() for p in resumed] == [["c7"]]
    assert sync_stream(engine, "drop", stream) == 1
    assert sorted(stored(engine).index) == [f"c{d}" for d in range(1, 8)]
    assert store.read_cursor(engine, "drop", "nps")["complete"] is True


def test_parquet_customers_get_email_hashes(store_url: str, tmp_path: Path) -> None:
    path = tmp_path / "crm.parquet"
    pd.DataFrame(
        {
            "id": [101, 102, 103],
            "mail": [" Anna@Example.com", "boris@example.com", None],
            "tier": ["premium", "new", "loyal"],
            "since": pd.to_datetime(["2025-03-01", "2025-04-01", "2025-05-01"]),
        }
    ).to_parquet(path)
    entry = {
        "path": str(path),
        "table": "customer",
        "columns": {"id": "source_id", "mail": "email", "tier": "segment", "since": "created_at"},
    }
    engine = store.open_store(store_url)
    assert sync_source(engine, FilesSource("drop", files=[entry])) == {"crm": 3}

    customers = store.read_frame(engine, store.Customer).set_index("source_id").sort_index()
    assert customers.loc["101", "email_hash"] == hashlib.sha256(b"anna@example.com").hexdigest()
    assert pd.isna(customers.loc["103", "email_hash"])
    assert customers.loc["102", ["segment", "created_at"]].tolist() == [
        "new",
        pd.Timestamp("2025-04-01"),
    ]


def test_excel_web_metrics_load_by_sheet(tmp_path: Path) -> None:
    path = tmp_path / "web.xlsx"
    with pd.ExcelWriter(path, engine="openpyxl") as writer:
        pd.DataFrame({"x": [1]}).to_excel(writer, sheet_name="notes", index=False)
        pd.DataFrame(
            {
                "day": ["2026-01-05", "2026-01-05", "2026-01-06"],
                "device": ["mobile", "desktop", "mobile"],
                "step": ["purchase", "purchase", "purchase"],
                "sessions": [12, 30, "n/a"],
            }
        ).to_excel(writer, sheet_name="funnel", index=False)
    entry = {
        "name": "funnel",
        "path": str(path),
        "sheet": "funnel",
        "table": "web_metric",
        "columns": {"day": "date", "device": "device", "step": "step", "sessions": "value"},
        "constants": {"metric": "sessions"},
    }
    stream = FilesSource("drop", files=[entry]).streams()[0]
    rows = pd.concat([p.records for p in stream.read({})])
    assert rows[["device", "value"]].values.tolist() == [["mobile", 12.0], ["desktop", 30.0]]
    assert rows["date"].tolist() == [pd.Timestamp("2026-01-05")] * 2
    assert stream.rejected == [Rejection("row 4", "column sessions = 'n/a' is not a number")]


def test_missing_file_column_names_the_file_and_what_it_has(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "nps.csv", ["Дата", "Клиент", "Балл"], [], "cp1251", ";")
    path.write_bytes(path.read_bytes() + "01.01.2026;c1;9\n".encode("cp1251"))
    with pytest.raises(ConfigError, match=r"nps\.csv has no column 'Оценка'.*'Балл'"):
        list(survey_source(path).streams()[0].read({}))


def test_config_errors_name_the_entry_and_the_fix(tmp_path: Path) -> None:
    base = {"path": "x.csv", "table": "survey_response", "columns": {"a": "score"}}
    with pytest.raises(ConfigError, match=r"files\[0\]: survey_response needs survey, kind"):
        FilesSource("drop", files=[base])
    with pytest.raises(ConfigError, match=r"files\[0\]: table 'tickets' is not one of"):
        FilesSource("drop", files=[base | {"table": "tickets"}])
    with pytest.raises(ConfigError, match=r"files\[0\]: grade not columns of survey_response"):
        FilesSource("drop", files=[base | {"columns": {"a": "grade"}}])
    with pytest.raises(ConfigError, match=r"cannot tell the format of x\.json"):
        entry = base | {"path": "x.json", "constants": {"survey": "s", "kind": "nps"}}
        entry["columns"] = {"a": "score", "b": "submitted_at"}
        FilesSource("drop", files=[entry])


def test_empty_file_saves_its_fingerprint(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.WARNING)
    path = write_csv(tmp_path / "nps.csv", SURVEY_HEADER, [], "utf-8", ",")
    pages = list(survey_source(path).streams()[0].read({}))
    assert [(len(p.records), p.cursor["complete"], p.cursor["offset"]) for p in pages] == [
        (0, True, 0)
    ]
    assert os.path.getsize(path) > 0 and not caplog.text
