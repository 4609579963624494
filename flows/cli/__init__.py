"""The `cxloop` command line, one module per group of commands.

Heavy libraries (Prefect, pandas) load only inside commands, so `cxloop --help` stays fast.
"""

from __future__ import annotations

import typer

from flows.cli import db, holdout, hypotheses, listings, running, sources, standards

app = typer.Typer(
    help="cxloop: collect CX data, rank pain points, pilot hypotheses, report. "
    "Start with `cxloop demo`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# In the order `cxloop --help` lists them: the cycle first, then what reads the store.
for command in (
    running.demo, running.run, running.ingest, running.rank, listings.metrics, running.report,
    running.listen, running.serve, running.init, listings.journey, listings.themes,
    listings.backlog, standards.standards,
):  # fmt: skip
    app.command()(command)
app.add_typer(hypotheses.app, name="hypotheses")
app.add_typer(holdout.app, name="holdout")
app.add_typer(db.app, name="db")
app.add_typer(sources.app, name="sources")
