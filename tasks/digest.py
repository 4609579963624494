"""The monthly CX digest: the month it covers, the KPI tiles against the month before and
their definitions, the breakdowns, the teams, the at-risk customers, the ticket load, the pain
points, the pilots and the alerts, in every format."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sqlalchemy.engine import Engine

from connectors.errors import ConfigError
from tasks import charts, store
from tasks.alerts import Alert, last_complete_month
from tasks.charts import Chart
from tasks.hypotheses import Hypothesis
from tasks.identity import lookup
from tasks.labels import alert_text, labels, titled, worded
from tasks.loader import CxData
from tasks.metrics import (
    MEDIAN_METRICS,
    REPEAT_DAYS,
    SLA_HOURS,
    churn,
    customer_value,
    difference_ci,
    kpis_by,
    mean_ci_by,
    metric_table,
    nps_points,
    post_stratified_nps,
    response_rates,
)
from tasks.pilot_report import experiment_name
from tasks.render import (
    Rendered,
    effect,
    generated_at,
    localised,
    number,
    records,
    render_report,
)
from tasks.standards import latest_with_trend, summary

if TYPE_CHECKING:  # `tasks.churn` loads scikit-learn: imported where a churn run is shown
    from tasks.churn import ChurnRun

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
TREND_MONTHS = 12
# The trend charts' KPIs: metric_table's name → the tiles' name.
TREND_METRICS = {"nps": "nps", "csat_top2": "csat", "ces": "ces", "frt_hours": "frt_hours",
                 "fcr": "fcr"}  # fmt: skip
CHURN_WINDOW_DAYS = 90  # active = ordered in the 90 days before a date
DEFAULT_BREAKDOWNS = ("segment", "region", "channel")
CONTACT_KPIS = ("csat_top2", "ces", "frt_hours", "fcr")
# Cuts of contacts (tickets, post-contact answers): broken down by CSAT and contact KPIs;
# any other cut is a customer's and broken down by NPS.
CONTACT_CUTS = ("channel", "topic", "survey", "ticket_topic", "ticket_channel", "agent", "team")
# The teams' KPIs and whether a higher value is the worse one.
TEAM_KPIS = {
    "frt_hours": True,
    "fcr": False,
    "reopen_rate": True,
    "csat": False,
    "sla_breach": True,
}
MIN_TEAM_TICKETS = 30  # fewer tickets in the month: listed, not ranked
TOP_DRIVERS = 5
AT_RISK_BANDS = ("high", "medium")  # the churn-risk bands the at-risk block calls at risk
# The KPIs the definitions table explains, in its order.
DEFINED_KPIS = (
    "nps", "csat", "ces", "frt_hours", "art_hours", "fcr", "reopen_rate", "sla_breach", "churn"
)  # fmt: skip


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
    Wilson CIs), `verdict` (`better`, `worse` or `not_significant`). FRT's CI is the
    Kaplan–Meier median's (`metrics.km_median_by`).
    """
    frames = []
    for label, period in (("now", month), ("before", month.previous())):
        overall = kpis_by(within(data, period), "segment", csat_scale)
        overall = overall[overall["segment"] == "all"].drop(columns="segment")
        lost = churn(data.orders, period.start, period.end, CHURN_WINDOW_DAYS)
        lost = lost.assign(metric="churn", pending=0)
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
    return kpis_by(data, "channel", csat_scale, CONTACT_KPIS)


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


def dimension_name(by: str, t: Mapping[str, Any]) -> str:
    """A cut as readers call it: its entry in `t`'s `breakdown_names`, else its own name."""
    return t["breakdown_names"].get(by, by.replace("_", " "))


def breakdowns(
    current: CxData, cuts: Sequence[str], csat_scale: int, t: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """One breakdown per cut of `cuts` (`reports.breakdowns`): `by`, its `name`, its `key`
    metric and its `breakdown` rows. Contact cuts (`CONTACT_CUTS`) show the contact KPIs with
    CSAT as the key; customer cuts (segment, region, declared dimensions) every KPI, NPS.
    A customer cut no customer has yet (`churn_risk` before a model is published) is left
    out."""
    shown = []
    for by in cuts:
        contact = by in CONTACT_CUTS
        if not contact and by not in current.customers.columns:
            continue
        long = (
            kpis_by(current, by, csat_scale, CONTACT_KPIS)
            if contact
            else kpis_by(current, by, csat_scale)
        )
        key = "csat" if contact else "nps"
        shown.append(
            {"by": by, "name": dimension_name(by, t), "key": key, "rows": breakdown(long, by, key)}
        )
    return shown


def team_ranking(data: CxData, month: Month, csat_scale: int = 5) -> dict[str, Any] | None:
    """The teams of `month`'s tickets, worst first; None when no ticket names a team.

    `rows`: `team`, `tickets`, `position` (None when unranked), `mean_rank` and `metrics`,
    each of `TEAM_KPIS` as `value`, `n`, `ci_low`, `ci_high` and `worse`. `reference`: each
    KPI over all teams' tickets (the n-weighted mean of the teams' shares).

    The rule: every KPI ranks the teams with at least `MIN_TEAM_TICKETS` tickets from worst
    (1) to best, tied teams sharing the mean rank; a team's `mean_rank` is the mean over the
    KPIs it has, the lowest first, ties broken by the longer FRT. Teams with fewer tickets
    follow unranked, most tickets first. `worse`: the KPI's 95% CI lies wholly on its worse
    side of the reference. CSAT is of the month's answers linked to a ticket of the team,
    whenever that ticket was raised.
    """
    current = within(data, month)
    if "team" not in current.tickets or current.tickets["team"].isna().all():
        return None
    ticket_kpis = [metric for metric in TEAM_KPIS if metric != "csat"]
    answers = replace(current, tickets=data.tickets)
    table = pd.concat(
        [
            metric_table(current, ticket_kpis, ["team"], csat_scale=csat_scale),
            metric_table(answers, ["csat_top2"], ["team"], csat_scale=csat_scale),
        ],
        ignore_index=True,
    ).replace({"metric": {"csat_top2": "csat"}})
    tickets = current.tickets["team"].value_counts().sort_index(kind="stable")
    tickets = tickets.sort_values(ascending=False, kind="stable")
    values = table.pivot(index="team", columns="metric", values="value")
    values = values.reindex(index=tickets.index, columns=list(TEAM_KPIS))
    ranked = tickets.index[tickets >= MIN_TEAM_TICKETS]
    ranks = pd.DataFrame(
        {m: values.loc[ranked, m].rank(ascending=not worse) for m, worse in TEAM_KPIS.items()}
    )
    order = pd.DataFrame(
        {"mean_rank": ranks.mean(axis=1), "frt": values.loc[ranked, "frt_hours"]}
    ).sort_values(["mean_rank", "frt"], ascending=[True, False], kind="stable")
    shares = table[~table["metric"].isin(MEDIAN_METRICS)]  # a mean of medians is no reference
    weighted = (shares["value"] * shares["n"]).groupby(shares["metric"]).sum()
    reference = (weighted / shares.groupby("metric")["n"].sum()).to_dict()
    cells = {team: {r["metric"]: r for r in records(rows)} for team, rows in table.groupby("team")}
    rows = []
    unranked = [team for team in tickets.index if team not in order.index]
    for position, team in enumerate([*order.index, *unranked], 1):
        metrics = cells.get(team, {})
        for metric, cell in metrics.items():
            ref = reference.get(metric)
            side = cell["ci_low"] if TEAM_KPIS[metric] else cell["ci_high"]
            cell["worse"] = (
                ref is not None
                and side is not None
                and (side > ref if TEAM_KPIS[metric] else side < ref)
            )
        is_ranked = team in order.index
        rows.append(
            {
                "team": team,
                "tickets": int(tickets[team]),
                "position": position if is_ranked else None,
                "mean_rank": float(order.loc[team, "mean_rank"]) if is_ranked else None,
                "metrics": metrics,
            }
        )
    return {"rows": rows, "reference": reference, "min_tickets": MIN_TEAM_TICKETS}


def teams_context(
    data: CxData, month: Month, csat_scale: int, t: Mapping[str, Any]
) -> dict[str, Any] | None:
    """`team_ranking` with its rule and the KPIs' names and units in `t`'s language."""
    teams = team_ranking(data, month, csat_scale)
    if teams is None:
        return None
    minimum = {"min_tickets": MIN_TEAM_TICKETS}
    units = {"frt_hours": t["unit_frt_hours"], "csat": t["unit_csat"]}
    return teams | {
        "rule": worded(t, "teams_ranking", "rule", minimum),
        "too_few": worded(t, "teams_ranking", "too_few", minimum),
        "kpis": [
            {"metric": m, "name": kpi_name(m, t), "unit": units.get(m, t["unit_percent"])}
            for m in TEAM_KPIS
        ],
    }


def kpi_name(metric: str, t: Mapping[str, Any]) -> str:
    """A KPI's name in `t`'s language."""
    return t["kpi_names"].get(metric, t.get(metric, metric))


def kpi_definitions(
    t: Mapping[str, Any], csat_scale: int, ces_scale: int, repeat_days: int
) -> list[dict[str, str]]:
    """Each of `DEFINED_KPIS` as `metric` (its name) and `definition`: how this digest
    computes it, with the configured scales and FCR repeat window (0: reopening only)."""
    numbers = {
        "csat_scale": csat_scale,
        "csat_top": csat_scale - 1,
        "ces_scale": ces_scale,
        "repeat_days": repeat_days,
        "sla_hours": f"{SLA_HOURS:g}",
        "churn_days": CHURN_WINDOW_DAYS,
    }
    wording = {metric: metric for metric in DEFINED_KPIS} | {
        "fcr": "fcr" if repeat_days else "fcr_reopen_only"
    }
    return [
        {
            "metric": kpi_name(metric, t),
            "definition": worded(t, "kpi_definitions", wording[metric], numbers),
        }
        for metric in DEFINED_KPIS
    ]


def stored_churn_run(engine: Engine) -> ChurnRun | None:
    """The newest stored churn model run with the scores it left (none when it was not
    published), as `tasks.churn.run_churn` returned it; None before the first run."""
    from tasks.churn import ChurnRun

    runs = store.read_frame(engine, store.ChurnModelRun)
    if runs.empty:
        return None
    newest = records(runs.sort_values("run_at").tail(1))[0]
    columns = ["customer_id", "probability", "churn_risk", "value", "expected_loss"]
    scores = store.read_frame(engine, store.CustomerChurnRisk, columns)
    kept = {f.name for f in fields(ChurnRun)} - {"scores"}
    return ChurnRun(**{k: newest[k] for k in kept}, scores=scores)


def at_risk_context(
    run: ChurnRun | None, responses: pd.DataFrame, t: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The at-risk block: the model run's facts (`tasks.churn.digest_context`), `min_auc`, and
    when it is published `bands_sentence` (the band sizes in `t`'s language), `nps`: the NPS
    of `responses` from high-, medium- and at-risk (either) customers and from the rest (low
    risk or not scored), each `group` with `value`, `n`, `ci_low`, `ci_high`, and `gap` (at
    risk − rest, with its 95% CI); None without a run."""
    if run is None:
        return None
    from tasks.churn import MIN_AUC
    from tasks.churn import digest_context as churn_context

    facts = churn_context(run, TOP_DRIVERS) | {"min_auc": MIN_AUC}
    if not run.published or run.scores.empty:
        return {**facts, "bands_sentence": "", "nps": [], "gap": None}
    counts = {band: _figure(size, t) for band, size in facts["bands"].items()}
    sentence = worded(t, "at_risk", "bands", {**counts, "horizon_days": run.horizon_days})
    answers = responses[(responses["kind"] == "nps") & responses["score"].notna()]
    band = lookup(answers["customer_id"], run.scores.set_index("customer_id")["churn_risk"])
    points = nps_points(answers["score"])
    risky = band.isin(AT_RISK_BANDS)
    groups = pd.concat(
        [
            pd.DataFrame({"group": band[risky], "value": points[risky]}),
            pd.DataFrame({"group": np.where(risky, "at_risk", "rest"), "value": points}),
        ]
    )
    table = mean_ci_by(groups, ["group"]).reindex([*AT_RISK_BANDS, "at_risk", "rest"])
    low, high = difference_ci(table.loc["at_risk"], table.loc["rest"])
    gap = {"value": table.loc["at_risk", "value"] - table.loc["rest", "value"]}
    gap |= {"ci_low": low, "ci_high": high}
    return {
        **facts,
        "bands_sentence": sentence,
        "nps": records(table.rename_axis("group").reset_index()),
        "gap": records(pd.DataFrame([gap]))[0],
    }


def _figure(value: float, t: Mapping[str, Any], digits: int = 0) -> str:
    """`value` as the templates' `num` filter writes it in `t`'s language."""
    language = t["lang"]
    return number(value, digits) if language == "en" else localised(value, digits, language)


def kpi_trends(
    data: CxData, month: Month, csat_scale: int = 5, months: int = TREND_MONTHS
) -> pd.DataFrame:
    """The headline KPIs per month over the `months` months up to `month` (those the data
    has): `period` (the month's first day), `metric` (named as the tiles name them), `value`,
    `n`, `ci_low`, `ci_high`."""
    start = month.start - pd.DateOffset(months=months - 1)
    window = within(data, Month(month.label, start, month.end))
    table = metric_table(window, list(TREND_METRICS), period="month", csat_scale=csat_scale)
    table = table.assign(
        period=pd.PeriodIndex(table["period"], freq="M").to_timestamp(),
        metric=table["metric"].map(TREND_METRICS),
    )
    return table[["period", "metric", "value", "n", "ci_low", "ci_high"]]


def trend_charts(
    trends: pd.DataFrame, hypotheses: Sequence[Hypothesis], t: Mapping[str, Any]
) -> list[Chart]:
    """One chart per KPI of `trends` with a month or more, each pilot's start inside the
    window marked with its id."""
    shown = [m for m in TREND_METRICS.values() if (trends["metric"] == m).sum() > 1]
    first, last = trends["period"].min(), trends["period"].max() + pd.offsets.MonthBegin(1)
    marks = [
        (h.schedule.pilot.start, h.id)
        for h in hypotheses
        if first <= pd.Timestamp(h.schedule.pilot.start) < last
    ]
    return [
        charts.trend(
            f"trend-{metric}",
            trends[trends["metric"] == metric],
            t[metric],
            t[f"unit_{metric}"],
            marks,
            t["months"],
            t["decimal_mark"],
        )
        for metric in shown
    ]


def executive_summary(
    tiles: pd.DataFrame,
    top: pd.DataFrame,
    hypotheses: Sequence[Hypothesis],
    last_day: pd.Timestamp,
    t: Mapping[str, Any],
) -> list[dict[str, str]]:
    """The lines of "What changed and what to do", each a `text` and the `link` to its
    section: the KPI change (rows of `kpi_tiles`) largest against its CI among the
    significant ones, the top pain point, and the pilots whose period ended by `last_day`
    that still run (awaiting a decision)."""
    words = t["executive"]
    moved = tiles[tiles["verdict"] != "not_significant"].dropna(subset=["change_low"])
    moved = moved.set_index("metric")
    lines = []
    if len(moved):
        half = (moved["change_high"] - moved["change_low"]) / 2
        metric = (moved["change"].abs() / half).idxmax()
        row = moved.loc[metric]
        change = f"{row['change']:+.1f}".replace(".", t["decimal_mark"])
        lines.append({
            "text": words["change"].format(metric=t[metric], change=change,
                                           verdict=t[row["verdict"]]),
            "link": f"#kpi-{metric}",
        })  # fmt: skip
    else:
        lines.append({"text": words["no_change"], "link": "#kpis"})
    if len(top):
        first = top.iloc[0]
        lines.append({"text": words["pain_point"].format(title=first["title"]),
                      "link": "#pain-points"})  # fmt: skip
    ended = [
        h.id
        for h in hypotheses
        if h.status == "running" and pd.Timestamp(h.schedule.pilot.end) <= last_day
    ]
    if ended:
        lines.append({"text": words["awaiting"].format(pilots=", ".join(ended)),
                      "link": "#experiments"})  # fmt: skip
    return lines


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
    cuts: Sequence[str] = DEFAULT_BREAKDOWNS,
    repeat_days: int = REPEAT_DAYS,
    ces_scale: int = 7,
    at_risk: ChurnRun | None = None,
) -> tuple[dict[str, Any], list[Chart]]:
    """What the digest shows for `month` (default: `digest_month`), and its charts.

    `pain` holds ranked pain points, `results` the latest experiment results (rows of
    `experiment_result`), `alerts` the last period's alerts, `standards` the standards'
    verdicts per month (rows of `standard_snapshot`), `cuts` the breakdowns
    (`reports.breakdowns`), `repeat_days` FCR's repeat window and `at_risk` the churn model
    run to show (None: no at-risk block).
    """
    month = month or digest_month(data)
    current = within(data, month)
    tiles = kpi_tiles(data, month, csat_scale)
    shown = breakdowns(current, cuts, csat_scale, t)
    counts, peak = ticket_load(current.tickets)
    top = titled(pain.sort_values("rank").head(TOP_PAIN_POINTS), t) if len(pain) else pain
    chart_list = [
        _breakdown_chart(
            f"{b['key']}-{b['by']}",
            b["rows"],
            b["key"],
            f"{t[b['key'] + '_by']}: {b['name']}",
            t,
        )
        for b in shown
        if b["rows"]
    ]
    trend_list = trend_charts(kpi_trends(data, month, csat_scale), hypotheses, t)
    chart_list += trend_list
    chart_list += [
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
        "executive": executive_summary(tiles, top, hypotheses, month.end - pd.Timedelta(days=1), t),
        "trends": [c.name for c in trend_list],
        **standards_context(standards, month, t),
        "weighting": post_stratified_nps(current),
        "response_rates": records(response_rates(data)),
        "customer_value": records(customer_value(data.orders, data.customers, "segment"))
        if len(data.orders)
        else [],
        "unmatched": data.unmatched(),
        "definitions": kpi_definitions(t, csat_scale, ces_scale, repeat_days),
        "breakdowns": shown,
        "teams": teams_context(data, month, csat_scale, t),
        "at_risk": at_risk_context(at_risk, current.responses, t),
        "peak": peak,
        "pain_points": records(top.drop(columns=["evidence"], errors="ignore")) if len(top) else [],
        "evidence": top["evidence"].tolist() if len(top) else [],
        "pain_words": t["pain_table"],
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
    cuts: Sequence[str] = DEFAULT_BREAKDOWNS,
    repeat_days: int = REPEAT_DAYS,
    ces_scale: int = 7,
    at_risk: ChurnRun | None = None,
) -> Rendered:
    """The CX digest for `month` (default: the last complete month in `data`) in every format,
    printed on `paper` (`a4` or `letter`); the rest as `digest_context` takes them."""
    t = labels(language, template_dir)
    context, chart_list = digest_context(
        data,
        pain,
        results,
        hypotheses,
        alerts,
        t,
        csat_scale,
        month,
        standards,
        cuts,
        repeat_days,
        ces_scale,
        at_risk,
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
            | {k: e.get(k) for k in ("raw_impact", "revenue_at_stake")}
            for p, e in zip(context["pain_points"], context["evidence"], strict=True)
        ],
        "teams": [
            {
                "team": r["team"],
                "position": r["position"],
                "tickets": r["tickets"],
                **{m: r["metrics"].get(m, {}).get("value") for m in TEAM_KPIS},
            }
            for r in (context["teams"] or {}).get("rows", [])
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
