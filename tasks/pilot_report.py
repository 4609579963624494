"""The before-and-after report of one hypothesis: its context from the stored results, the
arms and the data, and the report in every format."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from babel import Locale

from tasks import charts
from tasks.charts import Chart
from tasks.cumulative_effect import cumulative_effect
from tasks.experiments import SRM_ALPHA, analysis_of, in_period, pilot_observations
from tasks.hypotheses import Guardrail, Hypothesis, Period
from tasks.labels import labels, reason_text, titled, worded
from tasks.loader import CxData
from tasks.metrics import mean_ci_by
from tasks.render import Rendered, effect, generated_at, localised, records, render_report
from tasks.segment_effects import segment_effects
from tasks.text import Taxonomy, tag_topics, verbatims

OBSERVATION_UNITS = {
    "nps": "unit_nps",
    "csat": "unit_score",
    "ces": "unit_score",
    "frt_hours": "unit_hours",
    "art_hours": "unit_hours",
    "fcr": "unit_percent",
    "repeat": "unit_percent",
}
VERBATIMS = 3
SEGMENT_COLUMNS = ("dimension", "group", "estimate", "ci_low", "ci_high", "p_adjusted",
                   "n_pilot", "n_control")  # fmt: skip
PLACEBO_BARS = 30  # more placebo assignments than this are summarised by their p-value only


def experiment_name(hypothesis_id: str) -> str:
    """File stem of a hypothesis' report; one file per hypothesis, rewritten at each run."""
    return f"experiment-{hypothesis_id}"


def weekly_by_arm(obs: pd.DataFrame, arms: pd.DataFrame, period: Period) -> pd.DataFrame:
    """Weekly mean of a metric's observations `obs` per arm with n and 95% CI, weeks starting
    on Monday."""
    obs = obs.merge(arms[["customer_id", "arm"]], on="customer_id")
    obs = obs[in_period(obs["at"], period)]
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
    when = np.select(
        [
            in_period(at, schedule.baseline),
            in_period(at, schedule.pilot),
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
    """Why the pilot got its decision, in `t`'s language: the customer-level rule, else the
    unit-level verdict; as stored (English) for results evaluated by an older cxloop, which
    kept neither."""
    cells = primary.get("cells") or {}
    if cells.get("why"):
        return reason_text(cells["why"], t)
    if cells.get("unit"):
        return _unit_verdict(cells["unit"], t)
    return primary["reason"]


def _p(value: float | None, t: Mapping[str, Any]) -> str:
    """A p-value to two significant digits, as `t`'s language writes decimals."""
    return "n/a" if value is None else f"{value:.2g}".replace(".", t["decimal_mark"])


def _signed(value: float | None, relative: bool, t: Mapping[str, Any]) -> str:
    """An effect as the report's `effect` filter writes it in `t`'s language."""
    if t["lang"] == "en":
        return effect(value, relative)
    if relative:
        shown = localised(None if value is None else 100 * value, 1, t["lang"], sign=True)
        return shown if shown == "n/a" else f"{shown}%"
    return localised(value, 2, t["lang"], sign=True)


def _status(check: Mapping[str, Any]) -> str:
    """passed, failed (blocking), warning (not blocking) or informs (cannot decide)."""
    if not check["blocking"] and check["name"] == "placebo_in_space":
        return "informs"
    if check["passed"]:
        return "passed"
    return "failed" if check["blocking"] else "warning"


def _check_line(check: Mapping[str, Any], unit: Mapping[str, Any], t: Mapping[str, Any]) -> str:
    """What a check found, in plain words of `t`'s language."""
    fields = {"p": _p(check["p_value"], t), "rmspe": localised(unit["pre_rmspe"], 2, t["lang"])}
    outcome = "passed" if check["passed"] else "failed"
    outcome = "informs" if _status(check) == "informs" else outcome
    return worded(t, "unit_check_lines", f"{check['name']}_{outcome}", fields)


def _unit_verdict(unit: Mapping[str, Any], t: Mapping[str, Any]) -> str:
    """The unit-level verdict with its numbers, in `t`'s language."""
    failed = [c for c in unit["checks"] if c["blocking"] and not c["passed"]]
    if failed:
        names = ", ".join(
            f"{t['unit_check_names'][c['name']]} (p = {_p(c['p_value'], t)})" for c in failed
        )
        return worded(t, "unit_verdicts", "blocked", {"checks": names})
    method = unit["method"]
    fields = {
        "method": t["unit_methods"][method],
        "estimate": _signed(unit["estimate"], False, t),
        "interval": t["unit_intervals"][method],
        "low": _signed(unit["low"], False, t),
        "high": _signed(unit["high"], False, t),
        "p": _p(unit["p"], t),
        "alpha": f"{unit['alpha']:g}".replace(".", t["decimal_mark"]),
    }
    shown = unit["p"] is not None and unit["p"] < unit["alpha"]
    return worded(t, "unit_verdicts", "shown" if shown else "not_shown", fields)


def unit_analysis(
    hypothesis: Hypothesis, primary: Mapping[str, Any] | None, t: Mapping[str, Any]
) -> tuple[dict[str, Any] | None, list[Chart]]:
    """What the report shows of a unit pilot's analysis (stored in the primary row's `unit`
    cells), and its charts: the treated units against their counterfactual and, for few
    enough assignments, the placebo distribution. None for pilots judged per customer;
    `{"fallback": True}` when the panel was too thin for a unit-level analysis."""
    if analysis_of(hypothesis) != "auto" or not primary:
        return None, []
    unit = (primary.get("cells") or {}).get("unit")
    if not unit:
        return {"fallback": True}, []
    checks = [
        {**c, "title": t["unit_check_names"][c["name"]], "status": _status(c),
         "line": _check_line(c, unit, t)}
        for c in unit["checks"]
    ]  # fmt: skip
    method_check = next((c for c in checks if c["name"] == "method"), None)
    metric = t[hypothesis.metric.name]
    counterfactual = t["unit_counterfactuals"][unit["method"]]
    title = t["unit_chart_title"].format(metric=metric, counterfactual=counterfactual)
    series = charts.treated_against_counterfactual(
        "unit_series",
        pd.DataFrame(unit["series"]),
        title,
        f"{metric}, {t[OBSERVATION_UNITS[hypothesis.metric.name]]}",
        (t["unit_pilot_units"], counterfactual),
        hypothesis.schedule.pilot.start,
        t["pilot_start"],
        t["months"],
    )
    shown = [series]
    placebos = pd.DataFrame(unit["placebos"])
    if 1 < len(placebos) <= PLACEBO_BARS:
        shown.append(
            charts.bars(
                "unit_placebos",
                placebos["unit"].tolist(),
                placebos["statistic"].tolist(),
                t["unit_placebos"],
                t["unit_placebo_actual"],
                highlight=placebos["treated"].tolist(),
                decimal=t["decimal_mark"],
            )
        )
    context = {
        **unit,
        "fallback": False,
        "method_name": t["unit_methods"][unit["method"]],
        "interval": t["unit_intervals"][unit["method"]],
        "checks": [c for c in checks if c["name"] != "method"],
        "method_check": method_check,
        "verdict": _unit_verdict(unit, t),
        "weights": sorted(unit["weights"], key=lambda w: -(w["weight"] or 0)),
        "charts": shown,
    }
    return context, shown


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


def _before_after(primary: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Per arm, the primary metric's stored means and n before (baseline) and after (pilot
    period), and their difference; empty without stored cells."""
    cells = (
        pd.DataFrame(primary["cells"]["rows"]) if primary and primary["cells"] else pd.DataFrame()
    )
    if not len(cells):
        return []
    wide = cells.pivot(index="arm", columns="period", values=["mean", "n"])
    table = []
    for arm in ("pilot", "control"):
        if arm in wide.index:
            before = wide.loc[arm, ("mean", "baseline")]
            after = wide.loc[arm, ("mean", "pilot period")]
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
    return table


def metric_intervals(
    rows: list[dict[str, Any]], guardrails: list[dict[str, Any]], t: Mapping[str, Any]
) -> list[Chart]:
    """The per-metric interval chart (none without an estimate): primary, secondary and
    guardrail metrics with their 95% CIs, relative effects in %, each guardrail's margin."""
    margins = {g["metric"]: g["margin"] for g in guardrails}
    shown = [
        {
            "label": f"{t[r['metric']]} ({t[r['role']]})",
            **{k: r[k] * (100 if r["relative"] else 1) for k in ("estimate", "ci_low", "ci_high")},
            "unit": "%" if r["relative"] else t[OBSERVATION_UNITS.get(r["metric"], "unit_score")],
            "margin": margins.get(r["metric"]) if r["role"] == "guardrail" else None,
        }
        for r in rows
        if all(_finite(r.get(k)) for k in ("estimate", "ci_low", "ci_high"))
    ]
    if not shown:
        return []
    return [charts.intervals("effects", shown, t["effects_chart"], t["margin"],
                             t["decimal_mark"])]  # fmt: skip


def _p_table(value: float | None, t: Mapping[str, Any]) -> str:
    """A p-value for a table cell: two significant digits, `< 0.001` below that."""
    if value is not None and value < 0.001:
        return "< " + f"{0.001:g}".replace(".", t["decimal_mark"])
    return _p(value, t)


def segment_section(
    hypothesis: Hypothesis,
    obs: pd.DataFrame,
    arms: pd.DataFrame,
    customers: pd.DataFrame,
    dimensions: Sequence[str],
    t: Mapping[str, Any],
) -> dict[str, Any] | None:
    """What the report shows of the primary effect by group of `dimensions` (those the
    customers carry as columns), Holm-adjusted across the groups; None without any."""
    properties = customers.get("attributes", pd.Series(dtype=object)).dropna()
    known = {*customers.columns, *(k for p in properties if isinstance(p, dict) for k in p)}
    shown = [d for d in dict.fromkeys(dimensions) if d in known - {"attributes"}]
    if not shown:
        return None
    found = segment_effects(hypothesis, obs, arms, customers, shown)
    analysis = t["analysis_cuped" if analysis_of(hypothesis) == "cuped" else "analysis_did"]
    plural = Locale.parse(t["lang"]).plural_form(found.family)
    fields = {
        "analysis": analysis[:1].upper() + analysis[1:],
        "family": t["segment_groups"][plural].format(n=found.family),
        "alpha": f"{found.alpha:g}".replace(".", t["decimal_mark"]),
        "min": found.min_per_arm,
    }
    rows = [
        {**row, "name": f"{t['breakdown_names'].get(row['dimension'], row['dimension'])}: "
         f"{row['group']}", "p_shown": _p_table(row["p_adjusted"], t)}
        for row in records(found.rows)
    ]  # fmt: skip
    return {
        "rows": rows,
        "relative": found.relative,
        "family": found.family,
        "note": t["segment_note"].format(**fields),
        "none": t["segment_none"].format(**fields) if not found.family else None,
    }


def cumulative_section(
    hypothesis: Hypothesis,
    obs: pd.DataFrame,
    arms: pd.DataFrame,
    last: date,
    t: Mapping[str, Any],
) -> tuple[dict[str, Any] | None, list[Chart]]:
    """The primary estimate on the data up to each day (week) of the pilot until `last`, and
    its chart; None before the pilot has an estimate."""
    pilot = hypothesis.schedule.pilot
    if last < pilot.start:
        return None, []
    found = cumulative_effect(hypothesis, obs, arms, last)
    if not len(found.points):
        return None, []
    scale = 100 if found.relative else 1
    shown = found.points.assign(**{k: found.points[k] * scale
                                   for k in ("estimate", "ci_low", "ci_high")})  # fmt: skip
    metric = hypothesis.metric
    unit = "%" if found.relative else t[OBSERVATION_UNITS.get(metric.name, "unit_score")]
    step = t["cumulative_steps"][found.step]
    title = t["cumulative_chart"].format(metric=t[metric.name], step=step)
    chart = charts.cumulative(
        "cumulative",
        shown,
        title,
        f"{t['cumulative_axis']}, {unit}",
        (metric.expected_effect.value * scale, t["cumulative_expected"]),
        t["months"],
        t["decimal_mark"],
    )
    final = found.points.iloc[-1]
    interval = t["cumulative_interval"]["sequential" if found.sequential else "fixed"]
    note = t["cumulative_note"].format(
        interval=interval,
        day=f"{final['day']:%Y-%m-%d}",
        estimate=_signed(float(final["estimate"]), found.relative, t),
    )
    points = records(found.points)
    context = {
        "points": points,
        # Markdown and plain-text e-mail list every seventh point and the last, not all.
        "milestones": [p for i, p in enumerate(points) if i % 7 == 6 or i == len(points) - 1],
        "step": found.step,
        "note": note,
        "relative": found.relative,
        "interval": interval,
    }
    return context, [chart]


def status_label(hypothesis: Hypothesis, newest: pd.Timestamp, t: Mapping[str, Any]) -> str:
    """The pilot's status in words: "ended, awaiting decision" for one still running whose
    pilot period the data (`newest`, its clock) has passed."""
    ended = pd.notna(newest) and newest.date() > hypothesis.schedule.pilot.end
    if hypothesis.status == "running" and ended:
        return t["ended_awaiting"]
    return t[hypothesis.status]


def experiment_context(
    hypothesis: Hypothesis,
    results: pd.DataFrame,
    arms: pd.DataFrame,
    data: CxData,
    pain: pd.DataFrame,
    t: dict[str, Any],
    taxonomy: Taxonomy | None = None,
    breakdowns: Sequence[str] = ("segment",),
) -> tuple[dict[str, Any], list[Chart]]:
    """What the before-and-after report of `hypothesis` shows, and its chart.

    `results` are this hypothesis' latest `experiment_result` rows (one per metric), `arms`
    its assignment (`customer_id`, `arm`), `pain` the current pain-point ranking, `taxonomy`
    the topics that pick the verbatims, `breakdowns` the customer dimensions the effect is
    shown by (for pilots judged per customer).
    """
    h, schedule = hypothesis, hypothesis.schedule
    rows = records(results)
    primary = next((r for r in rows if r["role"] == "primary"), None)
    if primary and primary["decision"]:
        primary["reason"] = _reason(primary, t)
    by_metric = {r["metric"]: r for r in rows}
    metric = h.metric.name
    newest = data.newest()
    end = schedule.pilot.end if pd.isna(newest) else min(schedule.pilot.end, newest.date())
    obs = pilot_observations(metric, data, h)
    # Observations end at `newest`, so clamping keeps the period valid and drops none.
    shown = Period(start=schedule.baseline.start, end=max(end, schedule.baseline.start))
    weekly = weekly_by_arm(obs, arms, shown)
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
    table = _before_after(primary)
    unit_context, unit_charts = unit_analysis(h, primary, t)
    guardrails = [_guardrail(guard, by_metric.get(guard.metric, {})) for guard in h.guardrails]
    effects = metric_intervals(rows, guardrails, t)
    # A unit pilot's verdict is the unit-level one; per-customer cuts would not be its effect.
    per_customer = primary is not None and (unit_context is None or unit_context["fallback"])
    segments = (
        segment_section(h, obs, arms, data.customers, breakdowns, t) if per_customer else None
    )
    cumulative, cumulative_charts = (
        cumulative_section(h, obs, arms, end, t) if per_customer else (None, [])
    )
    ranked = titled(pain[pain["key"] == h.pain_point], t) if len(pain) else pain
    srm_p = primary["srm_p"] if primary else None
    context = {
        "t": t,
        "title": f"{t['experiment_report']}: {h.title}",
        "running_header": f"{t['experiment_report']}: {h.title} · {t['pilot']}: "
        f"{schedule.pilot.start} … {schedule.pilot.end}",
        "h": h,
        "status": status_label(h, newest, t),
        "primary": primary,
        "results": rows,
        "pain_point": records(ranked.drop(columns=["evidence"], errors="ignore"))[0]
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
            # The customers observed in the pilot period that the stored SRM test counted.
            "pilot": int(primary["n_pilot"]) if primary else 0,
            "control": int(primary["n_control"]) if primary else 0,
            "share": h.assignment.split,
            "alpha": SRM_ALPHA,
            "ok": srm_p is None or srm_p >= SRM_ALPHA,
        },
        "arms": str(h.assignment),
        "scope": str(h.scope) if h.scope and h.scope.tickets.filters() else None,
        "verbatims": experiment_verbatims(data.responses, arms, h, taxonomy),
        "method": _method(primary),
        "unit": unit,
        "unit_analysis": unit_context,
        "segments": segments,
        "cumulative": cumulative,
        "charts": {
            "target": chart,
            **{c.name: c for c in [*effects, *cumulative_charts, *unit_charts]},
        },
        "generated_at": generated_at(),
    }
    return context, [chart, *effects, *cumulative_charts, *unit_charts]


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
    breakdowns: Sequence[str] = ("segment",),
) -> Rendered:
    """The before-and-after report of `hypothesis` in every format, printed on `paper`, its
    effect shown by each dimension of `breakdowns` (`reports.breakdowns`)."""
    t = labels(language, template_dir)
    context, chart_list = experiment_context(
        hypothesis, results, arms, data, pain, t, taxonomy, breakdowns
    )
    primary = context["primary"]
    decided = primary and primary["decision"]
    news = f"{hypothesis.title}: {t[primary['decision']] if decided else t['not_evaluated']}"
    summary = f"{news} — {primary['reason']}" if decided else news
    keep = ("metric", "role", "estimate", "ci_low", "ci_high", "p_value", "n_pilot", "n_control")
    tables = {
        "results": [{k: r[k] for k in keep} for r in context["results"]],
        "before_after": context["table"],
    }
    if context["segments"]:
        rows = context["segments"]["rows"]
        tables["segment_effects"] = [{k: r[k] for k in SEGMENT_COLUMNS} for r in rows]
    return render_report(
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
