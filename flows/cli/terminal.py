"""What every command shares: the consoles, user errors, options and machine-readable output."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:
    import pandas as pd

console = Console()
errors = Console(stderr=True)

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="Configuration file.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the rows as JSON records.")]
CsvOption = Annotated[bool, typer.Option("--csv", help="Print the rows as CSV.")]
VerboseOption = Annotated[
    bool,
    typer.Option(
        "--verbose", "-v", help="Show Prefect's log lines here, not in .cxloop/cxloop.log."
    ),
]
DEFAULT = Path("cxloop.yaml")


@contextmanager
def user_errors() -> Iterator[None]:
    """Problems the user can fix end the command with their message and exit code 2."""
    from connectors.errors import CxloopError

    try:
        yield
    except CxloopError as exc:
        errors.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def warn(message: str) -> None:
    errors.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


def starting() -> None:
    """Say where flows run: the Prefect server `PREFECT_API_URL` names (environment, else
    Prefect's profile), or an ephemeral one this command starts."""
    import os

    server = os.environ.get("PREFECT_API_URL")
    if not server:  # the environment is checked first: it is instant, Prefect's settings are not
        from prefect.settings import PREFECT_API_URL

        server = PREFECT_API_URL.value()
    if server:
        console.print(f"[dim]Using the Prefect server at {server}[/]", highlight=False)
    else:
        console.print(
            "[dim]Starting Prefect (ephemeral mode; the first start takes about 20 s)…[/]"
        )


def machine_readable(frame: pd.DataFrame, as_json: bool, as_csv: bool) -> bool:
    """Whether `frame` went to stdout as JSON records or CSV (then no table is printed).

    JSON keeps lists and mappings as such and missing values as null; CSV writes lists and
    mappings as JSON text in their cell."""
    import json
    import sys

    if as_json and as_csv:
        errors.print("[bold red]error:[/] give --json or --csv, not both.")
        raise typer.Exit(2)
    if as_json:
        sys.stdout.write(
            frame.to_json(orient="records", date_format="iso", force_ascii=False, indent=2) + "\n"
        )
    elif as_csv:
        nested = [c for c in frame.columns if frame[c].map(type).isin([list, dict, tuple]).any()]
        cells = frame.assign(
            **{c: frame[c].map(lambda v: json.dumps(v, ensure_ascii=False)) for c in nested}
        )
        sys.stdout.write(cells.to_csv(index=False))
    return as_json or as_csv


def known(option: str, given: list[str], choices: tuple[str, ...]) -> None:
    """`ConfigError` for the first of `given` not in `choices`, with the closest as a hint."""
    import difflib

    from connectors.errors import ConfigError

    for value in given:
        if value not in choices:
            close = difflib.get_close_matches(value, choices, n=1)
            hint = f"did you mean `{close[0]}`? " if close else ""
            raise ConfigError(f"{option} {value!r} is unknown; {hint}use {', '.join(choices)}.")


def num(value: float, digits: int) -> str:
    """`value` with `digits` decimals, or a dash when missing."""
    return "—" if value != value else f"{value:.{digits}f}"
