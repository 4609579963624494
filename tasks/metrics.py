"""CX metrics from the store (NPS, CSAT, CES, FRT, ART, FCR) by any dimension, with n and CI."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy.engine import Engine

from tasks import store

Z95 = 1.959963984540054
REPEAT_WINDOW = pd.Timedelta(days=7)


@dataclass(frozen=True)
class CxData:
    """The canonical tables as frames: what every analysis step reads."""

    customers: pd.DataFrame
    tickets: pd.DataFrame
    responses: pd.DataFrame
    orders: pd.DataFrame
    web: pd.DataFrame

    @classmethod
    def from_store(cls, engine: Engine) -> CxData:
        return cls(
            customers=customers_from_store(engine),
            tickets=with_ticket_measures(store.read_frame(engine, store.Ticket)),
            responses=store.read_frame(engine, store.SurveyResponse),
            orders=store.read_frame(engine, store.Order),
            web=store.read_frame(engine, store.WebMetric),
        )


def customers_from_store(engine: Engine) -> pd.DataFrame:
    """Customers keyed by `customer_id` (their CRM id) with the attributes analyses cut by."""
    columns = ["source_id", "segment", "region", "channel", "created_at"]
    customers = store.read_frame(engine, store.Customer, columns)
    return customers.rename(columns={"source_id": "customer_id"})


def nps_points(scores: pd.Series) -> pd.Series:
    """Each 0–10 score as NPS points: +100 promoter (9–10), −100 detractor (0–6), else 0."""
    return pd.Series(
        np.select([scores >= 9, scores <= 6], [100.0, -100.0], 0.0), index=scores.index
    )


def with_ticket_measures(tickets: pd.DataFrame) -> pd.DataFrame:
    """Tickets plus `frt_hours`, `art_hours`, `fcr` and `repeat` (same customer within 7 days)."""
    tickets = tickets.sort_values(["customer_id", "created_at"], kind="stable")
    hours = pd.Timedelta(hours=1)
    next_contact = tickets.groupby("customer_id", sort=False)["created_at"].shift(-1)
    return tickets.assign(
        frt_hours=(tickets["first_response_at"] - tickets["created_at"]) / hours,
        art_hours=(tickets["resolved_at"] - tickets["created_at"]) / hours,
        repeat=(next_contact - tickets["created_at"]) <= REPEAT_WINDOW,
        fcr=tickets["resolved_at"].notna()
        & ~tickets["reopened"].astype(bool)
        & ~((next_contact - tickets["created_at"]) <= REPEAT_WINDOW),
    ).sort_index()


def observations(metric: str, data: CxData) -> pd.DataFrame:
    """Unit-level values of `metric` as columns `customer_id`, `at`, `value`.

    Survey metrics give one row per response (NPS in points −100/0/+100, CSAT and CES as
    scored); ticket metrics one row per ticket (hours, or 0/100 for FCR and repeat contact).
    """
    if metric in SURVEY_METRICS:
        answers = data.responses[data.responses["kind"] == metric]
        value = nps_points(answers["score"]) if metric == "nps" else answers["score"]
        return pd.DataFrame(
            {"customer_id": answers["customer_id"], "at": answers["submitted_at"], "value": value}
        )
    if metric in TICKET_METRICS:
        value = data.tickets[metric]
        if value.dtype == bool:
            value = value.astype(float) * 100
        return pd.DataFrame(
            {
                "customer_id": data.tickets["customer_id"],
                "at": data.tickets["created_at"],
                "value": value,
            }
        ).dropna(subset=["value"])
    raise KeyError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")


SURVEY_METRICS = ("nps", "csat", "ces")
TICKET_METRICS = ("frt_hours", "art_hours", "fcr", "repeat")
METRICS = SURVEY_METRICS + TICKET_METRICS


def mean_ci_by(frame: pd.DataFrame, by: list[str], value: str = "value") -> pd.DataFrame:
    """Mean of `value` per group with `n` and a normal 95% CI (`ci_low`, `ci_high`)."""
    stats = frame.groupby(by, observed=True)[value].agg(["mean", "std", "count"])
    half = Z95 * stats["std"] / np.sqrt(stats["count"])
    return pd.DataFrame(
        {
            "value": stats["mean"],
            "n": stats["count"].astype(int),
            "ci_low": stats["mean"] - half,
            "ci_high": stats["mean"] + half,
        }
    )


def kpis_by(data: CxData, by: str, csat_scale: int = 5) -> pd.DataFrame:
    """Headline KPIs per value of customer attribute `by` (plus an `all` row), long format.

    Columns: `by`, `metric`, `value`, `n`, `ci_low`, `ci_high`. CSAT is the top-2-box share
    in %, CES the mean score, FRT the median hours (no CI), FCR the share in %.
    """
    attribute = data.customers.set_index("customer_id")[by]
    frames = []
    for metric in ("nps", "csat", "ces", "frt_hours", "fcr"):
        obs = observations(metric, data)
        if metric == "csat":
            obs = obs.assign(value=(obs["value"] >= csat_scale - 1) * 100.0)
        obs = obs.assign(group=obs["customer_id"].map(attribute))
        everyone = obs.assign(group="all")
        both = pd.concat([obs.dropna(subset=["group"]), everyone], ignore_index=True)
        if metric == "frt_hours":
            grouped = both.groupby("group")["value"]
            table = pd.DataFrame({"value": grouped.median(), "n": grouped.size()})
        else:
            table = mean_ci_by(both, ["group"])
        frames.append(table.assign(metric=metric).reset_index())
    result = pd.concat(frames, ignore_index=True).rename(columns={"group": by})
    return result[[by, "metric", "value", "n", "ci_low", "ci_high"]]
