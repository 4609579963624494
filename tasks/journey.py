"""The customer journey map: touchpoints grouped into stages, each with its metrics and barriers."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np
import pandas as pd

from tasks.funnels import funnel, main_source, sources
from tasks.loader import CxData
from tasks.metrics import csat_top2, km_median_by, nps_points

log = logging.getLogger(__name__)


class Stage(Protocol):
    ticket_topics: list[str]
    funnel_steps: list[str]
    surveys: list[str]
    source: str | None


def journey_map(
    data: CxData,
    ranked: pd.DataFrame,
    stages: Mapping[str, Stage],
    funnel_order: Sequence[str],
    csat_scale: int = 5,
) -> pd.DataFrame:
    """One row per stage: its touchpoints, how they perform and the top barriers ranked there.

    Columns: `stage`, `touchpoints`, `tickets`, `csat_top2` (% of post-ticket CSAT in the top
    two boxes of `csat_scale` on the stage's topics), `frt_median_hours` (Kaplan–Meier, as
    `metrics` gives it: unanswered tickets censored at how long they waited), `conversion` (%
    from the stage's first funnel step to the step after its last, on the web source
    `source`), `source` (the stage's own `source` if set, else the only web source holding
    funnel steps, else the one with the most funnel entrants), `conversion_by_source` (the
    conversion on each web source holding funnel steps: sources are never added up),
    `surveys` (mean score per survey; NPS surveys in NPS points), `barriers` (ranked
    pain-point keys on the stage, best score first). CSAT counts the post-ticket answers of
    customers who raised a ticket on the stage's topics.
    """
    tickets, responses = data.tickets, data.responses
    sessions = _sessions_by_source(data.web, funnel_order)
    unnamed = any(stage.funnel_steps and stage.source is None for stage in stages.values())
    fallback = main_source(data.web, funnel_order) if unnamed else None
    csat = responses[(responses["kind"] == "csat") & responses["score"].notna()]
    rows = []
    for name, stage in stages.items():
        on_stage = tickets[tickets["topic"].isin(stage.ticket_topics)]
        rated = csat[csat["customer_id"].isin(on_stage["customer_id"])]
        top2 = csat_top2(rated["score"], csat_scale)
        answers = responses[responses["survey"].isin(stage.surveys)]
        score = answers["score"].where(answers["kind"] != "nps", nps_points(answers["score"]))
        keys = [f"ticket:{t}" for t in stage.ticket_topics]
        barriers = ranked[ranked["key"].isin(keys)].sort_values("rank") if len(ranked) else ranked
        by_source = {
            source: _conversion(steps, stage.funnel_steps, funnel_order)
            for source, steps in sessions.items()
        }
        source = _stage_source(name, stage, sessions, fallback)
        rows.append(
            {
                "stage": name,
                "touchpoints": [*stage.ticket_topics, *stage.funnel_steps, *stage.surveys],
                "tickets": len(on_stage),
                "csat_top2": top2.mean() if len(rated) else np.nan,
                "frt_median_hours": _frt_median(on_stage),
                "conversion": by_source.get(source, np.nan),
                "source": source,
                "conversion_by_source": by_source if stage.funnel_steps else {},
                "surveys": score.groupby(answers["survey"]).mean().round(2).to_dict(),
                "barriers": barriers["key"].tolist() if len(barriers) else [],
            }
        )
    return pd.DataFrame(rows)


def _sessions_by_source(web: pd.DataFrame, order: Sequence[str]) -> dict[str | None, pd.Series]:
    """Sessions per funnel step (index: step) of each web source holding funnel steps; one
    entry keyed None when the rows name no source."""
    table = funnel(web, order)
    if "source" in table.columns:
        return {s: part.set_index("step")["sessions"] for s, part in table.groupby("source")}
    if table.empty:
        return {}
    named = sources(web, order)
    return {named[0] if named else None: table.set_index("step")["sessions"]}


def _stage_source(
    name: str, stage: Stage, sessions: Mapping[str | None, pd.Series], fallback: str | None
) -> str | None:
    """The web source a stage's conversion comes from: its own, else the only one, else
    `fallback`; none for a stage without funnel steps; a warning when the stage names a
    source that holds no funnel steps."""
    if not stage.funnel_steps:
        return None
    if stage.source is None:
        return next(iter(sessions)) if len(sessions) == 1 else fallback
    if stage.source not in sessions:
        log.warning(
            "journey.%s.source: web source %s holds no funnel steps (sources with funnel "
            "steps: %s); check the source's name under `sources:`.",
            name,
            stage.source,
            ", ".join(str(s) for s in sessions) or "none",
        )
    return stage.source


def _conversion(sessions: pd.Series, steps: list[str], order: Sequence[str]) -> float:
    """% of sessions entering the stage's first step that reach the step after its last."""
    inside = [s for s in order if s in steps]
    if not inside or inside[0] not in sessions:
        return np.nan
    last = list(order).index(inside[-1])
    exit_step = order[last + 1] if last + 1 < len(order) else inside[-1]
    return float(100 * sessions.get(exit_step, np.nan) / sessions[inside[0]])


def _frt_median(tickets: pd.DataFrame) -> float:
    """Kaplan–Meier median FRT of `tickets`, unanswered ones censored; NaN without tickets."""
    if tickets.empty:
        return float("nan")
    spells = pd.DataFrame(
        {
            "time": tickets["frt_hours"].fillna(tickets["frt_waited_hours"]),
            "observed": tickets["frt_hours"].notna(),
            "all": 0,
        }
    )
    return float(km_median_by(spells, ["all"])["value"].iloc[0])
