"""What Prefect shows of a run reads like the reports: table artifacts rounded and labelled,
keys and run names carrying the project."""

from __future__ import annotations

from pathlib import Path

from flows.artifacts import readable_rows
from flows.names import project_of, slug, snapshot_name
from tasks.labels import labels


def test_table_artifact_rows_are_rounded_and_labelled_as_the_reports_show_them() -> None:
    rows = [
        {"metric": "frt_hours", "role": "primary", "estimate": -43.7956204379562,
         "ci_low": -51.04166, "ci_high": -36.5, "p_value": 0.000123456, "n_pilot": 1234,
         "n_control": 1199, "verdict": "not_significant", "key": "ticket:delivery"},
    ]  # fmt: skip
    (row,) = readable_rows(rows, labels("en"))
    assert row == {
        "Metric": "First response time",
        "Role": "primary",
        "Estimate": "-43.80",
        "95% CI low": "-51.0",
        "95% CI high": "-36.5",
        "p": "0.00012",
        "n pilot": "1,234",
        "n control": "1,199",
        "Verdict": "not significant",
        "Key": "ticket:delivery",
    }
    (russian,) = readable_rows([{"estimate": -43.7956, "n_pilot": 1234}], labels("ru"))
    assert russian[next(iter(russian))] == "-43,80"  # a decimal comma, as the Russian reports


def test_missing_values_read_n_a_and_codes_lose_their_underscores_but_names_keep_them() -> None:
    rows = [{"ci_low": None, "status": "at_risk", "x_y": float("nan"), "team": "night_shift"}]
    (row,) = readable_rows(rows, {"lang": "en"})
    assert row == {"95% CI low": "n/a", "Status": "at risk", "X y": "n/a", "Team": "night_shift"}


def test_project_is_the_config_directory_or_the_config_files_own_name(tmp_path: Path) -> None:
    assert project_of(tmp_path / "Acme Support" / "cxloop.yaml") == "acme-support"
    assert project_of(tmp_path / ".cxloop" / "demo-20000-7.yaml") == "demo-20000-7"
    assert slug("Digest_2026-10") == "digest-2026-10"


def test_snapshot_task_names_say_the_cut_and_the_grain_never_none() -> None:
    assert snapshot_name({"by": "segment", "grain": "month"}) == "snapshot by segment per month"
    assert snapshot_name({"by": None, "grain": None}) == "snapshot overall"
