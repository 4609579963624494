"""The digest's teams ranking, KPI definitions, configured breakdowns, at-risk customers and
unmatched answers, on a company built from frames with a planted slow team, checked against
plain pandas and, as a person sees it, in headless Chromium."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from statsmodels.duration.survfunc import SurvfuncRight
from statsmodels.stats.proportion import proportion_confint

from tasks import store
from tasks.churn import ChurnRun, save_churn
from tasks.digest import MIN_TEAM_TICKETS, Month, build_digest, stored_churn_run
from tasks.loader import CxData
from tasks.metrics import with_ticket_measures
from tasks.outputs import write_report
from tasks.render import Rendered
from tests.test_reports_html import Browser

MONTH = Month.containing(pd.Timestamp("2026-10-15"))
MONTHS = ("2026-09", "2026-10", "2026-11")
# Tickets per month; the night shift has too few to be ranked, and a name that is markup.
TEAMS = {"Slow": 120, "Alpha": 150, "Beta": 140, "<i>Night</i> shift": 12}
SLOW_FRT_HOURS, FRT_HOURS = 30.0, 2.0
REOPENED = {"Slow": 0.3}  # the others: 0.08
TOP2 = {"Slow": 0.45}  # share of 4–5 CSAT answers; the others: 0.8
UNLINKED, UNKNOWN_TICKET = 7, 4  # post-contact answers naming no ticket, or a missing one
HOUR = pd.Timedelta(hours=1)


def company(seed: int = 3) -> CxData:
    """Customers with one ticket each (so no repeat contacts) in September to November, each
    ticket answered and resolved, most followed by a CSAT answer linked to it; NPS answers,
    orders, and a declared `device` dimension."""
    rng = np.random.default_rng(seed)
    frames = []
    for month in MONTHS:
        start = pd.Timestamp(f"{month}-01")
        for team, count in TEAMS.items():
            slow = team == "Slow"
            created = start + pd.to_timedelta(rng.integers(0, 24 * 24, count), "h")
            frt = rng.gamma(4.0, (SLOW_FRT_HOURS if slow else FRT_HOURS) / 4.0, count)
            frames.append(
                pd.DataFrame(
                    {
                        "team": team,
                        "created_at": created,
                        "first_response_at": created + pd.to_timedelta(frt, "h"),
                        "resolved_at": created
                        + pd.to_timedelta(frt + rng.uniform(1, 30, count), "h"),
                        "reopened": rng.random(count) < REOPENED.get(team, 0.08),
                        "top2": rng.random(count) < TOP2.get(team, 0.8),
                    }
                )
            )
    tickets = pd.concat(frames, ignore_index=True)
    n = len(tickets)
    ids = np.array([f"c{i:05d}" for i in range(n)])
    tickets["customer_id"] = ids
    tickets["ticket_id"] = [f"T{i:05d}" for i in range(n)]
    tickets["channel"] = rng.choice(["chat", "email"], n)
    tickets["topic"] = rng.choice(["delivery", "payment"], n)
    tickets["agent"] = tickets["team"] + "-" + rng.integers(1, 4, n).astype(str)
    tickets["escalated"] = False
    customers = pd.DataFrame(
        {
            "customer_id": ids,
            "segment": rng.choice(["new", "loyal", "premium"], n),
            "region": rng.choice(["North", "South"], n),
            "channel": rng.choice(["web", "app"], n),
            "device": rng.choice(["mobile", "desktop"], n),
            "created_at": pd.Timestamp("2025-01-01"),
        }
    )
    asked = tickets[rng.random(n) < 0.7]
    scores = np.where(asked["top2"], rng.integers(4, 6, len(asked)), rng.integers(1, 4, len(asked)))
    csat = pd.DataFrame(
        {
            "customer_id": asked["customer_id"],
            "ticket_id": asked["ticket_id"],
            "survey": "post_ticket_csat",
            "kind": "csat",
            "score": scores.astype(float),
            "submitted_at": asked["resolved_at"] + 2 * HOUR,
            "channel": asked["channel"],
        }
    )
    # Answers of the same post-contact survey that name no ticket, or one the store lacks.
    loose = csat.iloc[: UNLINKED + UNKNOWN_TICKET].copy()
    loose["ticket_id"] = [None] * UNLINKED + ["T-gone"] * UNKNOWN_TICKET
    loose["submitted_at"] = pd.Timestamp("2026-10-27 12:00")
    nps_at = pd.Timestamp("2026-09-01") + pd.to_timedelta(rng.integers(0, 85 * 24, n), "h")
    nps = pd.DataFrame(
        {
            "customer_id": ids,
            "ticket_id": None,
            "survey": "relationship_nps",
            "kind": "nps",
            "score": rng.integers(0, 11, n).astype(float),
            "submitted_at": nps_at,
            "channel": "email",
        }
    )
    responses = pd.concat([csat, loose, nps], ignore_index=True).assign(comment=None)
    ordered = np.repeat(ids, 3)
    orders = pd.DataFrame(
        {
            "customer_id": ordered,
            "amount": rng.gamma(2.0, 40.0, len(ordered)),
            "created_at": pd.Timestamp("2026-05-01")
            + pd.to_timedelta(rng.integers(0, 200 * 24, len(ordered)), "h"),
        }
    )
    return CxData(
        customers=customers,
        tickets=with_ticket_measures(tickets.drop(columns="top2")),
        responses=responses,
        orders=orders,
        web=pd.DataFrame(),
    )


def churn_run(data: CxData, published: bool = True) -> ChurnRun:
    """A stored-shape churn model run scoring every customer, a tenth of them high risk."""
    rng = np.random.default_rng(11)
    ids = data.customers["customer_id"]
    p = rng.beta(1.5, 5.0, len(ids))
    band = np.select([p >= 0.5, p >= 0.2], ["high", "medium"], "low")
    value = rng.gamma(2.0, 50.0, len(ids))
    scores = pd.DataFrame(
        {
            "customer_id": ids,
            "probability": p,
            "churn_risk": band,
            "value": value,
            "expected_loss": p * value,
        }
    )
    return ChurnRun(
        model="logistic",
        horizon_days=90,
        published=published,
        reason="validated",
        cutoffs={"fit": "2026-03-01", "calibrate": "2026-05-30", "validate": "2026-08-28"},
        n_train=900,
        n_validation=1234,
        base_rate=0.21,
        auc=0.81 if published else 0.52,
        ece=0.031,
        top_decile_lift=2.6,
        coefficients={"unresolved_delivery": 0.9, "latest_ces": -0.7, "recency_days": 0.2},
        scores=scores if published else scores.iloc[:0],
        expected_revenue_lost=float(scores.loc[band == "high", "expected_loss"].sum()),
    )


def digest(data: CxData, language: str = "en", **options) -> Rendered:
    options.setdefault("cuts", ("segment", "device", "channel"))
    return build_digest(
        data, pd.DataFrame(), pd.DataFrame(), [], [], language, month=MONTH, **options
    )


@pytest.fixture(scope="module")
def data() -> CxData:
    return company()


@pytest.fixture(scope="module")
def english(data: CxData) -> Rendered:
    """FCR's repeat window set to 3 days, no churn model."""
    return digest(data, repeat_days=3)


@pytest.fixture(scope="module")
def run(data: CxData, tmp_path_factory: pytest.TempPathFactory) -> ChurnRun:
    """A published churn run as the rank flow stores it and the report flow reads it."""
    engine = store.open_store(f"sqlite:///{tmp_path_factory.mktemp('churn')}/cx.db")
    assert stored_churn_run(engine) is None
    save_churn(engine, churn_run(data))
    stored = stored_churn_run(engine)
    assert stored is not None
    return stored


@pytest.fixture(scope="module")
def at_risk(data: CxData, run: ChurnRun) -> Rendered:
    """With the published churn run; FCR counting reopenings only."""
    return digest(data, repeat_days=0, at_risk=run)


@pytest.fixture(scope="module")
def russian(data: CxData) -> Rendered:
    """In Russian, with an unpublished churn run."""
    return digest(data, "ru", repeat_days=3, at_risk=churn_run(data, published=False))


@pytest.fixture(scope="module")
def browser() -> Browser:
    started = Browser()
    yield started
    started.close()


def october_by_team(data: CxData) -> pd.DataFrame:
    """Each team's October KPIs recomputed from the frames (every ticket answered and
    resolved, one ticket per customer: FCR is not reopened)."""
    tickets = data.tickets[data.tickets["created_at"].dt.to_period("M") == "2026-10"]
    frt = (tickets["first_response_at"] - tickets["created_at"]) / HOUR
    by = tickets.assign(frt=frt).groupby("team")
    answers = data.responses[
        (data.responses["kind"] == "csat")
        & (data.responses["submitted_at"].dt.to_period("M") == "2026-10")
    ]
    team = answers["ticket_id"].map(data.tickets.set_index("ticket_id")["team"])
    csat = (answers["score"] >= 4).groupby(team)
    return pd.DataFrame(
        {
            "tickets": by.size(),
            "frt_hours": by["frt"].median(),
            "fcr": 100 * (1 - by["reopened"].mean()),
            "reopen_rate": 100 * by["reopened"].mean(),
            "sla_breach": 100 * by["frt"].apply(lambda h: (h > 24).mean()),
            "csat": 100 * csat.mean(),
            "csat_top2": csat.sum(),
            "csat_n": csat.size(),
        }
    )


TEAMS_VIEW = """[...document.querySelectorAll('#teams tr')].slice(1).map(
  tr => [...tr.querySelectorAll('td')].map(td => td.innerText))"""


def test_slow_team_ranks_first_with_its_numbers_and_a_small_team_is_too_few(
    data, english, browser, tmp_path
) -> None:
    page = write_report(english, tmp_path)
    browser.open(page)
    rows = browser.evaluate(TEAMS_VIEW)
    text = browser.evaluate("document.body.innerText")
    assert browser.errors() == []
    assert browser.evaluate("document.querySelectorAll('script, #teams i').length") == 0
    truth = october_by_team(data)
    slow = truth.loc["Slow"]
    assert slow["frt_hours"] > 5 * truth.drop(index="Slow")["frt_hours"].max()
    first, tickets = rows[0], int(slow["tickets"])
    assert first[0] == f"1. Slow\n{tickets} tickets"
    assert first[1] == "1.0"  # the worst team in every KPI
    frt, fcr, reopen, csat, sla = first[2:7]
    october = data.tickets[data.tickets["created_at"].dt.to_period("M") == "2026-10"]
    waits = october.loc[october["team"] == "Slow", "frt_hours"].to_numpy()
    lo, hi = SurvfuncRight(waits, np.ones(len(waits))).quantile_ci(0.5)  # all answered
    assert frt == f"{slow['frt_hours']:.2f}\n{lo:.1f} … {hi:.1f} · n {tickets}"
    assert fcr.startswith(f"▼ {slow['fcr']:.1f}\n")
    assert reopen.startswith(f"▼ {slow['reopen_rate']:.1f}\n")
    assert sla.startswith(f"▼ {slow['sla_breach']:.1f}\n")
    low, high = proportion_confint(slow["csat_top2"], slow["csat_n"], method="wilson")
    assert csat == (
        f"▼ {slow['csat']:.1f}\n{100 * low:.1f} … {100 * high:.1f} · n {int(slow['csat_n'])}"
    )
    night = rows[3]
    assert night[0] == (
        f"<i>Night</i> shift\n{TEAMS['<i>Night</i> shift']} tickets; "
        f"too few tickets (fewer than {MIN_TEAM_TICKETS}): not ranked"
    )
    assert night[1] == "—" and rows[4][0] == "all teams" and len(rows) == 5
    assert "Worst team first. Each KPI ranks the teams with at least 30 tickets" in text


def test_the_other_teams_follow_by_mean_rank_with_their_recomputed_numbers(data, english) -> None:
    teams = english.tables["teams"]
    truth = october_by_team(data).drop(index="<i>Night</i> shift")
    worse_if_higher = {
        "frt_hours": True,
        "fcr": False,
        "reopen_rate": True,
        "csat": False,
        "sla_breach": True,
    }
    ranks = pd.DataFrame({m: truth[m].rank(ascending=not h) for m, h in worse_if_higher.items()})
    expected = ranks.mean(axis=1).sort_values(kind="stable").index.tolist()
    assert [row["team"] for row in teams[:3]] == expected and expected[0] == "Slow"
    for row in teams[:3]:
        for metric in worse_if_higher:
            assert row[metric] == pytest.approx(truth.loc[row["team"], metric])
    assert teams[3]["position"] is None and "## Teams" in english.markdown


def test_definitions_state_the_configured_repeat_window_in_both_languages(
    english, at_risk, russian
) -> None:
    assert '<details id="kpi-definitions">' in english.html
    for text in (english.html, english.markdown):
        assert "no new ticket from the same customer within 3 days (fcr.repeat_days)" in text
        assert "Kaplan–Meier median" in text and "(4–5 of 5)" in text and "24 hours" in text
    assert "repeat contacts do not count (fcr.repeat_days is 0)" in at_risk.html
    assert "within 3 days" not in at_risk.html
    assert "в течение 3 дн. (fcr.repeat_days)" in russian.html
    assert "Как определены метрики" in russian.html and "медиана Каплана–Мейера" in russian.html


def test_breakdowns_follow_the_configured_cuts_including_a_declared_dimension(
    data, english
) -> None:
    assert 'id="by-device"' in english.html and "<h3>Device</h3>" in english.html
    assert 'id="by-region"' not in english.html
    assert [c.name for c in english.charts][:3] == ["nps-segment", "nps-device", "csat-channel"]
    october = data.responses[
        (data.responses["kind"] == "nps")
        & (data.responses["submitted_at"].dt.to_period("M") == "2026-10")
    ]
    device = october["customer_id"].map(data.customers.set_index("customer_id")["device"])
    points = np.select([october["score"] >= 9, october["score"] <= 6], [100.0, -100.0], 0.0)
    nps = pd.Series(points, index=october.index).groupby(device).agg(["mean", "size"])
    table = english.markdown.split("### Device: NPS")[1].split("###")[0]
    for device_name, row in nps.iterrows():
        assert f"| {device_name} | {row['mean']:.1f} |" in table
        assert f"| {int(row['size'])} |" in table


def nps_points(answers: pd.DataFrame) -> pd.Series:
    return pd.Series(
        np.select([answers["score"] >= 9, answers["score"] <= 6], [100.0, -100.0], 0.0),
        index=answers.index,
    )


def test_at_risk_block_shows_bands_nps_against_the_rest_drivers_and_validation(
    data, run, english, at_risk
) -> None:
    assert "At-risk customers" not in english.html and "At-risk" not in english.markdown
    assert run.auc == pytest.approx(0.81) and len(run.scores) == len(data.customers)
    html = at_risk.html
    assert "<h2>At-risk customers</h2>" in html
    assert "AUC (0.5 = chance): <strong>0.81</strong>" in html and "n 1,234" in html
    bands = run.scores["churn_risk"].value_counts()
    assert (
        f"Churn risk within 90 days: {bands['high']:,} customers high, {bands['medium']:,} "
        f"medium, {bands['low']:,} low."
    ) in html
    october = data.responses[
        (data.responses["kind"] == "nps")
        & (data.responses["submitted_at"].dt.to_period("M") == "2026-10")
    ]
    band = october["customer_id"].map(run.scores.set_index("customer_id")["churn_risk"])
    points = nps_points(october)
    risky = band.isin(["high", "medium"])
    groups = {
        "high risk": points[band == "high"],
        "at risk (high or medium)": points[risky],
        "the rest (low risk or not scored)": points[~risky],
    }
    for label, values in groups.items():
        mean, half = values.mean(), 1.959964 * values.std() / np.sqrt(len(values))
        assert (
            f'<td class="text">{label}</td><td class="key">{mean:.1f}</td>'
            f"<td>{mean - half:.1f} … {mean + half:.1f}</td><td>{len(values):,} answers</td>"
        ) in html
    gap = (
        groups["at risk (high or medium)"].mean()
        - groups["the rest (low risk or not scored)"].mean()
    )
    assert f"<strong>{gap:+.2f}</strong>" in html
    assert html.index("unresolved_delivery") < html.index("latest_ces") < html.index("recency")
    assert "<code>unresolved_delivery</code> +0.90" in html
    assert f"<strong>{run.expected_revenue_lost:,.0f}</strong>" in html
    assert "`unresolved_delivery` +0.90" in at_risk.markdown


def test_an_unpublished_model_says_why_and_shows_no_segment(russian) -> None:
    assert "Клиенты под угрозой ухода" in russian.html
    assert "Не опубликовано" in russian.html and "AUC 0,52 &lt; 0,6" in russian.html
    assert 'id="at-risk-nps"' not in russian.html and "Ожидаемая потеря" not in russian.html


def test_unlinked_and_unknown_ticket_answers_are_counted(data, english, russian) -> None:
    counts = data.unmatched()
    assert counts["responses_unlinked"] == UNLINKED
    assert counts["responses_unknown_ticket"] == UNKNOWN_TICKET
    for text in (english.html, english.markdown):
        assert (
            f"{UNLINKED} post-contact answers name no ticket and {UNKNOWN_TICKET} name a ticket "
            "the store does not have"
        ) in text
    assert f"{UNLINKED} ответов после обращения без ссылки на обращение" in russian.html


def test_russian_teams_table_writes_decimal_commas(data, russian) -> None:
    html = russian.html
    start = html.index('<table id="teams">')
    table = html[start : html.index("</table>", start)]
    assert "1. Slow" in table and "мало обращений" in table
    slow = october_by_team(data).loc["Slow"]
    assert f"{slow['frt_hours']:.2f}".replace(".", ",") in table
    assert re.findall(r"\d\.\d", table) == []
