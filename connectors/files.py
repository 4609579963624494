"""Files as a source: CSV, Parquet and Excel tables mapped to canonical rows, page by page.

Each configured file is one stream into one canonical table, its `columns` option mapping file
columns to canonical ones. The cursor is the file's fingerprint (size, mtime, SHA-1 of its
first KB) plus the records done, so an unchanged file is not read again and a crash resumes at
the last committed page; a changed file is read from the top (rows upsert on their
`source_id`). Nothing is guessed silently; a record that cannot be read right is rejected with
its line (CSV) or row (Parquet, Excel) and the reason, the rest load, and the rejections of a
page are counted when it commits:

- CSV encoding: UTF-16 by its BOM; UTF-8 (BOM or not) when the file decodes as UTF-8 or at
  least as many of its non-ASCII lines are UTF-8 as are not; else cp1251. Each line is decoded
  alone: a line that does not decode, or a UTF-8 line in a cp1251 file (which cp1251 would
  garble), is rejected with its number. The delimiter (`;`, `,`, tab) is sniffed unless given.
- CSV records: a record with another number of fields than the header, text after a closing
  quote, or a quote that never closes (only that line is rejected; the next line is read as
  a record again) is rejected. Blank lines are skipped.
- Control characters but tab, newline and carriage return (NUL included) are removed from
  every value, as the store removes them from every source's text.
- Dates: each date column is read with one convention, inferred from all its values (ISO 8601,
  DD.MM.YYYY, DD/MM/YYYY, MM/DD/YYYY, DD-MM-YYYY, MM-DD-YYYY, YYYY/MM/DD, each with an
  optional HH:MM[:SS]) or declared in `date_format`. ISO stays ISO; `dayfirst` only chooses
  between DD/MM and MM/DD when every value fits both. A column that fits two conventions with
  nothing to choose, or mixes conventions, stops the read with a `ConfigError` naming the rows.
- Ids: rows sharing a mapped `source_id` within one file are all rejected, naming the lines.
- Scores: whole numbers on their kind's scale (NPS 0–10); CSAT and CES may be halves where
  `half_scores` says so; scientific notation (1e1) is never a score.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import logging
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd
import pyarrow.parquet as pq

from connectors.base import BULK_PAGE_ROWS, Page
from connectors.canonical import CONTROL
from connectors.columns import (
    MAP_OPTIONS,
    ColumnMap,
    MappedStream,
    as_text,
    check_options,
    page_size,
)
from connectors.errors import ConfigError
from connectors.scales import SurveyScales, survey_scales

log = logging.getLogger(__name__)

FORMATS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".xlsx": "excel",
    ".xlsm": "excel",
}
DELIMITERS = ";,\t"
SNIFF_CHARS = 64 * 1024
FINGERPRINT_BYTES = 1024
# Row numbers count the header as row 1, as a spreadsheet or a text editor shows them.
FIRST_DATA_ROW = 2
FILE_OPTIONS = MAP_OPTIONS | {
    "path": (str,),
    "format": (str,),
    "encoding": (str,),
    "delimiter": (str,),
    "sheet": (str, int),
}


def fingerprint(path: Path) -> str:
    """`size:mtime_ns:sha1-of-first-KB`: changes whenever the file is rewritten or appended to."""
    stat = path.stat()
    with path.open("rb") as handle:
        head = handle.read(FINGERPRINT_BYTES)
    return f"{stat.st_size}:{stat.st_mtime_ns}:{hashlib.sha1(head).hexdigest()}"


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _whole_file_is_utf8(path: Path) -> bool:
    decoder = codecs.getincrementaldecoder("utf-8")()
    with path.open("rb") as handle:
        try:
            while chunk := handle.read(1 << 20):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return False
    return True


def csv_encoding(path: Path) -> str:
    """`utf-16` for a UTF-16 BOM; `utf-8-sig` if the file is UTF-8 (with or without BOM) or at
    least as many of its non-ASCII lines are UTF-8 as are not; else `cp1251`."""
    with path.open("rb") as handle:
        head = handle.read(2)
    if head in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        return "utf-16"
    if _whole_file_is_utf8(path):
        return "utf-8-sig"
    utf8 = other = 0
    with path.open("rb") as handle:
        for raw in handle:
            if not raw.isascii():
                utf8, other = (utf8 + 1, other) if _is_utf8(raw) else (utf8, other + 1)
    return "utf-8-sig" if utf8 >= other else "cp1251"


def csv_delimiter(path: Path, encoding: str) -> str:
    """The delimiter among `;`, `,` and tab that `csv.Sniffer` finds in the file's start; failing
    that, the one the header line holds most of."""
    with path.open(encoding=encoding, errors="replace", newline="") as handle:
        sample = handle.read(SNIFF_CHARS)
    lines = sample.splitlines()
    complete = "\n".join(lines[:-1] if len(sample) == SNIFF_CHARS and len(lines) > 1 else lines)
    try:
        return csv.Sniffer().sniff(complete, delimiters=DELIMITERS).delimiter
    except csv.Error:
        header = lines[0] if lines else ""
        return max(DELIMITERS, key=header.count)


def _decoded_lines(handle: BinaryIO, encoding: str) -> Iterator[tuple[str, str]]:
    """Each line of `handle` decoded alone, with why it cannot be trusted (`""` if it can)."""
    if codecs.lookup(encoding).name.startswith("utf-16"):
        # Lines cannot be split before decoding UTF-16; its undecodable bytes are U+FFFD.
        text = io.TextIOWrapper(handle, encoding=encoding, errors="replace", newline="")
        for line in text:
            yield line, ("bytes that are not UTF-16" if "\ufffd" in line else "")
        return
    single_byte = not codecs.lookup(encoding).name.startswith("utf-8")
    for raw in handle:
        try:
            line = raw.decode(encoding)
        except UnicodeDecodeError as exc:
            # Replacing keeps the line's delimiters and quotes, so the records after it parse.
            problem = f"bytes that are not {encoding} at character {exc.start + 1}"
            yield raw.decode(encoding, errors="replace"), problem
            continue
        if single_byte and not raw.isascii() and _is_utf8(raw):
            yield line, f"UTF-8 text in a file read as {encoding}"
        else:
            yield line, ""


class _Lines:
    """Decoded lines numbered from 1, for `csv.reader`; the lines taken since `start` can be
    given back to be read again."""

    def __init__(self, lines: Iterator[tuple[str, str]]) -> None:
        self._lines, self._back = lines, deque[tuple[str, str]]()
        self.number, self.taken = 0, list[tuple[str, str]]()

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = self._back.popleft() if self._back else next(self._lines)
        self.number += 1
        self.taken.append(line)
        return line[0]

    def start(self) -> None:
        self.taken = []

    def give_back(self, lines: list[tuple[str, str]]) -> None:
        self._back.extendleft(reversed(lines))
        self.number -= len(lines)


@dataclass(frozen=True)
class CsvRecord:
    """One CSV record: its fields (none if rejected), its first line and why it is rejected."""

    fields: list[str]
    line: int
    problem: str = ""


def csv_records(lines: Iterable[tuple[str, str]], delimiter: str) -> Iterator[CsvRecord]:
    """The header, then every record after it; blank lines are skipped.

    A record that spans lines but has the wrong field count or bad quoting is a quote opened
    and never closed: only its first line is rejected and the lines after it are read again.
    """
    numbered = _Lines(iter(lines))
    reader = csv.reader(numbered, delimiter=delimiter, strict=True)
    width = None
    while True:
        numbered.start()
        try:
            fields, problem = next(reader), ""
        except StopIteration:
            return
        except csv.Error as exc:
            fields, problem = [], f"bad quoting ({exc})"
        taken = numbered.taken
        first = numbered.number - len(taken) + 1
        if not problem and not "".join(fields).strip():
            continue
        if width is None:
            width = len(fields)
            yield CsvRecord(fields, first, problem)
            continue
        if problem or len(fields) != width:
            if len(taken) > 1:
                numbered.give_back(taken[1:])
                yield CsvRecord([], first, "a quote opened on this line is never closed")
                continue
            problem = problem or f"{len(fields)} fields where the header has {width}"
        problem = problem or next((p for _, p in taken if p), "")
        if problem.startswith(("bytes", "UTF-8")):
            problem += "; the file mixes encodings: save it again in one (UTF-8)"
        yield CsvRecord([] if problem else fields, first, problem)


@dataclass(frozen=True)
class FileRows:
    """A whole file's mapped columns as text, one row per record (`""` in rejected ones), what
    names each record in messages and why a record is already rejected (`""` if it is not)."""

    text: pd.DataFrame
    labels: pd.Series
    problems: pd.Series

    @classmethod
    def spreadsheet(cls, text: pd.DataFrame) -> FileRows:
        """Rows of a Parquet file or Excel sheet, named by spreadsheet row number."""
        text.index = pd.RangeIndex(len(text))
        numbers = pd.Series(text.index + FIRST_DATA_ROW, index=text.index).astype(str)
        return cls(text, "row " + numbers, pd.Series("", index=text.index))


@dataclass(kw_only=True)
class FileStream(MappedStream):
    """One file or sheet into one canonical table."""

    path: Path
    format: str
    encoding: str | None
    delimiter: str | None
    sheet: str | int

    def read(self, cursor: dict) -> Iterator[Page]:
        """Pages of canonical rows (DataFrames) after `cursor`; none if the file is unchanged
        since it was read to its end. Dates, ids and records are checked over the whole file
        before the first page, so a resumed read judges every row as the first read did."""
        where = f"source {self.source}, stream {self.name}"
        if not self.path.is_file():
            raise ConfigError(f"{where}: no file at {self.path}; fix `path` in the source options.")
        stamp = fingerprint(self.path)
        start = 0
        if cursor.get("fingerprint") == stamp:
            if cursor.get("complete"):
                return
            start = int(cursor["offset"])
        rows = self._rows(where)
        if rows is None or rows.text.empty:
            empty = "is empty" if rows is None else "has a header but no rows"
            log.warning("%s: %s %s; nothing to load.", where, self.path.name, empty)
            yield Page([], {"fingerprint": stamp, "offset": start, "complete": True}, 1)
            return
        formats = self.mapping.date_formats(rows.text, rows.labels, where, self.path.name)
        problems = rows.problems.mask(rows.problems.eq(""), self._duplicates(rows))
        total = len(rows.text)
        for number, first in enumerate(range(start, total, self.page_rows), start=1):
            last = min(first + self.page_rows, total)
            page_where = f"{where}, page {number}"
            part = slice(first, last)
            numbers = pd.Series(rows.text.index[part] + FIRST_DATA_ROW, index=rows.text.index[part])
            records, rejected = self.mapping.canonical(
                rows.text.iloc[part],
                rows.labels.iloc[part],
                formats,
                ids=f"{self.name}:" + numbers.astype(str),
                problems=problems.iloc[part],
            )
            cursor = {"fingerprint": stamp, "offset": last, "complete": last == total}
            page = Page(records, cursor, number, rejected=tuple(rejected))
            yield page
            self.committed(page, page_where)

    def _duplicates(self, rows: FileRows) -> pd.Series:
        """Why each row whose mapped `source_id` another row of the file shares is rejected:
        all of them, as nothing says which is right."""
        key = next((n for n, c in self.mapping.columns.items() if c == "source_id"), None)
        reasons = pd.Series("", index=rows.text.index)
        if key is None:
            return reasons
        ids = rows.text[key]
        shared = ids.ne("") & rows.problems.eq("") & ids.duplicated(keep=False)
        if not shared.any():
            return reasons
        together = rows.labels[shared].groupby(ids[shared]).transform(", ".join)
        shown = f"{key} '" + ids[shared] + "' repeats (" + together + "); rows sharing an id"
        return reasons.mask(shared, shown + " are all left out: fix the file")

    def _rows(self, where: str) -> FileRows | None:
        """The whole file's mapped columns; None for a CSV file without even a header."""
        if self.format == "csv":
            return self._csv_rows(where)
        if self.format == "parquet":
            names = pq.ParquetFile(self.path).schema_arrow.names
            self.mapping.text(pd.DataFrame(columns=names), where, self.path.name)
            table = pq.read_table(self.path, columns=list(self.mapping.columns))
            return FileRows.spreadsheet(self.mapping.text(table.to_pandas(), where, self.path.name))
        sheet = pd.read_excel(
            self.path, sheet_name=self.sheet, dtype=str, keep_default_na=False, engine="openpyxl"
        )
        return FileRows.spreadsheet(self.mapping.text(sheet, where, self.path.name))

    def _csv_rows(self, where: str) -> FileRows | None:
        encoding = self.encoding or csv_encoding(self.path)
        delimiter = self.delimiter or csv_delimiter(self.path, encoding)
        with self.path.open("rb") as handle:
            if encoding.replace("_", "-").lower() in ("utf-8-sig", "utf8-sig"):
                head = handle.read(len(codecs.BOM_UTF8))
                handle.seek(len(head) if head == codecs.BOM_UTF8 else 0)
            records = csv_records(_decoded_lines(handle, encoding), delimiter)
            header = next(records, None)
            if header is None:
                return None
            if header.problem:
                raise ConfigError(
                    f"{where}: the header of {self.path.name} (line {header.line}) cannot be "
                    f"read: {header.problem}. Fix the file, or set `encoding` or `delimiter`."
                )
            names = [CONTROL.sub("", name) for name in header.fields]
            self.mapping.text(pd.DataFrame(columns=names), where, self.path.name)
            positions = [names.index(name) for name in self.mapping.columns]
            pick = itemgetter(*positions) if len(positions) > 1 else lambda f: (f[positions[0]],)
            blank = ("",) * len(positions)
            cells, lines, problems = [], [], []
            for record in records:
                cells.append(blank if record.problem else pick(record.fields))
                lines.append(record.line)
                problems.append(record.problem)
        text = as_text(pd.DataFrame(cells, columns=list(self.mapping.columns), dtype=object))
        labels = "line " + pd.Series(lines, index=text.index, dtype=int).astype(str)
        return FileRows(text, labels, pd.Series(problems, index=text.index, dtype=object))


@dataclass
class FilesSource:
    """Local files, one stream each. `files` entries: `path`, `table` (customer, ticket,
    survey_response, web_metric, orders), `columns` (file column → canonical column), and
    optionally `name` (default: the file's stem), `constants` (canonical column → value for
    every row, e.g. `{survey: q3, kind: nps}`), `format` (csv, parquet, excel; default from the
    suffix), `encoding`, `delimiter`, `sheet`, `date_format` (a strptime format for every date
    column of the file, or file column → format) and `dayfirst` (DD/MM rather than MM/DD where
    a column fits both). `half_scores` lists the kinds (csat, ces) whose scores may be halves.

    Without a column mapped to `source_id` a row's id is `<stream>:<record number + 1>`, which
    stays stable while the file only grows at the end. Relative paths are under `base_dir`.
    Every option is checked here, without opening a file.
    """

    name: str
    files: list[dict[str, Any]] = field(default_factory=list)
    base_dir: str = "."
    page_rows: int = BULK_PAGE_ROWS
    csat_scale: int = 5
    ces_scale: int = 7
    half_scores: list[str] = field(default_factory=list)
    kind: str = field(default="files", init=False)

    def __post_init__(self) -> None:
        where = f"sources.{self.name}.options"
        if not isinstance(self.files, list) or not self.files:
            raise ConfigError(f"{where}: list at least one file in `files`.")
        if not isinstance(self.base_dir, str):
            raise ConfigError(f"{where}.base_dir: got {self.base_dir!r}; write a directory path.")
        page_size(where, self.page_rows)
        scales = survey_scales(where, self.csat_scale, self.ces_scale, self.half_scores)
        self._streams = [self._stream(i, entry, scales) for i, entry in enumerate(self.files)]
        names = [s.name for s in self._streams]
        if len(set(names)) < len(names):
            raise ConfigError(
                f"{where}.files: stream names {names} repeat; give each file a distinct `name`."
            )

    def _stream(self, index: int, given: Any, scales: SurveyScales) -> FileStream:
        where = f"sources.{self.name}.options.files[{index}]"
        entry = check_options(where, given, FILE_OPTIONS, ("path", "table", "columns"))
        path = Path(self.base_dir) / entry["path"]
        mapping = ColumnMap.checked(where, entry, scales, ids_given=True)
        fmt = entry.get("format") or FORMATS.get(path.suffix.lower())
        if fmt not in set(FORMATS.values()):
            raise ConfigError(
                f"{where}: cannot tell the format of {path.name}; set `format` to csv, "
                "parquet or excel."
            )
        encoding = entry.get("encoding")
        if encoding is not None:
            try:
                codecs.lookup(encoding)
            except LookupError:
                raise ConfigError(
                    f"{where}.encoding: {encoding!r} is no encoding Python knows; write e.g. "
                    "utf-8 or cp1251, or leave it out to detect it."
                ) from None
        delimiter = entry.get("delimiter")
        if delimiter is not None and len(delimiter) != 1:
            raise ConfigError(
                f"{where}.delimiter: {delimiter!r} is not one character; write ';', ',' or "
                "'\\t', or leave it out to detect it."
            )
        return FileStream(
            source=self.name,
            name=entry.get("name") or path.stem,
            path=path,
            mapping=mapping,
            format=fmt,
            encoding=encoding,
            delimiter=delimiter,
            sheet=entry.get("sheet", 0),
            page_rows=self.page_rows,
        )

    def streams(self) -> list[FileStream]:
        return self._streams
