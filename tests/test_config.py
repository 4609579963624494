"""`cxloop.yaml`: the shipped example is valid, errors name file, line and key, env wins."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.config import example_text, load_config
from tasks.errors import ConfigError


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cxloop.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_example_config_is_valid(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, example_text()))
    assert config.sources[0].kind == "demo"
    assert config.efforts["default"] == 2


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
        load_config(_write(tmp_path, example_text() + "timezone: Europe/Moskow\n"))


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
