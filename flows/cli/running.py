"""Commands that make a project and run the cycle, one of its stages, or its services."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.cli.loading import checked, hypotheses_of
from flows.cli.progress import stage_progress
from flows.cli.summary import ingested_table, pain_table, print_summary
from flows.cli.terminal import (
    DEFAULT,
    ConfigOption,
    VerboseOption,
    console,
    errors,
    starting,
    user_errors,
)


def init(
    directory: Annotated[Path, typer.Argument(help="The project directory (made if missing).")] = (
        Path(".")
    ),
    force: Annotated[bool, typer.Option(help="Overwrite the project's existing files.")] = False,
) -> None:
    """Make a project: a commented cxloop.yaml, hypotheses/ with its schema, the config's
    schema, a prefect.yaml of deployments run from there, and a .gitignore."""
    from flows.project import existing, write_project

    found = existing(directory)
    if found and not force:
        names = ", ".join(str(p) for p in found)
        errors.print(f"[bold red]error:[/] {names} exist; use --force to overwrite them.")
        raise typer.Exit(2)
    written = write_project(directory)
    console.print(f"Wrote {', '.join(str(p) for p in written)}.", highlight=False)
    console.print(
        f"Next: edit the sources in {written[0]}, then run `cxloop run` in {directory}.",
        highlight=False,
    )


def demo(
    customers: Annotated[
        int, typer.Option(min=500, help="Customers in the demo company.")
    ] = 20_000,
    seed: Annotated[
        int, typer.Option(help="Random seed; the same seed gives the same company.")
    ] = 7,
    null: Annotated[
        bool,
        typer.Option(
            "--null",
            help="The same company with nothing planted: no pain, pilot effect, slow team or "
            "churn driven by bad experiences.",
        ),
    ] = False,
    webhooks: Annotated[
        str | None,
        typer.Option(
            "--webhooks",
            metavar="URL",
            help="Instead, send the demo's post-contact surveys as signed Typeform webhooks "
            "to a running `cxloop listen` at URL.",
        ),
    ] = None,
    verbose: VerboseOption = False,
) -> None:
    """Generate the demo company, run the whole improvement cycle on it and summarise."""
    if webhooks:
        with user_errors():
            from flows.listen import send_demo_webhooks

            sent = send_demo_webhooks(webhooks, customers, seed)
        console.print(f"Sent {sent:,} signed Typeform calls to {webhooks}")
        return
    import yaml

    from flows.config import example_text
    from tasks.hypotheses import DEMO_HYPOTHESES

    config = yaml.safe_load(example_text())
    name = f"demo-{customers}-{seed}" + ("-null" if null else "")
    options = {"customers": customers, "seed": seed} | ({"null": True} if null else {})
    config["sources"] = [{"name": "demo", "kind": "demo", "options": options}]
    config["database_url"] = f"sqlite:///.cxloop/{name}.db"
    config["hypotheses_dir"] = str(DEMO_HYPOTHESES)
    path = Path(".cxloop") / f"{name}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    kind = "Null demo company (nothing planted)" if null else "Demo company"
    console.print(f"{kind}: {customers:,} customers, seed {seed} (config {path})")
    run(path, verbose)


def run(config: ConfigOption = DEFAULT, verbose: VerboseOption = False) -> None:
    """Run the improvement cycle (ingest → rank → experiments → report) once."""
    with user_errors():
        cfg = checked(config)
        starting()
        from flows.cycle import improvement_cycle

        with stage_progress(verbose):
            result = improvement_cycle(config, cfg)
    print_summary(result, hypotheses_of(cfg))


def ingest(config: ConfigOption = DEFAULT, verbose: VerboseOption = False) -> None:
    """Pull new and changed records from every configured source into the store."""
    with user_errors():
        cfg = checked(config)
        starting()
        from flows.ingest import ingest as ingest_flow

        with stage_progress(verbose):
            synced = ingest_flow(config, config=cfg)
    console.print(ingested_table(synced))


def rank(config: ConfigOption = DEFAULT, verbose: VerboseOption = False) -> None:
    """Score and rank pain points from what is in the store."""
    with user_errors():
        cfg = checked(config)
        starting()
        from flows.rank import configured

        with stage_progress(verbose):
            ranked = configured(cfg)(config, cfg)
    console.print(pain_table(ranked, len(ranked), hypotheses_of(cfg)))


def report(
    kind: Annotated[
        str, typer.Option(help="digest, experiment or all: which reports to render.")
    ] = "all",
    open_: Annotated[bool, typer.Option("--open", help="Open the index in a browser.")] = False,
    config: ConfigOption = DEFAULT,
    verbose: VerboseOption = False,
) -> None:
    """Render the reports from the store, deliver them and print where they are."""
    with user_errors():
        from connectors.errors import ConfigError

        if kind not in ("all", "digest", "experiment"):
            raise ConfigError(f"--kind {kind!r}: use digest, experiment or all")
        checked(config)
        starting()
        from flows.report import KINDS
        from flows.report import report as report_flow

        with stage_progress(verbose):
            path = Path(report_flow(config, KINDS if kind == "all" else (kind,))).resolve()
    console.print(f"Reports: [bold]{path.parent}[/]  (index: {path})")
    if open_:
        import webbrowser

        webbrowser.open(path.as_uri())


def listen(
    config: ConfigOption = DEFAULT,
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8088,
    host: Annotated[str, typer.Option(help="Address to bind (put HTTPS in front).")] = "127.0.0.1",
) -> None:
    """Receive Typeform, Usedesk, Jivo and amoCRM webhooks into the store, with detractor alerts."""
    with user_errors():
        from flows.listen import listen as listen_webhooks

        listen_webhooks(config, host, port)


def serve(
    prefect_yaml: Annotated[
        Path, typer.Option("--prefect-yaml", help="Deployments to serve.")
    ] = Path("prefect.yaml"),
    config: ConfigOption = DEFAULT,
    listen: Annotated[
        bool,
        typer.Option(
            "--listen/--no-listen",
            help="Also receive webhooks, as `cxloop listen` does, when a source takes them.",
        ),
    ] = True,
    listen_port: Annotated[
        int, typer.Option("--listen-port", help="Port to receive webhooks on.")
    ] = 8088,
    listen_host: Annotated[
        str, typer.Option("--listen-host", help="Address to bind (put HTTPS in front).")
    ] = "127.0.0.1",
) -> None:
    """Serve every deployment in prefect.yaml on its schedule until Ctrl-C or SIGTERM, and
    the webhooks of cxloop.yaml's sources beside them."""
    from flows.serve import Shutdown, Webhooks, serve_all

    shutdown = Shutdown()  # first, so that a signal at any point of the start-up stops it
    with user_errors():
        starting()
        webhooks = Webhooks(config, listen_host, listen_port) if listen else None
        serve_all(prefect_yaml, shutdown, webhooks)
