"""End to end on vendor fakes: HubSpot, Typeform, GA4 and Yandex Metrica on loopback feed a real
`cxloop run`.

The headline numbers are then computed again, independently, with plain pandas from the data
the fakes served (identity joined by CRM id or normalised e-mail, NPS from its definition, FRT
as reply minus creation, agents and teams from HubSpot's owners list, a survey answer's ticket
from its hidden field), and must equal what cxloop stored (metric snapshots, web metrics) and
reported (`cxloop metrics`, `cxloop journey`, the unmatched-records warning of the run).
The data has several segments and regions, unanswered and unresolved tickets, tickets without
a contact or an owner, survey answers whose e-mail matches nobody, post-contact answers naming
no ticket or a ticket HubSpot does not have, a custom contact property declared as the
`device` dimension, and two web sources with the same funnel steps, so a wrong join, a wrong
cut or a summed funnel changes a number. The bad-input cases of the data model (an undeclared
dimension in a field map, an unknown `--by`) run the CLI against their own configuration.

The same run evaluates a pilot as operations set it up: arms in the contact property
`ab_autorouting` (pilot, control, or unset), the change touching delivery tickets only, and a
first-response effect planted on just those tickets of pilot contacts in the pilot month. Its
stored decision and estimate must equal a difference-in-differences computed directly from the
served tickets of that topic and those arms.
"""

from __future__ import annotations

import json
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
from tests.fakes.yandex_metrica import DEVICES as METRICA_DEVICES
from tests.fakes.yandex_metrica import SOURCES as METRICA_SOURCES
from tests.fakes.yandex_metrica import FakeMetrica

pytestmark = pytest.mark.prefect

CXLOOP = str(Path(sys.executable).parent / "cxloop")
TOKENS = {
    "HUBSPOT_TOKEN": "pat-eu1-7d1c9a2e-0b3f-4e5d-8a6c-2f4e6a8c0b1d",
    "GA4_TOKEN": "ya29.a0AfB_end-to-end-ga4-token",
    "TYPEFORM_TOKEN": "tfp_e2e0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6",
    "YANDEX_METRICA_TOKEN": "y0_AgAAAAe2eMetricaOAuthToken",
}
PROPERTY = "987654321"
COUNTER = "44147844"
FORM = "Nps9x2"
POST_CONTACT_FORM = "Pc7Ticket"
SEGMENTS = ["subscriber", "lead", "customer", "evangelist"]
REGIONS = ["Russia", "Kazakhstan", "Belarus", None]
DEVICES = ["mobile", "desktop", "tablet", None]
CATEGORIES = {
    "BILLING_ISSUE": "payment",
    "PRODUCT_ISSUE": "product_quality",
    "DELIVERY": "delivery",
}
# HubSpot owners: (first, last name) → teams (name, primary), archived, and the mean CSAT their
# tickets' post-contact answers lean to, so the agent and team cuts tell them apart.
AGENTS = {
    ("Olga", "Petrova"): ([("Chat", True)], False, 4.6),
    ("Ivan", "Sokolov"): ([("Chat", True)], False, 2.9),
    ("Maria", None): ([("Chat", False), ("Email", True)], False, 4.0),
    ("Anna", "Smirnova"): ([("Email", True)], True, 2.4),
}
REPEAT_DAYS = 3
TICKETS = 360
# A contact's `ab_autorouting` property by its index modulo 5; None: unset, in neither arm.
ARMS = ("pilot", "pilot", "control", "control", None)
PILOT_START = datetime(2026, 10, 1, tzinfo=UTC)
# Delivery tickets wait in a queue of their own: this many minutes plus an exponential wait
# averaging the second, not the segment speeds, so a month of them can show the planted effect.
DELIVERY_QUEUE = (90, 30)
FRT_EFFECT = -0.40  # on delivery tickets of pilot contacts from PILOT_START
ROUTING_ID = "auto-route-delivery"
# Arms fixed by operations default to the unit-level analysis, whose units here would be the two
# values `pilot` and `control`: too few for a panel. The customer-level DiD is what decides, and
# it is set explicitly so the direct computation below is that one estimator. The pilot has
# ended, so it is read once at a fixed horizon.
ROUTING = f"""\
id: {ROUTING_ID}
title: Auto-routing delivery tickets cuts their first response time
owner: ops@example.com
pain_point: ticket:delivery
change: Delivery tickets go straight to the delivery queue
metric: {{name: frt_hours, direction: decrease, expected_effect: -40%}}
assignment: {{method: attribute, attribute: ab_autorouting, pilot: pilot, control: control}}
scope: {{tickets: {{topic: [delivery]}}}}
schedule:
  baseline: {{start: 2026-09-01, end: 2026-09-30}}
  pilot: {{start: 2026-10-01, end: 2026-10-31}}
decision: {{alpha: 0.05, min_per_arm: 10, analysis: did, sequential: false}}
status: running
"""
# Metrica goals counting the same funnel steps as GA4's events, each a share of the visits.
GOALS = {"1001": "view_item", "1002": "add_to_cart", "1003": "begin_checkout", "1004": "purchase"}
GOAL_SHARES = {"view_item": 0.62, "add_to_cart": 0.31, "begin_checkout": 0.17, "purchase": 0.07}
START = datetime(2026, 9, 1, 8, 0, tzinfo=UTC)
WEB_DAYS = 10
JOURNEY = {
    "browse": {"funnel_steps": ["view_item", "add_to_cart"]},
    "checkout": {"funnel_steps": ["begin_checkout", "purchase"], "source": "metrica"},
}
STAGE_EXITS = {
    "browse": ("view_item", "begin_checkout"),
    "checkout": ("begin_checkout", "purchase"),
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The four fakes seeded and running, a project directory with its cxloop.yaml, and
    `cxloop run` done against them; yields what the fakes hold and what the run printed."""
    rng = np.random.default_rng(20261123)
    hubspot = FakeHubSpot(TOKENS["HUBSPOT_TOKEN"])
    contacts, tickets = seed_crm(hubspot, rng)
    typeform = FakeTypeform(TOKENS["TYPEFORM_TOKEN"])
    answers = seed_survey(typeform, contacts, tickets, rng)
    first_web_day = date.today() - timedelta(days=WEB_DAYS - 1)
    ga4 = FakeGA4(TOKENS["GA4_TOKEN"], PROPERTY)
    ga4.seed(first_web_day, WEB_DAYS)
    metrica = FakeMetrica(TOKENS["YANDEX_METRICA_TOKEN"], COUNTER, next(iter(GOALS)))
    seed_metrica(metrica, first_web_day, rng)
    root = tmp_path_factory.mktemp("e2e")
    (root / "hypotheses").mkdir()
    (root / "hypotheses" / f"{ROUTING_ID}.yaml").write_text(ROUTING, encoding="utf-8")
    with HTTPServer() as web, HTTPServer() as counter, HTTPServer() as surveys, hubspot.running():
        ga4.serve(web)
        metrica.serve(counter)
        typeform.serve(surveys)
        urls = {"crm": hubspot.url, "web": ga4.url, "metrica": metrica.url, "surveys": typeform.url}
        config = configuration(root, urls, first_web_day)
        (root / "cxloop.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
        run = cxloop("run", "--config", "cxloop.yaml", cwd=root)
        assert run.returncode == 0, run.stdout + run.stderr
        assert len(ga4.requests) >= 2 and len(typeform.requests) >= 2 and metrica.requests
        yield {
            "root": root,
            "run": run.stdout + run.stderr,
            "contacts": contacts,
            "tickets": tickets,
            "answers": answers,
            "owners": json.loads(json.dumps(list(hubspot.owners.values()))),
            "hubspot": hubspot,
            "ga4": ga4,
            "metrica": metrica,
            "engine": store.open_store(config["database_url"]),
        }


def configuration(root: Path, urls: dict[str, str], first_web_day: date) -> dict[str, Any]:
    """The user's cxloop.yaml: the four vendors at their fakes' addresses, the contacts'
    `primary_device` property kept as the declared dimension `device`, the pilot arms'
    `ab_autorouting` as the dimension of that name."""
    fast = {"backoff_base": 0.05, "max_wait": 5.0, "timeout": 10.0}
    return {
        "database_url": f"sqlite:///{root / 'store.db'}",
        "dimensions": ["device", "ab_autorouting"],
        "fcr": {"repeat_days": REPEAT_DAYS},
        "sources": [
            {
                "name": "crm",
                "kind": "hubspot",
                "options": {
                    "base_url": urls["crm"],
                    "field_map": {
                        "contacts": {
                            "primary_device": "device",
                            "ab_autorouting": "ab_autorouting",
                        },
                        "tickets": {"was_reopened": "reopened"},
                    },
                    "value_map": {"tickets": {"topic": {"DELIVERY": "delivery"}}},
                    **fast,
                },
            },
            {
                "name": "web",
                "kind": "ga4",
                "options": {
                    "base_url": urls["web"],
                    "property_id": PROPERTY,
                    "start_date": first_web_day.isoformat(),
                    "segment_dimension": "newVsReturning",
                    **fast,
                },
            },
            {
                "name": "metrica",
                "kind": "yandex_metrica",
                "options": {
                    "base_url": urls["metrica"],
                    "counter": COUNTER,
                    "goals": GOALS,
                    "start_date": first_web_day.isoformat(),
                    **fast,
                },
            },
            {
                "name": "surveys",
                "kind": "typeform",
                "options": {
                    "base_url": urls["surveys"],
                    "forms": [
                        {"id": FORM, "survey": "relationship_nps"},
                        {
                            "id": POST_CONTACT_FORM,
                            "survey": "post_contact",
                            "questions": {"csat": "pc_csat", "nps": "pc_nps", "comment": "pc_why"},
                        },
                    ],
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


def cxloop_json(served: dict[str, Any], *args: str) -> Any:
    """What `cxloop <args> --json` printed, parsed; the command must succeed."""
    shown = cxloop(*args, "--json", "--config", "cxloop.yaml", cwd=served["root"])
    assert shown.returncode == 0, shown.stdout + shown.stderr
    return json.loads(shown.stdout)


def seed_crm(hubspot: FakeHubSpot, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Four owners in two teams (one archived), 80 contacts across segments, regions,
    primary devices and pilot arms (`ARMS`), `TICKETS` tickets over two months, 20 deals;
    returns contacts and tickets as served. Segments get different reply speeds, so FRT
    differs by segment, except on delivery tickets (`DELIVERY_QUEUE`), whose FRT drops by
    `FRT_EFFECT` for pilot contacts from `PILOT_START`; every 9th ticket has no contact, every
    12th no reply yet, every 10th is unresolved, every 8th has no owner, and about one resolved
    ticket in five was reopened."""
    leans = {
        hubspot.add_owner(first, last, teams, archived): lean
        for (first, last), (teams, archived, lean) in AGENTS.items()
    }
    owners = list(leans)
    contacts = []
    for i in range(80):
        segment = SEGMENTS[int(rng.choice(4, p=[0.2, 0.3, 0.35, 0.15]))]
        device = DEVICES[int(rng.choice(4, p=[0.45, 0.35, 0.12, 0.08]))]
        email = f"client{i}@shop.example"
        served_email = f"  Client{i}@Shop.Example" if i % 5 == 0 else email
        properties = {
            "email": served_email,
            "lifecyclestage": segment,
            "country": REGIONS[i % 4],
            "hs_analytics_source": "ORGANIC_SEARCH",
            "hs_language": "ru",
            "primary_device": device,
        }
        arm = ARMS[i % len(ARMS)]
        properties |= {} if arm is None else {"ab_autorouting": arm}
        key = hubspot.add("contacts", properties, START - timedelta(days=90 - i))
        contacts.append(
            {"id": key, "email": email, "segment": segment, "region": REGIONS[i % 4]}
            | {"device": device, "arm": arm}
        )
    customers = pd.DataFrame(contacts)
    speed = {"subscriber": 30, "lead": 90, "customer": 240, "evangelist": 600}
    tickets = []
    for i in range(TICKETS):
        created = START + timedelta(minutes=int(rng.integers(0, 60 * 24 * 60)))
        contact = None if i % 9 == 4 else customers.iloc[int(rng.integers(0, 80))]
        category = list(CATEGORIES)[i % 3]
        wait = rng.exponential()
        if category == "DELIVERY":
            piloted = contact is not None and contact["arm"] == "pilot" and created >= PILOT_START
            fixed, mean = DELIVERY_QUEUE
            minutes = int((fixed + mean * wait) * (1 + FRT_EFFECT if piloted else 1))
        else:
            minutes = int(wait * (speed[contact["segment"]] if contact is not None else 120))
        replied = None if i % 12 == 7 else created + timedelta(minutes=minutes + 1)
        resolved = None if i % 10 == 3 else created + timedelta(hours=30)
        reopened = resolved is not None and bool(rng.random() < 0.2)
        owner = None if i % 8 == 5 else owners[int(rng.integers(0, len(owners)))]
        properties = {
            "subject": f"Order {i}",
            "content": f"Где заказ {i}? Курьер не приехал." if category == "DELIVERY" else "Вопрос",
            "source_type": ["EMAIL", "CHAT", "PHONE"][int(rng.integers(0, 3))],
            "hs_ticket_category": category,
            "hs_pipeline_stage": "4" if resolved else "3",
            "first_agent_reply_date": iso(ms(replied)) if replied else None,
            "closed_date": iso(ms(resolved)) if resolved else None,
            "hubspot_owner_id": owner,
            "was_reopened": "true" if reopened else "false",
        }
        ids = [] if contact is None else [contact["id"]]
        key = hubspot.add("tickets", properties, created, ids)
        tickets.append(
            {
                "id": key,
                "customer": None if contact is None else contact["id"],
                "created": created,
                "replied": replied,
                "resolved": resolved,
                "reopened": reopened,
                "owner": owner,
                "lean": leans.get(owner, 3.5),  # the CSAT its post-contact answer leans to
                "topic": CATEGORIES[category],
            }
        )
    for i in range(20):
        deal = {"amount": f"{1000 + 37 * i}.00", "dealstage": "closedwon"}
        hubspot.add("deals", deal, START + timedelta(days=i), [customers.iloc[i * 3]["id"]])
    frame = pd.DataFrame(tickets)
    for column in ("created", "replied", "resolved"):
        frame[column] = pd.to_datetime(frame[column]).dt.tz_localize(None)
    return customers, frame


def seed_survey(
    typeform: FakeTypeform, customers: pd.DataFrame, tickets: pd.DataFrame, rng: np.random.Generator
) -> pd.DataFrame:
    """Two forms; returns their answer sets as served. The relationship NPS form: 110 answer
    sets, most identified by e-mail (in any case and spacing), some by CRM id, one in five by
    an e-mail no contact has; a third skip the CSAT question. The post-contact form: CSAT and
    NPS for two tickets in three, the ticket id in the hidden field `ticket_id` (and the
    ticket's contact as `customer_id`, or a stranger's e-mail for a ticket without one), the
    scores leaning to the ticket owner's; plus 6 answers naming a ticket id HubSpot does not
    have and 8 naming none."""
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
        rows.append(served_answer("relationship_nps", submitted, hidden, nps, csat))
    asked = [(t, t["id"]) for _, t in tickets.iterrows() if int(t["id"]) % 3 != 0]
    asked += [(None, f"99{9000 + k}") for k in range(6)] + [(None, None)] * 8
    for n, (ticket, ticket_id) in enumerate(asked):
        if ticket is None:
            person = customers.iloc[int(rng.integers(0, len(customers)))]
            hidden = {"customer_id": str(person["id"])}
            at = START + timedelta(minutes=int(rng.integers(0, 60 * 24 * 60)))
            mean = 3.5
        else:
            known = pd.notna(ticket["customer"])
            hidden = (
                {"customer_id": ticket["customer"]} if known else {"email": f"walk{n}@x.example"}
            )
            at = ticket["created"].to_pydatetime().replace(tzinfo=UTC) + timedelta(hours=31)
            mean = ticket["lean"]
        hidden |= {} if ticket_id is None else {"ticket_id": str(ticket_id)}
        csat = int(np.clip(round(rng.normal(mean, 0.8)), 1, 5))
        nps = int(np.clip(round(rng.normal(2 * csat - 0.5, 1.5)), 0, 10))
        items = [answer("pc_csat", "number", csat), answer("pc_nps", "number", nps, "nps")]
        items += [answer("pc_why", "text", f"Тикет {ticket_id}", "long_text")]
        typeform.add(POST_CONTACT_FORM, at, items, hidden)
        rows.append(served_answer("post_contact", at, hidden, nps, csat))
    return pd.DataFrame(rows)


def served_answer(
    survey: str, submitted: datetime, hidden: dict[str, str], nps: int, csat: int | None
) -> dict[str, Any]:
    """One answer set as the independent computation reads it."""
    return {
        "survey": survey,
        "submitted": submitted.replace(tzinfo=None),
        "email": hidden.get("email"),
        "customer_id": hidden.get("customer_id"),
        "ticket": hidden.get("ticket_id"),
        "nps": nps,
        "csat": csat,
    }


def seed_metrica(metrica: FakeMetrica, first: date, rng: np.random.Generator) -> None:
    """Daily visits per device and traffic source, each goal (a funnel step) reached by a share
    of them, and more reaches than goal visits, so a funnel built from reaches is wrong."""
    for offset in range(WEB_DAYS):
        day = (first + timedelta(days=offset)).isoformat()
        for device in METRICA_DEVICES:
            for source, _ in METRICA_SOURCES:
                visits = float(rng.integers(300, 900))
                cell = {"ym:s:visits": visits, "ym:s:users": visits - 40}
                for goal, step in GOALS.items():
                    reached = float(np.floor(visits * GOAL_SHARES[step] * rng.uniform(0.8, 1.2)))
                    cell[f"ym:s:goal{goal}visits"] = reached
                    cell[f"ym:s:goal{goal}reaches"] = reached + reached // 3
                metrica.cells[(day, device, source)] = cell


# --- the independent computation -------------------------------------------------------------


def agents(owners: list[dict[str, Any]]) -> pd.DataFrame:
    """Each HubSpot owner's name (first and last, else e-mail) and primary team (else its
    first), by owner id, read from the owners list as served."""
    rows = []
    for owner in owners:
        name = " ".join(p for p in (owner["firstName"], owner["lastName"]) if p) or owner["email"]
        teams = [t for t in owner["teams"] if t["primary"]] or owner["teams"]
        rows.append({"owner": owner["id"], "agent": name, "team": teams[0]["name"]})
    return pd.DataFrame(rows).set_index("owner")


def who(served: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tickets and answer sets with the segment, region, device and pilot arm of the customer
    they belong (the CRM id when given, else the contact with the same trimmed, lower-cased e-mail);
    tickets with their owner's name and team, answers with the topic, agent and team of the
    ticket their hidden field names (NaN for none or an unknown one)."""
    customers = served["contacts"].set_index("id")
    by_email = dict(zip(customers["email"], customers.index, strict=True))
    answers = served["answers"].copy()
    found = answers["email"].str.strip().str.lower().map(by_email)
    answers["customer"] = answers["customer_id"].fillna(found)
    tickets = served["tickets"].copy()
    for frame in (answers, tickets):
        for cut in ("segment", "region", "device", "arm"):
            frame[cut] = frame["customer"].map(customers[cut])
    owners = agents(served["owners"])
    tickets["agent"] = tickets["owner"].map(owners["agent"])
    tickets["team"] = tickets["owner"].map(owners["team"])
    linked = tickets.set_index("id")
    for cut, column in (("ticket_topic", "topic"), ("agent", "agent"), ("team", "team")):
        answers[cut] = answers["ticket"].map(linked[column])
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


def nps_points(scores: pd.Series) -> pd.Series:
    return pd.Series(np.where(scores >= 9, 100.0, np.where(scores <= 6, -100.0, 0.0)), scores.index)


def expected_kpis(served: dict[str, Any]) -> pd.DataFrame:
    """NPS, CSAT top-2 share and median FRT with n, overall, per segment and per region.

    The FRT median is statsmodels' Kaplan–Meier median, an unanswered ticket censored at the
    newest ticket time; n counts every ticket."""
    tickets, answers = who(served)
    answers["nps_points"] = nps_points(answers["nps"])
    csat = answers.dropna(subset=["csat"])
    top2 = (csat["csat"] >= 4) * 100.0
    clock = tickets[["created", "replied", "resolved"]].max().max()
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


def expected_survey_cut(served: dict[str, Any], cut: str) -> pd.DataFrame:
    """NPS (points), CSAT (mean score) and CSAT top-2 share (%) with n per value of `cut`, over
    the answer sets that have one; indexed by the value and metric."""
    _, answers = who(served)
    rows = []
    for value, part in answers.dropna(subset=[cut]).groupby(cut):
        csat = part["csat"].dropna()
        rows += [
            {cut: value, "metric": "nps", "value": nps_points(part["nps"]).mean(), "n": len(part)},
            {cut: value, "metric": "csat", "value": csat.mean(), "n": len(csat)},
            {cut: value, "metric": "csat_top2", "value": 100 * (csat >= 4).mean(), "n": len(csat)},
        ]
    return pd.DataFrame(rows).query("n > 0").set_index([cut, "metric"]).sort_index()


def ticket_outcomes(served: dict[str, Any], repeat_days: int) -> pd.DataFrame:
    """Tickets with `fcr` and `reopen_rate` as 0/100, NaN while undecided.

    FCR: resolved, not reopened, and no other ticket of the same customer opened within
    `repeat_days` after it; undecided until `repeat_days` after its resolution (its creation
    while unresolved) as of the newest ticket time. Reopen rate: reopened, per resolved ticket.
    """
    tickets, _ = who(served)
    clock = tickets[["created", "replied", "resolved"]].max().max()
    window = pd.Timedelta(days=repeat_days)
    pairs = tickets[["id", "customer", "created"]].dropna(subset=["customer"])
    pairs = pairs.merge(pairs, on="customer", suffixes=("", "_other"))
    gap = pairs["created_other"] - pairs["created"]
    again = pairs[(pairs["id"] != pairs["id_other"]) & (gap >= pd.Timedelta(0)) & (gap <= window)]
    repeated = tickets["id"].isin(again["id"])
    resolved = tickets["resolved"].notna()
    fcr = (resolved & ~tickets["reopened"] & ~repeated) * 100.0
    decided = tickets["resolved"].fillna(tickets["created"]) + window <= clock
    reopen = (tickets["reopened"] * 100.0).where(resolved)
    return tickets.assign(fcr=fcr.where(decided), reopen_rate=reopen)


def expected_ticket_cut(served: dict[str, Any], cut: str, repeat_days: int) -> pd.DataFrame:
    """FCR and reopen rate (%) with n per value of `cut`; indexed by the value and metric."""
    tickets = ticket_outcomes(served, repeat_days)
    long = tickets.melt(id_vars=[cut], value_vars=["fcr", "reopen_rate"], var_name="metric")
    grouped = long.dropna().groupby([cut, "metric"])["value"]
    return pd.DataFrame({"value": grouped.mean(), "n": grouped.size()}).sort_index()


def expected_frt_pilot(served: dict[str, Any], topic: str | None = "delivery") -> dict[str, Any]:
    """The pilot's difference-in-differences of mean FRT (hours) over the answered tickets on
    `topic` (every topic for None) of contacts in an arm, September against October, relative
    to the pilot arm's counterfactual October mean (its September mean plus the control's
    change); with the arm × period means and counts, and the customers per arm seen in
    October."""
    tickets, _ = who(served)
    tickets["hours"] = (tickets["replied"] - tickets["created"]).dt.total_seconds() / 3600
    month = tickets["created"] >= PILOT_START.replace(tzinfo=None)
    tickets["period"] = np.where(month, "pilot period", "baseline")
    used = tickets.dropna(subset=["hours", "arm"])
    used = used if topic is None else used[used["topic"] == topic]
    cells = used.groupby(["arm", "period"])["hours"].agg(mean="mean", n="size")
    m = cells["mean"].unstack("period")
    control_change = m.loc["control", "pilot period"] - m.loc["control", "baseline"]
    counterfactual = m.loc["pilot", "baseline"] + control_change
    change = m.loc["pilot", "pilot period"] - counterfactual
    seen = used[used["period"] == "pilot period"].groupby("arm")["customer"].nunique()
    return {"effect": change / counterfactual, "cells": cells, "customers": seen.to_dict()}


def web_cells(ga4: FakeGA4) -> pd.DataFrame:
    """The GA4 fake's daily cells as a frame: date, device, sessions, active users, events."""
    return pd.DataFrame(
        [
            {"device": device, "sessions": c["sessions"], "users": c["activeUsers"], **c["events"]}
            for (_, device, _, _), c in ga4.cells.items()
        ]
    )


def funnel_sessions(served: dict[str, Any]) -> dict[str, pd.Series]:
    """Sessions per funnel step of each web source as served: GA4's sessions per event,
    Metrica's visits that reached each step's goal (not its reaches)."""
    metrica = pd.DataFrame(list(served["metrica"].cells.values()))
    visits = {step: metrica[f"ym:s:goal{goal}visits"].sum() for goal, step in GOALS.items()}
    return {"web": web_cells(served["ga4"])[list(EVENTS)].sum(), "metrica": pd.Series(visits)}


def expected_conversions(served: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Each stage's conversion in % per web source: sessions at the step after the stage (its
    last step for the last stage) over sessions at its first step."""
    sessions = funnel_sessions(served)
    return {
        stage: {name: 100 * steps[last] / steps[first] for name, steps in sessions.items()}
        for stage, (first, last) in STAGE_EXITS.items()
    }


def printed(text: str) -> str:
    """`text` with its line wrapping and runs of spaces as single spaces."""
    return " ".join(text.split())


# --- the checks ------------------------------------------------------------------------------


def test_store_holds_exactly_what_the_vendors_served(served: dict[str, Any]) -> None:
    counts = store.row_counts(served["engine"])
    answers = served["answers"]
    assert counts["customer"] == len(served["contacts"]) == 80
    assert counts["ticket"] == len(served["tickets"]) == TICKETS
    assert counts["orders"] == 20
    assert counts["survey_response"] == len(answers) + answers["csat"].notna().sum()
    tickets = store.read_frame(served["engine"], store.Ticket).set_index("source_id")
    expected, _ = who(served)
    expected = expected.set_index("id")
    assert tickets["topic"].sort_index().tolist() == expected["topic"].sort_index().tolist()
    no_contact = sum(i % 9 == 4 for i in range(TICKETS))
    assert tickets["customer_id"].isna().sum() == expected["customer"].isna().sum() == no_contact
    for column in ("agent", "team", "reopened"):
        got = tickets[column].sort_index().replace({np.nan: None}).tolist()
        assert got == expected[column].sort_index().replace({np.nan: None}).tolist(), column
    assert set(expected["agent"].dropna()) == {
        "Olga Petrova",
        "Ivan Sokolov",
        "Maria",
        "Anna Smirnova",
    }


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
        in printed(served["run"])
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


@pytest.mark.parametrize("cut", ["ticket_topic", "agent", "device"])
def test_survey_scores_by_ticket_and_customer_cuts_equal_an_independent_computation(
    served: dict[str, Any], cut: str
) -> None:
    shown = cxloop_json(served, "metrics", "--by", cut, "--metric", "nps,csat,csat_top2")
    got = pd.DataFrame(shown).set_index([cut, "metric"])[["value", "n"]].sort_index()
    expected = expected_survey_cut(served, cut)

    pd.testing.assert_frame_equal(got, expected, check_dtype=False, rtol=1e-9)
    assert expected.xs("csat", level="metric")["value"].nunique() == len(
        expected.xs("csat", level="metric")
    )  # the cut tells its values apart
    _, answers = who(served)
    assert expected.xs("nps", level="metric")["n"].sum() < len(answers)  # some have no value


def test_fcr_and_reopen_rate_by_team_equal_an_independent_computation(
    served: dict[str, Any],
) -> None:
    shown = cxloop_json(served, "metrics", "--by", "team", "--metric", "fcr,reopen_rate")
    got = pd.DataFrame(shown).set_index(["team", "metric"])[["value", "n"]].sort_index()
    expected = expected_ticket_cut(served, "team", REPEAT_DAYS)

    pd.testing.assert_frame_equal(got, expected, check_dtype=False, rtol=1e-9)
    assert set(expected.index.get_level_values("team")) == {"Chat", "Email"}
    week = expected_ticket_cut(served, "team", 7)  # the configured window is the one used
    assert not np.allclose(
        week.xs("fcr", level="metric")["value"], got.xs("fcr", level="metric")["value"]
    )


def test_checkout_conversion_is_computed_per_web_source(served: dict[str, Any]) -> None:
    stages = {row["stage"]: row for row in cxloop_json(served, "journey")}
    expected = expected_conversions(served)
    sessions = funnel_sessions(served)

    for stage, by_source in expected.items():
        assert stages[stage]["conversion_by_source"] == pytest.approx(by_source, rel=1e-9)
    assert stages["checkout"]["source"] == "metrica"
    assert stages["checkout"]["conversion"] == pytest.approx(expected["checkout"]["metrica"])
    entry = max(sessions, key=lambda name: sessions[name]["view_item"])  # the unnamed stage's
    assert stages["browse"]["source"] == entry
    assert stages["browse"]["conversion"] == pytest.approx(expected["browse"][entry])
    checkout = expected["checkout"]
    assert abs(checkout["web"] - checkout["metrica"]) > 1  # a summed funnel would show


def test_web_sessions_and_funnel_equal_what_ga4_served(served: dict[str, Any]) -> None:
    cells = web_cells(served["ga4"])
    web = store.read_frame(served["engine"], store.WebMetric)
    ga4 = web[web["source"] == "web"]
    traffic = ga4[ga4["step"].isna()].groupby("metric")["value"].sum()
    assert traffic.to_dict() == {
        "sessions": cells["sessions"].sum(),
        "active_users": cells["users"].sum(),
    }
    steps = ga4[ga4["step"].notna()].groupby(["step", "device"])["value"].sum()
    assert steps.to_dict() == {
        (event, device): part[event].sum()
        for event in EVENTS
        for device, part in cells.groupby("device")
    }


def test_web_funnel_of_metrica_counts_goal_visits_not_reaches(served: dict[str, Any]) -> None:
    web = store.read_frame(served["engine"], store.WebMetric)
    metrica = web[(web["source"] == "metrica") & web["step"].notna()]
    served_cells = pd.DataFrame(list(served["metrica"].cells.values()))
    assert metrica.groupby("step")["value"].sum().to_dict() == {
        step: served_cells[f"ym:s:goal{goal}visits"].sum() for goal, step in GOALS.items()
    }
    visits = web[(web["source"] == "metrica") & (web["metric"] == "visits")]["value"].sum()
    assert visits == served_cells["ym:s:visits"].sum()


def test_answers_naming_no_or_an_unknown_ticket_are_counted_and_kept(
    served: dict[str, Any],
) -> None:
    tickets, answers = who(served)
    post = answers[answers["survey"] == "post_contact"]
    unknown = post[post["ticket"].notna() & ~post["ticket"].isin(tickets["id"])]
    unlinked = post[post["ticket"].isna()]
    rows = {
        name: len(p) + p["csat"].notna().sum()
        for name, p in (("unknown", unknown), ("unlinked", unlinked))
    }
    assert rows == {"unknown": 12, "unlinked": 16}
    assert (
        f"{rows['unlinked']} post-contact survey answers name no ticket and {rows['unknown']} "
        "name a ticket the store lacks"
    ) in printed(served["run"])
    responses = store.read_frame(served["engine"], store.SurveyResponse)
    kept = responses[responses["ticket_id"].isin(unknown["ticket"])]
    assert len(kept) == rows["unknown"]
    assert sorted(kept["score"]) == sorted([*unknown["csat"], *unknown["nps"]])


def test_metrics_by_an_unknown_dimension_suggests_the_declared_one(served: dict[str, Any]) -> None:
    shown = cxloop("metrics", "--by", "devise", "--config", "cxloop.yaml", cwd=served["root"])

    assert shown.returncode == 2, shown.stdout + shown.stderr
    assert "did you mean `device`?" in printed(shown.stderr)
    assert "Traceback" not in shown.stderr and "CX metrics" not in shown.stdout


def test_undeclared_dimension_in_a_field_map_stops_the_run_before_any_store(
    served: dict[str, Any], tmp_path: Path
) -> None:
    config = yaml.safe_load((served["root"] / "cxloop.yaml").read_text(encoding="utf-8"))
    config["sources"][0]["options"]["field_map"]["contacts"]["tariff_plan"] = "plan"
    config["database_url"] = f"sqlite:///{tmp_path / 'store.db'}"
    text = yaml.safe_dump(config)
    (tmp_path / "cxloop.yaml").write_text(text, encoding="utf-8")
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "tariff_plan:" in row)
    asked = len(served["hubspot"].requests), len(served["ga4"].requests)

    run = cxloop("run", "--config", "cxloop.yaml", cwd=tmp_path)

    assert run.returncode == 2, run.stdout + run.stderr
    error = printed(run.stderr)
    named = "source crm: options.field_map.contacts.tariff_plan maps `tariff_plan` to `plan`"
    assert f"cxloop.yaml:{line}: {named}" in error
    assert "add `plan` to `dimensions:`" in error
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "store.db").exists()
    assert (len(served["hubspot"].requests), len(served["ga4"].requests)) == asked


def test_pilot_with_arms_from_a_hubspot_property_and_a_delivery_scope_is_adopted_as_computed(
    served: dict[str, Any],
) -> None:
    results = store.read_frame(served["engine"], store.ExperimentResult)
    (row,) = results[results["hypothesis_id"] == ROUTING_ID].itertuples()
    expected = expected_frt_pilot(served)

    assert (row.metric, row.role, row.relative, row.decision) == (
        "frt_hours", "primary", True, "adopt",
    )  # fmt: skip
    assert row.estimate == pytest.approx(expected["effect"], rel=1e-9)
    assert row.ci_low <= FRT_EFFECT <= row.ci_high < 0
    assert {"pilot": row.n_pilot, "control": row.n_control} == expected["customers"]
    assert row.cells["analysis"] == "did" and row.cells["estimand"] == "ratio"
    stored = pd.DataFrame(row.cells["rows"]).set_index(["arm", "period"]).sort_index()
    pd.testing.assert_frame_equal(stored, expected["cells"], check_dtype=False, rtol=1e-9)
    contacts = served["contacts"]
    arms = store.read_frame(served["engine"], store.Assignment)
    assert dict(zip(arms["customer_id"], arms["arm"], strict=True)) == dict(
        contacts.dropna(subset=["arm"])[["id", "arm"]].itertuples(index=False)
    )  # unset contacts are in neither arm
    everything = expected_frt_pilot(served, topic=None)
    assert abs(everything["effect"] - expected["effect"]) > 0.1  # the scope changes the number
    assert f"{ROUTING_ID}: adopt" in printed(served["run"])
    assert (served["root"] / "reports" / f"experiment-{ROUTING_ID}.html").exists()
