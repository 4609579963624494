"""A report's Prefect artifacts: its Markdown, and its tables as the reports show them
(rounded, labelled), under keys namespaced by the project."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flows.names import artifact_key
from tasks.labels import labels
from tasks.render import Rendered, localised, number

# Headers the reports' labels lack, or word otherwise (their `impact` includes its CI).
HEADERS = {
    "key": "Key",
    "value": "Value",
    "ci_low": "95% CI low",
    "ci_high": "95% CI high",
    "p_value": "p",
    "n_pilot": "n pilot",
    "n_control": "n control",
    "n_before": "n before",
    "n_after": "n after",
    "impact": "Impact",
}
# Decimals per column; others get one, counts none.
DIGITS = {"confidence": 2, "ces": 2, "before": 2, "after": 2, "difference": 2, "estimate": 2}
SNAKE_WORD = re.compile(r"[a-z]+(?:_[a-z0-9]+)+")
# Columns holding cxloop's codes, which the reports word; others hold names and ids, kept.
CODES = {"metric", "role", "verdict", "status", "arm", "decision", "direction", "kind"}


def header(column: str, t: Mapping[str, Any]) -> str:
    """A column's header: ours, else the reports' label, else its name in words."""
    if column in HEADERS:
        return HEADERS[column]
    label = t.get(column)
    return label if isinstance(label, str) else column.replace("_", " ").capitalize()


def cell(column: str, value: object, t: Mapping[str, Any]) -> str:
    """`value` as the reports print it: numbers rounded (p to two significant digits), counts
    with separators, codes such as `not_significant` and `frt_hours` by their label."""
    language = t["lang"]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, bool):
        return str(value).lower()
    if column == "p_value" and isinstance(value, float):
        return f"{value:.2g}"
    if isinstance(value, int | float):
        digits = 0 if isinstance(value, int) else DIGITS.get(column, 1)
        return number(value, digits) if language == "en" else localised(value, digits, language)
    text = str(value)
    if column not in CODES:
        return text
    label = t.get(text)
    if isinstance(label, str):
        return label
    return text.replace("_", " ") if SNAKE_WORD.fullmatch(text) else text


def readable_rows(rows: list[dict[str, Any]], t: Mapping[str, Any]) -> list[dict[str, str]]:
    """`rows` with labelled headers and every value formatted for people."""
    return [{header(c, t): cell(c, v, t) for c, v in row.items()} for row in rows]


def publish_artifacts(report: Rendered, language: str, template_dir: Path | None) -> None:
    """A Markdown artifact per report and a table artifact per table it carries, in the
    reports' `language`, keyed `<project>-<report>[-<table>]`."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    t = labels(language, template_dir)
    key = artifact_key(report.name)
    create_markdown_artifact(key=key, markdown=report.markdown, description=report.title)
    for name, rows in report.tables.items():
        if rows:
            create_table_artifact(
                key=artifact_key(report.name, name),
                table=readable_rows(rows, t),
                description=f"{report.title}: {header(name, t)}",
            )
