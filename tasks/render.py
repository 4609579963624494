"""Rendering reports: the Jinja2 environment, its number filters, and a report in every format.

Each report is rendered from autoescaped Jinja2 templates (`reports/templates/`, or a user's
own directory searched first) three ways: self-contained HTML with inline SVG charts, the
same HTML for e-mail with PNG charts referenced by Content-ID, and Markdown for Prefect
artifacts and the plain-text e-mail part. Labels come from `labels.yaml` in the report's
language. Customer comments are redacted (e-mail addresses, phone numbers) before rendering.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from babel.numbers import format_decimal
from jinja2 import Environment, FileSystemLoader, StrictUndefined, pass_context
from jinja2.runtime import Context
from markupsafe import Markup

from connectors.errors import ConfigError
from tasks import store
from tasks.charts import Chart
from tasks.labels import TEMPLATES
from tasks.text import neutralise_bidi, redact_pii

PAPER_SIZES = ("a4", "letter")


@dataclass(frozen=True)
class Rendered:
    """One report in every format, plus what chat messages and Prefect table artifacts show."""

    kind: str
    name: str
    title: str
    summary: str
    news: str  # what stakeholders are told again when it changes: the month, or a decision
    html: str
    email_html: str
    markdown: str
    charts: list[Chart]
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The Markdown as plain text for e-mail: entities decoded, since nothing renders it."""
        return html.unescape(self.markdown)


def effect(value: float | None, relative: bool) -> str:
    """An effect for people: `-38.9%` for relative ones, `+7.95` in the metric's units otherwise."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:+.1%}" if relative else f"{value:+.2f}"


def number(value: float | None, digits: int = 1) -> str:
    """`value` rounded for a table cell; `n/a` when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def markdown_cell(value: object) -> str:
    """`value` safe inside a Markdown table cell or quote: one line, pipes escaped."""
    return re.sub(r"\s+", " ", str(value)).replace("|", "\\|").strip()


def css_string(value: object) -> Markup:
    """`value` as a quoted CSS string for a `<style>` block: every character but letters,
    digits and spaces as a CSS escape, so no text can close the string or the block."""
    escaped = "".join(c if c.isalnum() or c == " " else f"\\{ord(c):x} " for c in str(value))
    return Markup(f'"{escaped}"')


def localised(value: float | None, digits: int, language: str, sign: bool = False) -> str:
    """`value` with `digits` decimals as `language` writes numbers (Russian: decimal comma,
    no-break-space thousands), signed if `sign`; `n/a` when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    pattern = "#,##0" + ("." + "0" * digits if digits else "")
    return format_decimal(
        value, format=f"+{pattern};-{pattern}" if sign else pattern, locale=language
    )


@pass_context
def _number_filter(context: Context, value: float | None, digits: int = 1) -> str:
    language = context["t"]["lang"]
    return number(value, digits) if language == "en" else localised(value, digits, language)


@pass_context
def _effect_filter(context: Context, value: float | None, relative: bool) -> str:
    language = context["t"]["lang"]
    if language == "en":
        return effect(value, relative)
    if relative:
        shown = localised(None if value is None else 100 * value, 1, language, sign=True)
        return shown if shown == "n/a" else f"{shown}%"
    return localised(value, 2, language, sign=True)


def environment(template_dir: Path | None = None) -> Environment:
    """Jinja2 with autoescaping on for every template, user templates first if given; every
    printed value loses its bidirectional controls, so customer text cannot reorder a report.
    `num` and `effect` write numbers in the language of the context's labels `t`."""
    search = [str(template_dir)] if template_dir else []
    env = Environment(
        loader=FileSystemLoader([*search, str(TEMPLATES)]),
        autoescape=True,
        finalize=neutralise_bidi,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        effect=_effect_filter,
        num=_number_filter,
        md=markdown_cell,
        redact=redact_pii,
        css_string=css_string,
    )
    return env


def render(template: str, context: Mapping[str, Any], template_dir: Path | None = None) -> str:
    """The named template rendered with `context`."""
    return environment(template_dir).get_template(template).render(**context)


def render_report(
    kind: str,
    name: str,
    title: str,
    news: str,
    summary: str,
    context: dict[str, Any],
    chart_list: list[Chart],
    template_dir: Path | None,
    tables: dict[str, list[dict]],
    paper: str = "a4",
) -> Rendered:
    """Every format of one report from `<kind>.html.j2` and `<kind>.md.j2`; `news` is what
    stakeholders are told again when it changes, `summary` the paragraph for chat, `paper`
    the printed page size (`a4`, `letter`)."""
    if paper not in PAPER_SIZES:
        raise ConfigError(f"reports.paper: {paper!r} is not one of {', '.join(PAPER_SIZES)}")
    env = environment(template_dir)
    env.globals["paper"] = paper
    page, text = env.get_template(f"{kind}.html.j2"), env.get_template(f"{kind}.md.j2")
    return Rendered(
        kind=kind,
        name=name,
        title=title,
        news=news,
        summary=summary,
        html=page.render(**context, email=False),
        email_html=page.render(**context, email=True),
        markdown=text.render(**context),
        charts=chart_list,
        tables=tables,
    )


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as dicts with NaN as None, so templates can test `is none`."""
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def generated_at() -> str:
    """The current UTC time as a report's footer shows it (`2026-11-02 08:00 UTC`)."""
    return f"{store.now_utc():%Y-%m-%d %H:%M} UTC"
