"""The run summary a CX lead reads at 80 columns: ingested rows, the ranking, the alerts
raised, pilots, next step."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from rich.markup import escape
from rich.table import Table

from flows.cli.terminal import console

if TYPE_CHECKING:
    from flows.cycle import CycleResult
    from flows.ingest import Synced
    from tasks.alerts import Alert
    from tasks.hypotheses import Hypothesis

WIDE = 120  # columns from which tables show every score component


def ingested_table(synced: dict[str, dict[str, Synced]]) -> Table:
    """Records written and rows rejected per source and stream; see the log for the reasons."""
    table = Table(
        "source", "stream", "records written", "rows rejected",
        title="Ingested (rejected rows: their line and reason are in the log)",
    )  # fmt: skip
    for source, streams in synced.items():
        for stream, one in streams.items():
            rejected = f"[yellow]{one.rejected:,}[/]" if one.rejected else "0"
            table.add_row(source, stream, f"{one.written:,}", rejected)
    return table


def pain_table(ranked: list[dict], limit: int, hypotheses: list[Hypothesis]) -> Table:
    """The ranking, each pain point by title with its key below, and the pilots on each.

    Pain points scored 0 are left out (the caption counts them). Cells wrap, never cut;
    below `WIDE` columns confidence and effort, the other score components, are left out
    so that the rest reads at 80 columns."""
    wide = console.width >= WIDE
    scored = [p for p in ranked if p["score"] > 0]
    shown, hidden = scored[:limit], len(ranked) - len(scored)
    table = Table(
        title="Top pain points (score = reach % × impact × confidence / effort)",
        caption=f"Not shown: {hidden} pain points scored 0." if hidden else None,
        expand=not wide,  # so that the ratios share out a narrow terminal
    )
    table.add_column("#", justify="right")
    table.add_column("pain point", overflow="fold", ratio=4)
    table.add_column("reach", justify="right", overflow="fold", ratio=2)
    table.add_column("impact (95% CI)", justify="right", overflow="fold", ratio=3)
    if wide:
        table.add_column("confidence", justify="right")
        table.add_column("effort", justify="right")
    table.add_column("score", justify="right")
    table.add_column("pilots", overflow="fold", ratio=3)
    for p in shown:
        pilots = ", ".join(f"{h.id} ({h.status})" for h in hypotheses if h.pain_point == p["key"])
        components = [f"{p['confidence']:.2f}", _effort(p)] if wide else []
        table.add_row(
            str(p["rank"]), f"{escape(p['title'])}\n[dim]{escape(p['key'])}[/]",
            f"{p['reach']:,.0f} ({p['reach_share']:.1%})",
            f"{p['impact']:.1f} {(p.get('unit') or 'NPS points').split()[0]} "
            f"[{p['impact_ci_low']:.1f}, {p['impact_ci_high']:.1f}]",
            *components, f"{p['score']:.1f}", escape(pilots),
        )  # fmt: skip
    return table


def alerts_table(alerts: list[Alert]) -> Table:
    """Each alert by its kind and period, what happened, and by how much; wrapped, never cut."""
    from tasks.labels import labels

    kinds = labels("en")["alert_kinds"]
    table = Table(
        title="Alerts raised this run",
        caption=None if alerts else "None.",
        expand=True,
    )
    table.add_column("alert", overflow="fold", ratio=2)
    table.add_column("what happened", overflow="fold", ratio=6)
    table.add_column("how much", overflow="fold", ratio=2)
    for a in alerts:
        table.add_row(
            f"{escape(kinds.get(a.kind, a.kind.replace('_', ' ')))}\n[dim]{escape(a.period)}[/]",
            escape(a.message),
            escape(how_much(a.evidence)),
        )
    return table


def how_much(evidence: dict) -> str:
    """An alert's size in a few words (`30.1 → 20.3`, `+42% per day`), from its evidence."""
    if "retained" in evidence:
        return f"{evidence['retained']:.0%} of the gain kept"
    if "growth" in evidence:
        return f"{evidence['growth']:+.0%} per day"
    if "excess_points" in evidence:
        return f"{evidence['excess_points']:+.1f} points lost"
    if {"before", "after"} <= evidence.keys():
        return f"{evidence['before']:,.1f} → {evidence['after']:,.1f}"
    if {"value", "target"} <= evidence.keys():
        return f"{evidence['value']:.3g} vs target {evidence['target']:g}"
    return ""


def _effort(pain_point: dict) -> str:
    default = " (default)" if pain_point["effort_is_default"] else ""
    return f"{pain_point['effort']:g}{default}"


def next_step(ranked: list[dict], hypotheses: list[Hypothesis], report_path: Path) -> str:
    """One line on what to do next: a hypothesis for the top pain point no pilot addresses,
    else reading the report."""
    addressed = {h.pain_point for h in hypotheses}
    for p in ranked:
        if p["score"] > 0 and p["key"] not in addressed:
            slug = re.sub(r"[^a-z0-9]+", "-", p["key"].lower()).strip("-")
            return f"Next: cxloop hypotheses new fix-{slug} --pain-point {p['key']}"
    return f"Next: read the report, {report_path} (cxloop report --open)"


def print_summary(result: CycleResult, hypotheses: list[Hypothesis]) -> None:
    """The cycle's ingested rows, top pain points, the alerts it raised, pilots with decision
    and reason, the report's path and the next step, on stdout."""
    console.print(ingested_table(result.ingested))
    console.print(pain_table(result.pain_points, 5, hypotheses))
    console.print(alerts_table(result.alerts))
    console.print(_pilots_table(result))
    for p in result.pilots:
        console.print(f"  {p.id}: {p.decision} — {p.reason}", highlight=False)
        if p.plan:
            console.print(f"    plan: {p.plan}", highlight=False)
        for warning in p.warnings:
            console.print(f"    [yellow]warning:[/] {warning}", highlight=False)
    report = Path(result.report_path).resolve()
    console.print(f"Report: [bold]{report}[/]", soft_wrap=True)
    console.print(
        next_step(result.pain_points, hypotheses, report), highlight=False, soft_wrap=True
    )


def _pilots_table(result: CycleResult) -> Table:
    """Each pilot's estimates, one row per metric, its decision on the first."""
    from tasks.render import effect

    pilots = Table(title="Pilots")
    for header in ("hypothesis", "metric", "effect", "95% CI", "p", "decision"):
        pilots.add_column(header, overflow="fold")  # wrapped, never cut, at 80 columns
    for p in result.pilots:
        for i, e in enumerate(p.estimates):
            pilots.add_row(
                p.id if i == 0 else "",
                e.metric,
                effect(e.value, e.relative),
                f"{effect(e.ci_low, e.relative)} … {effect(e.ci_high, e.relative)}",
                f"{e.p_value:.2g}",
                f"[bold]{p.decision}[/]" if i == 0 else "",
            )
    return pilots
