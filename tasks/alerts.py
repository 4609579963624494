"""Alerts: significant changes between the last two periods, each with the evidence behind it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from tasks.labels import alert_text, labels
from tasks.loader import CxData
from tasks.metrics import csat_top2, metric_table

ALPHA = 0.01
MIN_GROWTH = 1.3  # complaint volume must grow by at least 30% (per day) to alert


@dataclass(frozen=True)
class Alert:
    """One alert: what moved, where, by how much, and how sure we are.

    `message` says it in English (logs, events, the store); reports word it again in their
    language from `kind`, `period` and `evidence` (`tasks.labels.alert_text`).
    """

    kind: str
    key: str
    period: str
    evidence: dict
    message: str = ""

    def __post_init__(self) -> None:
        if not self.message:
            text = alert_text(self.kind, self.period, self.evidence, labels("en"))
            object.__setattr__(self, "message", text)


# metric → (alert kind, which direction is worse, smallest change worth an alert)
WATCHED = {
    "nps": ("nps_drop", -1, 5.0),
    "ces": ("ces_drop", -1, 0.2),
    "csat_top2": ("csat_drop", -1, 5.0),
    "sla_breach": ("sla_spike", 1, 2.0),
}


def last_complete_month(data: CxData) -> pd.Period | None:
    """The latest month the data covers to its end: the month before the one holding the day
    after the newest ticket or survey answer; None without either."""
    newest = data.newest()
    return None if pd.isna(newest) else (newest + pd.Timedelta(days=1)).to_period("M") - 1


def metric_shifts(table: pd.DataFrame, by: str | None, alpha: float = ALPHA) -> list[Alert]:
    """Alerts where a metric got significantly worse from the previous period to the last.

    `table` comes from `metric_table` with a period; the test is a two-sample z-test on the
    cell means with their standard errors (`se`; a share's Wilson CI is not symmetric).
    """
    alerts = []
    periods = sorted(table["period"].unique())
    if len(periods) < 2:
        return alerts
    before, last = periods[-2], periods[-1]
    cells = [by] if by else []
    for metric, rows in table[table["metric"].isin(list(WATCHED))].groupby("metric"):
        kind, worse, minimum = WATCHED[str(metric)]
        frame = rows.set_index([*cells, "period"]) if cells else rows.set_index("period")
        groups = rows[by].dropna().unique() if by else [None]
        for group in groups:
            try:
                old = frame.loc[(group, before) if by else before]
                new = frame.loc[(group, last) if by else last]
            except KeyError:
                continue
            change = new["value"] - old["value"]
            se = np.hypot(old["se"], new["se"])
            p = 2 * stats.norm.sf(abs(change) / se) if se > 0 else 1.0
            if change * worse >= minimum and p < alpha:
                where = f"{by}={group}" if by else "all customers"
                alerts.append(
                    Alert(
                        kind=kind,
                        key=f"{kind}:{where}",
                        period=last,
                        evidence={
                            "metric": metric,
                            "cut": by,
                            "group": group if by else None,
                            "period_before": before,
                            "before": float(old["value"]),
                            "after": float(new["value"]),
                            "change": float(change),
                            "n_before": int(old["n"]),
                            "n_after": int(new["n"]),
                            "p_value": float(p),
                        },
                    )
                )
    return alerts


def complaint_growth(
    tickets: pd.DataFrame, last: pd.Period, alpha: float = ALPHA, min_growth: float = MIN_GROWTH
) -> list[Alert]:
    """Alerts for ticket topics whose daily volume grew significantly in the last month.

    Conditional binomial test: given both months' total, the last month's share of tickets
    should match its share of days if the daily rate did not change.
    """
    months = tickets["created_at"].dt.to_period("M")
    before = last - 1
    days = {m: m.days_in_month for m in (before, last)}
    counts = tickets.groupby([tickets["topic"], months]).size().unstack(fill_value=0)
    alerts = []
    for topic, row in counts.iterrows():
        old, new = int(row.get(before, 0)), int(row.get(last, 0))
        if old == 0 or new == 0:
            continue
        growth = (new / days[last]) / (old / days[before])
        share = days[last] / (days[last] + days[before])
        p = stats.binomtest(new, old + new, share, alternative="greater").pvalue
        if growth >= min_growth and p < alpha:
            alerts.append(
                Alert(
                    kind="complaint_growth",
                    key=f"complaint_growth:topic={topic}",
                    period=str(last),
                    evidence={
                        "topic": topic,
                        "period_before": str(before),
                        "before": old,
                        "after": new,
                        "growth": float(growth - 1),
                        "p_value": float(p),
                    },
                )
            )
    return alerts


def month_one_churn(
    customers: pd.DataFrame,
    orders: pd.DataFrame,
    last: pd.Period,
    alpha: float = ALPHA,
    min_excess: float = 3.0,
) -> list[Alert]:
    """An alert for month `last` when customers drop off right after their first month more
    than later on; orders after `last` are not counted.

    For each customer who joined inside the order history with at least three 30-day months
    of tenure in it, A_k says whether they ordered in tenure month k. Without month-one churn
    the share of active customers falls about as much from month 1 to 2 as from 2 to 3
    (steady buying, or churn spread over time). The excess `(A1 − A2) − (A2 − A3)` is tested
    per customer (paired, one-sided), in percentage points.
    """
    orders = orders[orders["created_at"] < (last + 1).start_time]
    if orders.empty:
        return []
    month = pd.Timedelta(days=30)
    first, newest = orders["created_at"].min(), orders["created_at"].max()
    cohort = customers[
        (customers["created_at"] >= first) & (customers["created_at"] <= newest - 3 * month)
    ]
    joined = cohort.set_index("customer_id")["created_at"]
    # Fewer than two such customers (e.g. a CRM whose contacts all predate the orders) test
    # nothing; mapping by an empty Series would also fail on its float dtype.
    if len(joined) < 2:
        return []
    placed = orders[orders["customer_id"].isin(joined.index)]
    tenure = (placed["created_at"] - placed["customer_id"].map(joined)) // month
    active = (
        pd.crosstab(placed["customer_id"], tenure).reindex(
            index=joined.index, columns=[0, 1, 2], fill_value=0
        )
        > 0
    )
    a1, a2, a3 = (active[k].to_numpy(float) for k in (0, 1, 2))
    excess = 100 * ((a1 - a2) - (a2 - a3))
    mean, se = excess.mean(), excess.std(ddof=1) / np.sqrt(len(excess))
    p = float(stats.norm.sf(mean / se)) if se > 0 else 1.0
    if mean < min_excess or p >= alpha:
        return []
    shares = [round(100 * a.mean(), 1) for a in (a1, a2, a3)]
    return [
        Alert(
            kind="month_one_churn",
            key="month_one_churn:all customers",
            period=str(last),
            evidence={
                "cohort": len(excess),
                "active_share_by_month": shares,
                "excess_points": round(float(mean), 2),
                "p_value": p,
            },
        )
    ]


def new_channel_csat(
    responses: pd.DataFrame,
    last: pd.Period,
    csat_scale: int = 5,
    alpha: float = ALPHA,
    new_months: int = 3,
    min_drop: float = 5.0,
) -> list[Alert]:
    """Alerts for channels first seen in the last `new_months` months whose CSAT top-2 share
    in the last month is significantly below their share in the months before (z-test)."""
    answers = responses[
        (responses["kind"] == "csat") & responses["channel"].notna() & responses["score"].notna()
    ]
    answers = answers[answers["submitted_at"].dt.to_period("M") <= last]
    months = answers["submitted_at"].dt.to_period("M")
    top = csat_top2(answers["score"], csat_scale)
    born = months.groupby(answers["channel"]).min()
    alerts = []
    for channel in born[born > last - new_months].index:
        mine = answers["channel"] == channel
        new, old = top[mine & (months == last)], top[mine & (months < last)]
        if len(new) < 2 or len(old) < 2:
            continue
        change = new.mean() - old.mean()
        se = np.hypot(new.std(ddof=1) / np.sqrt(len(new)), old.std(ddof=1) / np.sqrt(len(old)))
        p = float(stats.norm.cdf(change / se)) if se > 0 else 1.0
        if -change >= min_drop and p < alpha:
            alerts.append(
                Alert(
                    kind="new_channel_csat",
                    key=f"new_channel_csat:channel={channel}",
                    period=str(last),
                    evidence={
                        "channel": channel,
                        "since": str(born[channel]),
                        "before": float(old.mean()),
                        "after": float(new.mean()),
                        "n_before": len(old),
                        "n_after": len(new),
                        "p_value": p,
                    },
                )
            )
    return alerts


def detect_alerts(
    data: CxData, csat_scale: int = 5, alpha: float = ALPHA, min_growth: float = MIN_GROWTH
) -> list[Alert]:
    """Every alert for the last complete month against the month before, overall and by cut."""
    last = last_complete_month(data)
    if last is None:
        return []
    alerts = complaint_growth(data.tickets, last, alpha, min_growth)
    alerts += month_one_churn(data.customers, data.orders, last, alpha)
    alerts += new_channel_csat(data.responses, last, csat_scale, alpha)
    for by in (None, "segment", "region", "channel"):
        table = metric_table(data, list(WATCHED), [by] if by else [], "month", csat_scale)
        alerts += metric_shifts(table[table["period"] <= str(last)], by, alpha)
    return alerts
