"""`cxloop db`: the canonical store."""

from __future__ import annotations

import typer

from flows.cli.terminal import DEFAULT, ConfigOption, console, user_errors

app = typer.Typer(help="Manage the canonical store.", no_args_is_help=True)


@app.command("init")
def init(config: ConfigOption = DEFAULT) -> None:
    """Create the store's tables (they are also created on first use)."""
    with user_errors():
        from flows.config import load_config
        from tasks.store import redact_url, row_counts

        cfg = load_config(config)
        counts = row_counts(cfg.store())
    console.print(f"Store ready at {redact_url(cfg.store_url)}: {len(counts)} tables.")
