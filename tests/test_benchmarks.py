"""The benchmark suite at smoke scale: every stage timed, and cxloop agrees with the baseline."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from benchmarks import agreement, results
from benchmarks.__main__ import main
from benchmarks.dataset import ParquetSource, label, parse_scale, write_company

CUSTOMERS = 3_000


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """One benchmark run at 3,000 customers (Prefect and PostgreSQL included)."""
    root = tmp_path_factory.mktemp("bench")
    run = main(["--scale", str(CUSTOMERS), "--data", str(root / "data"), "--out", str(root)])
    return run, root


@pytest.mark.prefect
def test_smoke_run_times_every_stage_and_agrees_with_the_baseline(smoke: tuple[dict, Path]) -> None:
    run, _ = smoke
    scale = run["scales"][label(CUSTOMERS)]
    assert scale["notes"] == []
    assert scale["agreement"]["ok"], scale["agreement"]["mismatches"]
    assert scale["agreement"]["compared"] >= 60
    for side in ("cxloop", "baseline"):
        assert {s: scale[side][s]["seconds"] > 0 for s in results.STAGES} == dict.fromkeys(
            results.STAGES, True
        )
    assert set(scale["ratios"]) == set(results.STAGES)
    assert scale["cxloop"]["ingest"]["extra"]["rows"] == scale["total_rows"]
    assert set(scale["ingest_rows_per_s"]) == {"sqlite", "postgresql"}
    prefect = scale["prefect"]
    assert prefect["server_startup_s"] > 0 and prefect["cycle_s"] > prefect["empty_flow_s"]
    assert "failure" not in scale["orchestrated"]["cycle"]["extra"]
    assert 0 < scale["peak_rss_mib"]["cxloop"] < 2048
    for route in results.FLOOR_ROUTES:
        assert scale["floor"][f"{route} read"]["extra"]["rows"] == scale["total_rows"]
        assert 0 < scale["floor"][f"{route} total"]["seconds"] < scale["cxloop"]["cycle"]["seconds"]


@pytest.mark.prefect
def test_smoke_run_writes_json_with_machine_info_and_a_markdown_table(
    smoke: tuple[dict, Path],
) -> None:
    _, root = smoke
    [written] = root.glob("run-*.json")
    saved = json.loads(written.read_text())
    assert saved["machine"]["cores"] >= 1 and saved["machine"]["versions"]["duckdb"]
    assert set(saved["slopes"]) == set(results.STAGES)
    assert [t["name"].split()[0] for t in saved["targets"]] == [
        "cycle", "cycle", "peak", "scaling", "Prefect", "`cxloop",
    ]  # fmt: skip
    table = (root / "latest.md").read_text()
    for stage in results.STAGES:
        assert f"| {stage} |" in table
    assert "| numbers agree | yes" in table
    assert "| sqlite3 total |" in table and "store floor alone" in saved["targets"][0]["figure"]


def test_agreement_names_a_kpi_that_differs_and_a_missing_pilot() -> None:
    ours = {
        "kpis": [{"segment": "all", "metric": "nps", "value": 27.3, "n": 100}],
        "pain_points": [
            {"topic": "ticket:delivery", "rank": 1, "reach": 5, "impact": 30.0, "score": 9.0}
        ],
        "pilots": [
            {"hypothesis_id": "h", "metric": "nps", "estimate": 8.0, "n_pilot": 10, "n_control": 11}
        ],
    }
    assert agreement.compare(ours, copy.deepcopy(ours)).ok
    theirs = copy.deepcopy(ours)
    theirs["kpis"][0]["value"] = 27.4
    theirs["pilots"][0]["hypothesis_id"] = "other"
    found = agreement.compare(ours, theirs)
    assert not found.ok
    assert found.mismatches == [
        "kpi ('all', 'nps') value: cxloop 27.3, baseline 27.4",
        "pilot ('h', 'nps'): missing from the baseline",
    ]


def test_slope_is_one_for_linear_and_two_for_quadratic_growth() -> None:
    rows = [10_000, 100_000, 1_000_000]
    assert results.slope(rows, [0.5, 5.0, 50.0]) == pytest.approx(1.0)
    assert results.slope(rows, [0.01, 1.0, 100.0]) == pytest.approx(2.0)
    assert results.slope(rows, [0.5, None, None]) is None


def test_scales_read_as_people_write_them() -> None:
    assert [parse_scale(s) for s in ("10k", "1m", "2500", "1.5M")] == [
        10_000, 1_000_000, 2_500, 1_500_000,
    ]  # fmt: skip
    assert [label(n) for n in (10_000, 1_000_000, 2_500)] == ["10k", "1m", "2500"]


def test_parquet_source_pages_every_row_once_and_resumes_after_a_cursor(tmp_path: Path) -> None:
    rows = write_company(600, 3, tmp_path)
    [stream] = [s for s in ParquetSource(tmp_path).streams() if s.name == "survey_responses"]
    pages = list(stream.read({}))
    assert sum(len(p.records) for p in pages) == rows["survey_responses"]
    resumed = list(stream.read({"dataset": "600:3", "offset": 10}))
    assert len(resumed[0].records) == len(pages[0].records) - 10
    assert resumed[0].records["source_id"].iloc[0] == pages[0].records["source_id"].iloc[10]
