"""`cxloop.yaml`: the shipped example is valid, errors name file, line and key, env wins."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sqlalchemy import inspect

from connectors.errors import ConfigError
from flows.config import Config, example_text, load_config
from tests.conftest import REPO


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cxloop.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_example_config_is_valid(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, example_text()))
    assert config.sources[0].kind == "demo"
    assert config.efforts["default"] == 2


def test_every_key_of_the_configuration_schema_has_hover_help() -> None:
    schema = Config.model_json_schema(mode="validation")
    models = {"Config": schema, **schema["$defs"]}
    bare = [
        f"{model}.{key}"
        for model, spec in models.items()
        for key, field in spec.get("properties", {}).items()
        if not field.get("description")
    ]
    assert not bare, f"keys without a description (empty editor hover): {bare}"


def test_error_names_file_line_key_and_expectation(tmp_path: Path) -> None:
    text = example_text().replace("kind: demo", "kind: hubspott")
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "kind: hubspott" in row)
    assert f"{path}:{line}" in str(caught.value) and "`sources.0.kind`" in str(caught.value)
    assert "unknown source kind; use one of" in str(caught.value) and "hubspot" in str(caught.value)


def test_configured_topics_extend_the_shipped_taxonomy_and_bad_ones_name_the_fix(
    tmp_path: Path,
) -> None:
    text = example_text() + "topics:\n  packaging: {ru: [упаковка], en: [packaging]}\n"
    taxonomy = load_config(_write(tmp_path, text)).taxonomy
    assert taxonomy.keywords["packaging"]["ru"] == ["упаковка"] and "delivery" in taxonomy.keywords
    broken = example_text() + "topics:\n  packaging: {de: [Verpackung]}\n"
    with pytest.raises(ConfigError, match=r"`topics.*language 'de' is not one of"):
        load_config(_write(tmp_path, broken))


def test_an_unknown_time_zone_names_the_field_and_an_example(tmp_path: Path) -> None:
    assert load_config(_write(tmp_path, example_text())).timezone == "UTC"
    with pytest.raises(ConfigError, match=r"`timezone`.*Europe/Moscow"):
        load_config(
            _write(tmp_path, example_text().replace("timezone: UTC", "timezone: Europe/Moskow"))
        )


def test_unknown_top_level_key_suggests_the_right_one(tmp_path: Path) -> None:
    path = _write(tmp_path, example_text().replace("csat_scale:", "csat_scal:"))
    with pytest.raises(ConfigError, match="did you mean `csat_scale`"):
        load_config(path)


def test_missing_file_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cxloop init"):
        load_config(tmp_path / "nope.yaml")


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CXLOOP_DATABASE_URL", "postgresql://cx@db/cx")
    monkeypatch.setenv("CXLOOP_REPORTS_DIR", str(tmp_path / "out"))
    config = load_config(_write(tmp_path, example_text()))
    assert config.database_url == "postgresql://cx@db/cx"
    assert config.reports.out_dir == tmp_path / "out"


def test_the_store_is_the_one_the_environment_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chosen = tmp_path / "chosen.db"
    monkeypatch.setenv("CXLOOP_DATABASE_URL", f"sqlite:///{chosen}")
    engine = load_config(_write(tmp_path, example_text())).store()
    assert engine.url.database == str(chosen) and chosen.exists()
    assert "customer" in inspect(engine).get_table_names()


def _line(text: str, fragment: str) -> int:
    return next(i for i, row in enumerate(text.splitlines(), 1) if fragment in row)


def test_a_key_given_twice_names_both_lines(tmp_path: Path) -> None:
    text = example_text().replace("csat_scale: 5", "csat_scale: 5\ncsat_scale: 7")
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    first, second = _line(text, "csat_scale: 5"), _line(text, "csat_scale: 7")
    assert f"{path}:{second}: `csat_scale` is given twice, on lines {first} and {second}" in str(
        caught.value
    )


def test_a_holiday_that_does_not_exist_names_line_field_and_fix(tmp_path: Path) -> None:
    text = example_text() + "business_hours:\n  holidays: [2026-01-07, 2026-02-30]\n"
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert f"{path}:{_line(text, '2026-02-30')}: `business_hours.holidays.1`: 2026-02-30" in str(
        caught.value
    )
    assert "not a calendar date" in str(caught.value) and "YYYY-MM-DD" in str(caught.value)


@pytest.mark.parametrize("hours", ["{start: 19, end: 9}", "\n  start: 20  # ends at 18\n"])
def test_business_hours_ending_before_they_start_are_refused(tmp_path: Path, hours: str) -> None:
    text = example_text() + f"business_hours: {hours}\n"
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=r"`business_hours.end`.*later than `start`") as caught:
        load_config(path)
    assert f"{path}:{_line(text, 'business_hours:')}:" in str(caught.value)


DEMO = "options: {customers: 20000, seed: 7}"


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ("options: {customers: lots, seed: 7}", "customers: got 'lots'; write a whole number"),
        ("options: {customer: 500}", "take no option `customer`; did you mean `customers`?"),
        ("options: {customers: 20}", "customers: got 20; write a whole number of at least 100"),
    ],
)
def test_demo_options_are_checked_at_their_line(tmp_path: Path, options: str, expected: str):
    text = example_text().replace(DEMO, options)
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert f"{path}:{_line(text, options)}: sources.demo.options." in str(caught.value)
    assert expected in str(caught.value)


def test_a_misspelt_file_option_names_the_entry_and_the_right_keys(tmp_path: Path) -> None:
    text = example_text().replace(
        f"name: demo\n    kind: demo\n    {DEMO}",
        "name: crm\n    kind: files\n    options:\n      files:\n"
        "        - {path: t.csv, table: ticket, columns: {id: source_id}, delimeter: ';'}",
    )
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert f"{path}:{_line(text, 'options:')}: sources.crm.options.files[0]" in message
    assert "delimeter" in message and "delimiter" in message


def test_http_source_options_are_checked_without_their_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HUBSPOT_TOKEN", raising=False)
    hubspot = "kind: hubspot\n    options: {page_size: lots, objects: [contacts]}"
    text = example_text().replace(f"kind: demo\n    {DEMO}", hubspot)
    with pytest.raises(ConfigError, match=r"page_size: got 'lots'; write a whole number"):
        load_config(_write(tmp_path, text))
    valid = example_text().replace(f"kind: demo\n    {DEMO}", "kind: hubspot")
    assert load_config(_write(tmp_path, valid)).sources[0].kind == "hubspot"  # token: at open


def test_a_flow_run_records_the_configuration_without_the_store_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.ingest import ingest

    monkeypatch.setenv("CXLOOP_DATABASE_URL", "postgresql://cx:hunter2@db/cx")
    config = load_config(_write(tmp_path, example_text()))
    recorded = ingest.serialize_parameters({"config_path": tmp_path, "config": config})
    assert recorded["config"]["database_url"] == "postgresql://cx:***@db/cx"
    assert recorded["config"]["sources"][0]["kind"] == "demo"
    assert config.database_url == "postgresql://cx:hunter2@db/cx"  # only the record hides it


# `cxloop run` in this process with every read of a file named cxloop.yaml counted.
COUNTED_RUN = """
import atexit, pathlib, runpy, sys
reads = []
read_text = pathlib.Path.read_text
def counted(self, *args, **kwargs):
    if self.name == "cxloop.yaml":
        reads.append(str(self))
    return read_text(self, *args, **kwargs)
pathlib.Path.read_text = counted
atexit.register(lambda: print(f"cxloop.yaml read {len(reads)} times", file=sys.stderr))
sys.argv = ["cxloop", "run"]
runpy.run_path(CXLOOP, run_name="__main__")
"""


@pytest.mark.prefect
def test_one_cxloop_run_reads_the_configuration_once(tmp_path: Path) -> None:
    config = yaml.safe_load(example_text())
    config["sources"] = [{"name": "demo", "kind": "demo", "options": {"customers": 400}}]
    config["database_url"] = "sqlite:///cx.db"
    (tmp_path / "cxloop.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    shutil.copytree(REPO / "hypotheses", tmp_path / "hypotheses")
    cxloop = Path(sys.executable).parent / "cxloop"
    done = subprocess.run(
        [sys.executable, "-c", COUNTED_RUN.replace("CXLOOP", repr(str(cxloop)))],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cxloop.yaml read 1 times" in done.stderr, done.stderr
