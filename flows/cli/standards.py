"""`cxloop standards`: each service standard's latest month against its target, with trend."""

from __future__ import annotations

from rich.table import Table

from flows.cli.loading import checked, data
from flows.cli.terminal import (
    DEFAULT,
    ConfigOption,
    CsvOption,
    JsonOption,
    console,
    machine_readable,
    num,
    user_errors,
)

STATUS_STYLE = {"met": "green", "missed": "bold red", "at_risk": "yellow", "unknown": "dim"}


def standards(
    config: ConfigOption = DEFAULT, as_json: JsonOption = False, as_csv: CsvOption = False
) -> None:
    """Print each standard's latest month: target, value with 95% CI, status and trend."""
    with user_errors():
        from tasks.standards import evaluate, latest_with_trend, summary

        cfg = checked(config)
        results = evaluate(data(cfg), cfg.standards, "month", cfg.csat_scale)
        table = latest_with_trend(results)
    shown = ["standard", "period", "direction", "target", "value", "ci_low", "ci_high", "n"]
    if machine_readable(table[[*shown, "status", "trend"]], as_json, as_csv):
        return
    if table.empty:
        console.print("No standards configured: add `standards:` to cxloop.yaml.")
        return
    counts = summary(results)
    out = Table(
        "standard", "period", "target", "value", "95% CI", "n", "status", "trend",
        title=f"Standards: {counts['missed']} of {counts['total']} missed, "
        f"{counts['at_risk']} at risk",
    )  # fmt: skip
    for row in table.itertuples(index=False):
        ci = "" if row.ci_low != row.ci_low else f"{row.ci_low:.2f} … {row.ci_high:.2f}"
        sign = "≥" if row.direction == "above" else "≤"
        style = STATUS_STYLE[row.status]
        out.add_row(
            row.standard, row.period, f"{sign} {row.target:g}", num(row.value, 2), ci,
            f"{row.n:,}", f"[{style}]{row.status.replace('_', ' ')}[/]",
            " → ".join(f"{v:.2f}" for v in row.trend),
        )  # fmt: skip
    console.print(out)
