"""End to end on vendor fakes: HubSpot, GA4 and Typeform on loopback feed a real `cxloop run`.

The headline numbers are then computed again, independently, with plain pandas from the data
the fakes served (identity joined by CRM id or normalised e-mail, NPS from its definition, FRT
as reply minus creation), and must equal what cxloop stored (metric snapshots, web metrics)
and reported (`cxloop metrics`, `cxloop journey`, the unmatched-records warning of the run).
The data has several segments and regions, unanswered tickets, tickets without a contact and
survey answers whose e-mail matches nobody, so a wrong join or a wrong cut changes a number.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from pytest_httpserver import HTTPServer
from statsmodels.duration.survfunc import SurvfuncRight

from tasks import store
from tests.fakes.ga4 import EVENTS, FakeGA4
from tests.fakes.hubspot import FakeHubSpot, iso, ms
from tests.fakes.typeform import FakeTypeform, answer

pytestmark = pytest.mark.prefect

CXLOOP = str(Path(sys.executable).parent / "cxloop")
TOKENS = {
    "HUBSPOT_TOKEN": "pat-eu1-7d1c9a2e-0b3f-4e5d-8a6c-2f4e6a8c0b1d",
    "GA4_TOKEN": "ya29.a0AfB_end-to-end-ga4-token",
    "TYPEFORM_TOKEN": "tfp_e2e0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6",
}
PROPERTY = "987654321"
FORM = "Nps9x2"
SEGMENTS = ["subscriber", "lead", "customer", "evangelist"]
REGIONS = ["Russia", "Kazakhstan", "Belarus", None]
CATEGORIES = {
    "BILLING_ISSUE": "payment",
    "PRODUCT_ISSUE": "product_quality",
    "DELIVERY": "delivery",
}
START = datetime(2026, 9, 1, 8, 0, tzinfo=UTC)
WEB_DAYS = 10
JOURNEY = {
    "browse": {"funnel_steps": ["view_item", "add_to_cart"]},
    "checkout": {"funnel_steps": ["begin_checkout", "purchase"]},
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The three fakes seeded and running, a project directory with its cxloop.yaml, and
    `cxloop run` done against them; yields what the fakes hold and what the run printed."""
    rng = np.random.default_rng(20261123)
    hubspot = FakeHubSpot(TOKENS["HUBSPOT_TOKEN"])
    contacts, tickets = seed_crm(hubspot, rng)
    typeform = FakeTypeform(TOKENS["TYPEFORM_TOKEN"])
    answers = seed_survey(typeform, contacts, rng)
    ga4 = FakeGA4(TOKENS["GA4_TOKEN"], PROPERTY)
    first_web_day = date.today() - timedelta(days=WEB_DAYS - 1)
    ga4.seed(first_web_day, WEB_DAYS)
    root = tmp_path_factory.mktemp("e2e")
    (root / "hypotheses").mkdir()
    with HTTPServer() as web, HTTPServer() as surveys, hubspot.running():
        ga4.serve(web)
        typeform.serve(surveys)
        config = configuration(root, hubspot.url, ga4.url, typeform.url, first_web_day)
        (root / "cxloop.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
        run = cxloop("run", "--config", "cxloop.yaml", cwd=root)
        assert run.returncode == 0, run.stdout + run.stderr
        assert len(ga4.requests) >= 2 and len(typeform.requests) >= 1
        yield {
            "root": root,
            "run": run.stdout + run.stderr,
            "contacts": contacts,
            "tickets": tickets,
            "answers": answers,
            "ga4": ga4,
            "engine": store.open_store(config["database_url"]),
        }


def configuration(
    root: Path, hubspot: str, web: str, surveys: str, first_web_day: date
) -> dict[str, Any]:
    """The user's cxloop.yaml: the three vendors at their fakes' addresses."""
    fast = {"backoff_base": 0.05, "max_wait": 5.0, "timeout": 10.0}
    return {
        "database_url": f"sqlite:///{root / 'store.db'}",
        "sources": [
            {
                "name": "crm",
                "kind": "hubspot",
                "options": {
                    "base_url": hubspot,
                    "value_map": {"tickets": {"topic": {"DELIVERY": "delivery"}}},
                    **fast,
                },
            },
            {
                "name": "web",
                "kind": "ga4",
                "options": {
                    "base_url": web,
                    "property_id": PROPERTY,
                    "start_date": first_web_day.isoformat(),
                    "segment_dimension": "newVsReturning",
                    **fast,
                },
            },
            {
                "name": "surveys",
                "kind": "typeform",
                "options": {
                    "base_url": surveys,
                    "forms": [{"id": FORM, "survey": "relationship_nps"}],
                    "questions": {"nps": "nps_q", "csat": "csat_q", "comment": "why"},
                    "rate_limit": [50, 1],
                    **fast,
                },
            },
        ],
        "segments": SEGMENTS,
        "csat_scale": 5,
        "journey": JOURNEY,
        "hypotheses_dir": str(root / "hypotheses"),
        "reports": {"out_dir": str(root / "reports")},
    }


def cxloop(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXLOOP_")}
    env |= TOKENS | {"COLUMNS": "200", "PREFECT_HOME": str(cwd / "prefect-home")}
    return subprocess.run(
        [CXLOOP, *args], cwd=cwd, capture_output=True, text=True, timeout=600, env=env
    )


def seed_crm(hubspot: FakeHubSpot, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """80 contacts across segments and regions, 160 tickets over two months, 20 deals; returns
    contacts and tickets as served. Segments get different reply speeds, so FRT differs by
    segment; every 9th ticket has no contact and every 12th no reply yet."""
    contacts = []
    for i in range(80):
        segment = SEGMENTS[int(rng.choice(4, p=[0.2, 0.3, 0.35, 0.15]))]
        email = f"client{i}@shop.example"
        served_email = f"  Client{i}@Shop.Example" if i % 5 == 0 else email
        properties = {
            "email": served_email,
            "lifecyclestage": segment,
            "country": REGIONS[i % 4],
            "hs_analytics_source": "ORGANIC_SEARCH",
            "hs_language": "ru",
        }
        key = hubspot.add("contacts", properties, START - timedelta(days=90 - i))
        contacts.append({"id": key, "email": email, "segment": segment, "region": REGIONS[i % 4]})
    customers = pd.DataFrame(contacts)
    speed = {"subscriber": 30, "lead": 90, "customer": 240, "evangelist": 600}
    tickets = []
    for i in range(160):
        created = START + timedelta(minutes=int(rng.integers(0, 60 * 24 * 60)))
        contact = None if i % 9 == 4 else customers.iloc[int(rng.integers(0, 80))]
        minutes = int(rng.exponential(speed[contact["segment"]] if contact is not None else 120))
        replied = None if i % 12 == 7 else created + timedelta(minutes=minutes + 1)
        category = list(CATEGORIES)[i % 3]
        properties = {
            "subject": f"Order {i}",
            "content": f"Где заказ {i}? Курьер не приехал." if category == "DELIVERY" else "Вопрос",
            "source_type": ["EMAIL", "CHAT", "PHONE"][int(rng.integers(0, 3))],
            "hs_ticket_category": category,
            "hs_pipeline_stage": "4",
            "first_agent_reply_date": iso(ms(replied)) if replied else None,
            "closed_date": iso(ms(created + timedelta(hours=30))),
        }
        ids = [] if contact is None else [contact["id"]]
        key = hubspot.add("tickets", properties, created, ids)
        tickets.append(
            {
                "id": key,
                "customer": None if contact is None else contact["id"],
                "created": created,
                "replied": replied,
                "topic": CATEGORIES[category],
            }
        )
    for i in range(20):
        deal = {"amount": f"{1000 + 37 * i}.00", "dealstage": "closedwon"}
        hubspot.add("deals", deal, START + timedelta(days=i), [customers.iloc[i * 3]["id"]])
    frame = pd.DataFrame(tickets)
    frame["created"] = pd.to_datetime(frame["created"]).dt.tz_localize(None)
    frame["replied"] = pd.to_datetime(frame["replied"]).dt.tz_localize(None)
    return customers, frame


def seed_survey(
    typeform: FakeTypeform, customers: pd.DataFrame, rng: np.random.Generator
) -> pd.DataFrame:
    """110 answer sets: most identify by e-mail (in any case and spacing), some by CRM id, one
    in five by an e-mail no contact has; a third skip the CSAT question. Returns them as served.
    """
    lean = {"subscriber": 8.5, "lead": 7.0, "customer": 6.0, "evangelist": 9.0}
    rows = []
    for i in range(110):
        person = customers.iloc[int(rng.integers(0, len(customers)))]
        hidden: dict[str, str]
        if i % 5 == 3:
            hidden = {"email": f"stranger{i}@elsewhere.example"}
        elif i % 7 == 2:
            hidden = {"customer_id": str(person["id"])}
        else:
            shown = person["email"].upper() if i % 3 == 0 else f" {person['email']} "
            hidden = {"email": shown}
        nps = int(np.clip(round(rng.normal(lean[person["segment"]], 2.0)), 0, 10))
        csat = None if i % 3 == 1 else int(np.clip(round(nps / 2), 1, 5))
        items = [answer("nps_q", "number", nps, "nps")]
        items += [] if csat is None else [answer("csat_q", "number", csat)]
        items += [answer("why", "text", f"Ответ {i}", "long_text")]
        submitted = START + timedelta(minutes=int(rng.integers(0, 60 * 24 * 60)))
        typeform.add(FORM, submitted, items, hidden)
        rows.append(
            {
                "submitted": submitted.replace(tzinfo=None),
                "email": hidden.get("email"),
                "customer_id": hidden.get("customer_id"),
                "nps": nps,
                "csat": csat,
            }
        )
    return pd.DataFrame(rows)


# --- the independent computation -------------------------------------------------------------


def who(served: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tickets and answer sets with the segment and region of the customer they belong to:
    the CRM id when given, else the contact with the same trimmed, lower-cased e-mail."""
    customers = served["contacts"].set_index("id")
    by_email = dict(zip(customers["email"], customers.index, strict=True))
    answers = served["answers"].copy()
    found = answers["email"].str.strip().str.lower().map(by_email)
    answers["customer"] = answers["customer_id"].fillna(found)
    tickets = served["tickets"].copy()
    for frame in (answers, tickets):
        frame["segment"] = frame["customer"].map(customers["segment"])
        frame["region"] = frame["customer"].map(customers["region"])
    return tickets, answers


def km_median(hours: pd.Series, answered: pd.Series) -> float:
    """statsmodels' Kaplan–Meier curve read at 1/2; where it rests at exactly 1/2, the midpoint
    to the next event time, as the ordinary median does between its two middle values."""
    curve = SurvfuncRight(hours.to_numpy(), answered.to_numpy(int))
    times, survival = curve.surv_times, curve.surv_prob
    at = int(np.argmax(survival <= 0.5 + 1e-12))
    if np.isclose(survival[at], 0.5) and at + 1 < len(times):
        return (times[at] + times[at + 1]) / 2
    return float(times[at])


def expected_kpis(served: dict[str, Any]) -> pd.DataFrame:
    """NPS, CSAT top-2 share and median FRT with n, overall, per segment and per region.

    The FRT median is statsmodels' Kaplan–Meier median, an unanswered ticket censored at the
    newest ticket time; n counts every ticket."""
    tickets, answers = who(served)
    answers["nps_points"] = np.where(
        answers["nps"] >= 9, 100.0, np.where(answers["nps"] <= 6, -100.0, 0.0)
    )
    csat = answers.dropna(subset=["csat"])
    top2 = (csat["csat"] >= 4) * 100.0
    clock = tickets[["created", "replied"]].max().max()
    waited = (tickets["replied"].fillna(clock) - tickets["created"]).dt.total_seconds() / 3600
    answered = tickets["replied"].notna()
    rows = []
    for dims, by_answers, by_csat, by_tickets in [
        ("all", [True] * len(answers), [True] * len(csat), [True] * len(tickets)),
        *[
            (f"{cut}={value}", answers[cut] == value, csat[cut] == value, tickets[cut] == value)
            for cut, values in (("segment", SEGMENTS), ("region", REGIONS[:3]))
            for value in values
        ],
    ]:
        points = answers.loc[list(by_answers), "nps_points"]
        share = top2[list(by_csat)]
        mask = list(by_tickets)
        median = km_median(waited[mask], answered[mask])
        rows += [
            {"dims": dims, "metric": "nps", "value": points.mean(), "n": len(points)},
            {"dims": dims, "metric": "csat_top2", "value": share.mean(), "n": len(share)},
            {"dims": dims, "metric": "frt_hours", "value": median, "n": sum(mask)},
        ]
    return pd.DataFrame(rows).set_index(["dims", "metric"]).sort_index()


def web_cells(ga4: FakeGA4) -> pd.DataFrame:
    """The GA4 fake's daily cells as a frame: date, device, sessions, active users, events."""
    return pd.DataFrame(
        [
            {"device": device, "sessions": c["sessions"], "users": c["activeUsers"], **c["events"]}
            for (_, device, _, _), c in ga4.cells.items()
        ]
    )


# --- the checks ------------------------------------------------------------------------------


def test_store_holds_exactly_what_the_vendors_served(served: dict[str, Any]) -> None:
    counts = store.row_counts(served["engine"])
    answers = served["answers"]
    assert counts["customer"] == len(served["contacts"]) == 80
    assert counts["ticket"] == len(served["tickets"]) == 160
    assert counts["orders"] == 20
    assert counts["survey_response"] == len(answers) + answers["csat"].notna().sum()
    tickets = store.read_frame(served["engine"], store.Ticket).set_index("source_id")
    expected = served["tickets"].set_index("id")
    assert tickets["topic"].sort_index().tolist() == expected["topic"].sort_index().tolist()
    assert tickets["customer_id"].isna().sum() == expected["customer"].isna().sum() == 18


def test_kpi_snapshots_equal_an_independent_computation(served: dict[str, Any]) -> None:
    tickets, answers = who(served)
    times = pd.concat([tickets["created"], answers["submitted"]])
    window = f"{times.min():%Y-%m-%d}..{times.max():%Y-%m-%d}"
    snapshots = store.read_frame(served["engine"], store.MetricSnapshot)
    stored = snapshots[snapshots["period"] == window].set_index(["dims", "metric"]).sort_index()
    expected = expected_kpis(served)

    got = stored.loc[expected.index, ["value", "n"]]
    pd.testing.assert_frame_equal(got, expected, check_dtype=False, rtol=1e-9)
    by_segment = expected.xs("nps", level="metric").loc[[f"segment={s}" for s in SEGMENTS]]
    assert by_segment["value"].nunique() == len(SEGMENTS)  # the cut can tell segments apart
    assert expected.loc[("all", "nps"), "n"] > by_segment["n"].sum()  # unmatched count overall


def test_run_reports_the_unmatched_tickets_and_answers(served: dict[str, Any]) -> None:
    tickets, answers = who(served)
    lost = answers[answers["segment"].isna()]
    rows = len(lost) + lost["csat"].notna().sum()
    assert rows > 0 and tickets["segment"].isna().sum() > 0
    assert (
        f"{tickets['segment'].isna().sum()} tickets and {rows} survey responses match no customer"
        in served["run"]
    )


def test_metrics_command_prints_the_same_numbers(served: dict[str, Any]) -> None:
    shown = cxloop(
        "metrics", "--by", "segment", "--metric", "nps,csat_top2,frt_hours", "--config",
        "cxloop.yaml", cwd=served["root"],
    )  # fmt: skip
    assert shown.returncode == 0, shown.stdout + shown.stderr
    printed = {}
    for line in shown.stdout.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) == 6 and cells[0] in SEGMENTS:
            printed[(f"segment={cells[0]}", cells[2])] = (cells[3], int(cells[5].replace(",", "")))
    expected = expected_kpis(served)
    assert printed == {
        key: (f"{row.value:.2f}", row.n)
        for key, row in expected.iterrows()
        if key[0].startswith("segment=")
    }


def test_web_sessions_and_funnel_equal_what_ga4_served(served: dict[str, Any]) -> None:
    cells = web_cells(served["ga4"])
    web = store.read_frame(served["engine"], store.WebMetric)
    traffic = web[web["step"].isna()].groupby("metric")["value"].sum()
    assert traffic.to_dict() == {
        "sessions": cells["sessions"].sum(),
        "active_users": cells["users"].sum(),
    }
    steps = web[web["step"].notna()].groupby(["step", "device"])["value"].sum()
    assert steps.to_dict() == {
        (event, device): part[event].sum()
        for event in EVENTS
        for device, part in cells.groupby("device")
    }

    journey = cxloop("journey", "--config", "cxloop.yaml", cwd=served["root"])
    assert journey.returncode == 0, journey.stdout + journey.stderr
    totals = cells[list(EVENTS)].sum()
    for stage, step, after in [
        ("browse", "view_item", "begin_checkout"),
        ("checkout", "begin_checkout", "purchase"),
    ]:
        (line,) = [row for row in journey.stdout.splitlines() if f"│ {stage} " in row]
        assert f" {100 * totals[after] / totals[step]:.1f} " in line, line
