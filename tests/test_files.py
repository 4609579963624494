"""File source: CSV encodings and delimiters, Parquet, Excel, rejected rows with their row
numbers, unchanged files skipped, resuming after a crash mid-file."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy.engine import Engine

from connectors.base import Page, Rejection
from connectors.errors import ConfigError
from connectors.files import FilesSource, csv_delimiter, csv_encoding
from flows.sync import sync_source, sync_stream
from tasks import store

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
        Rejection("line 4", "column Оценка = 'десять' is not a number"),
        Rejection("line 5", "nps score 11 is outside 0–10"),
        Rejection("line 6", "column Дата = '32.01.2026 09:17' is not a timestamp"),
        Rejection("line 7", "score is empty"),
    ]
    assert sorted(stored(engine).index) == ["c1", "c2", "c4", "c5"]
    assert "source drop, stream nps, page 1: rejected 4 rows, the rest loaded" in caplog.text
    assert "line 4: column Оценка = 'десять' is not a number" in caplog.text


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


def test_header_only_file_saves_its_fingerprint_and_says_so(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.WARNING)
    path = write_csv(tmp_path / "nps.csv", SURVEY_HEADER, [], "utf-8", ",")
    pages = list(survey_source(path).streams()[0].read({}))
    assert [(len(p.records), p.cursor["complete"], p.cursor["offset"]) for p in pages] == [
        (0, True, 0)
    ]
    assert os.path.getsize(path) > 0
    assert "stream nps: nps.csv has a header but no rows; nothing to load" in caplog.text


KILLED_CHILD = """
import logging, sys, time
from pathlib import Path
logging.basicConfig(filename=sys.argv[3], level=logging.WARNING, format="%(message)s")
from tasks import store
from flows.sync import sync_stream
from tests.test_files import bad_rows_source

class HangAtThirdPage:
    def __init__(self, stream):
        self.stream, self.name, self.table = stream, stream.name, stream.table
    def read(self, cursor):
        for page in self.stream.read(cursor):
            if page.number == 3:  # pages 1 and 2 have committed and reported
                Path(sys.argv[4]).write_text("ready")
                time.sleep(600)
            yield page

engine = store.open_store(sys.argv[2])
sync_stream(engine, "drop", HangAtThirdPage(bad_rows_source(Path(sys.argv[1])).streams()[0]))
"""
BAD_ROWS = (
    "id;Дата;Клиент;Оценка;Комментарий\n"
    "k1;01.02.2026;c1;9;same id as line 12\n"
    "k2;02.02.2026;c2;8;\n"
    "k3;03.02.2026;c3;7;;extra field\n"
    "k4;04.02.2026;c4;6;\n"
    "k5;05.02.2026;c5;7.5;\n"
    "k6;06.02.2026;c6;5;\n"
    "k7;07.02.2026;c7;4;\n"
    'k8;08.02.2026;c8;3;"never closed\n'
    "k9;09.02.2026;c9;2;\n"
    "k10;10.02.2026;c10;1;\n"
    "k1;11.02.2026;c11;0;same id as line 2\n"
    "k12;12.02.2026;c12;10;\n"
)


def bad_rows_source(path: Path) -> FilesSource:
    """NPS answers in pages of 3 records, bad rows in each page (see BAD_ROWS)."""
    columns = {"id": "source_id"} | SURVEY_COLUMNS
    entry = {"name": "nps", "path": str(path), "table": "survey_response", "columns": columns,
             "constants": {"survey": "q1-nps", "kind": "nps"}}  # fmt: skip
    return FilesSource("drop", files=[entry], page_rows=3)


def test_kill_9_mid_file_with_bad_rows_reruns_clean_and_reports_each_rejection_once(
    store_url: str, tmp_path: Path
) -> None:
    from flows.ingest import UntilStopped

    path = tmp_path / "nps.csv"
    path.write_text(BAD_ROWS, encoding="utf-8")
    engine = store.open_store(store_url)
    ready, logged = tmp_path / "ready", tmp_path / "child.log"
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_CHILD, str(path), store_url, str(logged), str(ready)],
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert child.poll() is None and time.monotonic() < deadline, "child never got to page 3"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert store.read_cursor(engine, "drop", "nps")["offset"] == 6
    before = re.findall(r"line (\d+): ", logged.read_text(encoding="utf-8"))

    stream = bad_rows_source(path).streams()[0]
    counted = UntilStopped(stream, threading.Event())
    sync_stream(engine, "drop", counted)

    after = [r.where.removeprefix("line ") for r in stream.rejected]
    assert (before, after) == (["2", "4", "6"], ["9", "12"])
    assert counted.rejected == 2  # what this run's summary shows: only its own pages
    assert sorted(store.read_frame(engine, store.SurveyResponse)["source_id"]) == sorted(
        ["k2", "k4", "k6", "k7", "k9", "k10", "k12"]
    )
    clean = pd.concat([p.records for p in bad_rows_source(path).streams()[0].read({})])
    rows = store.read_frame(engine, store.SurveyResponse)[clean.columns].sort_values("source_id")
    pd.testing.assert_frame_equal(
        rows.reset_index(drop=True),
        clean.sort_values("source_id").reset_index(drop=True),
        check_dtype=False,
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"delimeter": ";"}, r"files\[0\]: unknown option `delimeter`; did you mean `delimiter`"),
        ({"dayfirst": "yes"}, r"files\[0\]\.dayfirst: got 'yes'; write true or false"),
        ({"encoding": "cp-1251x"}, r"files\[0\]\.encoding: 'cp-1251x' is no encoding"),
        ({"delimiter": ";;"}, r"files\[0\]\.delimiter: ';;' is not one character"),
        ({"date_format": "dd.mm.yyyy"}, r"date_format: Дата: 'dd.mm.yyyy' is no date format"),
        ({"date_format": {"Клиент": "%d.%m.%Y"}}, r"Клиент not mapped to a date column"),
        ({"columns": ["Дата"]}, r"files\[0\]\.columns: got \['Дата'\]; write a mapping"),
    ],
)
def test_bad_file_options_are_config_errors_before_any_file_is_opened(
    tmp_path: Path, change: dict, message: str
) -> None:
    entry = {
        "path": "absent.csv",
        "table": "survey_response",
        "columns": SURVEY_COLUMNS,
        "constants": {"survey": "q", "kind": "nps"},
    }
    with pytest.raises(ConfigError, match=message):
        FilesSource("drop", files=[entry | change], base_dir=str(tmp_path))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"page_rows": "lots"}, r"options\.page_rows: got 'lots'; write a whole number"),
        ({"csat_scale": 5.5}, r"options\.csat_scale: got 5\.5; write a whole number 3–10"),
        ({"half_scores": ["nps"]}, r"options\.half_scores: got \['nps'\].*NPS scores are always"),
        ({"files": {"path": "x.csv"}}, r"options: list at least one file in `files`"),
    ],
)
def test_bad_source_options_are_config_errors(options: dict, message: str) -> None:
    entry = {"path": "x.csv", "table": "survey_response", "columns": SURVEY_COLUMNS,
             "constants": {"survey": "q", "kind": "nps"}}  # fmt: skip
    with pytest.raises(ConfigError, match=message):
        FilesSource("drop", **({"files": [entry]} | options))


def test_run_and_ingest_summaries_show_rejected_rows_per_stream() -> None:
    from rich.console import Console

    from flows.cli.summary import ingested_table as _ingested_table
    from flows.ingest import Synced

    console = Console(width=120, record=True)
    console.print(_ingested_table({"drop": {"nps": Synced(24_999, 1), "crm": Synced(3, 0)}}))
    text = console.export_text()
    rows = [line.replace("│", " ").split() for line in text.splitlines()]
    assert ["drop", "nps", "24,999", "1"] in rows and ["drop", "crm", "3", "0"] in rows
    assert "rows rejected" in text
