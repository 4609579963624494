"""Pilots as operations run them: arms in a CRM property or a list, the effect only on the
contacts the change touches (a ticket scope), and reports that render for every method."""

from __future__ import annotations

import email
import email.policy
import html
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from pypdf import PdfReader

from connectors.errors import HypothesisError
from tasks.delivery import email_message
from tasks.experiments import (
    analysis_of,
    assignments,
    evaluate,
    pilot_observations,
    unmatched_ids,
)
from tasks.hypotheses import Hypothesis, load_hypothesis
from tasks.loader import CxData
from tasks.metrics import with_ticket_measures
from tasks.outputs import print_pdf, write_report
from tasks.pilot_report import build_experiment
from tasks.pilot_store import result_rows
from tests.conftest import REPO
from tests.test_reports_html import Browser

TOPICS = np.array(["delivery", "payment", "login", "returns"])
FRT_EFFECT = -0.40  # delivery tickets of pilot customers in the pilot period
PROMOTER, DETRACTOR = (0.40, 0.30), (0.60, 0.15)  # (promoter, detractor) before, after
NPS_EFFECT = 100 * ((DETRACTOR[0] - DETRACTOR[1]) - (PROMOTER[0] - PROMOTER[1]))  # +35 points
PERIODS = (("2026-09-01", False), ("2026-10-01", True))

ROUTING = """\
id: auto-route-tickets
title: Auto-routing delivery tickets cuts their first response time
owner: ops@example.com
pain_point: ticket:delivery
change: Delivery tickets go straight to the delivery queue
metric: {name: frt_hours, direction: decrease, expected_effect: -40%}
secondary_metrics:
  - {name: nps, direction: increase, expected_effect: +20}
assignment: {method: attribute, attribute: ab_autorouting, pilot: pilot, control: control}
scope: {tickets: {topic: [delivery]}, surveys: linked}
schedule:
  baseline: {start: 2026-09-01, end: 2026-09-30}
  pilot: {start: 2026-10-01, end: 2026-10-31}
decision: {alpha: 0.05, min_per_arm: 50, sequential: SEQUENTIAL}
status: running
"""


def routing(tmp_path: Path, sequential: bool = True, **replace: str) -> Hypothesis:
    """The auto-routing pilot written to `tmp_path`, lines replaced by `replace`."""
    text = ROUTING.replace("SEQUENTIAL", str(sequential).lower())
    for old, new in replace.items():
        text = text.replace(old, new)
    path = tmp_path / "auto-route-tickets.yaml"
    path.write_text(text, encoding="utf-8")
    return load_hypothesis(path)


def company(seed: int, customers: int = 600, effect: bool = True) -> CxData:
    """A company whose operations marked arms in the CRM property `ab_autorouting` (40%
    pilot, 40% control, the rest unmarked); two tickets a customer a month, a tenth
    of their customers' NPS answers relationship NPS, the others after a ticket. With
    `effect`, pilot customers' delivery tickets in October are answered 40% faster and their
    NPS after those tickets rises by `NPS_EFFECT`; nothing else changes."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"C{i}" for i in range(customers)])
    mark = rng.choice(["pilot", "control", None], customers, p=[0.4, 0.4, 0.2])
    people = pd.DataFrame(
        {
            "customer_id": ids,
            "segment": rng.choice(["loyal", "new"], customers),
            "attributes": [{"ab_autorouting": m} if m else {} for m in mark],
        }
    )
    level = rng.normal(0, 0.5, customers)
    per = 2 * customers
    who = np.tile(np.arange(customers), 2 * len(PERIODS))
    post = np.repeat([False, True], per)
    start = np.where(post, pd.Timestamp(PERIODS[1][0]).value, pd.Timestamp(PERIODS[0][0]).value)
    created = pd.to_datetime(start + rng.uniform(0, 25 * 86400e9, 2 * per).astype(np.int64))
    topic = rng.choice(TOPICS, 2 * per, p=[0.4, 0.2, 0.2, 0.2])
    touched = effect & post & (mark[who] == "pilot") & (topic == "delivery")
    frt = 6.0 * np.exp(level[who] + rng.normal(0, 0.9, 2 * per)) * np.where(touched, 0.6, 1.0)
    tickets = pd.DataFrame(
        {
            "ticket_id": [f"T{i}" for i in range(2 * per)],
            "customer_id": ids[who],
            "created_at": created,
            "first_response_at": created + pd.to_timedelta(frt, unit="h"),
            "resolved_at": created + pd.to_timedelta(frt + 2, unit="h"),
            "reopened": False,
            "channel": rng.choice(["chat", "email"], 2 * per),
            "topic": topic,
        }
    )
    answered = rng.random(2 * per) < 0.6
    promoter, detractor = (
        np.where(touched, new, old) for old, new in zip(PROMOTER, DETRACTOR, strict=True)
    )
    draw = rng.random(2 * per)
    score = np.select([draw < promoter, draw < promoter + detractor], [10.0, 3.0], 8.0)
    after = pd.DataFrame(
        {
            "customer_id": ids[who],
            "ticket_id": tickets["ticket_id"],
            "submitted_at": created + pd.Timedelta(days=1),
            "score": score,
        }
    )[answered]
    asked = rng.random(customers * 2) < 0.3
    relationship = pd.DataFrame(
        {
            "customer_id": np.tile(ids, 2),
            "ticket_id": None,
            "submitted_at": pd.to_datetime(np.repeat([PERIODS[0][0], PERIODS[1][0]], customers))
            + pd.Timedelta(days=20),
            "score": rng.choice([3.0, 8.0, 10.0], 2 * customers),
        }
    )[asked]
    responses = pd.concat([after, relationship], ignore_index=True).assign(
        kind="nps", survey="nps", channel="email", comment=None
    )
    empty = pd.DataFrame()
    return CxData(people, with_ticket_measures(tickets), responses, empty, empty)


def test_arms_come_from_the_crm_property_lists_and_unmarked_customers_stay_out(
    tmp_path: Path,
) -> None:
    data = company(1)
    arms = assignments(routing(tmp_path), data.customers)
    marks = data.customers.set_index("customer_id")["attributes"].map(
        lambda a: a.get("ab_autorouting")
    )
    assert (arms["arm"].to_numpy() == marks[arms["customer_id"]].to_numpy()).all()
    assert len(arms) == marks.notna().sum()
    listed = data.customers.assign(
        attributes=[{"ab_autorouting": [m, "beta"]} if m else {} for m in marks]
    )
    assert assignments(routing(tmp_path), listed).equals(arms)  # a multi-select property


def test_scoped_frt_covers_the_planted_effect_in_95_percent_of_200_companies(
    tmp_path: Path,
) -> None:
    h = routing(tmp_path, sequential=False)
    unscoped = h.model_copy(update={"scope": None})
    covered, diluted, nps_covered = [], [], []
    for seed in range(200):
        data = company(seed)
        result = evaluate(h, data)
        p = result.primary
        covered.append(p.ci_low <= FRT_EFFECT <= p.ci_high)
        (nps,) = result.secondary
        nps_covered.append(nps.ci_low <= NPS_EFFECT <= nps.ci_high)
        if seed < 10:
            whole = evaluate(unscoped, data).primary
            diluted.append(whole.ci_low <= FRT_EFFECT <= whole.ci_high)
    assert np.mean(covered) >= 0.93, np.mean(covered)
    assert np.mean(nps_covered) >= 0.93, np.mean(nps_covered)
    assert np.mean(diluted) < 0.2  # over every ticket of the arms the effect is diluted


def test_an_aa_pilot_of_operations_arms_is_adopted_in_at_most_5_percent_of_200_runs(
    tmp_path: Path,
) -> None:
    h = routing(tmp_path)
    adopted = [evaluate(h, company(1000 + seed, effect=False)).decision == "adopt"
               for seed in range(200)]  # fmt: skip
    assert np.mean(adopted) <= 0.05, np.mean(adopted)


def test_post_contact_nps_linked_to_scoped_tickets_recovers_the_planted_effect(
    tmp_path: Path,
) -> None:
    data = company(11, customers=3000)
    h = routing(tmp_path)
    (nps,) = evaluate(h, data).secondary
    assert nps.ci_low <= NPS_EFFECT <= nps.ci_high and nps.ci_low > 0, nps
    linked = pilot_observations("nps", data, h)
    tickets = data.tickets.set_index("ticket_id")["topic"]
    topics = data.responses.loc[linked.index, "ticket_id"].map(tickets)
    assert (topics == "delivery").all()
    population = routing(tmp_path, **{", surveys: linked": ""})
    kept = data.responses.loc[pilot_observations("nps", data, population).index]
    assert kept["ticket_id"].isna().sum() == data.responses["ticket_id"].isna().sum()
    assert kept["ticket_id"].map(tickets).dropna().eq("delivery").all()


def test_list_arms_count_ids_that_match_no_customer_and_rest_is_the_population(
    tmp_path: Path,
) -> None:
    data = company(3)
    (tmp_path / "ops").mkdir()
    (tmp_path / "ops" / "pilot.csv").write_text(
        "customer_id,name\n" + "".join(f"C{i},x\n" for i in range(100)) + "X1,y\nX2,y\n",
        encoding="utf-8",
    )
    listed = "{method: list, pilot: ops/pilot.csv, control: rest, planned_share: 0.5}"
    h = routing(tmp_path, **{ROUTING.splitlines()[8].removeprefix("assignment: "): listed})
    arms = assignments(h, data.customers)
    assert (arms["arm"] == "pilot").sum() == 100 and len(arms) == len(data.customers)
    assert unmatched_ids(h, data.customers) == {"pilot": 2}
    result = evaluate(h, data)
    assert "2 ids of the pilot list match no customer" in result.warnings
    assert result.srm_p < 0.001 and result.decision == "inconclusive"  # 100 of 600 is no half


def _report(h: Hypothesis, data: CxData) -> tuple[object, object]:
    """The evaluation of `h` on `data` and its report rendered from the stored rows."""
    result = evaluate(h, data)
    rows = result_rows(result, pd.Timestamp("2026-10-31"))
    rows = rows.assign(as_of=pd.Timestamp("2026-10-31"))
    return result, build_experiment(h, rows, result.arms, data, pd.DataFrame())


SECONDARY = "secondary_metrics:\n  - {name: nps, direction: increase, expected_effect: +20}\n"
# A CSAT guardrail on a company that runs no CSAT survey.
NO_DATA_GUARDRAIL = {SECONDARY: SECONDARY + "guardrails:\n  - {metric: csat, margin: 0.3}\n"}
METHODS = {
    "hash": "{method: hash, pilot_share: 0.5, salt: s}",
    "segment": "{method: segment, pilot: {segment: loyal}, control: {segment: new}}",
    "attribute": "{method: attribute, attribute: ab_autorouting, pilot: pilot, control: control}",
    "list": "{method: list, pilot: ops/pilot.csv, control: rest}",
}


def _method_report(tmp_path: Path, method: str) -> tuple[Hypothesis, object]:
    """The routing pilot with the arms of `method` (a list's pilot ids in ops/pilot.csv) and
    its rendered report."""
    (tmp_path / "ops").mkdir()
    ids = "".join(f"C{i}\n" for i in range(0, 600, 2))
    (tmp_path / "ops" / "pilot.csv").write_text(f"customer_id\n{ids}", encoding="utf-8")
    h = routing(tmp_path, **{METHODS["attribute"]: METHODS[method]})
    return h, _report(h, company(2))[1]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_assignment_method_renders_as_email_and_pdf_with_its_arms(
    tmp_path: Path, method: str
) -> None:
    h, rendered = _method_report(tmp_path, method)
    sent = email_message(rendered.title, rendered.email_html, rendered.text, rendered.charts)
    message = email.message_from_bytes(sent.as_bytes(), policy=email.policy.default)
    body = message.get_body(("html",)).get_content()
    assert str(h.assignment) in html.unescape(re.sub(r"<[^>]+>", " ", body))
    assert all(f"cid:{chart.cid}" in body for chart in rendered.charts) and rendered.charts
    assert "tickets with topic: delivery" in message.get_body(("plain",)).get_content()
    pdf = print_pdf(write_report(rendered, tmp_path / "out"))
    printed = " ".join(page.extract_text() for page in PdfReader(pdf).pages)
    assert h.id in printed and "delivery" in printed and len(PdfReader(pdf).pages) >= 2


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_assignment_method_renders_html_and_markdown_with_its_arms_and_scope(
    tmp_path: Path, method: str
) -> None:
    h, rendered = _method_report(tmp_path, method)
    text = re.sub(r"<[^>]+>", " ", rendered.html)
    for shown in (text, rendered.markdown):
        assert str(h.assignment) in html.unescape(shown) or str(h.assignment) in shown
        assert "tickets with topic: delivery, linked surveys only" in shown
    srm = re.search(r'id="srm">(.*?)</p>', rendered.html, re.S).group(1)
    if h.assignment.split is None:
        assert "no planned split" in srm and "no mismatch" not in srm
    else:
        assert "planned pilot share 50%" in srm


def test_a_guardrail_without_data_shows_no_data_and_blocks_adoption(tmp_path: Path) -> None:
    h = routing(tmp_path, **NO_DATA_GUARDRAIL)
    result, rendered = _report(h, company(4, customers=2000))  # no CSAT survey at all
    assert result.primary.p_value < 0.05 and result.primary.value < 0  # the effect is shown
    (check,) = result.guardrails
    assert check.status == "unknown"
    assert result.decision == "inconclusive" and result.why["rule"] == "guardrail_unknown"
    guardrails = rendered.html.split("<h2>Guardrails</h2>")[1].split("</table>")[0]
    assert re.search(r'<span class="decision inconclusive">no data</span>', guardrails)
    assert "holds" not in guardrails
    assert "CSAT (margin -0.30): n/a, worse end of CI n/a, no data" in rendered.markdown


@pytest.mark.prefect
def test_one_pilots_broken_report_fails_only_that_report_and_the_run_names_it(
    tmp_path: Path,
) -> None:
    shutil.copytree(REPO / "hypotheses", tmp_path / "hypotheses")
    (tmp_path / "templates").mkdir()
    shipped = (REPO / "reports" / "templates" / "experiment.html.j2").read_text(encoding="utf-8")
    broken = '{% if h.id == "chat-greeting-script" %}{{ h.no_such_field }}{% endif %}\n'
    (tmp_path / "templates" / "experiment.html.j2").write_text(
        shipped.replace("{% block content %}\n", "{% block content %}\n" + broken),
        encoding="utf-8",
    )
    config = {
        "database_url": "sqlite:///cx.db",
        "sources": [{"name": "demo", "kind": "demo", "options": {"customers": 2000}}],
        "reports": {"out_dir": "out", "template_dir": "templates"},
    }
    (tmp_path / "cxloop.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    result = subprocess.run(
        [str(Path(sys.executable).parent / "cxloop"), "run"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode != 0, result.stdout
    assert "experiment-chat-greeting-script: UndefinedError" in result.stderr, result.stderr
    written = {p.name for p in (tmp_path / "out").glob("*.html")}
    assert "experiment-auto-route-tickets.html" in written and "index.html" in written
    assert any(name.startswith("digest-") for name in written)
    assert "experiment-chat-greeting-script.html" not in written


@pytest.fixture(scope="module")
def browser() -> Browser:
    started = Browser()
    yield started
    started.close()


def test_reports_of_every_method_and_a_guardrail_without_data_read_right_in_chromium(
    tmp_path: Path, browser: Browser
) -> None:
    (tmp_path / "ops").mkdir()
    ids = "".join(f"C{i}\n" for i in range(0, 600, 2))
    (tmp_path / "ops" / "pilot.csv").write_text(f"customer_id\n{ids}", encoding="utf-8")
    data = company(5)
    for method, assignment in METHODS.items():
        h = routing(tmp_path, **{METHODS["attribute"]: assignment, **NO_DATA_GUARDRAIL})
        _, rendered = _report(h, data)
        browser.open(write_report(rendered, tmp_path / method))
        text = browser.evaluate("document.body.innerText")
        assert browser.errors() == [], method
        assert browser.evaluate("document.getElementById('arms').innerText") == str(h.assignment)
        assert "tickets with topic: delivery" in browser.evaluate(
            "document.getElementById('scope').innerText"
        )
        status = browser.evaluate(
            "[...document.querySelectorAll('h2')].find(e => e.innerText === 'Guardrails')"
            ".nextElementSibling.querySelector('.decision').innerText"
        )
        assert status == "no data", (method, status)
        assert (
            "Sample ratio check" in text
            # The arms over time, the per-metric intervals and the cumulative estimate.
            and browser.evaluate("document.querySelectorAll('svg.chart').length") == 3
        )


def test_an_attribute_no_customer_has_and_surveys_without_ticket_ids_are_named_errors(
    tmp_path: Path,
) -> None:
    data = company(6)
    typo = routing(tmp_path, **{"attribute: ab_autorouting": "attribute: ab_autoruting"})
    named = r"tickets\.yaml: `assignment`: no customer column or CRM property 'ab_autoruting'"
    with pytest.raises(HypothesisError, match=named + ".*ab_autorouting"):
        evaluate(typo, data)
    unlinked = CxData(data.customers, data.tickets, data.responses.drop(columns="ticket_id"),
                      data.orders, data.web)  # fmt: skip
    with pytest.raises(HypothesisError, match="carry no `ticket_id`"):
        pilot_observations("nps", unlinked, routing(tmp_path))
    assert len(pilot_observations("frt_hours", unlinked, routing(tmp_path)))  # tickets need none


def test_an_attribute_flagging_the_arms_is_judged_per_customer_without_a_unit_warning(
    tmp_path: Path,
) -> None:
    flagged = routing(tmp_path)
    assert analysis_of(flagged) == "did"
    evaluation = evaluate(flagged, company(seed=11, customers=2_000))
    assert not any("unit-level" in warning for warning in evaluation.warnings)
    # No guardrails: an adoption says so instead of claiming they hold.
    assert evaluation.decision == "adopt" and evaluation.reason.endswith("no guardrails set")
    regions = routing(tmp_path, **{
        "{method: attribute, attribute: ab_autorouting, pilot: pilot, control: control}":
        "{method: attribute, attribute: region, pilot: Siberia, control: [Urals, Volga, South]}"
    })  # fmt: skip
    assert analysis_of(regions) == "auto"
