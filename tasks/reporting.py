"""Reports from the store: a before-and-after report per hypothesis, a monthly CX digest, an index.

Each report is rendered from autoescaped Jinja2 templates (`reports/templates/`, or a user's
own directory searched first) three ways: self-contained HTML with inline SVG charts, the
same HTML for e-mail with PNG charts referenced by Content-ID, and Markdown for Prefect
artifacts and the plain-text e-mail part. Labels come from `labels.yaml` in the report's
language. Customer comments are redacted (e-mail addresses, phone numbers) before rendering.
"""

from __future__ import annotations

import html
import math
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from babel.numbers import format_decimal
from jinja2 import Environment, FileSystemLoader, StrictUndefined, pass_context
from jinja2.runtime import Context
from markupsafe import Markup
from sqlalchemy.engine import Engine

from connectors.errors import ConfigError
from tasks import charts, store
from tasks.alerts import Alert, last_complete_month
from tasks.charts import Chart
from tasks.experiments import SRM_ALPHA, observed_arms, pilot_observations
from tasks.hypotheses import Guardrail, Hypothesis
from tasks.labels import TEMPLATES, alert_text, labels, reason_text, titled
from tasks.metrics import (
    CxData,
    churn,
    customer_value,
    difference_ci,
    kpis_by,
    mean_ci_by,
    post_stratified_nps,
    response_rates,
)
from tasks.text import Taxonomy, neutralise_bidi, redact_pii, tag_topics, verbatims

KPIS = ("nps", "csat", "ces", "frt_hours", "fcr", "churn")
HIGHER_IS_BETTER = {
    "nps": True,
    "csat": True,
    "ces": True,
    "frt_hours": False,
    "fcr": True,
    "churn": False,
}
OBSERVATION_UNITS = {
    "nps": "unit_nps",
    "csat": "unit_score",
    "ces": "unit_score",
    "frt_hours": "unit_hours",
    "art_hours": "unit_hours",
    "fcr": "unit_percent",
    "repeat": "unit_percent",
}
TOP_PAIN_POINTS = 10
VERBATIMS = 3
PAPER_SIZES = ("a4", "letter")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@dataclass(frozen=True)
class Rendered:
    """One report in every format, plus what chat messages and Prefect table artifacts show."""

    kind: str
    name: str
    title: str
    summary: str
    news: str  # what stakeholders are told again when it changes: the month, or a decision
    html: str
    email_html: str
    markdown: str
    charts: list[Chart]
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The Markdown as plain text for e-mail: entities decoded, since nothing renders it."""
        return html.unescape(self.markdown)


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


def effect(value: float | None, relative: bool) -> str:
    """An effect for people: `-38.9%` for relative ones, `+7.95` in the metric's units otherwise."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:+.1%}" if relative else f"{value:+.2f}"


def number(value: float | None, digits: int = 1) -> str:
    """`value` rounded for a table cell; `n/a` when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def markdown_cell(value: object) -> str:
    """`value` safe inside a Markdown table cell or quote: one line, pipes escaped."""
    return re.sub(r"\s+", " ", str(value)).replace("|", "\\|").strip()


def css_string(value: object) -> Markup:
    """`value` as a quoted CSS string for a `<style>` block: every character but letters,
    digits and spaces as a CSS escape, so no text can close the string or the block."""
    escaped = "".join(c if c.isalnum() or c == " " else f"\\{ord(c):x} " for c in str(value))
    return Markup(f'"{escaped}"')


def localised(value: float | None, digits: int, language: str, sign: bool = False) -> str:
    """`value` with `digits` decimals as `language` writes numbers (Russian: decimal comma,
    no-break-space thousands), signed if `sign`; `n/a` when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    pattern = "#,##0" + ("." + "0" * digits if digits else "")
    return format_decimal(
        value, format=f"+{pattern};-{pattern}" if sign else pattern, locale=language
    )


@pass_context
def _number_filter(context: Context, value: float | None, digits: int = 1) -> str:
    language = context["t"]["lang"]
    return number(value, digits) if language == "en" else localised(value, digits, language)


@pass_context
def _effect_filter(context: Context, value: float | None, relative: bool) -> str:
    language = context["t"]["lang"]
    if language == "en":
        return effect(value, relative)
    if relative:
        shown = localised(None if value is None else 100 * value, 1, language, sign=True)
        return shown if shown == "n/a" else f"{shown}%"
    return localised(value, 2, language, sign=True)


def environment(template_dir: Path | None = None) -> Environment:
    """Jinja2 with autoescaping on for every template, user templates first if given; every
    printed value loses its bidirectional controls, so customer text cannot reorder a report.
    `num` and `effect` write numbers in the language of the context's labels `t`."""
    search = [str(template_dir)] if template_dir else []
    env = Environment(
        loader=FileSystemLoader([*search, str(TEMPLATES)]),
        autoescape=True,
        finalize=neutralise_bidi,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        effect=_effect_filter,
        num=_number_filter,
        md=markdown_cell,
        redact=redact_pii,
        css_string=css_string,
    )
    return env


def render(template: str, context: Mapping[str, Any], template_dir: Path | None = None) -> str:
    """The named template rendered with `context`."""
    return environment(template_dir).get_template(template).render(**context)


def _render_all(
    kind: str,
    name: str,
    title: str,
    news: str,
    summary: str,
    context: dict[str, Any],
    chart_list: list[Chart],
    template_dir: Path | None,
    tables: dict[str, list[dict]],
    paper: str = "a4",
) -> Rendered:
    """Every format of one report; `news` is what stakeholders are told again when it
    changes, `summary` the paragraph for chat, `paper` the printed page size (`a4`, `letter`)."""
    if paper not in PAPER_SIZES:
        raise ConfigError(f"reports.paper: {paper!r} is not one of {', '.join(PAPER_SIZES)}")
    env = environment(template_dir)
    env.globals["paper"] = paper
    page, text = env.get_template(f"{kind}.html.j2"), env.get_template(f"{kind}.md.j2")
    return Rendered(
        kind=kind,
        name=name,
        title=title,
        news=news,
        summary=summary,
        html=page.render(**context, email=False),
        email_html=page.render(**context, email=True),
        markdown=text.render(**context),
        charts=chart_list,
        tables=tables,
    )


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as dicts with NaN as None, so templates can test `is none`."""
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


# The CX digest.


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
        metrics = {row["metric"]: row for row in _records(cells)}
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
) -> tuple[dict[str, Any], list[Chart]]:
    """What the digest shows for `month` (default: `digest_month`), and its charts.

    `pain` holds ranked pain points, `results` the latest experiment results (rows of
    `experiment_result`), `alerts` the last period's alerts.
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
    decided = {row["hypothesis_id"]: row for row in _records(primary)}
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
        "tiles": _records(tiles),
        "weighting": post_stratified_nps(current),
        "response_rates": _records(response_rates(data)),
        "customer_value": _records(customer_value(data.orders, data.customers, "segment"))
        if len(data.orders)
        else [],
        "breakdowns": [
            ("segment", by_segment, "nps"),
            ("region", by_region, "nps"),
            ("channel", by_channel, "csat"),
        ],
        "peak": peak,
        "pain_points": _records(top.drop(columns=["evidence"], errors="ignore"))
        if len(top)
        else [],
        "evidence": top["evidence"].tolist() if len(top) else [],
        "experiments": experiments,
        "alerts": [_alert(a, t) for a in alerts],
        "charts": {c.name: c for c in chart_list},
        "generated_at": f"{store.now_utc():%Y-%m-%d %H:%M} UTC",
    }
    return context, chart_list


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
) -> Rendered:
    """The CX digest for `month` (default: the last complete month in `data`) in every format,
    printed on `paper` (`a4` or `letter`)."""
    t = labels(language, template_dir)
    context, chart_list = digest_context(
        data, pain, results, hypotheses, alerts, t, csat_scale, month
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
        "pain_points": [
            {k: p[k] for k in ("rank", "key", "reach", "impact", "confidence", "effort", "score")}
            for p in context["pain_points"]
        ],
    }
    return _render_all(
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


# The before-and-after report of one hypothesis.


def experiment_name(hypothesis_id: str) -> str:
    """File stem of a hypothesis' report; one file per hypothesis, rewritten at each run."""
    return f"experiment-{hypothesis_id}"


def weekly_by_arm(obs: pd.DataFrame, arms: pd.DataFrame, start: date, end: date) -> pd.DataFrame:
    """Weekly mean of a metric's observations `obs` per arm with n and 95% CI, weeks starting
    on Monday."""
    obs = obs.merge(arms[["customer_id", "arm"]], on="customer_id")
    inside = (obs["at"] >= pd.Timestamp(start)) & (
        obs["at"] < pd.Timestamp(end) + pd.Timedelta(days=1)
    )
    obs = obs[inside]
    obs = obs.assign(week=obs["at"].dt.to_period("W-SUN").dt.start_time)
    return mean_ci_by(obs, ["arm", "week"]).reset_index()


def experiment_verbatims(
    responses: pd.DataFrame,
    arms: pd.DataFrame,
    hypothesis: Hypothesis,
    taxonomy: Taxonomy | None = None,
) -> dict[str, dict[str, list[str]]]:
    """Up to `VERBATIMS` redacted survey comments per arm, before (baseline) and after (pilot).

    Where the pilot targets a topic (`ticket:<topic>`, `comment:<topic>:…`), comments `taxonomy`
    tags with it come first, then the others: how customers speak of the pain before and after.
    """
    schedule = hypothesis.schedule
    said = responses.dropna(subset=["comment"]).merge(
        arms[["customer_id", "arm"]], on="customer_id"
    )
    at = said["submitted_at"]
    day = pd.Timedelta(days=1)
    when = np.select(
        [
            (at >= pd.Timestamp(schedule.baseline.start))
            & (at < pd.Timestamp(schedule.baseline.end) + day),
            (at >= pd.Timestamp(schedule.pilot.start))
            & (at < pd.Timestamp(schedule.pilot.end) + day),
        ],
        ["before", "after"],
        "",
    )
    said = said.assign(group=said["arm"] + "|" + when)[when != ""]
    kind, _, rest = hypothesis.pain_point.partition(":")
    on_topic = pd.Series(False, index=said.index)
    if kind in ("ticket", "comment"):
        texts = pd.Series(said["comment"].unique())
        tags = tag_topics(texts, taxonomy)
        spoken = texts[tags.loc[tags["topic"] == rest.split(":")[0], "text_index"]]
        on_topic = said["comment"].isin(spoken)
    said = said.assign(on_topic=on_topic)
    chosen = verbatims(said, "group", VERBATIMS, text="comment", first="on_topic")
    found = {arm: {"before": [], "after": []} for arm in ("pilot", "control")}
    for group, rows in chosen.groupby("group"):
        arm, moment = group.split("|")
        found[arm][moment] = rows["comment"].tolist()
    return found


def _reason(primary: Mapping[str, Any], t: Mapping[str, Any]) -> str:
    """Why the pilot got its decision, in `t`'s language; as stored (English) for results
    evaluated by an older cxloop, which kept no `why`."""
    why = (primary.get("cells") or {}).get("why")
    return reason_text(why, t) if why else primary["reason"]


def _guardrail(guard: Guardrail, row: Mapping[str, Any]) -> dict[str, Any]:
    """A guardrail as the report shows it: margin, estimate, the CI's worse end, status
    (`unknown` without a stored check or without an estimate: no data, never `holds`)."""
    worse = row.get("ci_high" if guard.harm > 0 else "ci_low") if row else None
    status = (row.get("cells") or {}).get("status") if row else None
    if row and not _finite(row.get("estimate")):
        status = "unknown"
    return {
        "metric": guard.metric,
        "margin": guard.harm * guard.limit,
        "row": row,
        "worse_end": worse,
        "status": status or "unknown",
    }


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _method(primary: Mapping[str, Any] | None) -> dict[str, Any]:
    """How the headline estimate was made: analysis, estimand, test, and the primary row's
    stored plan, quantile effects and response-rate check."""
    cells = (primary or {}).get("cells") or {}
    return {
        "analysis": cells.get("analysis"),
        "estimand": cells.get("estimand"),
        "sequential": bool(primary and primary.get("sequential")),
        "plan": cells.get("plan"),
        "quantiles": cells.get("quantiles") or [],
        "response": cells.get("response"),
        "warnings": cells.get("warnings") or [],
    }


def experiment_context(
    hypothesis: Hypothesis,
    results: pd.DataFrame,
    arms: pd.DataFrame,
    data: CxData,
    pain: pd.DataFrame,
    t: dict[str, Any],
    taxonomy: Taxonomy | None = None,
) -> tuple[dict[str, Any], list[Chart]]:
    """What the before-and-after report of `hypothesis` shows, and its chart.

    `results` are this hypothesis' latest `experiment_result` rows (one per metric), `arms`
    its assignment (`customer_id`, `arm`), `pain` the current pain-point ranking, `taxonomy`
    the topics that pick the verbatims.
    """
    h, schedule = hypothesis, hypothesis.schedule
    rows = _records(results)
    primary = next((r for r in rows if r["role"] == "primary"), None)
    if primary and primary["decision"]:
        primary["reason"] = _reason(primary, t)
    by_metric = {r["metric"]: r for r in rows}
    metric = h.metric.name
    newest = data.newest()
    end = schedule.pilot.end if pd.isna(newest) else min(schedule.pilot.end, newest.date())
    obs = pilot_observations(metric, data, h)
    weekly = weekly_by_arm(obs, arms, schedule.baseline.start, end)
    unit = t[OBSERVATION_UNITS[metric]]
    chart = charts.arms_over_time(
        "target",
        weekly,
        f"{t[metric]}: {t['pilot']} / {t['control']}, {t['over_time']}",
        f"{t[metric]}, {unit}",
        {"pilot": t["pilot"], "control": t["control"]},
        schedule.pilot.start,
        t["pilot_start"],
        t["months"],
    )
    cells = (
        pd.DataFrame(primary["cells"]["rows"]) if primary and primary["cells"] else pd.DataFrame()
    )
    table = []
    if len(cells):
        wide = cells.pivot(index="arm", columns="period", values=["mean", "n"])
        for arm in ("pilot", "control"):
            if arm in wide.index:
                before, after = (
                    wide.loc[arm, ("mean", "baseline")],
                    wide.loc[arm, ("mean", "pilot period")],
                )
                table.append(
                    {
                        "arm": arm,
                        "before": before,
                        "n_before": int(wide.loc[arm, ("n", "baseline")]),
                        "after": after,
                        "n_after": int(wide.loc[arm, ("n", "pilot period")]),
                        "difference": after - before,
                    }
                )
    guardrails = [_guardrail(guard, by_metric.get(guard.metric, {})) for guard in h.guardrails]
    ranked = titled(pain[pain["key"] == h.pain_point], t) if len(pain) else pain
    observed = observed_arms(obs, arms, schedule.pilot)
    n_pilot = int((observed["arm"] == "pilot").sum())
    srm_p = primary["srm_p"] if primary else None
    context = {
        "t": t,
        "title": f"{t['experiment_report']}: {h.title}",
        "running_header": f"{t['experiment_report']}: {h.title} · {t['pilot']}: "
        f"{schedule.pilot.start} … {schedule.pilot.end}",
        "h": h,
        "primary": primary,
        "results": rows,
        "pain_point": _records(ranked.drop(columns=["evidence"], errors="ignore"))[0]
        if len(ranked)
        else None,
        "timeline": [
            ("baseline_start", schedule.baseline.start),
            ("baseline_end", schedule.baseline.end),
            ("pilot_start", schedule.pilot.start),
            ("pilot_end", schedule.pilot.end),
            *([("as_of", primary["as_of"])] if primary else []),
        ],
        "table": table,
        "guardrails": guardrails,
        "srm": {
            "p": srm_p,
            "pilot": n_pilot,
            "control": len(observed) - n_pilot,
            "share": h.assignment.split,
            "alpha": SRM_ALPHA,
            "ok": srm_p is None or srm_p >= SRM_ALPHA,
        },
        "arms": str(h.assignment),
        "scope": str(h.scope) if h.scope and h.scope.tickets.filters() else None,
        "verbatims": experiment_verbatims(data.responses, arms, h, taxonomy),
        "method": _method(primary),
        "unit": unit,
        "charts": {"target": chart},
        "generated_at": f"{store.now_utc():%Y-%m-%d %H:%M} UTC",
    }
    return context, [chart]


def build_experiment(
    hypothesis: Hypothesis,
    results: pd.DataFrame,
    arms: pd.DataFrame,
    data: CxData,
    pain: pd.DataFrame,
    language: str = "en",
    template_dir: Path | None = None,
    taxonomy: Taxonomy | None = None,
    paper: str = "a4",
) -> Rendered:
    """The before-and-after report of `hypothesis` in every format, printed on `paper`."""
    t = labels(language, template_dir)
    context, chart_list = experiment_context(hypothesis, results, arms, data, pain, t, taxonomy)
    primary = context["primary"]
    decided = primary and primary["decision"]
    news = f"{hypothesis.title}: {t[primary['decision']] if decided else t['not_evaluated']}"
    summary = f"{news} — {primary['reason']}" if decided else news
    keep = ("metric", "role", "estimate", "ci_low", "ci_high", "p_value", "n_pilot", "n_control")
    tables = {
        "results": [{k: r[k] for k in keep} for r in context["results"]],
        "before_after": context["table"],
    }
    return _render_all(
        "experiment",
        experiment_name(hypothesis.id),
        context["title"],
        news,
        summary,
        context,
        chart_list,
        template_dir,
        tables,
        paper,
    )


# Writing, recording and the index.


def latest_results(engine: Engine) -> pd.DataFrame:
    """Each hypothesis' newest `experiment_result` rows (one per metric)."""
    results = store.read_frame(engine, store.ExperimentResult)
    if results.empty:
        return results
    newest = results.groupby("hypothesis_id")["as_of"].transform("max")
    return results[results["as_of"] == newest]


def latest_pain_points(engine: Engine) -> pd.DataFrame:
    """The most recent pain-point ranking."""
    pain = store.read_frame(engine, store.PainPoint)
    return pain[pain["period"] == pain["period"].max()] if len(pain) else pain


def write_report(rendered: Rendered, out_dir: Path) -> Path:
    """`out_dir/<name>.html` and `.md` written; returns the HTML's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{rendered.name}.html"
    path.write_text(rendered.html, encoding="utf-8")
    path.with_suffix(".md").write_text(rendered.markdown, encoding="utf-8")
    return path


def record_report(engine: Engine, kind: str, path: Path) -> None:
    """The report's row in the `report` table, created or refreshed."""
    row = {"kind": kind, "path": str(path), "created_at": store.now_utc()}
    store.save_rows(engine, store.Report, pd.DataFrame([row]), ("kind", "path"))


def print_pdf(html_path: Path, chromium: str = "chromium", timeout: float = 120) -> Path:
    """A PDF next to `html_path`, printed by headless Chromium; raises if Chromium fails.

    Page size, running header and page numbers come from the report's CSS `@page` rule and
    its margin boxes, so Chromium's own header and footer (date, file URL) are switched off.
    """
    pdf = html_path.with_suffix(".pdf")
    with tempfile.TemporaryDirectory(prefix="cxloop-chromium-") as profile:
        subprocess.run(
            [
                shutil.which(chromium) or chromium,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                "--no-pdf-header-footer",
                f"--print-to-pdf={pdf}",
                html_path.resolve().as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=timeout,
        )
    return pdf


def write_index(
    engine: Engine, out_dir: Path, language: str = "en", template_dir: Path | None = None
) -> Path:
    """`out_dir/index.html` linking every recorded report still on disk, newest first."""
    out_dir.mkdir(parents=True, exist_ok=True)
    reports = store.read_frame(engine, store.Report)
    reports = reports[reports["kind"] != "index"].sort_values("created_at", ascending=False)
    entries = []
    for row in reports.itertuples():
        path = Path(row.path)
        if path.exists():
            pdf = path.with_suffix(".pdf")
            entries.append(
                {
                    "kind": row.kind,
                    "name": path.stem,
                    "href": path.name,
                    "pdf": pdf.name if pdf.exists() else None,
                    "created_at": row.created_at,
                }
            )
    t = labels(language, template_dir)
    index = out_dir / "index.html"
    context = {
        "t": t,
        "title": t["index"],
        "entries": entries,
        "generated_at": f"{store.now_utc():%Y-%m-%d %H:%M} UTC",
        "email": False,
    }
    index.write_text(render("index.html.j2", context, template_dir), encoding="utf-8")
    record_report(engine, "index", index)
    return index
