"""Commands that list what the store holds: metrics, the journey map, comment themes, backlog."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from flows.cli.loading import checked, data, hypotheses_of
from flows.cli.terminal import (
    DEFAULT,
    ConfigOption,
    CsvOption,
    JsonOption,
    console,
    known,
    machine_readable,
    num,
    user_errors,
)

# `discover_themes` keeps words found in at least two texts, so a theme needs two.
MIN_THEME_TEXTS = 2


def metrics(
    by: Annotated[
        str,
        typer.Option(
            help="Comma-separated cuts: segment, region, acquisition, every declared "
            "dimension (e.g. device, plan), channel, topic, survey, stage (journey), hour, "
            "weekday, and the ticket's (or a survey answer's linked ticket's) ticket_topic, "
            "ticket_channel, agent, team."
        ),
    ] = "segment",
    period: Annotated[str, typer.Option(help="day, week, month, quarter or all.")] = "all",
    metric: Annotated[
        str,
        typer.Option(
            help="Comma-separated metrics: nps, csat, csat_top2, ces, csi, frt_hours, "
            "frt_business_hours, art_hours, fcr, repeat, reopen_rate, sla_breach, escalation, "
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
        from tasks.metrics import METRICS, csi, known_cuts, metric_table

        cuts = [d for d in by.split(",") if d]
        asked = metric.split(",")
        known("--metric", asked, (*METRICS, "csi"))
        cfg = checked(config)
        loaded = data(cfg)
        known("--by", cuts, known_cuts(loaded))  # declared dimensions are the store's columns
        components = list(cfg.csi) if "csi" in asked else []
        needed = list(dict.fromkeys([m for m in asked if m != "csi"] + components))
        try:
            grain = None if period == "all" else period
            table = metric_table(loaded, needed, cuts, grain, cfg.csat_scale, cfg.touchpoint_stages)
        except KeyError as exc:
            raise ConfigError(f"{exc.args[0]}") from None
        if components:
            index = csi(table, cfg.csi, cfg.csat_scale, cfg.ces_scale)
            table = pd.concat([table, index], ignore_index=True)
        table = table[table["metric"].isin(asked)].sort_values([*cuts, "period", "metric"])
    shown = [*cuts, "period", "metric", "value", "ci_low", "ci_high", "n"]
    if machine_readable(table[shown], as_json, as_csv):
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


def journey(
    config: ConfigOption = DEFAULT, as_json: JsonOption = False, as_csv: CsvOption = False
) -> None:
    """The customer journey map: each stage's touchpoints, metrics and top barriers."""
    with user_errors():
        from tasks.journey import journey_map
        from tasks.latest import latest_pain_points

        cfg = checked(config)
        pain = latest_pain_points(cfg.store())
        stages = journey_map(data(cfg), pain, cfg.journey, cfg.funnel_steps, cfg.csat_scale)
    if machine_readable(stages, as_json, as_csv):
        return
    table = Table("stage", "touchpoints", "tickets", "CSAT top-2 %", "FRT median h",
                  "conversion %", "surveys", "top barriers", title="Customer journey")  # fmt: skip
    for row in stages.itertuples():
        table.add_row(
            row.stage, ", ".join(row.touchpoints), f"{row.tickets:,}",
            num(row.csat_top2, 1), num(row.frt_median_hours, 2), _conversion(row),
            ", ".join(f"{k} {v:g}" for k, v in row.surveys.items()), ", ".join(row.barriers[:3]),
        )  # fmt: skip
    console.print(table)


def _conversion(stage: Any) -> str:
    """A stage's conversion, naming its web source when the store has several."""
    several = len(stage.conversion_by_source) > 1
    return num(stage.conversion, 1) + (f" ({stage.source})" if several and stage.source else "")


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

        cfg = checked(config)
        comments = data(cfg).responses["comment"].dropna()
        texts = comments.drop_duplicates().reset_index(drop=True)
        tagged = tag_topics(texts, cfg.taxonomy)
        found = discover_themes(texts, tagged, count)
    if machine_readable(found, as_json, as_csv):
        return
    if found.empty:
        untagged = len(texts) - tagged["text_index"].nunique()
        console.print(
            f"No themes: of {len(comments):,} comments, {untagged:,} distinct ones have no "
            f"topic; a theme needs at least {MIN_THEME_TEXTS} of those sharing a word. "
            "Run `cxloop themes` again once more comments are in.",
            highlight=False,
        )
        return
    table = Table("theme", "comments", "keywords", "example", title="Untagged comment themes")
    for row in found.itertuples():
        table.add_row(row.theme, f"{row.n_texts:,}", ", ".join(row.keywords), row.examples[0])
    console.print(table)
    snippet = yaml.safe_dump({"topics": proposed_topics(found)}, allow_unicode=True)
    console.print("Rename and paste what fits into your config:", markup=False)
    console.print(snippet, markup=False, highlight=False)


def backlog(
    config: ConfigOption = DEFAULT, as_json: JsonOption = False, as_csv: CsvOption = False
) -> None:
    """The improvement roadmap: ranked pain points, their hypotheses and where each stands."""
    with user_errors():
        import pandas as pd

        from tasks import store
        from tasks.latest import latest_pain_points
        from tasks.pain_points import backlog as roadmap

        cfg = checked(config)
        engine = cfg.store()
        results = store.read_frame(engine, store.ExperimentResult)
        latest = results[results["role"] == "primary"].sort_values("as_of")
        decisions = latest.groupby("hypothesis_id")["decision"].last()
        links = pd.DataFrame(
            [
                {"key": h.pain_point, "hypothesis": h.id, "status": h.status}
                for h in hypotheses_of(cfg)
            ],
            columns=["key", "hypothesis", "status"],
        )
        links["decision"] = links["hypothesis"].map(decisions)
        plan = roadmap(latest_pain_points(engine), links)
    if machine_readable(plan, as_json, as_csv):
        return
    table = Table("#", "pain point", "score", "state", "hypothesis", "status", "decision")
    table.title = "Improvement backlog"
    for row in plan.itertuples():
        table.add_row(
            "new" if pd.isna(row.rank) else str(row.rank), row.key, num(row.score, 1),
            row.state, *(str(v) if pd.notna(v) else "" for v in (row.hypothesis, row.status,
                                                                  row.decision)),
        )  # fmt: skip
    console.print(table)
