"""Files as a source: CSV, Parquet and Excel tables mapped to canonical rows, page by page.

Each configured file is one stream into one canonical table, its `columns` option mapping file
columns to canonical ones. CSV encoding (UTF-8 with or without BOM, else cp1251) and delimiter
(`;`, `,`, tab) are detected unless given. The cursor is the file's fingerprint (size, mtime,
SHA-1 of its first KB) plus the rows done, so an unchanged file is not read again and a crash
resumes at the last committed page; a changed file is read from the top (rows upsert on their
`source_id`). Rows with a value that does not parse, a required value missing or a score
outside its scale are rejected with their row number and reason; the rest load.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from connectors.base import Page
from tasks.errors import ConfigError, SourceError
from tasks.store import INGESTED

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
PAGE_ROWS = 10_000
SHOWN_REJECTIONS = 5
# Row numbers count the header as row 1, as a spreadsheet or a text editor shows them.
FIRST_DATA_ROW = 2
FILE_KEYS = frozenset(
    {"name", "path", "table", "columns", "constants", "format", "encoding", "delimiter", "sheet",
     "dayfirst"}
)  # fmt: skip
TRUE_WORDS = frozenset({"true", "1", "yes", "y", "да"})


@dataclass(frozen=True)
class SurveyScales:
    """Valid score ranges per survey kind: NPS 0–10, CSAT 1–`csat`, CES 1–`ces`."""

    csat: int = 5
    ces: int = 7

    def ranges(self) -> dict[str, tuple[int, int]]:
        """(lowest, highest) valid score per kind."""
        return {"nps": (0, 10), "csat": (1, self.csat), "ces": (1, self.ces)}

    def problems(self, kinds: pd.Series, scores: pd.Series) -> pd.Series:
        """Why each score is invalid for its kind, `""` where it is valid."""
        ranges = self.ranges()
        low = kinds.map(lambda k: ranges.get(k, (None, None))[0])
        high = kinds.map(lambda k: ranges.get(k, (None, None))[1])
        unknown = "kind " + kinds.astype(str) + f" is not one of {', '.join(ranges)}"
        outside = (
            kinds.astype(str)
            + " score "
            + scores.map("{:g}".format)
            + " is outside "
            + low.astype(str).str.removesuffix(".0")
            + "–"
            + high.astype(str).str.removesuffix(".0")
        )
        bad = scores.notna() & ((scores < low.astype(float)) | (scores > high.astype(float)))
        return pd.Series("", index=kinds.index).mask(bad, outside).mask(low.isna(), unknown)


@dataclass(frozen=True)
class Rejection:
    """A record left out of the store: where it was (row number, response id) and why."""

    where: str
    reason: str


def log_rejections(rejected: list[Rejection], where: str, what: str) -> None:
    """A warning naming `where`, how many `what` were rejected and the first reasons."""
    if not rejected:
        return
    shown = "; ".join(f"{r.where}: {r.reason}" for r in rejected[:SHOWN_REJECTIONS])
    more = len(rejected) - SHOWN_REJECTIONS
    log.warning(
        "%s: rejected %d %s, the rest loaded — %s%s",
        where,
        len(rejected),
        what,
        shown,
        f"; and {more} more" if more > 0 else "",
    )


def fingerprint(path: Path) -> str:
    """`size:mtime_ns:sha1-of-first-KB`: changes whenever the file is rewritten or appended to."""
    stat = path.stat()
    with path.open("rb") as handle:
        head = handle.read(FINGERPRINT_BYTES)
    return f"{stat.st_size}:{stat.st_mtime_ns}:{hashlib.sha1(head).hexdigest()}"


def csv_encoding(path: Path) -> str:
    """`utf-8-sig` if the whole file decodes as UTF-8 (with or without BOM), else `cp1251`."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    with path.open("rb") as handle:
        try:
            while chunk := handle.read(1 << 20):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return "cp1251"
    return "utf-8-sig"


def csv_delimiter(path: Path, encoding: str) -> str:
    """The delimiter among `;`, `,` and tab that `csv.Sniffer` finds in the file's start; failing
    that, the one the header line holds most of."""
    with path.open(encoding=encoding, newline="") as handle:
        sample = handle.read(SNIFF_CHARS)
    lines = sample.splitlines()
    complete = "\n".join(lines[:-1] if len(sample) == SNIFF_CHARS and len(lines) > 1 else lines)
    try:
        return csv.Sniffer().sniff(complete, delimiters=DELIMITERS).delimiter
    except csv.Error:
        header = lines[0] if lines else ""
        return max(DELIMITERS, key=header.count)


def _as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Every cell as stripped text, `""` where missing, whatever types the file carried."""
    cells = frame.astype(object).where(frame.notna(), "")
    return cells.map(lambda v: str(v).strip())


def _parsed(raw: pd.Series, kind: type, dayfirst: bool) -> tuple[pd.Series, pd.Series, str]:
    """Values of one column typed as `kind`, which non-empty cells failed, and what was expected."""
    present = raw.ne("")
    if kind is float:
        values = pd.to_numeric(raw.str.replace(",", ".", regex=False), errors="coerce")
        return values, present & values.isna(), "a number"
    if kind in (datetime, date):
        values = pd.to_datetime(raw, errors="coerce", utc=True, format="mixed", dayfirst=dayfirst)
        values = values.dt.tz_localize(None)
        if kind is date:
            values = values.dt.normalize()
        return values, present & values.isna(), "a date" if kind is date else "a timestamp"
    if kind is bool:
        return raw.str.lower().isin(TRUE_WORDS), pd.Series(False, index=raw.index), ""
    return raw.where(present, None).astype(object), pd.Series(False, index=raw.index), ""


@dataclass(frozen=True)
class ColumnMap:
    """How one stream's own columns (a file's, a query's) become one canonical table's.

    `columns` maps a source column to a canonical one; `constants` gives a canonical column one
    value in every row (e.g. `{survey: q3, kind: nps}`). Cells are read as text and parsed by
    the canonical column's type (`dayfirst` for dates like 05.01.2026); survey scores must lie
    on `scales`.
    """

    table: str
    columns: Mapping[str, str]
    constants: Mapping[str, Any]
    dayfirst: bool = False
    scales: SurveyScales = SurveyScales()

    @classmethod
    def checked(
        cls, where: str, entry: Mapping[str, Any], scales: SurveyScales, *, ids_given: bool
    ) -> ColumnMap:
        """The map an options entry describes (`table`, `columns`, optional `constants` and
        `dayfirst`); `ConfigError` naming `where` on an unknown table or column, or a required
        column left unset (`source_id` may be, when the caller gives ids: `ids_given`)."""
        table = entry.get("table")
        if table not in INGESTED:
            raise ConfigError(f"{where}: table {table!r} is not one of {', '.join(INGESTED)}.")
        columns, constants = dict(entry["columns"]), dict(entry.get("constants") or {})
        wrong = sorted((set(columns.values()) | set(constants)) - _targets(table))
        if wrong:
            raise ConfigError(
                f"{where}: {', '.join(wrong)} not columns of {table}; use "
                f"{', '.join(sorted(_targets(table)))}."
            )
        given = set(columns.values()) | set(constants) | ({"source_id"} if ids_given else set())
        lacking = [c for c in _required(table) if c not in given]
        if lacking:
            raise ConfigError(
                f"{where}: {table} needs {', '.join(lacking)}; map a column to it in `columns` "
                "or give a value in `constants`."
            )
        return cls(table, columns, constants, bool(entry.get("dayfirst", False)), scales)

    def text(self, frame: pd.DataFrame, where: str, what: str) -> pd.DataFrame:
        """The mapped columns of `frame` as stripped text, `""` where missing; `ConfigError`
        naming `what` (a file, a query) and the columns it has if it lacks one."""
        missing = [name for name in self.columns if name not in frame.columns]
        if missing:
            raise ConfigError(
                f"{where}: {what} has no column {', '.join(map(repr, missing))}; it has "
                f"{', '.join(map(repr, map(str, frame.columns)))}. Fix `columns` in its options."
            )
        return _as_text(frame[list(self.columns)])

    def canonical(
        self, text: pd.DataFrame, where: str, labels: pd.Series, ids: pd.Series | None = None
    ) -> tuple[pd.DataFrame, list[Rejection]]:
        """Valid rows of a text frame in canonical columns, and the invalid ones as rejections
        (logged, named by `labels`); `ids` are the rows' `source_id` where no column maps to it.
        """
        model = INGESTED[self.table]
        types = {c.name: c.type.python_type for c in model.__table__.columns}
        rows = pd.DataFrame(index=text.index)
        problem = pd.Series("", index=text.index)
        for name, column in self.columns.items():
            values, bad, expected = _parsed(text[name], types.get(column, str), self.dayfirst)
            rows[column] = values
            shown = f"column {name} = '" + text[name] + f"' is not {expected}"
            problem = problem.mask(bad & problem.eq(""), shown)
        for column, value in self.constants.items():
            rows[column] = value
        if "source_id" not in rows.columns:
            rows["source_id"] = ids
        for column in _required(self.table):
            empty = f"{column} is empty"
            problem = problem.mask(rows[column].isna() & problem.eq(""), empty)
        if self.table == "survey_response":
            scale = self.scales.problems(rows["kind"], rows["score"])
            problem = problem.mask(problem.eq(""), scale)
        bad = problem.ne("")
        rejected = [Rejection(labels[i], reason) for i, reason in problem[bad].items()]
        log_rejections(rejected, where, "rows")
        return rows[~bad], rejected


@dataclass(kw_only=True)
class MappedStream:
    """A stream whose rows `mapping` makes canonical; `rejected` collects the rows left out."""

    source: str
    name: str
    mapping: ColumnMap
    page_rows: int
    rejected: list[Rejection] = field(default_factory=list)

    @property
    def table(self) -> str:
        return self.mapping.table


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
        since it was read to its end."""
        where = f"source {self.source}, stream {self.name}"
        if not self.path.is_file():
            raise SourceError(f"{where}: no file at {self.path}; fix `path` in the source options.")
        stamp = fingerprint(self.path)
        start = 0
        if cursor.get("fingerprint") == stamp:
            if cursor.get("complete"):
                return
            start = int(cursor["offset"])
        pages = (chunk for chunk in self._chunks(start, where) if len(chunk))
        pending, number = next(pages, None), 0
        while pending is not None:
            following = next(pages, None)
            number += 1
            yield self._page(pending, stamp, number, complete=following is None)
            pending = following
        if number == 0:
            yield Page([], {"fingerprint": stamp, "offset": start, "complete": True}, 1)

    def _page(self, text: pd.DataFrame, stamp: str, number: int, *, complete: bool) -> Page:
        where = f"source {self.source}, stream {self.name}, page {number}"
        cursor = {"fingerprint": stamp, "offset": int(text.index[-1]) + 1, "complete": complete}
        return Page(self.canonical(text, where), cursor, number)

    def _chunks(self, start: int, where: str) -> Iterator[pd.DataFrame]:
        """The file's rows from data row `start` (0-based) as text frames indexed by that row."""
        if self.format == "csv":
            encoding = self.encoding or csv_encoding(self.path)
            delimiter = self.delimiter or csv_delimiter(self.path, encoding)
            try:
                with pd.read_csv(
                    self.path,
                    sep=delimiter,
                    encoding=encoding,
                    dtype=str,
                    keep_default_na=False,
                    skiprows=range(1, start + 1),
                    chunksize=self.page_rows,
                ) as reader:
                    position = start
                    for frame in reader:
                        yield self._checked(frame, position, where)
                        position += len(frame)
            except (pd.errors.ParserError, UnicodeDecodeError) as exc:
                raise SourceError(
                    f"{where}: cannot read {self.path} as CSV (encoding {encoding}, delimiter "
                    f"{delimiter!r}): {exc}. Set `encoding` or `delimiter` in its options."
                ) from None
            return
        if self.format == "parquet":
            position = 0
            for batch in pq.ParquetFile(self.path).iter_batches(batch_size=self.page_rows):
                frame = batch.to_pandas()
                skip = max(0, min(len(frame), start - position))
                if skip < len(frame):
                    yield self._checked(frame.iloc[skip:], position + skip, where)
                position += len(frame)
            return
        sheet = pd.read_excel(
            self.path, sheet_name=self.sheet, dtype=str, keep_default_na=False, engine="openpyxl"
        )
        for first in range(start, len(sheet), self.page_rows):
            yield self._checked(sheet.iloc[first : first + self.page_rows], first, where)

    def _checked(self, frame: pd.DataFrame, first: int, where: str) -> pd.DataFrame:
        text = self.mapping.text(frame, where, self.path.name)
        text.index = pd.RangeIndex(first, first + len(text))
        return text

    def canonical(self, text: pd.DataFrame, where: str) -> pd.DataFrame:
        """Valid rows of a text frame in canonical columns; invalid ones go to `rejected`."""
        numbers = pd.Series(text.index + FIRST_DATA_ROW, index=text.index).astype(str)
        rows, rejected = self.mapping.canonical(
            text, where, labels="row " + numbers, ids=f"{self.name}:" + numbers
        )
        self.rejected.extend(rejected)
        return rows


def _required(table: str) -> list[str]:
    model = INGESTED[table]
    return [n for n, info in model.model_fields.items() if info.is_required() and n != "source"]


def _targets(table: str) -> set[str]:
    columns = {c.name for c in INGESTED[table].__table__.columns} - {"id", "source", "attributes"}
    return columns | ({"email"} if "email_hash" in columns else set())


@dataclass
class FilesSource:
    """Local files, one stream each. `files` entries: `path`, `table` (customer, ticket,
    survey_response, web_metric, orders), `columns` (file column → canonical column), and
    optionally `name` (default: the file's stem), `constants` (canonical column → value for
    every row, e.g. `{survey: q3, kind: nps}`), `format` (csv, parquet, excel; default from the
    suffix), `encoding`, `delimiter`, `sheet`, `dayfirst` (for dates like 05.01.2026).

    Without a column mapped to `source_id` a row's id is `<stream>:<row number>`, which stays
    stable while the file only grows at the end. Relative paths are under `base_dir`.
    """

    name: str
    files: list[dict[str, Any]] = field(default_factory=list)
    base_dir: str = "."
    page_rows: int = PAGE_ROWS
    csat_scale: int = 5
    ces_scale: int = 7
    kind: str = field(default="files", init=False)

    def __post_init__(self) -> None:
        if not self.files:
            raise ConfigError(f"sources.{self.name}.options: list at least one file in `files`.")
        if self.page_rows < 1:
            raise ConfigError(f"sources.{self.name}.options: page_rows must be at least 1.")
        self._streams = [self._stream(i, dict(entry)) for i, entry in enumerate(self.files)]
        names = [s.name for s in self._streams]
        if len(set(names)) < len(names):
            raise ConfigError(
                f"sources.{self.name}.options.files: stream names {names} repeat; give each "
                "file a distinct `name`."
            )

    def _stream(self, index: int, entry: dict[str, Any]) -> FileStream:
        where = f"sources.{self.name}.options.files[{index}]"
        unknown = sorted(set(entry) - FILE_KEYS)
        if unknown or not {"path", "table", "columns"} <= set(entry):
            raise ConfigError(
                f"{where}: needs `path`, `table` and `columns`, and takes only "
                f"{', '.join(sorted(FILE_KEYS))}; unknown keys: {unknown}."
            )
        path = Path(self.base_dir) / entry["path"]
        scales = SurveyScales(self.csat_scale, self.ces_scale)
        mapping = ColumnMap.checked(where, entry, scales, ids_given=True)
        fmt = entry.get("format") or FORMATS.get(path.suffix.lower())
        if fmt not in set(FORMATS.values()):
            raise ConfigError(
                f"{where}: cannot tell the format of {path.name}; set `format` to csv, "
                "parquet or excel."
            )
        return FileStream(
            source=self.name,
            name=entry.get("name") or path.stem,
            path=path,
            mapping=mapping,
            format=fmt,
            encoding=entry.get("encoding"),
            delimiter=entry.get("delimiter"),
            sheet=entry.get("sheet", 0),
            page_rows=self.page_rows,
        )

    def streams(self) -> list[FileStream]:
        return self._streams
