"""The canonical tables read from the store as analysis frames (`CxData`), loaded once per
store version."""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from sqlalchemy.engine import Engine

from tasks import store
from tasks.funnels import WEB_COLUMNS
from tasks.hours import BusinessHours, local_times
from tasks.identity import identify, is_in, rows_in
from tasks.metrics import REPEAT_DAYS, with_ticket_measures

# Ticket columns no analysis reads (free text, the vendor's status): a third of the frame.
UNREAD_TICKET = ("text", "status")
_LOOKUP_LOCK = threading.RLock()  # `numbered` looks rows up while holding it


@dataclass(frozen=True)
class CxData:
    """The canonical tables as frames: what every analysis step reads."""

    customers: pd.DataFrame
    tickets: pd.DataFrame
    responses: pd.DataFrame
    orders: pd.DataFrame
    web: pd.DataFrame
    # Row lookups (whose customer, which ticket) done once per load: `customer_column` etc.
    _rows: dict[str, np.ndarray] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _derived: dict[str, CxData] = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def latest(
        cls,
        engine: Engine,
        hours: BusinessHours | None = None,
        timezone: str = "UTC",
        repeat_days: int = REPEAT_DAYS,
    ) -> CxData:
        """`from_store`, reused while nothing new was ingested (a cycle's steps share one load)."""
        return _latest(engine, store.ingest_version(engine), hours, timezone, repeat_days)

    @classmethod
    def from_store(
        cls,
        engine: Engine,
        hours: BusinessHours | None = None,
        timezone: str = "UTC",
        repeat_days: int = REPEAT_DAYS,
    ) -> CxData:
        """The store's tables with times on the clock of `timezone` (the store keeps UTC), so
        days, months, hours of day and working hours are the company's; FRT in working hours
        counts `hours` (default Mon–Fri 9–18), FCR a repeat contact within `repeat_days`."""
        customers = local_times(customers_from_store(engine), timezone)
        tickets = store.read_records(engine, store.Ticket, UNREAD_TICKET, id_as="ticket_id")
        tickets = local_times(tickets, timezone)
        responses = local_times(store.read_records(engine, store.SurveyResponse), timezone)
        return cls(
            customers=customers.drop(columns="email_hash"),  # only `identify` needs it
            tickets=with_ticket_measures(
                identify(tickets, customers), hours or BusinessHours(), repeat_days
            ),
            responses=identify(responses, customers),
            orders=local_times(store.read_records(engine, store.Order), timezone),
            web=store.read_frame(engine, store.WebMetric, WEB_COLUMNS),  # daily, site's zone
        )

    def customer_column(self, table: str, column: str) -> pd.Series:
        """`column` of the customer of each row of `table` (`tickets` or `responses`), aligned
        with it, NaN where the customer is unknown; which row has which customer is looked up
        once per load, however many cuts ask."""
        rows = self._customer_rows(table)
        values = pd.api.extensions.take(self.customers[column].array, rows, allow_fill=True)
        return pd.Series(values, index=getattr(self, table).index, name=column)

    def _customer_rows(self, table: str) -> np.ndarray:
        """Each row's customer's row in `customers` (-1 for none), computed once per load."""
        with _LOOKUP_LOCK:  # concurrent cuts wait for one lookup instead of each doing it
            if table not in self._rows:
                known = self.customers["customer_id"]
                self._rows[table] = rows_in(getattr(self, table)["customer_id"], known)
        return self._rows[table]

    def numbered(self) -> CxData:
        """These tables with each `customer_id` replaced by a customer number (a float: the
        customer's first row in `customers`; ids only other tables name are numbered after
        them; NaN stays NaN), for analyses that join on customers dozens of times: numbers
        hash and compare many times faster than text ids. Row lookups carry over; numbered
        once per load."""
        with _LOOKUP_LOCK:
            if NUMBERED_DATA not in self._derived:
                self._derived[NUMBERED_DATA] = self._numbered()
        return self._derived[NUMBERED_DATA]

    def _numbered(self) -> CxData:
        named = [t for t in NUMBERED if "customer_id" in getattr(self, t).columns]
        rows = {t: self._customer_rows(t) for t in named}
        ids = self.customers["customer_id"]
        first = rows_in(ids, ids).astype(float)
        unknown = [getattr(self, t)["customer_id"][rows[t] < 0] for t in named]
        strays = pd.Index(pd.concat(unknown).dropna().unique()) if unknown else pd.Index([])

        def numbers(table: str) -> np.ndarray:
            out, unknown = first.take(rows[table]), rows[table] < 0  # -1 takes the last: reset
            if not len(strays):  # the usual case: every record's customer is known or NaN
                out[unknown] = np.nan
                return out
            stray = rows_in(getattr(self, table)["customer_id"][unknown], strays)
            out[unknown] = np.where(stray >= 0, len(first) + stray, np.nan)
            return out

        tables = {t: getattr(self, t).assign(customer_id=numbers(t)) for t in named}
        coded = replace(self, customers=self.customers.assign(customer_id=first), **tables)
        coded._rows.update(self._rows)
        return coded

    def ticket_column(self, column: str) -> pd.Series:
        """`column` of the ticket each survey answer is about (`responses.ticket_id` = the
        ticket's `ticket_id`, its id at its source), aligned with `responses`; NaN where an
        answer names no ticket or one the store lacks. Looked up once per load."""
        rows = self._ticket_rows()
        if column not in self.tickets.columns:
            return pd.Series(np.nan, index=self.responses.index, name=column)
        values = pd.api.extensions.take(self.tickets[column].array, rows, allow_fill=True)
        return pd.Series(values, index=self.responses.index, name=column)

    def _ticket_rows(self) -> np.ndarray:
        """Each answer's row in `tickets` (-1 for none), computed once per load."""
        with _LOOKUP_LOCK:
            if TICKET_LINK not in self._rows:
                named = self._linked_ids()
                ids = ticket_ids(self.tickets)
                self._rows[TICKET_LINK] = (
                    np.full(len(named), -1)
                    if ids is None
                    else rows_in(named, ids.astype("str").where(ids.notna()))
                )
        return self._rows[TICKET_LINK]

    def _linked_ids(self) -> pd.Series:
        """Each answer's `ticket_id` as text (NaN where it names none)."""
        if "ticket_id" not in self.responses.columns:
            return pd.Series(np.nan, index=self.responses.index, dtype=object)
        named = self.responses["ticket_id"]
        return named.astype("str").where(named.notna())

    def newest(self) -> pd.Timestamp:
        """The time of the newest ticket or survey answer: how far the data reaches (NaT if
        there is neither)."""
        return pd.Series(
            [self.tickets["created_at"].max(), self.responses["submitted_at"].max()]
        ).max()

    def unmatched(self) -> dict[str, int]:
        """Tickets and survey responses that match no known customer (kept, but uncut by
        customer), and answers that no ticket cut reaches: `responses_unlinked`, answers of a
        post-contact survey (one with any answer naming a ticket) that name none, and
        `responses_unknown_ticket`, answers naming a ticket the store lacks."""
        known = self.customers["customer_id"]
        named = self._linked_ids().notna().to_numpy()
        found = self._ticket_rows() >= 0
        survey = self.responses.get("survey", pd.Series("", index=self.responses.index))
        post_contact = is_in(survey, survey[named].drop_duplicates())
        return {
            "tickets": int((~is_in(self.tickets["customer_id"], known)).sum()),
            "responses": int((~is_in(self.responses["customer_id"], known)).sum()),
            "responses_unlinked": int((post_contact & ~named).sum()),
            "responses_unknown_ticket": int((named & ~found).sum()),
        }


def unmatched_message(counts: dict[str, int]) -> str:
    """`CxData.unmatched` as the run summary's warning: what no customer cut, and what no
    ticket cut, reaches."""
    parts = []
    if counts["tickets"] or counts["responses"]:
        parts.append(
            f"{counts['tickets']:,} tickets and {counts['responses']:,} survey responses match "
            "no customer; they count overall only"
        )
    if counts["responses_unlinked"] or counts["responses_unknown_ticket"]:
        parts.append(
            f"{counts['responses_unlinked']:,} post-contact survey answers name no ticket and "
            f"{counts['responses_unknown_ticket']:,} name a ticket the store lacks; the ticket "
            "cuts (ticket_topic, ticket_channel, agent, team) leave them out"
        )
    return "; ".join(parts)


def ticket_ids(tickets: pd.DataFrame) -> pd.Series | None:
    """Each ticket's id as survey answers name it (`ticket_id` from the store, `source_id` in
    canonical frames), or None when the frame has neither."""
    for column in ("ticket_id", "source_id"):
        if column in tickets.columns:
            return tickets[column]
    return None


# The tables whose `customer_id` `CxData.numbered` numbers (besides `customers`).
NUMBERED = ("tickets", "responses", "orders")
NUMBERED_DATA = "numbered"
# `CxData._rows`' key of the answers' ticket rows (the others are table names).
TICKET_LINK = "responses→tickets"


# The last load only: a new store version makes the one before it stale.
@functools.lru_cache(maxsize=1)
def _latest(
    engine: Engine, version: tuple, hours: BusinessHours | None, timezone: str, repeat_days: int
) -> CxData:
    """`CxData.from_store` of `engine` as it was at `version` (`store.ingest_version`)."""
    return CxData.from_store(engine, hours, timezone, repeat_days)


def customers_from_store(engine: Engine) -> pd.DataFrame:
    """Customers keyed by `customer_id` (their CRM id) with the attributes analyses cut by:
    segment, region, channel, one text column per declared dimension
    (`store.read_dimensions`) and `churn_risk` while a published churn model scores them."""
    columns = ["source_id", "segment", "region", "channel", "created_at", "email_hash"]
    customers = store.read_frame(engine, store.Customer, columns)
    customers = customers.rename(columns={"source_id": "customer_id"})
    risk = store.read_churn_risk(engine).drop(columns="probability")
    for extra in (store.read_dimensions(engine), risk):
        added = [c for c in extra.columns if c not in customers.columns]
        if not added or extra.empty:
            continue
        # By position through Arrow: a merge on string ids would copy every customer column.
        rows = rows_in(customers["customer_id"], extra["customer_id"])
        for name in added:
            values = pd.api.extensions.take(extra[name].array, rows, allow_fill=True)
            customers[name] = pd.Series(values, index=customers.index)
    return customers
