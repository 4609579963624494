"""Web funnels: sessions per step and step conversion, each web source on its own.

Every web source counts sessions its own way (GA4 sessions, Metrica visits, Matomo visits) and
tags them differently, so their funnels are never added up: a funnel is computed per source,
and an analysis that needs one funnel (pain-point cells) uses one source.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pandas as pd

from tasks import store
from tasks.metrics import wilson_interval

log = logging.getLogger(__name__)

WEB_COLUMNS = [
    c.name for c in store.WebMetric.__table__.columns if c.name not in ("id", "source_id")
]
"""The `web_metric` columns analyses read: all but the row ids, `source` kept for funnels."""

# Rows that count events, not sessions (Metrica goal reaches, Matomo conversions, as cxloop
# stored them before it read goal visits): a session can reach a goal twice, so they never
# enter a funnel of sessions.
EVENT_METRICS = ("goal_reaches", "conversions")


def step_rows(web: pd.DataFrame, steps: Sequence[str]) -> pd.DataFrame:
    """The rows of `web` that count sessions at one of `steps` (all of them without `metric`;
    none without `step`, as in an empty frame)."""
    if "step" not in web.columns:
        return web.iloc[:0]
    counted = web["step"].isin(steps)
    if "metric" in web.columns:
        counted &= ~web["metric"].isin(EVENT_METRICS)
    return web[counted]


def sources(web: pd.DataFrame, steps: Sequence[str]) -> list[str]:
    """The web sources holding sessions at `steps`, by name; none when rows carry no source."""
    if "source" not in web.columns:
        return []
    return sorted(step_rows(web, steps)["source"].dropna().unique())


def main_source(web: pd.DataFrame, steps: Sequence[str]) -> str | None:
    """The source with the most sessions at the funnel's entry (the first of `steps` any source
    has), the alphabetically first on a tie; None when no row names its source. Logs a warning
    naming them all when there are several."""
    names = sources(web, steps)
    if len(names) < 2:
        return names[0] if names else None
    rows = step_rows(web, steps)
    entry = next(step for step in steps if (rows["step"] == step).any())
    entering = rows[rows["step"] == entry].groupby("source")["value"].sum()
    chosen = str(entering.reindex(names, fill_value=0).idxmax())
    log.warning(
        "web sources %s all hold funnel steps; funnels are never added up across sources, so "
        "this one uses %s, the source with the most sessions at %s. Set "
        "`journey.<stage>.source` in cxloop.yaml to choose another.",
        ", ".join(names),
        chosen,
        entry,
    )
    return chosen


def funnel_rows(web: pd.DataFrame, steps: Sequence[str], source: str | None = None) -> pd.DataFrame:
    """The rows one funnel counts: sessions at `steps` of the web source `source`, else of
    `main_source`; all step rows when they carry no source."""
    rows = step_rows(web, steps)
    if source is not None and "source" not in rows.columns:
        raise ValueError(f"web rows carry no `source` column, so source {source!r} is unknown")
    chosen = source if source is not None else main_source(web, steps)
    return rows if chosen is None else rows[rows["source"] == chosen]


def funnel(
    web: pd.DataFrame, steps: Sequence[str], by: Sequence[str] = (), source: str | None = None
) -> pd.DataFrame:
    """Sessions per funnel step (in `steps` order) with step conversion in % and its 95%
    Wilson interval (`conversion_ci_low`, `conversion_ci_high`; NaN where a step has more
    sessions than the one before), and drop-off in %, per value of `by`.

    Each web source is a funnel of its own: with several sources holding the steps, a
    `source` column tells their rows apart (never summed); `source` keeps that one's only.
    """
    rows = step_rows(web, steps) if source is None else funnel_rows(web, steps, source)
    keys = [*(["source"] if len(sources(rows, steps)) > 1 else []), *by]
    order = {step: i for i, step in enumerate(steps)}
    table = rows.groupby([*keys, "step"], observed=True)["value"].sum().rename("sessions")
    table = table.reset_index().assign(order=lambda t: t["step"].map(order))
    table = table.sort_values([*keys, "order"], ignore_index=True).drop(columns="order")
    previous = table.groupby(keys)["sessions"].shift(1) if keys else table["sessions"].shift(1)
    table["conversion"] = 100 * table["sessions"] / previous
    low, high = wilson_interval(table["sessions"] / previous, previous.fillna(0))
    table["conversion_ci_low"], table["conversion_ci_high"] = 100 * low, 100 * high
    table["drop_off"] = 100 - table["conversion"]
    return table
