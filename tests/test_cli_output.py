"""`--json` and `--csv` give the numbers the store holds; misspelt cuts get a suggestion."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from flows.cli import summary
from tasks import store
from tests.test_cli import cxloop

CUSTOMERS = 600
CONFIG = f".cxloop/demo-{CUSTOMERS}-7.yaml"
HYPOTHESES = str(Path(__file__).resolve().parents[1] / "hypotheses")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory where the demo company ran once in an 80-column terminal; its summary
    is in `summary.txt`, what it printed on stderr in `stderr.txt`."""
    project = tmp_path_factory.mktemp("demo")
    result = cxloop("demo", "--customers", str(CUSTOMERS), cwd=project, COLUMNS="80")
    assert result.returncode == 0, result.stdout + result.stderr
    (project / "summary.txt").write_text(result.stdout, encoding="utf-8")
    (project / "stderr.txt").write_text(result.stderr, encoding="utf-8")
    return project


def rows(project: Path, *args: str) -> list[dict]:
    """The JSON records a command prints, after checking its CSV has the same cells."""
    as_json = cxloop(*args, "--json", "--config", CONFIG, cwd=project)
    assert as_json.returncode == 0, as_json.stderr
    records = json.loads(as_json.stdout)
    as_csv = cxloop(*args, "--csv", "--config", CONFIG, cwd=project)
    assert as_csv.returncode == 0, as_csv.stderr
    table = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [list(r) for r in table] == [list(r) for r in records]
    return records


def engine(project: Path):
    return store.open_store(f"sqlite:///{project / '.cxloop' / f'demo-{CUSTOMERS}-7.db'}")


@pytest.mark.prefect
def test_metrics_json_counts_and_nps_equal_the_stores_answers(demo: Path) -> None:
    found = rows(demo, "metrics", "--by", "segment", "--metric", "nps")
    db = engine(demo)
    customers = store.read_frame(db, store.Customer)[["source_id", "segment"]]
    answers = store.read_frame(db, store.SurveyResponse)
    nps = answers[answers["kind"] == "nps"].merge(
        customers, left_on="customer_id", right_on="source_id"
    )
    points = np.select([nps["score"] >= 9, nps["score"] <= 6], [100, -100], 0)
    expected = pd.Series(points, index=nps.index).groupby(nps["segment"]).agg(["mean", "size"])
    assert {r["segment"] for r in found} == set(expected.index)
    for record in found:
        assert record["n"] == expected.loc[record["segment"], "size"], record
        assert record["value"] == pytest.approx(expected.loc[record["segment"], "mean"]), record
        assert record["ci_low"] < record["value"] < record["ci_high"], record


@pytest.mark.prefect
def test_backlog_and_hypotheses_json_equal_the_stores_ranking_and_arms(demo: Path) -> None:
    db = engine(demo)
    pain = store.read_frame(db, store.PainPoint)
    latest = pain[pain["period"] == pain["period"].max()].set_index("key")
    ranked = [r for r in rows(demo, "backlog") if r["rank"] is not None]
    # one row per pain point and hypothesis: three pilots address delivery tickets
    assert {r["key"] for r in ranked} == set(latest.index)
    assert len(ranked) == len(latest) + 2
    assert len({(r["key"], r["hypothesis"]) for r in ranked}) == len(ranked)
    for record in ranked:
        assert record["score"] == pytest.approx(latest.loc[record["key"], "score"]), record
        assert record["rank"] == latest.loc[record["key"], "rank"], record

    arms = store.read_frame(db, store.Assignment).groupby(["hypothesis_id", "arm"]).size()
    results = store.read_frame(db, store.ExperimentResult)
    primary = results[results["role"] == "primary"].sort_values("as_of")
    estimates = primary.groupby("hypothesis_id")["estimate"].last()
    listed = rows(demo, "hypotheses", "list", HYPOTHESES)
    assert {r["id"] for r in listed} == {
        "auto-route-tickets",
        "chat-greeting-script",
        "courier-siberia",
        "courier-volga",
    }
    for record in listed:
        assert record["pilot"] == arms[record["id"], "pilot"], record
        assert record["control"] == arms[record["id"], "control"], record
        assert record["estimate"] == pytest.approx(estimates[record["id"]]), record


@pytest.mark.prefect
def test_journey_and_themes_json_parse_with_the_stores_ticket_counts(demo: Path) -> None:
    tickets = store.read_frame(engine(demo), store.Ticket)
    stages = {r["stage"]: r for r in rows(demo, "journey")}
    delivery = tickets["topic"].isin(["delivery", "product_quality", "returns"]).sum()
    assert stages["delivery"]["tickets"] == delivery
    assert stages["delivery"]["touchpoints"] == ["delivery", "product_quality", "returns"]
    themes = rows(demo, "themes", "--count", "3")
    assert all(isinstance(t["keywords"], list) and t["n_texts"] > 0 for t in themes)


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (("--by", "segmnt"), "did you mean `segment`?"),
        (("--by", "segment,weekdy"), "did you mean `weekday`?"),
        (("--metric", "csat_top"), "did you mean `csat_top2`?"),
    ],
)
def test_misspelt_cut_or_metric_exits_2_with_a_suggestion(
    tmp_path: Path, args: tuple[str, ...], hint: str
) -> None:
    assert cxloop("init", cwd=tmp_path).returncode == 0  # the cuts include its dimensions
    result = cxloop("metrics", *args, cwd=tmp_path)
    assert result.returncode == 2 and hint in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_json_and_csv_together_exit_2(tmp_path: Path) -> None:
    result = cxloop("hypotheses", "list", HYPOTHESES, "--json", "--csv", cwd=tmp_path)
    assert result.returncode == 2 and "not both" in result.stderr


def column(lines: list[str], title: str, index: int) -> list[str]:
    """The cells of column `index` (from 0) of the table titled `title`, line by line."""
    start = next(i for i, line in enumerate(lines) if title in line)
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("└"))
    return [line.split("│")[index + 1].strip() for line in lines[start:end] if line.startswith("│")]


def pain_point_column(lines: list[str]) -> list[str]:
    """The pain-point cells of the ranking table, line by line."""
    return column(lines, "Top pain points", 1)


@pytest.mark.prefect
def test_summary_at_80_columns_shows_each_title_and_key_whole_and_a_next_step(
    demo: Path,
) -> None:
    lines = (demo / "summary.txt").read_text(encoding="utf-8").splitlines()
    assert max(map(len, lines)) <= 80
    cells = pain_point_column(lines)
    pain = store.read_frame(engine(demo), store.PainPoint)
    top = pain[(pain["period"] == pain["period"].max()) & (pain["score"] > 0)].nsmallest(5, "rank")
    for title, key in zip(top["title"], top["key"], strict=True):
        assert title in " ".join(cells), (title, cells)
        assert key in "".join(cells), (key, cells)
    rows = [line for line in lines if line.startswith("│")]
    assert not [r for r in rows if re.search(r"\S…", r)], "a cell is cut"  # CIs read "a … b"
    (step,) = [line for line in lines if line.startswith("Next: ")]
    assert "cxloop" in step


def test_ranking_hides_pain_points_scored_0_and_counts_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def pain_point(rank: int, key: str, title: str, score: float) -> dict:
        return {
            "rank": rank, "key": key, "title": title, "score": score, "reach": 10,
            "reach_share": 0.1, "impact": -5.0, "unit": None, "impact_ci_low": -7.0,
            "impact_ci_high": -3.0, "confidence": 0.5, "effort": 2.0, "effort_is_default": True,
        }  # fmt: skip

    ranked = [
        pain_point(1, "ticket:delivery", "Tickets about delivery, late and lost", 12.5),
        pain_point(2, "ticket:login", "Tickets about logging in", 0.0),
    ]
    monkeypatch.setattr(summary, "console", Console(width=80, record=True))
    summary.console.print(summary.pain_table(ranked, 5, []))
    lines = summary.console.export_text().splitlines()
    cells = " ".join(pain_point_column(lines))
    assert "Tickets about delivery, late and lost" in cells and "ticket:delivery" in cells
    assert "login" not in "\n".join(lines)
    assert any("1 pain points scored 0" in line for line in lines)
    assert summary.next_step(ranked, [], Path("r.html")).startswith(
        "Next: cxloop hypotheses new fix-ticket-delivery --pain-point ticket:delivery"
    )


# A line as Prefect's log formatter writes it: `12:34:56.789 | INFO    | Flow run 'x' - …`.
PREFECT_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} \| (\w+) +\| (?:Flow|Task) run '[^']*' - (.*)$")


@pytest.mark.prefect
def test_prefects_log_goes_to_the_log_file_and_only_its_warnings_to_the_terminal(
    demo: Path,
) -> None:
    out = (demo / "summary.txt").read_text(encoding="utf-8")
    err = (demo / "stderr.txt").read_text(encoding="utf-8")
    assert out.splitlines()[2].startswith("Ingested"), out  # after the demo and Prefect lines
    shown = [line for line in (out + err).splitlines() if re.match(r"^\d\d:\d\d:\d\d\.", line)]
    assert not shown, shown
    logged = [PREFECT_LINE.match(line) for line in (demo / ".cxloop" / "cxloop.log").open()]
    levels = {m[1] for m in logged if m}
    assert "INFO" in levels and any("ingested" in m[2] for m in logged if m)
    warnings = [m[2] for m in logged if m and m[1] == "WARNING"]
    assert warnings, "the demo raises an alert and warns of underpowered pilots"
    assert all(f"warning: {w}" in err for w in warnings), (warnings, err)


@pytest.mark.prefect
def test_verbose_shows_prefects_log_lines_on_the_terminal(demo: Path) -> None:
    result = cxloop("ingest", "--verbose", "--config", CONFIG, cwd=demo)
    assert result.returncode == 0, result.stderr
    lines = [PREFECT_LINE.match(line) for line in result.stderr.splitlines()]
    assert any(m and "Finished in state Completed" in m[2] for m in lines), result.stderr


@pytest.mark.prefect
def test_summary_at_80_columns_lists_the_alerts_raised_and_each_pilots_decision_and_reason(
    demo: Path,
) -> None:
    lines = (demo / "summary.txt").read_text(encoding="utf-8").splitlines()
    db = engine(demo)
    raised = store.read_frame(db, store.Alert)
    # 600 customers hold no change that survives Benjamini-Hochberg over the run's ~60 alert
    # tests; the one a per-test alpha raised (CSAT by phone, n 2 -> 6) was noise.
    assert raised.empty, list(raised["message"])
    title = next(i for i, line in enumerate(lines) if "Alerts raised this run" in line)
    assert "None." in " ".join(lines[title : title + 7])
    results = store.read_frame(db, store.ExperimentResult)
    decided = results[results["role"] == "primary"].sort_values("as_of").groupby("hypothesis_id")
    for hypothesis, decision in decided["decision"].last().items():
        (line,) = [line for line in lines if line.startswith(f"  {hypothesis}: ")]
        assert line.startswith(f"  {hypothesis}: {decision} — ") and len(line) > 40, line


def test_alerts_wrap_whole_at_80_columns_with_their_size(monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.alerts import Alert

    evidence = {
        "metric": "nps", "cut": "segment", "group": "premium", "before": 31.46,
        "after": 12.04, "change": -19.42, "p_value": 0.0012, "n_before": 1234, "n_after": 1187,
        "period_before": "2026-09", "q_value": 0.03,
    }  # fmt: skip
    alert = Alert("nps_drop", "nps_drop:segment=premium", "2026-10", evidence)
    monkeypatch.setattr(summary, "console", Console(width=80, record=True))
    summary.console.print(summary.alerts_table([alert]))
    lines = summary.console.export_text().splitlines()
    assert max(map(len, lines)) <= 80
    assert alert.message in " ".join(column(lines, "Alerts raised this run", 1))
    assert "NPS drop" in column(lines, "Alerts raised this run", 0)
    assert "31.5 → 12.0" in column(lines, "Alerts raised this run", 2)
    summary.console.print(summary.alerts_table([]))
    assert "None." in summary.console.export_text()


def test_commands_name_the_prefect_server_when_prefect_api_url_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flows.cli import terminal

    monkeypatch.setattr(terminal, "console", Console(width=80, record=True))
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    terminal.starting()
    said = terminal.console.export_text()
    assert "http://127.0.0.1:4200/api" in said and "ephemeral" not in said, said
    monkeypatch.delenv("PREFECT_API_URL")
    terminal.starting()
    assert "ephemeral mode" in terminal.console.export_text()
