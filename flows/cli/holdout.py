"""`cxloop holdout`: the long-term holdout's customer list, and what all adopted changes did."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
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

if TYPE_CHECKING:
    from flows.config import Config

app = typer.Typer(help="The long-term holdout: its customers and the cumulative effect.")
OutOption = Annotated[Path, typer.Option("--out", help="CSV file to write the list to.")]


@app.command()
def export(out: OutOption = Path("holdout.csv"), config: ConfigOption = DEFAULT) -> None:
    """Write the held-out customers' ids, for operations to keep every change away from."""
    with user_errors():
        import pandas as pd

        cfg = configured(config)
        customers = data(cfg).customers["customer_id"]
        held = customers[cfg.holdout.holdout().members(customers)]
        pd.DataFrame({"customer_id": held}).to_csv(out, index=False)
    console.print(
        f"{len(held):,} of {len(customers):,} customers held out ({len(held) / len(customers):.1%}"
        f" for a share of {cfg.holdout.share:.1%}) written to {out}."
    )


@app.command()
def report(
    config: ConfigOption = DEFAULT, as_json: JsonOption = False, as_csv: CsvOption = False
) -> None:
    """What all adopted changes did: everyone else against the holdout, with 95% CIs.

    From the day the holdout was set aside to the last complete quarter: NPS, churn and
    revenue per customer, and the changes adopted meanwhile."""
    with user_errors():
        from dataclasses import asdict

        import pandas as pd

        from tasks.holdout import adopted_changes, cumulative_effects

        cfg = configured(config)
        cx = data(cfg)
        until = pd.Timestamp(cx.newest()).to_period("Q").start_time
        effects = pd.DataFrame(
            [asdict(e) for e in cumulative_effects(cx, cfg.holdout.holdout(), until)]
        )
        changes = adopted_changes(cfg.store(), cfg.holdout.since, until)
    effects = effects.assign(since=str(cfg.holdout.since), until=str(until.date()))
    if machine_readable(effects, as_json, as_csv):
        return
    out = Table(
        "metric", "everyone else", "holdout", "effect", "95% CI", "customers",
        title=f"Cumulative effect of adopted changes, {cfg.holdout.since} to {until.date()}",
    )  # fmt: skip
    for row in effects.itertuples(index=False):
        out.add_row(
            f"{row.metric} ({row.unit})", num(row.rest, 2), num(row.holdout, 2),
            num(row.effect, 2), f"{num(row.ci_low, 2)} … {num(row.ci_high, 2)}",
            f"{row.n_rest:,} / {row.n_holdout:,}",
        )  # fmt: skip
    console.print(out)
    adopted = ", ".join(changes["hypothesis_id"]) or "none"
    console.print(f"Adopted in the period: {adopted}")


def configured(config: Path) -> Config:
    """The checked configuration; a clear error when it declares no holdout."""
    from connectors.errors import ConfigError

    cfg = checked(config)
    if cfg.holdout is None:
        raise ConfigError(
            f"{config}: no `holdout:`; add e.g. `holdout: {{share: 0.05, since: 2026-01-01}}`."
        )
    return cfg
