"""The monthly CX digest: the month it covers, the KPI tiles against the month before, the
breakdowns, the ticket load, the pain points, the pilots and the alerts, in every format."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from connectors.errors import ConfigError
from tasks import charts, store
from tasks.alerts import Alert, last_complete_month
from tasks.charts import Chart
from tasks.hypotheses import Hypothesis
from tasks.labels import alert_text, labels, titled
from tasks.loader import CxData
from tasks.metrics import (
    churn,
    customer_value,
    difference_ci,
    kpis_by,
    post_stratified_nps,
    response_rates,
)
from tasks.pilot_report import experiment_name
from tasks.render import Rendered, effect, generated_at, number, records, render_report
from tasks.standards import latest_with_trend, summary

KPIS = ("nps", "csat", "ces", "frt_hours", "fcr", "churn")
HIGHER_IS_BETTER = {
    "nps": True,
    "csat": True,
    "ces": True,
    "frt_hours": False,
    "fcr": True,
    "churn": False,
}
TOP_PAIN_POINTS = 10


@dataclass(frozen=True)
class Month:
    """A calendar month as `[start, end)`."""

    label: str
    start: pd.Timestamp
    end: pd.Timestamp

    @classmethod
    def containing(cls, moment: pd.Timestamp) -> Month:
        start = moment.to_period("M").start_time
        return cls(f"{start:%Y-%m}", start, start + pd.offsets.MonthBegin(1))

    def previous(self) -> Month:
        return Month.containing(self.start - pd.Timedelta(days=1))


def digest_month(data: CxData) -> Month:
    """The month the digest covers: the last complete one, as alerts use (`last_complete_month`).

    Data ending inside a month gives the month before; data reaching a month's last day gives
    that month. Data inside a single month, where none is complete yet, gives that month; no
    data at all, the month before the current one.
    """
    last = last_complete_month(data)
    if last is None:
        return Month.containing(pd.Timestamp(store.now_utc())).previous()
    month = Month.containing(last.start_time)
    oldest = pd.Series([data.tickets["created_at"].min(), data.responses["submitted_at"].min()])
    return month if month.end > oldest.min() else Month.containing(month.end)


def within(data: CxData, month: Month) -> CxData:
    """`data` with tickets and responses restricted to `month`."""
    tickets = data.tickets["created_at"]
    answered = data.responses["submitted_at"]
    return CxData(
        customers=data.customers,
        tickets=data.tickets[(tickets >= month.start) & (tickets < month.end)],
        responses=data.responses[(answered >= month.start) & (answered < month.end)],
        orders=data.orders,
        web=data.web,
    )


def kpi_tiles(data: CxData, month: Month, csat_scale: int) -> pd.DataFrame:
    """The headline KPIs for `month` against the month before, one row per metric.

    Columns: `metric`, `value`, `n`, `pending` (tickets whose outcome is still open, see
    `metric_table`), `ci_low`, `ci_high`, `previous`, `change`, `change_low`, `change_high`
    (95% CI of the change from both months' CIs, `difference_ci`: Newcombe's for the shares'
    Wilson CIs), `verdict` (`better`, `worse` or `not_significant`). FRT is a median and has
    no CI, so its change has no verdict.
    """
    frames = []
    for label, period in (("now", month), ("before", month.previous())):
        overall = kpis_by(within(data, period), "segment", csat_scale)
        overall = overall[overall["segment"] == "all"].drop(columns="segment")
        lost = churn(data.orders, period.start, period.end).assign(metric="churn", pending=0)
        frames.append(pd.concat([overall, lost], ignore_index=True).assign(when=label))
    both = pd.concat(frames, ignore_index=True).pivot(index="metric", columns="when")
    now, before = both.xs("now", axis=1, level=1), both.xs("before", axis=1, level=1)
    change = now["value"] - before["value"]
    low, high = difference_ci(now, before)
    direction = pd.Series(HIGHER_IS_BETTER).reindex(now.index).map({True: 1, False: -1})
    significant = (low > 0) | (high < 0)
    verdict = np.where(
        ~significant | low.isna() | high.isna(),
        "not_significant",
        np.where(np.sign(change) == direction, "better", "worse"),
    )
    tiles = pd.DataFrame(
        {
            "value": now["value"],
            "n": now["n"],
            "pending": now["pending"],
            "ci_low": now["ci_low"],
            "ci_high": now["ci_high"],
            "previous": before["value"],
            "change": change,
            "change_low": low,
            "change_high": high,
            "verdict": verdict,
        }
    )
    # A metric no source measures (e.g. CES without a CES survey) gets no tile.
    shown = [metric for metric in KPIS if metric in tiles.index]
    return tiles.reindex(shown).rename_axis("metric").reset_index()


def kpis_by_contact_channel(data: CxData, csat_scale: int) -> pd.DataFrame:
    """CSAT, CES, FRT and FCR per support channel (of the ticket or survey), plus `all`.

    `kpis_by` on the contact channel, so the same definitions: `channel`, `metric`,
    `value`, `n`, `pending`, `ci_low`, `ci_high`.
    """
    return kpis_by(data, "channel", csat_scale, ("csat_top2", "ces", "frt_hours", "fcr"))


def breakdown(long: pd.DataFrame, by: str, key_metric: str) -> list[dict[str, Any]]:
    """Rows per value of `by`, worst `key_metric` first; `low` marks values significantly
    below the overall value (the 95% CI lies entirely under it)."""
    overall = long[(long[by] == "all") & (long["metric"] == key_metric)]["value"]
    reference = float(overall.iloc[0]) if len(overall) else math.nan
    groups = long[long[by] != "all"]
    rows = []
    for value, cells in groups.groupby(by, sort=False):
        metrics = {row["metric"]: row for row in records(cells)}
        key = metrics.get(key_metric, {})
        rows.append(
            {
                "group": value,
                "metrics": metrics,
                "key": key.get("value"),
                "low": key.get("ci_high") is not None and key["ci_high"] < reference,
            }
        )
    rows.sort(key=lambda r: math.inf if r["key"] is None else r["key"])
    return [{**r, "reference": reference} for r in rows]


def _breakdown_chart(name: str, rows: list[dict], metric: str, title: str, t: dict) -> Chart:
    cells = [r["metrics"].get(metric, {}) for r in rows]
    values = [c.get("value") if c.get("value") is not None else np.nan for c in cells]
    ci = (
        [
            c.get("ci_low") if c.get("ci_low") is not None else v
            for c, v in zip(cells, values, strict=True)
        ],
        [
            c.get("ci_high") if c.get("ci_high") is not None else v
            for c, v in zip(cells, values, strict=True)
        ],
    )
    return charts.bars(
        name,
        [str(r["group"]) for r in rows],
        values,
        title,
        f"{t[metric]}, {t['unit_' + metric]}",
        ci=ci,
        highlight=[r["low"] for r in rows],
        reference=(rows[0]["reference"], t["overall"]) if rows else None,
        decimal=t["decimal_mark"],
    )


def ticket_load(tickets: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Tickets per weekday (0 = Monday) × hour of day, and the busiest cell with its ratio to
    the median cell, so a peak is reported as a peak rather than averaged away."""
    at = tickets["created_at"].dropna()
    counts = pd.crosstab(at.dt.day_of_week, at.dt.hour).reindex(
        index=range(7), columns=range(24), fill_value=0
    )
    grid = counts.to_numpy()
    day, hour = np.unravel_index(np.argmax(grid), grid.shape) if grid.sum() else (0, 0)
    median = float(np.median(grid))
    hourly = grid.sum(axis=0)
    peak = {
        "weekday": int(day),
        "hour": int(hour),
        "tickets": int(grid[day, hour]),
        "ratio": grid[day, hour] / median if median else None,
        "busiest_hour": int(np.argmax(hourly)),
        "busiest_hour_tickets": int(hourly.max()),
        "total": int(grid.sum()),
    }
    return counts, peak


def digest_context(
    data: CxData,
    pain: pd.DataFrame,
    results: pd.DataFrame,
    hypotheses: Sequence[Hypothesis],
    alerts: Sequence[Alert],
    t: dict[str, Any],
    csat_scale: int = 5,
    month: Month | None = None,
    standards: pd.DataFrame | None = None,
) -> tuple[dict[str, Any], list[Chart]]:
    """What the digest shows for `month` (default: `digest_month`), and its charts.

    `pain` holds ranked pain points, `results` the latest experiment results (rows of
    `experiment_result`), `alerts` the last period's alerts, `standards` the standards'
    verdicts per month (rows of `standard_snapshot`).
    """
    month = month or digest_month(data)
    current = within(data, month)
    tiles = kpi_tiles(data, month, csat_scale)
    by_segment = breakdown(kpis_by(current, "segment", csat_scale), "segment", "nps")
    by_region = breakdown(kpis_by(current, "region", csat_scale), "region", "nps")
    by_channel = breakdown(kpis_by_contact_channel(current, csat_scale), "channel", "csat")
    counts, peak = ticket_load(current.tickets)
    top = titled(pain.sort_values("rank").head(TOP_PAIN_POINTS), t) if len(pain) else pain
    chart_list = [
        _breakdown_chart("nps-segment", by_segment, "nps", f"{t['nps_by']}: {t['segment']}", t),
        _breakdown_chart("nps-region", by_region, "nps", f"{t['nps_by']}: {t['region']}", t),
        _breakdown_chart("csat-channel", by_channel, "csat", f"{t['csat_by']}: {t['channel']}", t),
        charts.load_heatmap(
            "load",
            counts,
            f"{t['load_title']}, {month.label}",
            t["weekdays"],
            t["hour_of_day"],
            t["tickets"],
            t["decimal_mark"],
        ),
    ]
    if len(top):
        chart_list.append(
            charts.bars(
                "pain",
                top["title"].tolist(),
                top["score"].tolist(),
                t["pain_scores"],
                t["score"],
                decimal=t["decimal_mark"],
            )
        )
    primary = results[results["role"] == "primary"] if len(results) else results
    decided = {row["hypothesis_id"]: row for row in records(primary)}
    experiments = [
        {"hypothesis": h, "result": decided.get(h.id), "link": experiment_name(h.id)}
        for h in hypotheses
    ]
    context = {
        "t": t,
        "title": f"{t['digest']} {month.label}",
        "running_header": f"{t['digest']} · {t['period']}: {month.start:%Y-%m-%d} … "
        f"{month.end - pd.Timedelta(days=1):%Y-%m-%d}",
        "month": month,
        "previous": month.previous(),
        "last_day": f"{month.end - pd.Timedelta(days=1):%Y-%m-%d}",
        "tiles": records(tiles),
        **standards_context(standards, month, t),
        "weighting": post_stratified_nps(current),
        "response_rates": records(response_rates(data)),
        "customer_value": records(customer_value(data.orders, data.customers, "segment"))
        if len(data.orders)
        else [],
        "breakdowns": [
            ("segment", by_segment, "nps"),
            ("region", by_region, "nps"),
            ("channel", by_channel, "csat"),
        ],
        "peak": peak,
        "pain_points": records(top.drop(columns=["evidence"], errors="ignore")) if len(top) else [],
        "evidence": top["evidence"].tolist() if len(top) else [],
        "experiments": experiments,
        "alerts": [_alert(a, t) for a in alerts],
        "charts": {c.name: c for c in chart_list},
        "generated_at": generated_at(),
    }
    return context, chart_list


def standards_context(
    standards: pd.DataFrame | None, month: Month, t: Mapping[str, Any]
) -> dict[str, Any]:
    """`standards` (each standard's latest month up to `month`, with its trend) and
    `standards_summary` ("2 of 5 standards missed, 1 at risk"); empty without any."""
    if standards is None or standards.empty:
        return {"standards": [], "standards_summary": ""}
    upto = standards[standards["period"] <= month.label]
    counts = summary(upto)
    return {
        "standards": records(latest_with_trend(upto)),
        "standards_summary": t["standards"]["summary"].format(**counts),
    }


def _alert(alert: Alert, t: Mapping[str, Any]) -> dict[str, str]:
    """An alert's text and kind in `t`'s language; its stored English text when an older
    cxloop raised it, whose evidence lacks fields today's wording uses."""
    kind = t["alert_kinds"].get(alert.kind, alert.kind)
    try:
        alert_text(alert.kind, alert.period, alert.evidence, labels("en"))
    except ConfigError:
        return {"title": alert.message, "kind": kind}
    return {"title": alert_text(alert.kind, alert.period, alert.evidence, t), "kind": kind}


def digest_summary(context: Mapping[str, Any]) -> str:
    """One paragraph for chat: the KPIs with their change, the top pain point, alert count."""
    t = context["t"]
    parts = [
        f"{t[row['metric']]} {number(row['value'])} ({effect(row['change'], False)})"
        for row in context["tiles"]
        if row["value"] is not None
    ]
    text = f"{context['title']}: " + "; ".join(parts) + "."
    if context["pain_points"]:
        text += f" {t['pain_points']}: {context['pain_points'][0]['title']}."
    return text + f" {t['alerts']}: {len(context['alerts'])}."


def build_digest(
    data: CxData,
    pain: pd.DataFrame,
    results: pd.DataFrame,
    hypotheses: Sequence[Hypothesis],
    alerts: Sequence[Alert] = (),
    language: str = "en",
    csat_scale: int = 5,
    template_dir: Path | None = None,
    month: Month | None = None,
    paper: str = "a4",
    standards: pd.DataFrame | None = None,
) -> Rendered:
    """The CX digest for `month` (default: the last complete month in `data`) in every format,
    printed on `paper` (`a4` or `letter`)."""
    t = labels(language, template_dir)
    context, chart_list = digest_context(
        data, pain, results, hypotheses, alerts, t, csat_scale, month, standards
    )
    tables = {
        "kpis": [
            {
                "metric": r["metric"],
                "value": r["value"],
                "n": r["n"],
                "ci_low": r["ci_low"],
                "ci_high": r["ci_high"],
                "change": r["change"],
                "verdict": r["verdict"],
            }
            for r in context["tiles"]
        ],
        "standards": [
            {
                k: s[k]
                for k in ("standard", "period", "target", "value", "ci_low", "ci_high", "status")
            }
            for s in context["standards"]
        ],
        "pain_points": [
            {k: p[k] for k in ("rank", "key", "reach", "impact", "confidence", "effort", "score")}
            for p in context["pain_points"]
        ],
    }
    return render_report(
        "digest",
        f"digest-{context['month'].label}",
        context["title"],
        context["title"],
        digest_summary(context),
        context,
        chart_list,
        template_dir,
        tables,
        paper,
    )
