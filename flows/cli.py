"""The `cxloop` command line. Heavy libraries (Prefect, pandas) load only inside commands."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    import pandas as pd

    from flows.config import Config
    from flows.cycle import CycleResult
    from flows.ingest import Synced
    from tasks.metrics import CxData

app = typer.Typer(
    help="cxloop: collect CX data, rank pain points, pilot hypotheses, report. "
    "Start with `cxloop demo`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
sources_app = typer.Typer(help="Check the configured sources.", no_args_is_help=True)
hypotheses_app = typer.Typer(
    help="Validate and list the hypotheses under hypotheses/.", no_args_is_help=True
)
db_app = typer.Typer(help="Manage the canonical store.", no_args_is_help=True)
app.add_typer(hypotheses_app, name="hypotheses")
app.add_typer(db_app, name="db")
app.add_typer(sources_app, name="sources")
console = Console()
errors = Console(stderr=True)

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="Configuration file.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the rows as JSON records.")]
CsvOption = Annotated[bool, typer.Option("--csv", help="Print the rows as CSV.")]
DEFAULT = Path("cxloop.yaml")
WIDE = 120  # columns from which tables show every score component


@contextmanager
def user_errors() -> Iterator[None]:
    """Problems the user can fix end the command with their message and exit code 2."""
    from connectors.errors import CxloopError

    try:
        yield
    except CxloopError as exc:
        errors.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _checked(config_path: Path) -> Config:
    """The configuration, with its sources' options, hypotheses and store checked before any
    work starts; nothing is written (the store not created) unless all of them pass."""
    from flows.config import load_config
    from tasks.hypotheses import load_hypotheses, stored_ranking
    from tasks.store import database_url, open_store

    config = load_config(config_path)
    url = database_url(config.database_url)
    ranking = stored_ranking(url)
    if not config.hypotheses_dir.is_dir():
        _warn(
            f"no folder {config.hypotheses_dir}, so no pilots are evaluated; "
            "`cxloop hypotheses new` writes a first hypothesis there."
        )
    elif load_hypotheses(config.hypotheses_dir, ranking) and ranking is None:
        _warn(UNRANKED)
    open_store(url)
    return config


UNRANKED = (
    "the store has no pain-point ranking yet, so each hypothesis's `pain_point` is not checked; "
    "it is once `cxloop rank` or `cxloop run` has ranked."
)


def _machine_readable(frame: pd.DataFrame, as_json: bool, as_csv: bool) -> bool:
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


def _known(option: str, given: list[str], known: tuple[str, ...]) -> None:
    """`ConfigError` for the first of `given` not in `known`, with the closest as a hint."""
    import difflib

    from connectors.errors import ConfigError

    for value in given:
        if value not in known:
            close = difflib.get_close_matches(value, known, n=1)
            hint = f"did you mean `{close[0]}`? " if close else ""
            raise ConfigError(f"{option} {value!r} is unknown; {hint}use {', '.join(known)}.")


def _warn(message: str) -> None:
    errors.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


def _starting() -> None:
    console.print("[dim]Starting Prefect (ephemeral mode; the first start takes about 20 s)…[/]")


@app.command()
def demo(
    customers: Annotated[
        int, typer.Option(min=500, help="Customers in the demo company.")
    ] = 20_000,
    seed: Annotated[
        int, typer.Option(help="Random seed; the same seed gives the same company.")
    ] = 7,
    webhooks: Annotated[
        str | None,
        typer.Option(
            "--webhooks",
            metavar="URL",
            help="Instead, send the demo's post-contact surveys as signed Typeform webhooks "
            "to a running `cxloop listen` at URL.",
        ),
    ] = None,
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
    name = f"demo-{customers}-{seed}"
    config["sources"] = [
        {"name": "demo", "kind": "demo", "options": {"customers": customers, "seed": seed}}
    ]
    config["database_url"] = f"sqlite:///.cxloop/{name}.db"
    config["hypotheses_dir"] = str(DEMO_HYPOTHESES)
    path = Path(".cxloop") / f"{name}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    console.print(f"Demo company: {customers:,} customers, seed {seed} (config {path})")
    run(path)


@app.command()
def run(config: ConfigOption = DEFAULT) -> None:
    """Run the improvement cycle (ingest → rank → experiments → report) once."""
    with user_errors():
        cfg = _checked(config)
        _starting()
        from flows.cycle import improvement_cycle

        result = improvement_cycle(config)
    _summary(result, _hypotheses(cfg))


@app.command()
def ingest(config: ConfigOption = DEFAULT) -> None:
    """Pull new and changed records from every configured source into the store."""
    with user_errors():
        _checked(config)
        _starting()
        from flows.ingest import ingest as ingest_flow

        synced = ingest_flow(config)
    console.print(_ingested_table(synced))


def _ingested_table(synced: dict[str, dict[str, Synced]]) -> Table:
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


@app.command()
def rank(config: ConfigOption = DEFAULT) -> None:
    """Score and rank pain points from what is in the store."""
    with user_errors():
        cfg = _checked(config)
        _starting()
        from flows.rank import configured

        ranked = configured(cfg)(config)
    console.print(_pain_table(ranked, len(ranked), _hypotheses(cfg)))


@app.command()
def metrics(
    by: Annotated[
        str,
        typer.Option(
            help="Comma-separated cuts: segment, region, acquisition, "
            "channel, topic, survey, stage (journey), hour, weekday."
        ),
    ] = "segment",
    period: Annotated[str, typer.Option(help="day, week, month, quarter or all.")] = "all",
    metric: Annotated[
        str,
        typer.Option(
            help="Comma-separated metrics: nps, csat, csat_top2, ces, csi, frt_hours, "
            "frt_business_hours, art_hours, fcr, repeat, sla_breach, escalation, "
            "negative_comments, positive_comments."
        ),
    ] = "nps,csat_top2,ces,csi,frt_hours,fcr,sla_breach,escalation",
    config: ConfigOption = DEFAULT,
    as_json: JsonOption = False,
    as_csv: CsvOption = False,
) -> None:
    """Print CX metrics from the store by any cut and period, with n and 95% CI."""
    with user_errors():
        import pandas as pd

        from connectors.errors import ConfigError
        from tasks.metrics import DIMENSIONS, METRICS, csi, metric_table

        cuts = [d for d in by.split(",") if d]
        asked = metric.split(",")
        _known("--by", cuts, DIMENSIONS)
        _known("--metric", asked, (*METRICS, "csi"))
        cfg = _checked(config)
        data = _data(cfg)
        components = list(cfg.csi) if "csi" in asked else []
        needed = list(dict.fromkeys([m for m in asked if m != "csi"] + components))
        try:
            grain = None if period == "all" else period
            table = metric_table(data, needed, cuts, grain, cfg.csat_scale, cfg.touchpoint_stages)
        except KeyError as exc:
            raise ConfigError(f"{exc.args[0]}") from None
        if components:
            index = csi(table, cfg.csi, cfg.csat_scale, cfg.ces_scale)
            table = pd.concat([table, index], ignore_index=True)
        table = table[table["metric"].isin(asked)].sort_values([*cuts, "period", "metric"])
    shown = [*cuts, "period", "metric", "value", "ci_low", "ci_high", "n"]
    if _machine_readable(table[shown], as_json, as_csv):
        return
    out = Table(*cuts, "period", "metric", "value", "95% CI", "n", title="CX metrics")
    for row in table.itertuples(index=False):
        cells = row._asdict()
        ci = (
            ""
            if cells["ci_low"] != cells["ci_low"]
            else f"{cells['ci_low']:.1f} … {cells['ci_high']:.1f}"
        )
        out.add_row(
            *(str(cells[c]) for c in cuts), cells["period"], cells["metric"],
            f"{cells['value']:.2f}", ci, f"{cells['n']:,}",
        )  # fmt: skip
    console.print(out)


@app.command()
def report(
    kind: Annotated[
        str, typer.Option(help="digest, experiment or all: which reports to render.")
    ] = "all",
    open_: Annotated[bool, typer.Option("--open", help="Open the index in a browser.")] = False,
    config: ConfigOption = DEFAULT,
) -> None:
    """Render the reports from the store, deliver them and print where they are."""
    with user_errors():
        from connectors.errors import ConfigError

        if kind not in ("all", "digest", "experiment"):
            raise ConfigError(f"--kind {kind!r}: use digest, experiment or all")
        _checked(config)
        _starting()
        from flows.report import KINDS
        from flows.report import report as report_flow

        path = Path(report_flow(config, KINDS if kind == "all" else (kind,))).resolve()
    console.print(f"Reports: [bold]{path.parent}[/]  (index: {path})")
    if open_:
        import webbrowser

        webbrowser.open(path.as_uri())


@app.command()
def listen(
    config: ConfigOption = DEFAULT,
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8088,
    host: Annotated[str, typer.Option(help="Address to bind (put HTTPS in front).")] = "127.0.0.1",
) -> None:
    """Receive Typeform, Usedesk, Jivo and amoCRM webhooks into the store, with detractor alerts."""
    with user_errors():
        from flows.listen import listen as listen_webhooks

        listen_webhooks(config, host, port)


@app.command()
def serve(
    prefect_yaml: Annotated[
        Path, typer.Option("--prefect-yaml", help="Deployments to serve.")
    ] = Path("prefect.yaml"),
) -> None:
    """Serve every deployment in prefect.yaml on its schedule until Ctrl-C or SIGTERM."""
    from flows.serve import Shutdown, serve_all

    shutdown = Shutdown()  # first, so that a signal at any point of the start-up stops it
    with user_errors():
        _starting()
        serve_all(prefect_yaml, shutdown)


@app.command()
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


@sources_app.command("check")
def sources_check(config: ConfigOption = DEFAULT) -> None:
    """Connect to each source, authenticate and read one page; say what to fix if it fails."""
    with user_errors():
        from flows.config import load_config
        from tasks.sync import check_source

        checks = [check_source(s.name, s.kind, s.options) for s in load_config(config).sources]
    table = Table("source", "kind", "status", "detail", title="Sources")
    for c in checks:
        status = "[green]OK[/]" if c.ok else "[red]failed[/]"
        table.add_row(c.source, c.kind, status, c.detail)
    console.print(table)
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


@sources_app.command("inspect")
def sources_inspect(
    name: Annotated[str, typer.Argument(help="The configured survey source to inspect.")],
    config: ConfigOption = DEFAULT,
) -> None:
    """List the questions of a survey source's surveys and print a `questions:` snippet to paste."""
    with user_errors():
        from importlib import import_module

        from connectors import SOURCE_KINDS, open_source
        from connectors.errors import ConfigError
        from flows.config import load_config

        sources = {s.name: s for s in load_config(config).sources}
        if name not in sources:
            raise ConfigError(
                f"{config}: no source named {name!r}; the sources are {', '.join(sources)}."
            )
        chosen = sources[name]
        module, cls = SOURCE_KINDS[chosen.kind].split(":")
        if not hasattr(getattr(import_module(module), cls), "list_questions"):
            raise ConfigError(
                f"sources.{name}: kind {chosen.kind} does not list questions; inspect a survey "
                "source (typeform, surveymonkey, qualtrics)."
            )
        # Listing reads no answers, so a source whose questions are not chosen yet (what this
        # command helps with) is opened with a stand-in score question.
        options = chosen.options | {"questions": {"nps": "-"} | chosen.options.get("questions", {})}
        surveys = open_source(chosen.name, chosen.kind, options).list_questions()
    for listed in surveys:
        title = escape(f"{listed.survey} ({listed.id})")
        table = Table("key", "question", "type", "scale", title=title)
        for q in listed.questions:
            scale = f"{q.scale[0]:g}–{q.scale[1]:g}" if q.scale else ""
            table.add_row(escape(q.key), escape(q.title), escape(q.type), scale)
        console.print(table)
    console.print(_questions_snippet(surveys), markup=False, highlight=False, soft_wrap=True)


def _questions_snippet(surveys: list) -> str:
    """The surveys with the likely question of each kind, as YAML to paste under `options:`."""
    import textwrap

    import yaml

    from connectors.surveys import suggest

    entries = [{"id": s.id, "survey": s.survey, "questions": suggest(s.questions)} for s in surveys]
    listed = yaml.safe_dump({surveys[0].option: entries}, sort_keys=False, allow_unicode=True)
    return (
        "# Paste under the source's `options:`; check each guess against the table. A survey\n"
        "# with `questions: {}` has no recognisable score question: fill in the keys yourself.\n"
        + textwrap.indent(listed, "      ")
    )


@db_app.command("init")
def db_init(config: ConfigOption = DEFAULT) -> None:
    """Create the store's tables (they are also created on first use)."""
    with user_errors():
        from flows.config import load_config
        from tasks.store import database_url, open_store, redact_url, row_counts

        url = database_url(load_config(config).database_url)
        counts = row_counts(open_store(url))
    console.print(f"Store ready at {redact_url(url)}: {len(counts)} tables.")


@hypotheses_app.command("validate")
def hypotheses_validate(
    directory: Annotated[Path, typer.Argument(help="Folder of hypothesis YAML files.")] = Path(
        "hypotheses"
    ),
    config: ConfigOption = DEFAULT,
) -> None:
    """Check every hypothesis file, and each `pain_point` against the ranking in the store of
    `--config`; each problem names file, line, field and fix."""
    with user_errors():
        from flows.config import load_config
        from tasks.hypotheses import load_hypotheses, stored_ranking
        from tasks.store import database_url

        ranking = (
            stored_ranking(database_url(load_config(config).database_url))
            if config.exists()
            else None
        )
        found = load_hypotheses(directory, ranking)
    console.print(f"[green]{len(found)} hypotheses valid[/] in {directory}.")
    if ranking is not None:  # the store exists, so reading its evaluations writes nothing new
        _print_plans(_worded(_evaluations(config)))
    if found and ranking is None:
        _warn(
            UNRANKED
            if config.exists()
            else f"no {config}, so `pain_point` is not checked; name the configuration "
            "whose store ranks the pain points with --config."
        )


@hypotheses_app.command("list")
def hypotheses_list(
    directory: Annotated[Path, typer.Argument(help="Folder of hypothesis YAML files.")] = Path(
        "hypotheses"
    ),
    config: ConfigOption = DEFAULT,
    as_json: JsonOption = False,
    as_csv: CsvOption = False,
) -> None:
    """List hypotheses: status, metric, expected effect, pilot period, and (once evaluated,
    from the store of `--config`) arm sizes and the latest estimate and decision."""
    with user_errors():
        from tasks.hypotheses import load_hypotheses

        found = load_hypotheses(directory)
        evaluated = _evaluations(config) if config.exists() else None
    if _machine_readable(_hypothesis_rows(found, evaluated), as_json, as_csv):
        return
    latest = _worded(evaluated) if evaluated is not None else {}
    table = Table(
        "id", "status", "metric", "expected", "assignment", "pilot period",
        "arms (pilot/control)", "latest estimate", "decision", title="Hypotheses",
    )  # fmt: skip
    for h in found:
        pilot = h.schedule.pilot
        seen = latest.get(h.id, {})
        table.add_row(
            h.id, h.status, h.metric.name, str(h.metric.expected_effect),
            str(h.assignment), f"{pilot.start} … {pilot.end}",
            seen.get("arms", ""), seen.get("estimate", ""), seen.get("decision", ""),
        )  # fmt: skip
    console.print(table)
    _print_plans(latest)


def _hypothesis_rows(found: list, evaluated: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per hypothesis, with its latest evaluation's numbers once there is one."""
    import pandas as pd

    rows = pd.DataFrame(
        {
            "id": [h.id for h in found],
            "status": [h.status for h in found],
            "metric": [h.metric.name for h in found],
            "expected_effect": [h.metric.expected_effect.value for h in found],
            "relative": [h.metric.expected_effect.relative for h in found],
            "assignment": [str(h.assignment) for h in found],
            "pilot_start": [h.schedule.pilot.start.isoformat() for h in found],
            "pilot_end": [h.schedule.pilot.end.isoformat() for h in found],
        }
    )
    if evaluated is None:
        return rows
    return rows.merge(evaluated.drop(columns="relative"), on="id", how="left")


def _print_plans(latest: dict[str, dict[str, str]]) -> None:
    """Each evaluated hypothesis's plan, worded as the run summary and the report word it."""
    for hypothesis_id, seen in latest.items():
        if seen.get("plan"):
            console.print(f"  {hypothesis_id} plan: {seen['plan']}", highlight=False)


def _evaluations(config: Path) -> pd.DataFrame:
    """One row per evaluated hypothesis (`id`): customers per arm (`pilot`, `control`), the
    latest primary `estimate` with `ci_low`, `ci_high`, `relative`, `as_of`, `decision`, `plan`."""
    from flows.config import load_config
    from tasks import store
    from tasks.experiments import stored_plan

    engine = store.open_store(store.database_url(load_config(config).database_url))
    results = store.read_frame(engine, store.ExperimentResult)
    primary = results[results["role"] == "primary"].sort_values("as_of")
    latest = primary.groupby("hypothesis_id").tail(1).set_index("hypothesis_id")
    arms = store.read_frame(engine, store.Assignment, ["hypothesis_id", "arm"])
    sizes = arms.groupby(["hypothesis_id", "arm"]).size().unstack(fill_value=0)
    sizes = sizes.reindex(index=latest.index, columns=["pilot", "control"], fill_value=0)
    frame = latest[["estimate", "ci_low", "ci_high", "relative", "as_of", "decision"]].assign(
        pilot=sizes["pilot"],
        control=sizes["control"],
        as_of=latest["as_of"].dt.strftime("%Y-%m-%d"),
        plan=latest["cells"].map(stored_plan),
    )
    return frame.rename_axis("id").reset_index()


def _worded(evaluated: pd.DataFrame) -> dict[str, dict[str, str]]:
    """Per hypothesis id: arm sizes, latest primary estimate with its CI, decision and plan,
    worded as the table and the plans show them."""
    from tasks.reporting import effect

    worded = {}
    for row in evaluated.itertuples():
        ci = f"{effect(row.ci_low, row.relative)} … {effect(row.ci_high, row.relative)}"
        worded[row.id] = {
            "arms": f"{row.pilot:,} / {row.control:,}",
            "estimate": f"{effect(row.estimate, row.relative)} ({ci}) as of {row.as_of}",
            "decision": row.decision or "",
            "plan": row.plan,
        }
    return worded


@hypotheses_app.command("new")
def hypotheses_new(
    hypothesis_id: Annotated[str, typer.Argument(help="Id and file name, e.g. faster-refunds.")],
    pain_point: Annotated[str, typer.Option(help="Key of a ranked pain point.")],
    start: Annotated[str, typer.Option(help="Pilot start date (YYYY-MM-DD).")] = "",
    config: ConfigOption = DEFAULT,
) -> None:
    """Scaffold a draft hypothesis from a ranked pain point."""
    with user_errors():
        from datetime import date, timedelta

        from connectors.errors import HypothesisError
        from tasks import store
        from tasks.hypotheses import load_hypothesis, scaffold

        cfg = _checked(config)
        pain = store.read_frame(
            store.open_store(store.database_url(cfg.database_url)), store.PainPoint
        )
        latest = pain[pain["period"] == pain["period"].max()].set_index("key")
        if pain_point not in latest.index:
            raise HypothesisError(
                f"no ranked pain point {pain_point!r}; run `cxloop rank` first. "
                f"Top ones: {', '.join(latest.sort_values('rank').index[:5])}"
            )
        path = cfg.hypotheses_dir / f"{hypothesis_id}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            raise HypothesisError(f"{path} exists; pick another id.")
        row = latest.loc[pain_point]
        begin = date.fromisoformat(start) if start else date.today() + timedelta(days=7)
        text = scaffold(hypothesis_id, pain_point, row["title"], row["impact"], begin)
        path.write_text(text, encoding="utf-8")
        load_hypothesis(path)
    console.print(f"Wrote {path}: edit `change` and `owner`, then set status: approved.")


@hypotheses_app.command("schema")
def hypotheses_schema(
    path: Annotated[Path, typer.Argument(help="Where to write it.")] = Path(
        "hypotheses/schema.json"
    ),
) -> None:
    """Write the JSON Schema of hypothesis files (editors use it for autocompletion)."""
    from tasks.hypotheses import schema_json

    path.write_text(schema_json(), encoding="utf-8")
    console.print(f"Wrote {path}.")


@hypotheses_app.command("assign")
def hypotheses_assign(
    hypothesis_id: Annotated[str, typer.Argument(help="The hypothesis id.")],
    out: Annotated[Path, typer.Option(help="CSV to write: customer_id, arm.")] = Path(
        "assignment.csv"
    ),
    config: ConfigOption = DEFAULT,
) -> None:
    """Export a pilot's assignment as CSV for operations to apply the change to."""
    with user_errors():
        from connectors.errors import HypothesisError
        from tasks.experiments import assignments
        from tasks.metrics import customers_from_store
        from tasks.store import database_url, open_store

        cfg = _checked(config)
        found = {h.id: h for h in _hypotheses(cfg)}
        if hypothesis_id not in found:
            raise HypothesisError(
                f"no hypothesis {hypothesis_id!r} in {cfg.hypotheses_dir}; "
                f"known: {', '.join(sorted(found)) or 'none'}"
            )
        customers = customers_from_store(open_store(database_url(cfg.database_url)))
        arms = assignments(found[hypothesis_id], customers, list(found.values()))
        arms.to_csv(out, index=False)
    counts = arms["arm"].value_counts()
    console.print(
        f"Wrote {out}: {counts.get('pilot', 0):,} pilot, {counts.get('control', 0):,} control."
    )


@app.command()
def journey(
    config: ConfigOption = DEFAULT, as_json: JsonOption = False, as_csv: CsvOption = False
) -> None:
    """The customer journey map: each stage's touchpoints, metrics and top barriers."""
    with user_errors():
        from tasks import store
        from tasks.journey import journey_map

        cfg = _checked(config)
        engine = store.open_store(store.database_url(cfg.database_url))
        pain = store.read_frame(engine, store.PainPoint)
        pain = pain[pain["period"] == pain["period"].max()]
        data = _data(cfg)
        stages = journey_map(data, pain, cfg.journey, cfg.funnel_steps, cfg.csat_scale)
    if _machine_readable(stages, as_json, as_csv):
        return
    table = Table("stage", "touchpoints", "tickets", "CSAT top-2 %", "FRT median h",
                  "conversion %", "surveys", "top barriers", title="Customer journey")  # fmt: skip
    for row in stages.itertuples():
        table.add_row(
            row.stage, ", ".join(row.touchpoints), f"{row.tickets:,}",
            _num(row.csat_top2, 1), _num(row.frt_median_hours, 2), _num(row.conversion, 1),
            ", ".join(f"{k} {v:g}" for k, v in row.surveys.items()), ", ".join(row.barriers[:3]),
        )  # fmt: skip
    console.print(table)


@app.command()
def themes(
    count: Annotated[int, typer.Option("--count", min=1, help="Themes to look for.")] = 5,
    config: ConfigOption = DEFAULT,
    as_json: JsonOption = False,
    as_csv: CsvOption = False,
) -> None:
    """Frequent themes in survey comments that no topic tags: candidates for `topics:`."""
    with user_errors():
        import yaml

        from tasks.text import discover_themes, proposed_topics, tag_topics

        cfg = _checked(config)
        data = _data(cfg)
        texts = data.responses["comment"].dropna().drop_duplicates().reset_index(drop=True)
        found = discover_themes(texts, tag_topics(texts, cfg.taxonomy), count)
    if _machine_readable(found, as_json, as_csv):
        return
    table = Table("theme", "comments", "keywords", "example", title="Untagged comment themes")
    for row in found.itertuples():
        table.add_row(row.theme, f"{row.n_texts:,}", ", ".join(row.keywords), row.examples[0])
    console.print(table)
    if len(found):
        snippet = yaml.safe_dump({"topics": proposed_topics(found)}, allow_unicode=True)
        console.print("Rename and paste what fits into your config:", markup=False)
        console.print(snippet, markup=False, highlight=False)


@app.command()
def backlog(
    config: ConfigOption = DEFAULT, as_json: JsonOption = False, as_csv: CsvOption = False
) -> None:
    """The improvement roadmap: ranked pain points, their hypotheses and where each stands."""
    with user_errors():
        import pandas as pd

        from tasks import store
        from tasks.pain_points import backlog as roadmap

        cfg = _checked(config)
        engine = store.open_store(store.database_url(cfg.database_url))
        pain = store.read_frame(engine, store.PainPoint)
        pain = pain[pain["period"] == pain["period"].max()]
        results = store.read_frame(engine, store.ExperimentResult)
        latest = results[results["role"] == "primary"].sort_values("as_of")
        decisions = latest.groupby("hypothesis_id")["decision"].last()
        links = pd.DataFrame(
            [
                {"key": h.pain_point, "hypothesis": h.id, "status": h.status}
                for h in _hypotheses(cfg)
            ],
            columns=["key", "hypothesis", "status"],
        )
        links["decision"] = links["hypothesis"].map(decisions)
        plan = roadmap(pain, links)
    if _machine_readable(plan, as_json, as_csv):
        return
    table = Table("#", "pain point", "score", "state", "hypothesis", "status", "decision")
    table.title = "Improvement backlog"
    for row in plan.itertuples():
        table.add_row(
            "new" if pd.isna(row.rank) else str(row.rank), row.key, _num(row.score, 1),
            row.state, *(str(v) if pd.notna(v) else "" for v in (row.hypothesis, row.status,
                                                                  row.decision)),
        )  # fmt: skip
    console.print(table)


def _data(cfg: Config) -> CxData:
    """Everything in the configured store, as the analyses read it."""
    from tasks import store
    from tasks.metrics import CxData

    engine = store.open_store(store.database_url(cfg.database_url))
    return CxData.from_store(engine, cfg.business_hours.calendar(), cfg.timezone)


def _num(value: float, digits: int) -> str:
    return "—" if value != value else f"{value:.{digits}f}"


def _hypotheses(config: Config) -> list:
    from tasks.hypotheses import load_hypotheses

    return load_hypotheses(config.hypotheses_dir)


def _pain_table(ranked: list[dict], limit: int, hypotheses: list) -> Table:
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
            f"{p['reach']:,} ({p['reach_share']:.1%})",
            f"{p['impact']:.1f} {(p.get('unit') or 'NPS points').split()[0]} "
            f"[{p['impact_ci_low']:.1f}, {p['impact_ci_high']:.1f}]",
            *components, f"{p['score']:.1f}", escape(pilots),
        )  # fmt: skip
    return table


def _effort(pain_point: dict) -> str:
    default = " (default)" if pain_point["effort_is_default"] else ""
    return f"{pain_point['effort']:g}{default}"


def _next_step(ranked: list[dict], hypotheses: list, report_path: Path) -> str:
    """One line on what to do next: a hypothesis for the top pain point no pilot addresses,
    else reading the report."""
    addressed = {h.pain_point for h in hypotheses}
    for p in ranked:
        if p["score"] > 0 and p["key"] not in addressed:
            slug = re.sub(r"[^a-z0-9]+", "-", p["key"].lower()).strip("-")
            return f"Next: cxloop hypotheses new fix-{slug} --pain-point {p['key']}"
    return f"Next: read the report, {report_path} (cxloop report --open)"


def _summary(result: CycleResult, hypotheses: list) -> None:
    from tasks.reporting import effect

    console.print(_ingested_table(result.ingested))
    console.print(_pain_table(result.pain_points, 5, hypotheses))
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
    console.print(pilots)
    for p in result.pilots:
        console.print(f"  {p.id}: {p.decision} — {p.reason}", highlight=False)
        if p.plan:
            console.print(f"    plan: {p.plan}", highlight=False)
        for warning in p.warnings:
            console.print(f"    [yellow]warning:[/] {warning}", highlight=False)
    report = Path(result.report_path).resolve()
    console.print(f"Report: [bold]{report}[/]", soft_wrap=True)
    console.print(
        _next_step(result.pain_points, hypotheses, report), highlight=False, soft_wrap=True
    )
