"""Column maps: how a stream's own columns (a file's, a query's) become one canonical table's,
cells read as text and parsed by the canonical column's type. Shared by the files and sql
sources, with the options checks their entries share (`check_options`, `page_size`)."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import pandas as pd

from connectors.base import Page, Rejection, log_rejections
from connectors.canonical import CONTROL, DIMENSION_NAME, TABLES
from connectors.errors import ConfigError
from connectors.scales import SurveyScales

SHOWN_EXAMPLES = 3
TRUE_WORDS = frozenset({"true", "1", "yes", "y", "да"})
# What each option type is called in messages.
TYPE_NAMES = {str: "text", dict: "a mapping", bool: "true or false", int: "a whole number"}
# Options of a column map, shared by the files and sql sources: name → accepted types.
MAP_OPTIONS: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "table": (str,),
    "columns": (dict,),
    "constants": (dict,),
    "dayfirst": (bool,),
    "date_format": (str, dict),
}
ISO = "ISO8601"


def check_options(
    where: str, entry: Any, accepted: Mapping[str, tuple[type, ...]], required: Sequence[str]
) -> dict[str, Any]:
    """`entry` as a dict once its keys are known, present where `required` and of their types;
    `ConfigError` naming `where`, the option and the fix (with the closest known name)."""
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: write a mapping of options, not {entry!r}.")
    for key in entry:
        if key not in accepted:
            close = difflib.get_close_matches(str(key), list(accepted), n=1)
            hint = f"did you mean `{close[0]}`? " if close else ""
            raise ConfigError(
                f"{where}: unknown option `{key}`; {hint}the options are {', '.join(accepted)}."
            )
    missing = [key for key in required if key not in entry]
    if missing:
        raise ConfigError(f"{where}: set {', '.join(f'`{k}`' for k in missing)}.")
    for key, value in entry.items():
        kinds = accepted[key]
        fits = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if not fits:
            wanted = " or ".join(TYPE_NAMES[k] for k in kinds)
            raise ConfigError(f"{where}.{key}: got {value!r}; write {wanted}.")
    return dict(entry)


@dataclass(frozen=True)
class DateConvention:
    """How one date column is written: its name for messages and the formats tried in order
    (a date alone, then with hours and minutes, then with seconds)."""

    name: str
    formats: tuple[str, ...]

    @classmethod
    def dated(cls, name: str, day: str) -> DateConvention:
        return cls(name, (day, f"{day} %H:%M", f"{day} %H:%M:%S"))


CONVENTIONS = (
    DateConvention("ISO 8601", (ISO,)),
    DateConvention.dated("DD.MM.YYYY", "%d.%m.%Y"),
    DateConvention.dated("DD/MM/YYYY", "%d/%m/%Y"),
    DateConvention.dated("MM/DD/YYYY", "%m/%d/%Y"),
    DateConvention.dated("DD-MM-YYYY", "%d-%m-%Y"),
    DateConvention.dated("MM-DD-YYYY", "%m-%d-%Y"),
    DateConvention.dated("YYYY/MM/DD", "%Y/%m/%d"),
)
# Day-first and month-first conventions that `dayfirst` chooses between: (day first, month first).
TIES = {("DD/MM/YYYY", "MM/DD/YYYY"), ("DD-MM-YYYY", "MM-DD-YYYY")}


def parse_dates(raw: pd.Series, formats: Sequence[str]) -> pd.Series:
    """Timestamps (naive, UTC) of text values, each read with the first of `formats` that
    fits it; NaT where none does. Offsets are converted to UTC; values without one are UTC."""
    parsed = pd.to_datetime(raw, format=formats[0], errors="coerce", utc=True)
    for fmt in formats[1:]:
        todo = parsed.isna() & raw.ne("")
        if todo.any():
            again = pd.to_datetime(raw.where(todo, ""), format=fmt, errors="coerce", utc=True)
            parsed = parsed.where(~todo, again)
    return parsed.dt.tz_localize(None)


def _examples(values: pd.Series, labels: pd.Series) -> str:
    shown = [f"{labels[i]} '{v}'" for i, v in values.head(SHOWN_EXAMPLES).items()]
    more = len(values) - SHOWN_EXAMPLES
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def date_convention(
    values: pd.Series, labels: pd.Series, dayfirst: bool | None, where: str
) -> tuple[str, ...]:
    """The formats of the one convention all parseable `values` fit (values that fit none are
    rejected later as not dates); `ConfigError` naming `where`, example rows and the fix when
    two fit and `dayfirst` does not choose, or when no one convention fits them all."""
    written = values[values.ne("")].drop_duplicates()
    fits = pd.DataFrame(
        {c.name: parse_dates(written, c.formats).notna() for c in CONVENTIONS}, index=written.index
    )
    readable = fits.any(axis=1)
    whole = [c for c in CONVENTIONS if fits.loc[readable, c.name].all()]
    fix = "set `date_format` for it in the file's options (e.g. date_format: '{}')"
    if not readable.any():
        return CONVENTIONS[0].formats  # no value is a date: each is rejected as such
    if len(whole) == 1:
        return whole[0].formats
    if whole:
        pair = (whole[0].name, whole[1].name)
        if len(whole) == 2 and pair in TIES and dayfirst is not None:
            return whole[0 if dayfirst else 1].formats
        raise ConfigError(
            f"{where}: its dates fit both {pair[0]} and {pair[1]} "
            f"({_examples(written[readable], labels)}); {fix.format(whole[0].formats[0])}, "
            "or `dayfirst: true` "
            "(or false) if they are all one convention."
        )
    kinds = fits.loc[readable].idxmax(axis=1)
    groups = "; ".join(
        f"{name}: {_examples(written[kinds.index[kinds.eq(name)]], labels)}"
        for name in kinds.drop_duplicates()
    )
    raise ConfigError(
        f"{where}: its dates mix conventions ({groups}); one column is read with one "
        f"convention: {fix.format('%d.%m.%Y')}; rows written otherwise are then rejected."
    )


def as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Every cell as stripped text without control characters (see `CONTROL`), `""` where
    missing, whatever types the file carried."""
    cells = frame.astype(object).where(frame.notna(), "").astype(str)
    return cells.apply(lambda column: column.str.replace(CONTROL, "", regex=True).str.strip())


def _parsed(raw: pd.Series, kind: type, formats: Sequence[str]) -> tuple[pd.Series, pd.Series, str]:
    """Values of one column typed as `kind`, which non-empty cells failed, and what was expected."""
    present = raw.ne("")
    if kind is float:
        values = pd.to_numeric(raw.str.replace(",", ".", regex=False), errors="coerce")
        return values, present & values.isna(), "a number"
    if kind in (datetime, date):
        values = parse_dates(raw, formats)
        if kind is date:
            values = values.dt.normalize()
        expected = "a date" if kind is date else "a timestamp"
        if len(formats) == 1 and formats[0] != ISO:  # declared in `date_format`
            expected += f" written {formats[0]}"
        return values, present & values.isna(), expected
    if kind is bool:
        return raw.str.lower().isin(TRUE_WORDS), pd.Series(False, index=raw.index), ""
    return raw.where(present, None).astype(object), pd.Series(False, index=raw.index), ""


def _column_types(table: str) -> dict[str, type]:
    return dict(TABLES[table].columns)


@dataclass(frozen=True)
class ColumnMap:
    """How one stream's own columns (a file's, a query's) become one canonical table's.

    `columns` maps a source column to a canonical one; `constants` gives a canonical column one
    value in every row (e.g. `{survey: q3, kind: nps}`). Cells are read as text and parsed by
    the canonical column's type; dates by `date_format` (source column → strptime format)
    where given, else by the convention their column fits (`dayfirst` breaking a DD/MM–MM/DD
    tie); survey scores must lie on `scales`.
    """

    table: str
    columns: Mapping[str, str]
    constants: Mapping[str, Any]
    dayfirst: bool | None = None
    date_format: Mapping[str, str] = field(default_factory=dict)
    scales: SurveyScales = field(default_factory=SurveyScales)

    @classmethod
    def checked(
        cls, where: str, entry: Mapping[str, Any], scales: SurveyScales, *, ids_given: bool
    ) -> ColumnMap:
        """The map an options entry describes (`table`, `columns`, optional `constants`,
        `dayfirst` and `date_format`); `ConfigError` naming `where` on an unknown table or
        column, a required column left unset (`source_id` may be, when the caller gives ids:
        `ids_given`) or a `date_format` that is not one."""
        table = entry.get("table")
        if table not in TABLES:
            raise ConfigError(f"{where}: table {table!r} is not one of {', '.join(TABLES)}.")
        columns = {str(k): v for k, v in entry["columns"].items()}
        constants = dict(entry.get("constants") or {})
        if not columns or not all(isinstance(v, str) for v in columns.values()):
            raise ConfigError(
                f"{where}.columns: map each source column to a canonical column name, "
                "e.g. {Дата: submitted_at}."
            )
        wrong = sorted((set(columns.values()) | set(constants)) - _targets(table))
        if "attributes" in TABLES[table].columns:  # declared dimensions, checked by the config
            wrong = [name for name in wrong if not DIMENSION_NAME.fullmatch(str(name))]
        if wrong:
            raise ConfigError(
                f"{where}: {', '.join(map(str, wrong))} not columns of {table}; use "
                f"{', '.join(sorted(_targets(table)))}."
            )
        given = set(columns.values()) | set(constants) | ({"source_id"} if ids_given else set())
        lacking = [c for c in _required(table) if c not in given]
        if lacking:
            raise ConfigError(
                f"{where}: {table} needs {', '.join(lacking)}; map a column to it in `columns` "
                "or give a value in `constants`."
            )
        formats = _date_formats(where, table, columns, entry.get("date_format"))
        return cls(table, columns, constants, entry.get("dayfirst"), formats, scales)

    def text(self, frame: pd.DataFrame, where: str, what: str) -> pd.DataFrame:
        """The mapped columns of `frame` as stripped text, `""` where missing; `ConfigError`
        naming `what` (a file, a query) and the columns it has if it lacks one."""
        missing = [name for name in self.columns if name not in frame.columns]
        if missing:
            raise ConfigError(
                f"{where}: {what} has no column {', '.join(map(repr, missing))}; it has "
                f"{', '.join(map(repr, map(str, frame.columns)))}. Fix `columns` in its options."
            )
        return as_text(frame[list(self.columns)])

    def date_formats(
        self, text: pd.DataFrame, labels: pd.Series, where: str, what: str
    ) -> dict[str, tuple[str, ...]]:
        """The formats each mapped date column is read with: declared, else inferred from all
        of `text` (see `date_convention`)."""
        types = _column_types(self.table)
        return {
            name: (self.date_format[name],)
            if name in self.date_format
            else date_convention(
                text[name], labels, self.dayfirst, f"{where}: column {name} of {what}"
            )
            for name, column in self.columns.items()
            if types.get(column) in (datetime, date)
        }

    def canonical(
        self,
        text: pd.DataFrame,
        labels: pd.Series,
        formats: Mapping[str, Sequence[str]],
        ids: pd.Series | None = None,
        problems: pd.Series | None = None,
    ) -> tuple[pd.DataFrame, list[Rejection]]:
        """Valid rows of a text frame in canonical columns, and the invalid ones as rejections
        named by `labels`. `formats` are the date columns' (`date_formats`); `ids` the rows'
        `source_id` where no column maps to it; `problems` why rows are already rejected."""
        types = _column_types(self.table)
        rows = pd.DataFrame(index=text.index)
        problem = problems if problems is not None else pd.Series("", index=text.index)
        for name, column in self.columns.items():
            kind = types.get(column, str)
            values, bad, expected = _parsed(text[name], kind, formats.get(name, ()))
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
            score = next((n for n, c in self.columns.items() if c == "score"), None)
            written = text[score] if score is not None else None
            scale = self.scales.problems(rows["kind"], rows["score"], written)
            problem = problem.mask(problem.eq(""), scale)
        bad = problem.ne("")
        rejected = [Rejection(labels[i], reason) for i, reason in problem[bad].items()]
        return rows[~bad], rejected


def _date_formats(
    where: str, table: str, columns: Mapping[str, str], declared: str | Mapping | None
) -> dict[str, str]:
    """`date_format` as source column → format: one string applies to every date column."""
    types = _column_types(table)
    dated = [name for name, column in columns.items() if types.get(column) in (datetime, date)]
    if declared is None:
        return {}
    given = {name: declared for name in dated} if isinstance(declared, str) else dict(declared)
    stray = sorted(set(map(str, given)) - set(dated))
    if stray:
        raise ConfigError(
            f"{where}.date_format: {', '.join(stray)} not mapped to a date column; the date "
            f"columns are {', '.join(dated) or 'none'}."
        )
    for name, fmt in given.items():
        if not isinstance(fmt, str) or (fmt != ISO and "%" not in fmt):
            raise ConfigError(
                f"{where}.date_format: {name}: {fmt!r} is no date format; write it as "
                "strptime does, e.g. '%d.%m.%Y %H:%M', or ISO8601."
            )
    return {str(name): fmt for name, fmt in given.items()}


@dataclass(kw_only=True)
class MappedStream:
    """A stream whose rows `mapping` makes canonical; `rejected` collects the rows left out of
    pages that committed."""

    source: str
    name: str
    mapping: ColumnMap
    page_rows: int
    rejected: list[Rejection] = field(default_factory=list)

    @property
    def table(self) -> str:
        return self.mapping.table

    def committed(self, page: Page, where: str) -> None:
        """Log and keep `page`'s rejections, once the loader asked for the page after it (it
        has committed `page` by then)."""
        log_rejections(page.rejected, where, "rows")
        self.rejected.extend(page.rejected)


def _required(table: str) -> list[str]:
    return list(TABLES[table].required)


def _targets(table: str) -> set[str]:
    return TABLES[table].targets


def page_size(where: str, value: Any) -> int:
    """`page_rows` once it is a whole number of at least 1; `ConfigError` otherwise."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{where}.page_rows: got {value!r}; write a whole number of at least 1.")
    return value
