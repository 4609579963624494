"""Alerts: significant changes between the last two periods, each with the evidence behind it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from tasks.metrics import Z95, CxData, metric_table

ALPHA = 0.01
MIN_GROWTH = 1.3  # complaint volume must grow by at least 30% (per day) to alert


@dataclass(frozen=True)
class Alert:
    """One alert: what moved, where, by how much, and how sure we are."""

    kind: str
    key: str
    period: str
    message: str
    evidence: dict = field(default_factory=dict)


# metric → (alert kind, which direction is worse, smallest change worth an alert)
WATCHED = {
    "nps": ("nps_drop", -1, 5.0),
    "ces": ("ces_drop", -1, 0.2),
    "csat_top2": ("csat_drop", -1, 5.0),
    "sla_breach": ("sla_spike", 1, 2.0),
}


def last_complete_month(data: CxData) -> pd.Period:
    """The latest month the ticket stream covers to its end (later survey answers are partial)."""
    return (data.tickets["created_at"].max() + pd.Timedelta(days=1)).to_period("M") - 1


def metric_shifts(table: pd.DataFrame, by: str | None, alpha: float = ALPHA) -> list[Alert]:
    """Alerts where a metric got significantly worse from the previous period to the last.

    `table` comes from `metric_table` with a period; the test is a two-sample z-test on the
    cell means, standard errors recovered from their 95% CIs.
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
            se = np.hypot(
                (old["ci_high"] - old["value"]) / Z95, (new["ci_high"] - new["value"]) / Z95
            )
            p = 2 * stats.norm.sf(abs(change) / se) if se > 0 else 1.0
            if change * worse >= minimum and p < alpha:
                where = f"{by}={group}" if by else "all customers"
                alerts.append(
                    Alert(
                        kind=kind,
                        key=f"{kind}:{where}",
                        period=last,
                        message=(
                            f"{metric} for {where} went from {old['value']:.1f} in {before} "
                            f"to {new['value']:.1f} in {last} ({change:+.1f}, p = {p:.2g})"
                        ),
                        evidence={
                            "metric": metric,
                            "segment": where,
                            "before": float(old["value"]),
                            "after": float(new["value"]),
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
                    message=(
                        f"tickets about {topic} grew {growth - 1:+.0%} per day: "
                        f"{old:,} in {before}, {new:,} in {last} (p = {p:.2g})"
                    ),
                    evidence={"topic": topic, "before": old, "after": new, "p_value": float(p)},
                )
            )
    return alerts


def detect_alerts(
    data: CxData, csat_scale: int = 5, alpha: float = ALPHA, min_growth: float = MIN_GROWTH
) -> list[Alert]:
    """Every alert for the last complete month against the month before, overall and by cut."""
    last = last_complete_month(data)
    alerts = complaint_growth(data.tickets, last, alpha, min_growth)
    for by in (None, "segment", "region", "channel"):
        table = metric_table(data, list(WATCHED), [by] if by else [], "month", csat_scale)
        alerts += metric_shifts(table[table["period"] <= str(last)], by, alpha)
    return alerts
