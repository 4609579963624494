"""A new cxloop project on disk (`cxloop init`): the configuration with its schema, the
hypotheses folder with its schema, deployments that run from the project, and a `.gitignore`.

The canonical columns, the `files` example and both schemas are generated from the store's
and the configuration's models, so what `init` writes never drifts from what cxloop reads.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import get_args

import yaml

CONFIG = "cxloop.yaml"
CONFIG_SCHEMA = "cxloop.schema.json"
HYPOTHESES_SCHEMA = Path("hypotheses") / "schema.json"
# The line of `flows/cxloop.example.yaml` that `init` replaces with its source examples.
SOURCES_MARKER = "  # Your own data: `cxloop init` writes a files and a CRM example here."
COMMENT_WIDTH = 96
# Columns of the `files` example besides the required ones, per canonical table.
EXAMPLE_COLUMNS = {
    "customer": ["segment", "region", "created_at"],
    "ticket": ["customer_id", "topic", "first_response_at", "resolved_at", "text"],
    "survey_response": ["customer_id", "comment"],
}
EXAMPLE_CONSTANTS = {"survey_response": {"survey": "nps-email", "kind": "nps"}}
EXAMPLE_FILES = {"customer": "customers.csv", "ticket": "tickets.csv"}
TYPE_WORDS = {
    "str": "text", "float": "number", "int": "whole number", "bool": "true/false",
    "NaiveDatetime": "date-time", "date": "date",
}  # fmt: skip
GITIGNORE = """\
# The canonical store (SQLite, sync state) and the rendered reports: data, not code.
.cxloop/
reports/out/
"""


@dataclass(frozen=True)
class Deployment:
    """One scheduled flow of the project's `prefect.yaml`."""

    name: str
    description: str
    flow: str  # module path of the flow function
    cron: str
    tags: tuple[str, ...]
    cancel_overlap: bool = False


DEPLOYMENTS = (
    Deployment(
        "improvement-cycle",
        "The whole loop, ingest → rank → experiments → report.",
        "flows.cycle.improvement_cycle",
        "0 6 * * *",
        ("cxloop", "cycle"),
    ),
    Deployment(
        "ingest-hourly",
        "Pull new and changed records from every source.",
        "flows.ingest.ingest",
        "5 * * * *",
        ("cxloop", "ingest"),
        cancel_overlap=True,
    ),
    Deployment(
        "rank-daily",
        "KPI snapshots and the pain-point ranking.",
        "flows.rank.rank",
        "30 6 * * *",
        ("cxloop", "rank"),
    ),
    Deployment(
        "experiments-daily",
        "Evaluate running pilots and decide.",
        "flows.experiments.evaluate_pilots",
        "45 6 * * *",
        ("cxloop", "experiments"),
    ),
    Deployment(
        "digest-weekly",
        "Render and deliver the reports.",
        "flows.report.report",
        "0 8 * * 1",
        ("cxloop", "report"),
    ),
)
SCHEDULE_TIMEZONE = "Europe/Moscow"
WORK_POOL = "cxloop-process"


def canonical_columns() -> dict[str, list[tuple[str, str, bool]]]:
    """Per canonical table: (column, type word, required) for each column a source may fill."""
    from tasks.store import INGESTED

    return {
        table: [
            (name, _type_word(info.annotation), info.is_required())
            for name, info in model.model_fields.items()
            if name not in ("id", "source", "attributes")
        ]
        for table, model in INGESTED.items()
    }


def _type_word(annotation: object) -> str:
    """`text`, `date-time`, … for a field's annotation, `None` (optional) left out."""
    kind = next(a for a in (*get_args(annotation), annotation) if a is not type(None))
    return TYPE_WORDS.get(kind.__name__, kind.__name__)


def files_example() -> dict:
    """A `files` source reading one CSV per table of `EXAMPLE_COLUMNS`, every required column
    mapped; a file's column is the canonical name in words (`created_at` ← "Created at")."""
    entries = []
    for table, extra in EXAMPLE_COLUMNS.items():
        constants = EXAMPLE_CONSTANTS.get(table, {})
        required = [n for n, _, needed in canonical_columns()[table] if needed]
        wanted = [c for c in dict.fromkeys([*required, *extra]) if c not in constants]
        entry = {
            "name": table.replace("_", "-"),
            "path": EXAMPLE_FILES.get(table, f"{table}s.csv"),
            "table": table,
            "columns": {_file_column(c): c for c in wanted},
        }
        if constants:
            entry["constants"] = constants
        entries.append(entry)
    return {"name": "my-files", "kind": "files", "options": {"base_dir": "data", "files": entries}}


def _file_column(canonical: str) -> str:
    return "ID" if canonical == "source_id" else canonical.replace("_", " ").capitalize()


CRM_EXAMPLE = {"name": "crm", "kind": "hubspot", "options": {"objects": ["contacts", "tickets"]}}


def sources_comment() -> str:
    """Commented `files` and CRM source entries and the canonical columns, for `sources:`."""
    files = yaml.safe_dump([files_example()], sort_keys=False, allow_unicode=True, width=90)
    crm = yaml.safe_dump([CRM_EXAMPLE], sort_keys=False, default_flow_style=None)
    lines = [
        "Your own data: uncomment and adapt. A `files` source maps each file's columns (left)",
        "to a canonical table's (right); `constants` fills a column the file lacks.",
        *files.splitlines(),
        "A CRM source; its token comes from the environment (HUBSPOT_TOKEN), never this file.",
        *crm.splitlines(),
        "Canonical columns per table (* required), from the store's models:",
    ]
    for table, columns in canonical_columns().items():
        # A no-break space inside each column keeps its name and type on one line.
        listed = ", ".join(f"{n}{'*' if needed else ''}\xa0({kind})" for n, kind, needed in columns)
        wrapped = textwrap.wrap(
            f"{table}: {listed}", COMMENT_WIDTH - 4, initial_indent="  ", subsequent_indent="    "
        )
        lines += [line.replace("\xa0", " ") for line in wrapped]
    lines.append("  (map `email` instead of `email_hash`: it is hashed before it is stored)")
    return "\n".join(f"  # {line}".rstrip() for line in lines)


def config_text() -> str:
    """The `cxloop.yaml` that `init` writes: the commented example with source examples and
    the canonical columns, its first line pointing editors at `cxloop.schema.json`."""
    from flows.config import example_text

    text = example_text()
    if SOURCES_MARKER not in text:
        raise RuntimeError(f"flows/cxloop.example.yaml lacks the line {SOURCES_MARKER!r}")
    body = text.replace(SOURCES_MARKER, sources_comment())
    return f"# yaml-language-server: $schema={CONFIG_SCHEMA}\n{body}"


def config_schema_json() -> str:
    """The JSON Schema of `cxloop.yaml`, from the configuration's model."""
    from flows.config import Config

    schema = Config.model_json_schema(mode="validation")
    schema["title"] = "cxloop configuration"
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def prefect_yaml_text() -> str:
    """Deployments whose flows load from the installed cxloop (module paths), so that
    `prefect deploy --all` in the project records the project directory for the worker."""
    deployments = []
    for d in DEPLOYMENTS:
        entry = {
            "name": d.name,
            "description": d.description,
            "entrypoint": d.flow,
            "parameters": {"config_path": CONFIG},
            "schedules": [{"cron": d.cron, "timezone": SCHEDULE_TIMEZONE}],
            "work_pool": {"name": WORK_POOL},
            "tags": list(d.tags),
        }
        if d.cancel_overlap:
            entry["concurrency_limit"] = {"limit": 1, "collision_strategy": "CANCEL_NEW"}
        deployments.append(entry)
    spec = {"name": "cxloop", "prefect-version": version("prefect"), "deployments": deployments}
    header = (
        "# The cxloop flows on schedules, run in this directory (where cxloop.yaml is):\n"
        f"#   prefect work-pool create {WORK_POOL} --type process\n"
        "#   prefect deploy --all          (here: it records this directory for the worker)\n"
        f"#   prefect worker start --pool {WORK_POOL}   (here too)\n"
    )
    return header + yaml.safe_dump(spec, sort_keys=False, allow_unicode=True)


def project_files() -> dict[Path, str]:
    """Each file of a new project, relative to its directory, with its text."""
    from tasks.hypotheses import schema_json

    return {
        Path(CONFIG): config_text(),
        Path(CONFIG_SCHEMA): config_schema_json(),
        HYPOTHESES_SCHEMA: schema_json(),
        Path("prefect.yaml"): prefect_yaml_text(),
        Path(".gitignore"): GITIGNORE,
    }


def existing(directory: Path) -> list[Path]:
    """The project files already in `directory`, which `init` would overwrite."""
    return [directory / p for p in project_files() if (directory / p).exists()]


def write_project(directory: Path) -> list[Path]:
    """Write a new project into `directory` (created if missing); returns the files written."""
    written = []
    for relative, text in project_files().items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
