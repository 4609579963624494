"""The customer journey map: touchpoints grouped into stages, each with its metrics and barriers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np
import pandas as pd

from tasks.loader import CxData
from tasks.metrics import csat_top2, funnel, km_median_by, nps_points


class Stage(Protocol):
    ticket_topics: list[str]
    funnel_steps: list[str]
    surveys: list[str]


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
    from the stage's first funnel step to the step after its last), `surveys` (mean score
    per survey; NPS surveys in NPS points), `barriers` (ranked pain-point keys on the stage,
    best score first). CSAT counts the post-ticket answers of customers who raised a ticket
    on the stage's topics.
    """
    tickets, responses = data.tickets, data.responses
    steps = funnel(data.web, funnel_order)
    sessions = steps.set_index("step")["sessions"] if len(steps) else pd.Series(dtype=float)
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
        rows.append(
            {
                "stage": name,
                "touchpoints": [*stage.ticket_topics, *stage.funnel_steps, *stage.surveys],
                "tickets": len(on_stage),
                "csat_top2": top2.mean() if len(rated) else np.nan,
                "frt_median_hours": _frt_median(on_stage),
                "conversion": _conversion(sessions, stage.funnel_steps, funnel_order),
                "surveys": score.groupby(answers["survey"]).mean().round(2).to_dict(),
                "barriers": barriers["key"].tolist() if len(barriers) else [],
            }
        )
    return pd.DataFrame(rows)


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
    return float(km_median_by(spells, ["all"]).iloc[0])
