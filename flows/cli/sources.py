"""`cxloop sources`: check that every configured stream answers, list a survey's questions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from flows.cli.terminal import DEFAULT, ConfigOption, console, user_errors

app = typer.Typer(help="Check the configured sources.", no_args_is_help=True)


@dataclass(frozen=True)
class Check:
    """Whether one stream of a configured source answers (`stream` empty when the source
    itself did not open): its first page, or the error and how to fix it."""

    source: str
    kind: str
    stream: str
    ok: bool
    detail: str


def check_streams(name: str, kind: str, options: dict) -> list[Check]:
    """One check per stream of the source, each reading its first page; nothing is saved."""
    from connectors import open_source
    from connectors.errors import CxloopError

    try:
        streams = open_source(name, kind, options).streams()
    except CxloopError as exc:
        return [Check(name, kind, "", False, str(exc))]
    checks = []
    for stream in streams:
        try:
            page = next(iter(stream.read({})), None)
        except CxloopError as exc:
            checks.append(Check(name, kind, stream.name, False, str(exc)))
            continue
        records = len(page.records) if page is not None else 0
        checks.append(
            Check(name, kind, stream.name, True, f"{records:,} records on the first page")
        )
    return checks


@app.command("check")
def check(config: ConfigOption = DEFAULT) -> None:
    """Connect to each source and read one page of every stream; say what to fix if one fails."""
    with user_errors():
        from flows.config import load_config

        checks = [
            one
            for s in load_config(config).sources
            for one in check_streams(s.name, s.kind, s.options)
        ]
    table = Table("source", "kind", "stream", "status", "detail", title="Sources")
    for c in checks:
        status = "[green]OK[/]" if c.ok else "[red]failed[/]"
        table.add_row(c.source, c.kind, c.stream, status, escape(c.detail))
    console.print(table)
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


@app.command("inspect")
def inspect(
    name: Annotated[str, typer.Argument(help="The configured survey source to inspect.")],
    config: ConfigOption = DEFAULT,
) -> None:
    """List the questions of a survey source's surveys and print a `questions:` snippet to paste."""
    with user_errors():
        from importlib import import_module

        from connectors import SOURCE_KINDS, open_source
        from connectors.errors import ConfigError
        from flows.config import load_config

        sources = {s.name: s for s in load_config(config, sources_checked=False).sources}
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
