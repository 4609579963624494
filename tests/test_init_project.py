"""`cxloop init` makes a project a newcomer can run, edit with completion and deploy from."""

from __future__ import annotations

import csv
import json
from importlib import import_module
from pathlib import Path

import jsonschema
import pytest
import yaml
from prefect.flows import load_flow_from_entrypoint

from flows.config import Config, load_config
from flows.project import canonical_columns
from flows.serve import flow_of
from tasks import store
from tasks.hypotheses import Hypothesis
from tests.conftest import REPO
from tests.test_cli import cxloop

# A value of each canonical type that the files source reads, per row number.
VALUES = {
    "text": lambda i: f"v{i}",
    "number": lambda i: str(7 + i),
    "date-time": lambda i: f"2026-03-0{i + 1} 10:00",
    "date": lambda i: f"2026-03-0{i + 1}",
    "true/false": lambda i: "false",
}
ROWS = 3


def init(directory: Path) -> Path:
    result = cxloop("init", str(directory), cwd=directory.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    return directory


def test_init_writes_config_and_schemas_that_editors_and_cxloop_agree_on(tmp_path: Path) -> None:
    project = init(tmp_path / "acme")
    text = (project / "cxloop.yaml").read_text(encoding="utf-8")
    assert text.splitlines()[0] == "# yaml-language-server: $schema=cxloop.schema.json"
    schema = json.loads((project / "cxloop.schema.json").read_text(encoding="utf-8"))
    assert schema["properties"] == Config.model_json_schema(mode="validation")["properties"]
    jsonschema.validate(yaml.safe_load(text), schema)
    load_config(project / "cxloop.yaml")
    hypotheses = json.loads((project / "hypotheses" / "schema.json").read_text(encoding="utf-8"))
    assert hypotheses["properties"] == Hypothesis.model_json_schema()["properties"]
    models = [hypotheses, *hypotheses["$defs"].values()]
    bare = [f for m in models for f, p in m.get("properties", {}).items() if "description" not in p]
    assert bare == [], "editors show no hover help for these hypothesis fields"
    for table, columns in canonical_columns().items():
        assert table in text and all(name in text for name, _, _ in columns), table
    ignored = (project / ".gitignore").read_text(encoding="utf-8").split()
    assert ".cxloop/" in ignored and "reports/out/" in ignored


def test_init_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    project = init(tmp_path / "acme")
    (project / "cxloop.yaml").write_text("sources: []\n", encoding="utf-8")
    again = cxloop("init", str(project), cwd=tmp_path)
    assert again.returncode == 2 and "--force" in again.stderr
    assert (project / "cxloop.yaml").read_text(encoding="utf-8") == "sources: []\n"
    assert cxloop("init", str(project), "--force", cwd=tmp_path).returncode == 0
    assert "kind: demo" in (project / "cxloop.yaml").read_text(encoding="utf-8")


def test_project_deployments_are_the_repositorys_loaded_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = init(tmp_path / "acme")
    written = yaml.safe_load((project / "prefect.yaml").read_text(encoding="utf-8"))
    shipped = yaml.safe_load((REPO / "prefect.yaml").read_text(encoding="utf-8"))
    assert "pull" not in written  # so `prefect deploy` records the project directory
    monkeypatch.chdir(project)  # no flows/ here: each flow loads from the installed package
    for ours, theirs in zip(written["deployments"], shipped["deployments"], strict=True):
        entrypoint = ours.pop("entrypoint")
        flow = load_flow_from_entrypoint(entrypoint, use_placeholder_flow=False)
        assert flow_of(entrypoint, "prefect.yaml") is flow  # `cxloop serve` reads it too
        path, function = theirs.pop("entrypoint").split(":")
        module = import_module(path.removesuffix(".py").replace("/", "."))
        assert flow is getattr(module, function), ours["name"]
        assert ours == theirs


def uncommented_files_source(config_text: str) -> dict:
    """The commented `files` example of a written config, as cxloop reads it uncommented."""
    lines = config_text.splitlines()
    start = lines.index("  # - name: my-files")
    end = next(i for i in range(start + 1, len(lines)) if not lines[i].startswith("  #   "))
    (source,) = yaml.safe_load("\n".join(line[4:] for line in lines[start:end]))
    return source


def write_csvs(project: Path, source: dict) -> dict[str, int]:
    """A small CSV per file of the example, each column filled by its canonical type."""
    columns = {t: {n: kind for n, kind, _ in cols} for t, cols in canonical_columns().items()}
    base = project / source["options"]["base_dir"]
    base.mkdir()
    for entry in source["options"]["files"]:
        mapping, kinds = entry["columns"], columns[entry["table"]]
        with (base / entry["path"]).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(mapping)
            for i in range(ROWS):
                writer.writerow(
                    f"{entry['table']}-{i}" if c == "source_id" else VALUES[kinds[c]](i)
                    for c in mapping.values()
                )
    return {entry["table"]: ROWS for entry in source["options"]["files"]}


@pytest.mark.prefect
def test_files_source_from_the_generated_example_loads_its_csvs_first_time(
    tmp_path: Path,
) -> None:
    project = init(tmp_path / "acme")
    config = yaml.safe_load((project / "cxloop.yaml").read_text(encoding="utf-8"))
    source = uncommented_files_source((project / "cxloop.yaml").read_text(encoding="utf-8"))
    config["sources"] = [source]
    (project / "cxloop.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    expected = write_csvs(project, source)
    result = cxloop("ingest", cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    counts = store.row_counts(store.open_store(f"sqlite:///{project / '.cxloop' / 'cxloop.db'}"))
    assert {table: counts[table] for table in expected} == expected
    log = (project / ".cxloop" / "cxloop.log").read_text(encoding="utf-8")
    assert "rejected 0 rows" in log and "rejected 0 rows" not in result.stderr, result.stderr


@pytest.mark.prefect
def test_a_fresh_project_runs_pilots_and_reports_from_init_on(tmp_path: Path) -> None:
    project = init(tmp_path / "acme")
    config = project / "cxloop.yaml"
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("customers: 20000", "customers: 600"), encoding="utf-8")
    assert cxloop("run", cwd=project).returncode == 0
    engine = store.open_store(f"sqlite:///{project / '.cxloop' / 'cxloop.db'}")
    top = store.read_frame(engine, store.PainPoint).sort_values(["period", "rank"])
    key = top[top["period"] == top["period"].max()]["key"].iloc[0]
    for args in (
        ("hypotheses", "new", "first-pilot", "--pain-point", key),
        ("hypotheses", "validate"),
        ("run",),
        ("report",),
    ):
        result = cxloop(*args, cwd=project)
        assert result.returncode == 0, (args, result.stdout + result.stderr)
    assert (project / "hypotheses" / "first-pilot.yaml").exists()
    assert (project / "reports" / "out" / "index.html").exists()
