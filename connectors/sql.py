"""Any database SQLAlchemy can reach as a source: one query per stream into one canonical table.

The URL comes from an environment variable (`url_env`), or from `url` with its password in
`password_env`, and is only ever shown with the password hidden. A stream's rows are mapped by
the `files` source's column map (`columns`, `constants`, `date_format`, `dayfirst`); text dates
are read with one convention per page, inferred from the page's values unless declared. With a
`cursor_column`, the query (without its trailing `;` and comments) is
wrapped as a subquery filtered `> :cursor` and ordered by that column, and read in chunks of
about `page_rows` rows; each chunk is a page whose cursor is its last value, so a crash resumes
after the last committed chunk and the next sync reads only newer rows. Rows sharing a cursor
value are never split across chunks, so `>` skips none. Without a cursor column each sync reads
the whole query; rows upsert on their `source_id`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pandas as pd
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Engine, Result, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.sql.elements import TextClause

from connectors.base import BULK_PAGE_ROWS, Page
from connectors.columns import MAP_OPTIONS, ColumnMap, MappedStream, check_options, page_size
from connectors.errors import ConfigError, SourceError
from connectors.scales import SurveyScales, survey_scales

QUERY_OPTIONS = MAP_OPTIONS | {"query": (str,), "cursor_column": (str,)}
ALIAS = "cxloop_rows"
# How each cursor value type is written into the JSON cursor and read back for binding.
CURSOR_TYPES: dict[str, tuple[type, Any]] = {
    "datetime": (datetime, datetime.fromisoformat),
    "date": (date, date.fromisoformat),
    "bool": (bool, bool),
    "int": (int, int),
    "float": (float, float),
    "decimal": (Decimal, Decimal),
    "str": (str, str),
}


def encode_cursor(value: Any) -> dict:
    """`{"after": value as JSON, "type": name}` for a cursor column value, to save."""
    for name, (kind, _) in CURSOR_TYPES.items():
        if isinstance(value, kind):
            shown = value.isoformat() if isinstance(value, date) else value
            return {"after": str(shown) if kind is Decimal else shown, "type": name}
    return {"after": str(value), "type": "str"}


def decode_cursor(cursor: Mapping[str, Any]) -> Any:
    """The saved cursor value as the Python type it was read as, to bind in the filter."""
    return CURSOR_TYPES[cursor["type"]][1](cursor["after"])


def _comment_at(line: str) -> int | None:
    """Where a `--` comment starts in `line`, outside quoted text; None if it has none."""
    quote = None
    for position, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif line.startswith("--", position):
            return position
    return None


def bare_query(query: str) -> str:
    """`query` without the `;` and `--` comments that end it, so it can be a subquery."""
    while True:
        query = query.strip().rstrip(";").rstrip()
        head, newline, last = query.rpartition("\n")
        cut = _comment_at(last)
        if cut is None:
            return query
        query = head + newline + last[:cut]


@dataclass(frozen=True)
class Database:
    """The engine on a source's database, and its URL with the password hidden for messages."""

    engine: Engine
    shown: str
    secret: str | None

    def reason(self, exc: SQLAlchemyError) -> str:
        """The driver's first line about `exc`, with the password hidden."""
        detail = getattr(exc, "orig", None) or exc
        first = (str(detail).strip().splitlines() or [type(detail).__name__])[0]
        return first.replace(self.secret, "***") if self.secret else first


@dataclass(kw_only=True)
class QueryStream(MappedStream):
    """One query's rows into one canonical table."""

    query: str
    cursor_column: str | None
    database: Database

    def statement(self, cursor: Mapping[str, Any]) -> tuple[TextClause, dict[str, Any]]:
        """The SQL to run after `cursor`, and its parameters.

        Colons in the configured query are escaped, so only `:cursor` is a bind parameter.
        """
        query = bare_query(self.query).replace(":", r"\:")
        if self.cursor_column is None:
            return text(query), {}
        quote = self.database.engine.dialect.identifier_preparer.quote
        column = f"{ALIAS}.{quote(self.cursor_column)}"
        condition, params = f"{column} IS NOT NULL", {}
        if "after" in cursor:
            condition, params = f"{column} > :cursor", {"cursor": decode_cursor(cursor)}
        # On its own lines, so a comment the query keeps (inside a block) cannot swallow ours.
        sql = f"SELECT * FROM (\n{query}\n) {ALIAS} WHERE {condition} ORDER BY {column}"
        return text(sql), params

    def read(self, cursor: dict) -> Iterator[Page]:
        """Pages of canonical rows (DataFrames) after `cursor`, about `page_rows` rows each."""
        where = f"source {self.source}, stream {self.name}"
        statement, params = self.statement(cursor)
        try:
            connection = self.database.engine.connect()
        except SQLAlchemyError as exc:
            raise SourceError(
                f"{where}: cannot connect to {self.database.shown}: "
                f"{self.database.reason(exc)}. Check the URL and that the database accepts "
                "connections from this machine."
            ) from None
        with connection:
            try:
                result = connection.execution_options(yield_per=self.page_rows).execute(
                    statement, params
                )
            except SQLAlchemyError as exc:
                raise SourceError(
                    f"{where}: the query failed on {self.database.shown}: "
                    f"{self.database.reason(exc)}. Fix `query` or `cursor_column` in the "
                    "stream's options; nothing was saved."
                ) from None
            columns = list(map(str, result.keys()))
            self.mapping.text(pd.DataFrame(columns=columns), where, "its query")
            position = self._position(columns)
            for number, rows in enumerate(self._chunks(result, position, where), start=1):
                page = self._page(rows, columns, position, number, cursor)
                yield page
                self.committed(page, f"{where}, page {number}")

    def _position(self, columns: list[str]) -> int | None:
        """Where the cursor column sits among the query's columns, matched ignoring case as
        SQL matches unquoted names (the database has already refused a missing one)."""
        if self.cursor_column is None:
            return None
        return [c.lower() for c in columns].index(self.cursor_column.lower())

    def _chunks(
        self, result: Result, position: int | None, where: str
    ) -> Iterator[Sequence[Sequence[Any]]]:
        """Rows in chunks of about `page_rows`; with a cursor column, each chunk ends where its
        value changes, so rows sharing a value land in one chunk."""
        held: list = []
        while True:
            try:
                batch = result.fetchmany(self.page_rows)
            except SQLAlchemyError as exc:
                raise SourceError(
                    f"{where}: reading the query's rows failed on {self.database.shown}: "
                    f"{self.database.reason(exc)}. Rerun to resume after the last saved page."
                ) from None
            if not batch:
                break
            rows = held + list(batch)
            if position is None:
                yield rows
                held = []
                continue
            cut = len(rows)
            while cut and rows[cut - 1][position] == rows[-1][position]:
                cut -= 1
            held = rows[cut:]
            if cut:
                yield rows[:cut]
        if held:
            yield held

    def _page(
        self,
        rows: Sequence[Sequence[Any]],
        columns: list[str],
        position: int | None,
        number: int,
        cursor: Mapping[str, Any],
    ) -> Page:
        where = f"source {self.source}, stream {self.name}, page {number}"
        frame = pd.DataFrame.from_records([tuple(r) for r in rows], columns=columns)
        text_ = self.mapping.text(frame, where, "its query")
        key = next(name for name, column in self.mapping.columns.items() if column == "source_id")
        labels = f"{key} " + text_[key]
        formats = self.mapping.date_formats(text_, labels, where, "its query")
        records, rejected = self.mapping.canonical(text_, labels, formats)
        after = encode_cursor(rows[-1][position]) if position is not None else dict(cursor)
        return Page(records, after, number, rejected=tuple(rejected))


def _url(source: str, url: str | None, url_env: str | None, password_env: str | None) -> URL:
    """The database URL from the options and the environment; `ConfigError` saying what to fix,
    never showing a password."""
    where = f"sources.{source}.options"
    if bool(url) == bool(url_env):
        raise ConfigError(
            f"{where}: give either `url_env` (an environment variable holding the whole URL) "
            "or `url` (no password; put it in the variable named by `password_env`)."
        )
    raw = url or os.environ.get(url_env or "", "").strip()
    if not raw:
        raise ConfigError(
            f"{where}: set {url_env} to the database's SQLAlchemy URL, e.g. "
            "postgresql+psycopg://reader:password@db.internal/crm."
        )
    try:
        parsed = make_url(raw)
    except ArgumentError:
        origin = "`url`" if url else f"the value of {url_env}"
        raise ConfigError(
            f"{where}: {origin} is not a SQLAlchemy URL; write it as "
            "dialect+driver://user:password@host:port/database (e.g. sqlite:///data/crm.db)."
        ) from None
    if url and parsed.password is not None:
        raise ConfigError(
            f"{where}: `url` holds a password; move it to an environment variable and name it "
            "in `password_env` (or put the whole URL in the variable named by `url_env`)."
        )
    if password_env:
        password = os.environ.get(password_env, "")
        if not password:
            raise ConfigError(f"{where}: set {password_env} to the database user's password.")
        parsed = parsed.set(password=password)
    return parsed


@dataclass
class SqlSource:
    """A database read through SQLAlchemy, one stream per entry of `queries`.

    Each entry: `name`, `query` (one SELECT), `table` (customer, ticket, survey_response,
    web_metric, orders), `columns` (query column → canonical column; one must map to
    `source_id`), and optionally `constants`, `date_format`, `dayfirst` (as for `files`) and
    `cursor_column` (a column that grows with new and changed rows, e.g. `updated_at` or an id).
    `half_scores` lists the kinds (csat, ces) whose scores may be halves.
    """

    name: str
    queries: list[dict[str, Any]] = field(default_factory=list)
    url: str | None = None
    url_env: str | None = None
    password_env: str | None = None
    page_rows: int = BULK_PAGE_ROWS
    csat_scale: int = 5
    ces_scale: int = 7
    half_scores: list[str] = field(default_factory=list)
    kind: str = field(default="sql", init=False)

    def __post_init__(self) -> None:
        where = f"sources.{self.name}.options"
        if not isinstance(self.queries, list) or not self.queries:
            raise ConfigError(f"{where}: list at least one query in `queries`.")
        page_size(where, self.page_rows)
        scales = survey_scales(where, self.csat_scale, self.ces_scale, self.half_scores)
        url = _url(self.name, self.url, self.url_env, self.password_env)
        shown = url.render_as_string(hide_password=True)
        try:
            engine = create_engine(url, pool_pre_ping=True)
        except NoSuchModuleError:
            raise ConfigError(
                f"{where}: SQLAlchemy knows no dialect {url.drivername!r} (in {shown}); use e.g. "
                "postgresql+psycopg, mysql+pymysql, mssql+pyodbc, oracle+oracledb or sqlite."
            ) from None
        except ImportError as exc:
            raise ConfigError(
                f"{where}: the database driver for {url.drivername} is not installed ({exc}); "
                "install it into cxloop's environment with pip."
            ) from None
        database = Database(engine, shown, url.password)
        self._streams = [
            self._stream(i, entry, database, scales) for i, entry in enumerate(self.queries)
        ]
        names = [s.name for s in self._streams]
        if len(set(names)) < len(names):
            raise ConfigError(f"{where}.queries: stream names {names} repeat; make each distinct.")

    def _stream(
        self, index: int, given: Any, database: Database, scales: SurveyScales
    ) -> QueryStream:
        where = f"sources.{self.name}.options.queries[{index}]"
        entry = check_options(where, given, QUERY_OPTIONS, ("name", "query", "table", "columns"))
        mapping = ColumnMap.checked(where, entry, scales, ids_given=False)
        return QueryStream(
            source=self.name,
            name=str(entry["name"]),
            query=str(entry["query"]),
            mapping=mapping,
            cursor_column=entry.get("cursor_column"),
            database=database,
            page_rows=self.page_rows,
        )

    def streams(self) -> list[QueryStream]:
        """One stream per query; each keeps its `rejected` rows across reads."""
        return self._streams
