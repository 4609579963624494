"""`cxloop hypotheses`: scaffold, validate, list and export the pilots under hypotheses/."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from flows.cli.loading import UNRANKED, checked, hypotheses_of
from flows.cli.terminal import (
    DEFAULT,
    ConfigOption,
    CsvOption,
    JsonOption,
    console,
    machine_readable,
    user_errors,
    warn,
)

if TYPE_CHECKING:
    import pandas as pd

    from tasks.hypotheses import Hypothesis
    from tasks.unit_design import UnitDesign

app = typer.Typer(help="Validate and list the hypotheses under hypotheses/.", no_args_is_help=True)
Folder = Annotated[Path, typer.Argument(help="Folder of hypothesis YAML files.")]


@app.command("validate")
def validate(
    directory: Folder = Path("hypotheses"), config: ConfigOption = DEFAULT,
    as_json: JsonOption = False,
) -> None:  # fmt: skip
    """Check every hypothesis file, and each `pain_point` against the ranking in the store of
    `--config`; each problem names file, line, field and fix. Pilots whose arms are whole
    units get a design check on the store's data (`--json`: one record per such pilot)."""
    with user_errors():
        from flows.config import load_config
        from tasks.hypotheses import load_hypotheses, stored_ranking

        ranking = stored_ranking(load_config(config).store_url) if config.exists() else None
        found = load_hypotheses(directory, ranking)
        designs = _unit_designs(config, found) if ranking is not None else []
    if as_json:
        import pandas as pd

        machine_readable(pd.DataFrame([vars(d) for d in designs]), True, False)
        return
    console.print(f"[green]{len(found)} hypotheses valid[/] in {directory}.")
    _print_unit_designs(designs)
    if ranking is not None:  # the store exists, so reading its evaluations writes nothing new
        _print_plans(_worded(_evaluations(config)))
    if found and ranking is None:
        warn(
            UNRANKED
            if config.exists()
            else f"no {config}, so `pain_point` is not checked; name the configuration "
            "whose store ranks the pain points with --config."
        )


def _unit_designs(config: Path, found: list[Hypothesis]) -> list[UnitDesign]:
    """The design check of every pilot whose arms are whole units, on the store's data (none
    before the store holds a customer: there is nothing to check a design against)."""
    from flows.config import load_config
    from tasks.experiments import analysis_of
    from tasks.loader import CxData
    from tasks.pilot_store import with_crm_properties
    from tasks.unit_design import unit_design

    units = [h for h in found if analysis_of(h) == "auto"]
    if not units:
        return []
    cfg = load_config(config)
    data = CxData.latest(cfg.store(), cfg.business_hours.calendar(), cfg.timezone)
    if data.customers.empty:
        return []
    data = with_crm_properties(data, cfg.store_url, units)
    return [d for h in units if (d := unit_design(h, data, found)) is not None]


def _print_unit_designs(designs: list[UnitDesign]) -> None:
    """Each unit pilot's units per arm, baseline weeks, detectable effect and problems."""
    for d in designs:
        mde = f", detects {abs(d.mde):.3g} or more (80% power)" if d.mde is not None else ""
        console.print(
            f"  {d.id} units ({d.unit or 'none'}): {len(d.treated)} pilot, {len(d.donors)} "
            f"comparison; {d.baseline_periods} baseline week(s) with data in every unit, "
            f"{d.pilot_periods} pilot week(s){mde}",
            highlight=False,
        )
        for problem in d.problems:
            warn(f"{d.id}: cannot be identified: {problem}")
        for warning in d.warnings:
            warn(f"{d.id}: {warning}")


@app.command("list")
def list_(
    directory: Folder = Path("hypotheses"),
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
    if machine_readable(_hypothesis_rows(found, evaluated), as_json, as_csv):
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


def _hypothesis_rows(
    found: list[Hypothesis], evaluated: pd.DataFrame | None = None
) -> pd.DataFrame:
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

    engine = load_config(config).store()
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
    from tasks.render import effect

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


@app.command("new")
def new(
    hypothesis_id: Annotated[str, typer.Argument(help="Id and file name, e.g. faster-refunds.")],
    pain_point: Annotated[str, typer.Option(help="Key of a ranked pain point.")],
    start: Annotated[str, typer.Option(help="Pilot start date (YYYY-MM-DD).")] = "",
    config: ConfigOption = DEFAULT,
) -> None:
    """Scaffold a draft hypothesis from a ranked pain point."""
    with user_errors():
        from datetime import date, timedelta

        from connectors.errors import HypothesisError
        from tasks.hypotheses import load_hypothesis, scaffold
        from tasks.latest import latest_pain_points

        cfg = checked(config)
        latest = latest_pain_points(cfg.store()).set_index("key")
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


@app.command("schema")
def schema(
    path: Annotated[Path, typer.Argument(help="Where to write it.")] = Path(
        "hypotheses/schema.json"
    ),
) -> None:
    """Write the JSON Schema of hypothesis files (editors use it for autocompletion)."""
    from tasks.hypotheses import schema_json

    path.write_text(schema_json(), encoding="utf-8")
    console.print(f"Wrote {path}.")


@app.command("assign")
def assign(
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
        from tasks.loader import customers_from_store

        cfg = checked(config)
        found = {h.id: h for h in hypotheses_of(cfg)}
        if hypothesis_id not in found:
            raise HypothesisError(
                f"no hypothesis {hypothesis_id!r} in {cfg.hypotheses_dir}; "
                f"known: {', '.join(sorted(found)) or 'none'}"
            )
        customers = customers_from_store(cfg.store())
        holdout = cfg.holdout.holdout() if cfg.holdout else None
        arms = assignments(found[hypothesis_id], customers, list(found.values()), holdout)
        arms.to_csv(out, index=False)
    counts = arms["arm"].value_counts()
    console.print(
        f"Wrote {out}: {counts.get('pilot', 0):,} pilot, {counts.get('control', 0):,} control."
    )
