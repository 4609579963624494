"""The canonical tables read from the store as analysis frames (`CxData`), loaded once per
store version."""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sqlalchemy.engine import Engine

from tasks import store
from tasks.hours import BusinessHours, local_times
from tasks.identity import identify, is_in, rows_in
from tasks.metrics import with_ticket_measures

# Ticket columns no analysis reads (free text, the vendor's status): a third of the frame.
UNREAD_TICKET = ("text", "status")
_LOOKUP_LOCK = threading.Lock()


@dataclass(frozen=True)
class CxData:
    """The canonical tables as frames: what every analysis step reads."""

    customers: pd.DataFrame
    tickets: pd.DataFrame
    responses: pd.DataFrame
    orders: pd.DataFrame
    web: pd.DataFrame
    _customer_rows: dict[str, np.ndarray] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @classmethod
    def latest(
        cls, engine: Engine, hours: BusinessHours | None = None, timezone: str = "UTC"
    ) -> CxData:
        """`from_store`, reused while nothing new was ingested (a cycle's steps share one load)."""
        return _latest(engine, store.ingest_version(engine), hours, timezone)

    @classmethod
    def from_store(
        cls, engine: Engine, hours: BusinessHours | None = None, timezone: str = "UTC"
    ) -> CxData:
        """The store's tables with times on the clock of `timezone` (the store keeps UTC), so
        days, months, hours of day and working hours are the company's; FRT in working hours
        counts `hours` (default Mon–Fri 9–18)."""
        customers = local_times(customers_from_store(engine), timezone)
        tickets = store.read_records(engine, store.Ticket, UNREAD_TICKET, id_as="ticket_id")
        tickets = local_times(tickets, timezone)
        responses = local_times(store.read_records(engine, store.SurveyResponse), timezone)
        return cls(
            customers=customers.drop(columns="email_hash"),  # only `identify` needs it
            tickets=with_ticket_measures(identify(tickets, customers), hours or BusinessHours()),
            responses=identify(responses, customers),
            orders=local_times(store.read_records(engine, store.Order), timezone),
            web=store.read_records(engine, store.WebMetric),  # daily, in the site's own zone
        )

    def customer_column(self, table: str, column: str) -> pd.Series:
        """`column` of the customer of each row of `table` (`tickets` or `responses`), aligned
        with it, NaN where the customer is unknown; which row has which customer is looked up
        once per load, however many cuts ask."""
        records = getattr(self, table)
        with _LOOKUP_LOCK:  # concurrent cuts wait for one lookup instead of each doing it
            if table not in self._customer_rows:
                known = self.customers["customer_id"]
                self._customer_rows[table] = rows_in(records["customer_id"], known)
        rows = self._customer_rows[table]
        values = pd.api.extensions.take(self.customers[column].array, rows, allow_fill=True)
        return pd.Series(values, index=records.index, name=column)

    def newest(self) -> pd.Timestamp:
        """The time of the newest ticket or survey answer: how far the data reaches (NaT if
        there is neither)."""
        return pd.Series(
            [self.tickets["created_at"].max(), self.responses["submitted_at"].max()]
        ).max()

    def unmatched(self) -> dict[str, int]:
        """Tickets and survey responses that match no known customer (kept, but uncut)."""
        known = self.customers["customer_id"]
        return {
            "tickets": int((~is_in(self.tickets["customer_id"], known)).sum()),
            "responses": int((~is_in(self.responses["customer_id"], known)).sum()),
        }


# The last load only: a new store version makes the one before it stale.
@functools.lru_cache(maxsize=1)
def _latest(engine: Engine, version: tuple, hours: BusinessHours | None, timezone: str) -> CxData:
    """`CxData.from_store` of `engine` as it was at `version` (`store.ingest_version`)."""
    return CxData.from_store(engine, hours, timezone)


def customers_from_store(engine: Engine) -> pd.DataFrame:
    """Customers keyed by `customer_id` (their CRM id) with the attributes analyses cut by."""
    columns = ["source_id", "segment", "region", "channel", "created_at", "email_hash"]
    customers = store.read_frame(engine, store.Customer, columns)
    return customers.rename(columns={"source_id": "customer_id"})
