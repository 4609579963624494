"""Reports from the store: Jinja2 templates (autoescaped) rendered into self-contained HTML."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from sqlalchemy.engine import Engine

from tasks import store
from tasks.hypotheses import Hypothesis

TEMPLATES = Path(__file__).resolve().parents[1] / "reports" / "templates"
KPI_COLUMNS = ("nps", "csat", "ces", "frt_hours", "fcr")


def effect(value: float | None, relative: bool) -> str:
    """An effect for people: `-38.9%` for relative ones, `+7.95` in the metric's units otherwise."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:+.1%}" if relative else f"{value:+.2f}"


def environment(template_dir: Path | None = None) -> Environment:
    """Jinja2 with autoescaping on for every template, user templates first if given."""
    search = [str(template_dir)] if template_dir else []
    env = Environment(
        loader=FileSystemLoader([*search, str(TEMPLATES)]),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["effect"] = effect
    return env


def _latest(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    return frame[frame[column] == frame[column].max()] if not frame.empty else frame


def index_context(engine: Engine, hypotheses: list[Hypothesis]) -> dict:
    """What the index page shows: KPIs by segment, ranked pain points, pilot results."""
    snapshots = store.read_frame(engine, store.MetricSnapshot)
    snapshots = (
        snapshots[snapshots["period"] == snapshots["period"].max()] if len(snapshots) else snapshots
    )
    kpis = (
        snapshots.assign(segment=snapshots["dims"].str.removeprefix("segment=")).pivot_table(
            index="segment", columns="metric", values=["value", "n"], aggfunc="first"
        )
        if len(snapshots)
        else pd.DataFrame()
    )
    pain = store.read_frame(engine, store.PainPoint)
    pain = pain[pain["period"] == pain["period"].max()].sort_values("rank") if len(pain) else pain
    results = store.read_frame(engine, store.ExperimentResult)
    latest = results.sort_values("as_of").groupby(["hypothesis_id", "metric"]).tail(1)
    titles = {h.id: h for h in hypotheses}
    experiments = []
    for hypothesis_id, rows in latest.groupby("hypothesis_id", sort=True):
        primary = rows[rows["role"] == "primary"].iloc[0].to_dict()
        experiments.append(
            {
                "hypothesis": titles.get(hypothesis_id),
                "id": hypothesis_id,
                "primary": primary,
                "others": rows[rows["role"] != "primary"].to_dict("records"),
            }
        )
    segments = [
        {
            "segment": segment,
            **{m: kpis["value"][m].get(segment) for m in KPI_COLUMNS if m in kpis["value"]},
            "n_nps": kpis["n"]["nps"].get(segment) if "nps" in kpis.get("n", {}) else None,
        }
        for segment in (kpis.index if len(kpis) else [])
    ]
    return {
        "period": pain["period"].iloc[0] if len(pain) else "no data yet",
        "segments": segments,
        "pain_points": pain.to_dict("records"),
        "max_score": float(pain["score"].max()) if len(pain) else 0.0,
        "experiments": experiments,
        "generated_at": f"{store.now_utc():%Y-%m-%d %H:%M} UTC",
    }


def render(template: str, context: dict, template_dir: Path | None = None) -> str:
    """The named template rendered with `context`."""
    return environment(template_dir).get_template(template).render(**context)


def write_index(engine: Engine, out_dir: Path, hypotheses: list[Hypothesis]) -> Path:
    """`out_dir/index.html` written from the store and recorded in the `report` table."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "index.html"
    path.write_text(render("index.html.j2", index_context(engine, hypotheses)), encoding="utf-8")
    row = pd.DataFrame(
        [
            {
                "kind": "index",
                "path": str(path),
                "created_at": store.now_utc(),
                "delivered_to": ["directory"],
            }
        ]
    )
    store.save_rows(engine, store.Report, row, ("kind", "path"))
    return path
