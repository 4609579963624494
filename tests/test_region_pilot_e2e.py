"""Region pilots end to end: a courier change in one region (a planted effect on first
response time) and one in another region that does nothing, loaded from CSV files by
`cxloop run`, judged by the unit-level analysis and shown in the pilot reports; and the
design check `cxloop hypotheses validate` prints for unit pilots."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tasks import store
from tasks.experiments import Evaluation, evaluate
from tasks.hypotheses import Hypothesis, load_hypothesis
from tasks.loader import CxData
from tasks.metrics import with_ticket_measures
from tasks.pilot_report import build_experiment
from tasks.pilot_store import result_rows
from tasks.render import Rendered
from tasks.unit_design import unit_design
from tests.test_reports_html import Browser

REGIONS = ("Siberia", "Urals", "Volga", "South", "Northwest", "Far East", "Centre", "Moscow")
PLANTED, NULL = "Siberia", "Urals"
PER_REGION = 40
BASELINE_WEEKS, PILOT_WEEKS = 12, 6
START = pd.Timestamp("2026-06-01")  # a Monday
PILOT_START = START + pd.Timedelta(weeks=BASELINE_WEEKS)
EFFECT = -3.0  # hours of first response in the planted region's pilot weeks
LEVEL, REGION_SD, SHOCK_SD, RHO, NOISE_SD = 14.0, 1.5, 0.5, 0.6, 2.0
TICKETS_PER_WEEK = 2
SEED = 7

PILOT = """\
id: courier-{slug}
title: A new courier partner in {region} answers delivery tickets faster
owner: ops@example.com
pain_point: ticket:delivery
new: true
change: Delivery tickets in {region} go to the new courier partner's desk
metric: {{name: frt_hours, direction: decrease, expected_effect: -3}}
assignment:
  method: segment
  pilot: {{region: {region}}}
  control: {{region: [{control}]}}
  overlap: true
schedule:
  baseline: {{start: {baseline_start}, end: {baseline_end}}}
  pilot: {{start: {pilot_start}, end: {pilot_end}}}
decision: {{alpha: 0.05, min_per_arm: 30}}
status: running
"""


def region_tickets(seed: int = SEED) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Customers (`id`, `region`, `segment`), their tickets (`id`, `customer`, `created`,
    `first_response`, `resolved`, `topic`, `channel`) and post-contact NPS answers to a
    third of them (`id`, `customer`, `ticket`, `submitted`, `score`): first response hours are
    a region level, the week's common move, an AR(1) shock of the region, a customer level
    and noise; the planted region's tickets are answered `EFFECT` hours sooner from the
    pilot start on, the null region's are not touched."""
    rng = np.random.default_rng(seed)
    weeks = BASELINE_WEEKS + PILOT_WEEKS
    shocks = np.empty((len(REGIONS), weeks))
    shocks[:, 0] = rng.normal(0, SHOCK_SD, len(REGIONS))
    for week in range(1, weeks):
        fresh = rng.normal(0, SHOCK_SD * np.sqrt(1 - RHO**2), len(REGIONS))
        shocks[:, week] = RHO * shocks[:, week - 1] + fresh
    common = rng.normal(0, 0.5, weeks)
    levels = rng.normal(0, REGION_SD, len(REGIONS))
    customers = pd.DataFrame({
        "id": [f"C{i}" for i in range(len(REGIONS) * PER_REGION)],
        "region": np.repeat(REGIONS, PER_REGION),
        "segment": rng.choice(["loyal", "new"], len(REGIONS) * PER_REGION),
    })  # fmt: skip
    region = np.repeat(np.arange(len(REGIONS)), PER_REGION)
    person = rng.normal(0, 1.0, len(customers))
    who = np.tile(np.repeat(np.arange(len(customers)), TICKETS_PER_WEEK), weeks)
    week = np.repeat(np.arange(weeks), len(customers) * TICKETS_PER_WEEK)
    created = START + pd.to_timedelta(week * 7 + rng.uniform(0, 6.5, week.size), unit="D")
    treated = (region[who] == REGIONS.index(PLANTED)) & (week >= BASELINE_WEEKS)
    hours = (
        LEVEL + levels[region[who]] + common[week] + shocks[region[who], week] + person[who]
        + rng.normal(0, NOISE_SD, week.size) + EFFECT * treated
    )  # fmt: skip
    first = created + pd.to_timedelta(np.clip(hours, 0.1, None), unit="h")
    tickets = pd.DataFrame({
        "id": [f"T{i}" for i in range(week.size)], "customer": customers["id"].to_numpy()[who],
        "created": created.strftime("%Y-%m-%dT%H:%M:%S"),
        "first_response": first.strftime("%Y-%m-%dT%H:%M:%S"),
        "resolved": (first + pd.Timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M:%S"),
        "topic": rng.choice(["delivery", "payment", "returns"], week.size),
        "channel": rng.choice(["chat", "email"], week.size),
    })  # fmt: skip
    asked = rng.random(week.size) < 1 / 3
    answers = pd.DataFrame({
        "id": [f"S{i}" for i in range(int(asked.sum()))],
        "customer": tickets.loc[asked, "customer"].to_numpy(),
        "ticket": tickets.loc[asked, "id"].to_numpy(),
        "submitted": (first[asked] + pd.Timedelta(hours=5)).strftime("%Y-%m-%dT%H:%M:%S"),
        "score": rng.choice([3, 7, 8, 9, 10], int(asked.sum()), p=[0.2, 0.1, 0.2, 0.2, 0.3]),
    })  # fmt: skip
    return customers, tickets, answers


def pilot_file(region: str, others: list[str]) -> str:
    """The hypothesis of a courier change in `region` against the `others`."""
    day = pd.Timedelta(days=1)
    return PILOT.format(
        slug=region.lower(),
        region=region,
        control=", ".join(others),
        baseline_start=START.date(),
        baseline_end=(PILOT_START - day).date(),
        pilot_start=PILOT_START.date(),
        pilot_end=(PILOT_START + pd.Timedelta(weeks=PILOT_WEEKS) - day).date(),
    )


def write_project(root: Path) -> Path:
    """A project reading the customers and tickets from CSV, with both region pilots; the
    null pilot's comparison regions leave out the planted one, whose change would move them."""
    customers, tickets, answers = region_tickets()
    (root / "data").mkdir(parents=True)
    customers.to_csv(root / "data" / "customers.csv", index=False)
    tickets.to_csv(root / "data" / "tickets.csv", index=False)
    answers.to_csv(root / "data" / "nps.csv", index=False)
    (root / "hypotheses").mkdir()
    rest = [r for r in REGIONS if r != PLANTED]
    (root / "hypotheses" / "courier-siberia.yaml").write_text(pilot_file(PLANTED, rest))
    others = [r for r in rest if r != NULL]
    (root / "hypotheses" / "courier-urals.yaml").write_text(pilot_file(NULL, others))
    config = {
        "database_url": "sqlite:///cx.db",
        "sources": [{
            "name": "crm", "kind": "files",
            "options": {"base_dir": "data", "files": [
                {"path": "customers.csv", "table": "customer",
                 "columns": {"id": "source_id", "region": "region", "segment": "segment"}},
                {"path": "tickets.csv", "table": "ticket", "columns": {
                    "id": "source_id", "customer": "customer_id", "created": "created_at",
                    "first_response": "first_response_at", "resolved": "resolved_at",
                    "topic": "topic", "channel": "channel"}},
                {"path": "nps.csv", "table": "survey_response",
                 "columns": {"id": "source_id", "customer": "customer_id", "ticket": "ticket_id",
                             "submitted": "submitted_at", "score": "score"},
                 "constants": {"survey": "post-contact", "kind": "nps"}},
            ]},
        }],
        "reports": {"out_dir": "out"},
    }  # fmt: skip
    (root / "cxloop.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return root


def cxloop(root: Path, *args: str) -> subprocess.CompletedProcess:
    """`cxloop args` run in `root`, as a user runs it."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "cxloop"), *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "COLUMNS": "200"},
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_project(tmp_path_factory.mktemp("regions"))
    result = cxloop(root, "run")
    assert result.returncode == 0, result.stdout + result.stderr
    return root


@pytest.fixture(scope="module")
def browser() -> Browser:
    started = Browser()
    yield started
    started.close()


def _primary(root: Path, hypothesis_id: str) -> pd.Series:
    results = store.read_frame(store.open_store(f"sqlite:///{root / 'cx.db'}"),
                               store.ExperimentResult)  # fmt: skip
    mine = results[(results["hypothesis_id"] == hypothesis_id) & (results["role"] == "primary")]
    return mine.sort_values("as_of").iloc[-1]


@pytest.mark.prefect
def test_the_planted_region_effect_is_covered_and_the_null_region_is_not_adopted(
    project: Path,
) -> None:
    planted = _primary(project, "courier-siberia")
    unit = planted["cells"]["unit"]
    assert unit["low"] <= EFFECT <= unit["high"], unit
    assert unit["treated"] == [PLANTED] and len(unit["donors"]) == len(REGIONS) - 1
    assert unit["design"] == "observational"
    assert planted["decision"] == "adopt", planted["reason"]
    null = _primary(project, "courier-urals")
    assert null["decision"] != "adopt", null["reason"]
    assert null["cells"]["unit"]["treated"] == [NULL]
    assert len(null["cells"]["unit"]["donors"]) == len(REGIONS) - 2


@pytest.mark.prefect
def test_the_pilot_reports_show_the_unit_analysis_in_chromium(
    project: Path, browser: Browser
) -> None:
    for hypothesis_id, n_donors in (("courier-siberia", 7), ("courier-urals", 6)):
        browser.open(project / "out" / f"experiment-{hypothesis_id}.html")
        assert browser.errors() == [], hypothesis_id
        text = browser.evaluate("document.getElementById('unit').innerText")
        assert "Observational" in text and "Effect on the pilot units" in text
        method = browser.evaluate("document.getElementById('unit-method').innerText")
        assert method.startswith(("difference-in-differences", "synthetic control"))
        assert browser.evaluate("document.getElementById('unit-n-treated').innerText") == "1"
        assert browser.evaluate("document.getElementById('unit-n-donors').innerText") == str(
            n_donors
        )
        checks = browser.evaluate(
            "[...document.querySelectorAll('#unit-checks tr[data-check]')]"
            ".map(r => [r.dataset.check, r.cells[1].innerText, r.cells[2].innerText])"
        )
        names = {name for name, _, _ in checks}
        assert {"pre_trends", "placebo_in_time", "placebo_in_space", "regression_to_mean"} <= names
        for name, status, line in checks:
            assert status in ("passed", "failed", "warning", "informs only"), (name, status)
            assert len(line) > 30, (name, line)
        drawn = browser.evaluate(
            "[...document.querySelectorAll('svg.chart')].map(s => s.getAttribute('aria-label'))"
        )
        assert any("pilot units against" in label for label in drawn), drawn
    markdown = (project / "out" / "experiment-courier-siberia.md").read_text(encoding="utf-8")
    assert "## Unit-level analysis" in markdown and "Parallel pre-trends" in markdown


@pytest.mark.prefect
def test_validate_prints_the_unit_design_check_with_json(project: Path) -> None:
    result = cxloop(project, "hypotheses", "validate", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    designs = {d["id"]: d for d in json.loads(result.stdout)}
    planted = designs["courier-siberia"]
    assert planted["unit"] == "region"
    assert planted["treated"] == [PLANTED] and len(planted["donors"]) == 7
    assert planted["baseline_periods"] == BASELINE_WEEKS
    assert planted["problems"] == [] and planted["mde"] > 0
    text = cxloop(project, "hypotheses", "validate")
    assert "courier-urals" in text.stdout and "region" in text.stdout


def region_data() -> CxData:
    """The region company as the loader hands it to the analysis, without a store."""
    customers, tickets, answers = region_tickets()
    people = customers.rename(columns={"id": "customer_id"})
    contacts = pd.DataFrame({
        "ticket_id": tickets["id"], "customer_id": tickets["customer"],
        "created_at": pd.to_datetime(tickets["created"]),
        "first_response_at": pd.to_datetime(tickets["first_response"]),
        "resolved_at": pd.to_datetime(tickets["resolved"]), "reopened": False,
        "channel": tickets["channel"], "topic": tickets["topic"],
    })  # fmt: skip
    responses = pd.DataFrame({
        "customer_id": answers["customer"], "ticket_id": answers["ticket"],
        "submitted_at": pd.to_datetime(answers["submitted"]), "score": answers["score"] * 1.0,
        "kind": "nps", "survey": "post-contact", "channel": "email", "comment": None,
    })  # fmt: skip
    empty = pd.DataFrame()
    return CxData(people, with_ticket_measures(contacts), responses, empty, empty)


def _hypothesis(tmp_path: Path, region: str, others: list[str], **replace: str) -> Hypothesis:
    text = pilot_file(region, others)
    for old, new in replace.items():
        text = text.replace(old, new)
    path = tmp_path / f"courier-{region.lower()}.yaml"
    path.write_text(text, encoding="utf-8")
    return load_hypothesis(path)


def _rendered(h: Hypothesis, data: CxData, language: str) -> tuple[Evaluation, Rendered]:
    evaluation = evaluate(h, data)
    rows = result_rows(evaluation, PILOT_START).assign(as_of=PILOT_START)
    return evaluation, build_experiment(h, rows, evaluation.arms, data, pd.DataFrame(), language)


def test_the_stored_unit_analysis_is_json_and_reads_in_english_and_russian(
    tmp_path: Path,
) -> None:
    h = _hypothesis(tmp_path, PLANTED, [r for r in REGIONS if r != PLANTED])
    data = region_data()
    evaluation, english = _rendered(h, data, "en")
    cells = result_rows(evaluation, PILOT_START).iloc[0]["cells"]["unit"]
    json.dumps(cells, allow_nan=False)
    assert cells["estimate"] == pytest.approx(evaluation.unit.estimate)
    assert [c["name"] for c in cells["checks"]] == [c.name for c in evaluation.unit.checks]
    assert len(cells["series"]) == BASELINE_WEEKS + PILOT_WEEKS
    assert 'id="unit-checks"' in english.html and "Parallel pre-trends" in english.html
    _, russian = _rendered(h, data, "ru")
    assert "## Анализ по единицам" in russian.markdown
    assert "Плацебо во времени" in russian.markdown and "Регрессия к среднему" in russian.markdown
    assert "эффект показан (наблюдательное исследование" in russian.markdown
    assert "effect shown" not in russian.markdown


def test_a_panel_too_thin_for_units_says_the_verdict_is_the_customer_level_one(
    tmp_path: Path,
) -> None:
    h = _hypothesis(tmp_path, PLANTED, [NULL])
    evaluation, rendered = _rendered(h, region_data(), "en")
    assert evaluation.unit is None
    assert any("unit-level analysis not possible" in w for w in evaluation.warnings)
    assert 'id="unit-fallback"' in rendered.html
    assert "the verdict is the customer-level one" in rendered.html


def test_the_design_check_names_what_leaves_the_analysis_unidentified(tmp_path: Path) -> None:
    data = region_data()
    fine = unit_design(_hypothesis(tmp_path, PLANTED, list(REGIONS[1:])), data)
    assert fine.problems == [] and fine.baseline_periods == BASELINE_WEEKS
    assert fine.treated == [PLANTED] and len(fine.donors) == len(REGIONS) - 1
    # the planted region's baseline is the worst (slowest) of the eight
    assert any("regression to the mean" in w for w in fine.warnings)
    few = unit_design(_hypothesis(tmp_path, PLANTED, ["Volga", "South", "Moscow"]), data)
    assert few.problems == [] and any("synthetic control needs" in w for w in few.warnings)
    one = unit_design(_hypothesis(tmp_path, PLANTED, [NULL]), data)
    assert one.mde is None and "1 comparison region(s)" in one.problems[0]
    baseline_end = str((PILOT_START - pd.Timedelta(days=1)).date())
    moved = {str(START.date()): "2025-01-01", baseline_end: "2025-03-01"}  # before any data
    early = unit_design(_hypothesis(tmp_path, PLANTED, [NULL, "Volga"], **moved), data)
    assert "no baseline week has frt_hours data" in early.problems[0]
