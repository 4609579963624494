"""Service standards: judged on the CI, validated at file/line/field, stored and alerted once."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from connectors.errors import ConfigError
from flows.config import example_text, load_config
from tasks import store
from tasks.digest import Month, build_digest
from tasks.labels import labels
from tasks.loader import CxData
from tasks.metrics import metric_table
from tasks.outputs import write_report
from tasks.standards import evaluate, newly_missed, snapshot_rows, summary
from tests.test_reports_html import Browser

PERIOD = "2026-09"


def standard(metric: str, target: float, direction: str | None = None, **where: str) -> object:
    return SimpleNamespace(metric=metric, target=target, where=where, direction=direction)


def fcr_cell(data: CxData) -> pd.Series:
    """FCR in chat for `PERIOD`: value, n and its Wilson CI."""
    table = metric_table(data, ["fcr"], ["channel"], "month")
    return table[(table["channel"] == "chat") & (table["period"] == PERIOD)].iloc[0]


def status_for(data: CxData, target: float, direction: str | None = None, **kw: int) -> str:
    results = evaluate(data, [standard("fcr", target, direction, channel="chat")], **kw)
    return results.set_index("period").loc[PERIOD, "status"]


def test_a_ci_wholly_on_the_good_side_is_met(demo_data: CxData) -> None:
    cell = fcr_cell(demo_data)
    assert cell["ci_low"] < cell["ci_high"]
    assert status_for(demo_data, cell["ci_low"] - 0.01) == "met"
    assert status_for(demo_data, cell["ci_high"] + 0.01, "below") == "met"


def test_a_ci_wholly_on_the_wrong_side_is_missed(demo_data: CxData) -> None:
    cell = fcr_cell(demo_data)
    assert status_for(demo_data, cell["ci_high"] + 0.01) == "missed"
    assert status_for(demo_data, cell["ci_low"] - 0.01, "below") == "missed"


def test_a_ci_straddling_the_target_is_at_risk_even_with_the_value_on_the_wrong_side(
    demo_data: CxData,
) -> None:
    cell = fcr_cell(demo_data)
    just_above = (cell["value"] + cell["ci_high"]) / 2
    assert status_for(demo_data, just_above) == "at_risk"
    assert status_for(demo_data, (cell["value"] + cell["ci_low"]) / 2, "below") == "at_risk"


def test_too_few_units_give_unknown(demo_data: CxData) -> None:
    cell = fcr_cell(demo_data)
    assert status_for(demo_data, 0.0, min_n=int(cell["n"]) + 1) == "unknown"
    assert status_for(demo_data, 0.0, min_n=int(cell["n"])) == "met"


def test_lower_is_better_metrics_default_to_below(demo_data: CxData) -> None:
    results = evaluate(demo_data, [standard("frt_hours", 1000.0), standard("nps", -100.0)])
    assert dict(zip(results["metric"], results["direction"], strict=True)) == {
        "frt_hours": "below",
        "nps": "above",
    }
    assert set(results.loc[results["n"] >= 10, "status"]) == {"met"}


def test_a_value_never_seen_in_the_store_names_the_field_and_the_closest_value(
    demo_data: CxData,
) -> None:
    with pytest.raises(ConfigError, match=r"standards\.1\.where\.channel.*did you mean `chat`"):
        evaluate(demo_data, [standard("nps", 0.0), standard("fcr", 80.0, channel="chatt")])


def _config(tmp_path: Path, standards: str) -> Path:
    path = tmp_path / "cxloop.yaml"
    shipped = example_text().partition("\nstandards:\n")[0]  # without the example's own
    path.write_text(shipped + "\nstandards:\n" + standards, encoding="utf-8")
    return path


def _line_of(path: Path, text: str) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line)


@pytest.mark.parametrize(
    ("entry", "field", "message"),
    [
        ("{metric: npss, target: 40}", "metric", "unknown metric (did you mean `nps`?)"),
        ("{metric: nps, target: 140}", "target", "must be within -100..100"),
        ("{metric: fcr, target: 101}", "target", "must be within 0..100"),
        ("{metric: frt_hours, target: -1}", "target", "must be >= 0"),
        ("{metric: fcr, target: 80, where: {chanel: chat}}", "where", "did you mean `channel`"),
    ],
)
def test_config_errors_name_file_line_and_field(
    tmp_path: Path, entry: str, field: str, message: str
) -> None:
    path = _config(tmp_path, f"  - {{metric: nps, target: 40}}\n  - {entry}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = str(caught.value)
    assert f"{path}:{_line_of(path, entry)}: `standards.1.{field}`" in text
    assert message in text


def test_valid_standards_load(tmp_path: Path) -> None:
    entry = "{metric: frt_hours, target: 0.033, where: {channel: chat}, direction: below}"
    config = load_config(_config(tmp_path, f"  - {entry}\n  - {{metric: fcr, target: 80}}\n"))
    assert [(s.metric, s.where, s.direction) for s in config.standards] == [
        ("frt_hours", {"channel": "chat"}, "below"),
        ("fcr", {}, None),
    ]


def _judge_and_store(url: str, results: pd.DataFrame) -> list:
    """What the rank flow does: alerts from the stored snapshots, then the snapshots saved."""
    engine = store.open_store(url)
    alerts = newly_missed(results, store.read_frame(engine, store.StandardSnapshot))
    rows = snapshot_rows(results, store.now_utc())
    store.save_rows(engine, store.StandardSnapshot, rows, ("period", "standard"))
    return alerts


def test_snapshots_are_stored_once_and_an_alert_fires_once_per_newly_missed_standard(
    sqlite_url: str, demo_data: CxData
) -> None:
    standards = [standard("fcr", 99.0), standard("nps", -100.0), standard("csat_top2", 99.0)]
    results = evaluate(demo_data, standards)
    latest = results.sort_values("period").groupby("standard").tail(1)
    assert set(latest.loc[latest["status"] == "missed", "standard"]) == {"fcr", "csat_top2"}
    first = _judge_and_store(sqlite_url, results)
    assert sorted(a.key for a in first) == ["standard_missed:csat_top2", "standard_missed:fcr"]
    assert all(a.kind == "standard_missed" and "missed in" in a.message for a in first)
    assert _judge_and_store(sqlite_url, results) == []
    stored = store.read_frame(store.open_store(sqlite_url), store.StandardSnapshot)
    assert len(stored) == len(results)
    assert not stored.duplicated(["period", "standard"]).any()


def test_a_standard_that_starts_missing_raises_its_alert_then(
    sqlite_url: str, demo_data: CxData
) -> None:
    met = evaluate(demo_data, [standard("fcr", 0.0)])
    assert _judge_and_store(sqlite_url, met) == []
    missed = evaluate(demo_data, [standard("fcr", 100.0)])
    assert [a.key for a in _judge_and_store(sqlite_url, missed)] == ["standard_missed:fcr"]


def test_summary_counts_each_standards_latest_period(demo_data: CxData) -> None:
    results = evaluate(demo_data, [standard("fcr", 99.0), standard("nps", -100.0)])
    assert summary(results) == {"met": 1, "missed": 1, "at_risk": 0, "unknown": 0, "total": 2}


STANDARDS = [
    standard("fcr", 99.0),
    standard("nps", -100.0),
    standard("frt_hours", 0.033, "below", channel="chat"),
]
TABLE = """[...document.querySelectorAll('#standards tr')].slice(1).map(tr =>
  [...tr.querySelectorAll('td')].map(td => td.innerText))"""


@pytest.fixture(scope="module")
def browser() -> Browser:
    started = Browser()
    yield started
    started.close()


@pytest.mark.parametrize(
    ("language", "missed", "met"), [("en", "missed", "met"), ("ru", "не выполнен", "выполнен")]
)
def test_the_digest_opens_its_kpis_with_the_standards_table(
    demo_data: CxData, browser: Browser, tmp_path: Path, language: str, missed: str, met: str
) -> None:
    results = evaluate(demo_data, STANDARDS)
    month = Month.containing(pd.Timestamp("2026-10-15"))
    rendered = build_digest(
        demo_data, pd.DataFrame(), pd.DataFrame(), [], [], language, month=month,
        standards=snapshot_rows(results, store.now_utc()),
    )  # fmt: skip
    page = write_report(rendered, tmp_path)
    browser.open(page)
    rows = browser.evaluate(TABLE)
    summary_text = browser.evaluate("document.querySelector('#standards-summary').innerText")
    first_heading = browser.evaluate("document.querySelector('h2 + h3').innerText")
    assert browser.errors() == []
    shown = results[results["period"] <= month.label]
    latest = shown.sort_values("period").groupby("standard").tail(1).set_index("standard")
    assert [r[0].split()[0] for r in rows] == ["fcr", "nps", "frt_hours[channel=chat]"]
    assert [r[4] for r in rows[:2]] == [missed, met]
    fcr = latest.loc["fcr"]
    assert f"{fcr['value']:.3f}".replace(".", "," if language == "ru" else ".") in rows[0][2]
    assert month.label in rows[0][0]
    before = shown[(shown["standard"] == "fcr") & (shown["period"] < month.label)]
    trend = before.sort_values("period")["value"].tail(3)
    assert rows[0][5].count("→") == len(trend) - 1
    assert first_heading == labels(language)["standards"]["title"]
    counts = summary(shown)
    assert summary_text == labels(language)["standards"]["summary"].format(**counts)
    assert counts["missed"] >= 1
    assert f"| fcr ({month.label}) |" in rendered.markdown
    assert [r["status"] for r in rendered.tables["standards"]] == list(
        latest["status"][["fcr", "nps", "frt_hours[channel=chat]"]]
    )


def test_the_standards_command_prints_the_table_and_json(
    demo_data: CxData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    import typer
    from typer.testing import CliRunner

    from flows.cli import standards as command

    entries = "  - {metric: fcr, target: 99}\n  - {metric: nps, target: -100}\n"
    config = load_config(_config(tmp_path, entries))
    monkeypatch.setattr(command, "checked", lambda _path: config)
    monkeypatch.setattr(command, "data", lambda _config: demo_data)
    app = typer.Typer()
    app.command()(command.standards)
    app.command()(lambda: None)  # two commands, so `standards` is invoked by name
    runner = CliRunner()
    printed = runner.invoke(app, ["standards"], env={"COLUMNS": "200"})
    assert printed.exit_code == 0, printed.output
    assert "Standards: 1 of 2 missed, 0 at risk" in printed.output
    rows = json.loads(runner.invoke(app, ["standards", "--json"]).output)
    assert [(r["standard"], r["status"]) for r in rows] == [("fcr", "missed"), ("nps", "met")]
    assert all(len(r["trend"]) == 3 for r in rows)
