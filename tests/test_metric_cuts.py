"""Metrics cut by declared customer dimensions and by the ticket a survey answer is about,
the reopen rate, and FCR's repeat window: each against a plain pandas recomputation."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy.engine import Engine
from statsmodels.stats.proportion import proportion_confint

from flows.config import example_text
from tasks import store
from tasks.loader import CxData, unmatched_message
from tasks.metrics import (
    known_cuts,
    metric_table,
    nps_points,
    with_ticket_measures,
)
from tasks.pain_points import cell_dimensions
from tasks.standards import dimension_problem

DAY = pd.Timedelta(days=1)
START = pd.Timestamp("2026-09-01 09:00")
# Answers of the post-contact survey that name no ticket, and that name one never stored.
UNLINKED, UNKNOWN = 37, 23


def _company(seed: int = 3, customers: int = 3_000, tickets: int = 6_000) -> CxData:
    """Customers with declared `device` and `plan` (some unknown), tickets with agents and
    teams, post-contact NPS and CSAT answers naming their ticket (`UNLINKED` of them none,
    `UNKNOWN` one the store lacks), and relationship NPS answers that name no ticket."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"c{i}" for i in range(customers)], dtype=object)
    people = pd.DataFrame(
        {
            "customer_id": ids,
            "segment": rng.choice(["new", "loyal", "b2b"], customers),
            "region": rng.choice(["north", "south"], customers),
            "channel": rng.choice(["ads", "organic"], customers),
            "created_at": START - 200 * DAY,
            "device": pd.Series(rng.choice(["mobile", "desktop", "tablet"], customers)).where(
                rng.random(customers) > 0.1
            ),
            "plan": rng.choice(["free", "pro"], customers),
        }
    )
    created = START + pd.to_timedelta(rng.uniform(0, 60, tickets), unit="D")
    answered = created + pd.to_timedelta(rng.exponential(8, tickets), unit="h")
    resolved = pd.Series(answered + pd.to_timedelta(rng.exponential(20, tickets), unit="h"))
    team = rng.choice(["alpha", "beta", "gamma"], tickets)
    desk = pd.DataFrame(
        {
            "ticket_id": [f"T{i}" for i in range(tickets)],
            "customer_id": rng.choice(ids, tickets),
            "topic": rng.choice(["delivery", "payment", "login"], tickets),
            "channel": rng.choice(["chat", "email"], tickets),
            "team": team,
            "agent": [f"{t}-{k}" for t, k in zip(team, rng.integers(0, 3, tickets), strict=True)],
            "created_at": created,
            "first_response_at": answered,
            "resolved_at": resolved.where(rng.random(tickets) > 0.15),
            # Team gamma reopens twice as often: the cut must show it.
            "reopened": rng.random(tickets) < np.where(team == "gamma", 0.3, 0.15),
            "escalated": rng.random(tickets) < 0.1,
        }
    )
    about = rng.choice(desk["ticket_id"], 4_000).astype(object)
    about[:UNLINKED] = None
    about[UNLINKED : UNLINKED + UNKNOWN] = [f"X{i}" for i in range(UNKNOWN)]
    post = pd.DataFrame(
        {
            "ticket_id": about,
            "kind": rng.choice(["nps", "csat"], len(about)),
            "survey": "post_contact",
        }
    )
    post["score"] = np.where(
        post["kind"] == "nps", rng.integers(0, 11, len(post)), rng.integers(1, 6, len(post))
    ).astype(float)
    relationship = pd.DataFrame(
        {
            "ticket_id": None,
            "kind": "nps",
            "survey": "relationship",
            "score": rng.integers(0, 11, 2_000).astype(float),
        }
    )
    answers = pd.concat([post, relationship], ignore_index=True)
    answers = answers.assign(
        customer_id=rng.choice(ids, len(answers)),
        submitted_at=START + pd.to_timedelta(rng.uniform(0, 60, len(answers)), unit="D"),
        channel="email",
        comment=None,
    )
    empty = pd.DataFrame()
    return CxData(people, with_ticket_measures(desk), answers, empty, empty)


@pytest.fixture(scope="module")
def company() -> CxData:
    return _company()


def _points(answers: pd.DataFrame) -> pd.Series:
    """Each NPS answer's points, the CSAT answers' top-2 box as 0/100."""
    return pd.Series(
        np.where(
            answers["kind"] == "nps", nps_points(answers["score"]), 100.0 * (answers["score"] >= 4)
        ),
        index=answers.index,
    )


def test_metrics_by_declared_dimensions_equal_a_pandas_recomputation(company: CxData) -> None:
    table = metric_table(company, ["nps", "fcr", "art_hours"], ["device", "plan"])
    cells = table.set_index(["metric", "device", "plan"])
    people = company.customers[["customer_id", "device", "plan"]]
    answers = company.responses[company.responses["kind"] == "nps"].merge(people, on="customer_id")
    nps = answers.groupby(["device", "plan"])["score"].agg(
        value=lambda s: nps_points(s).mean(), n="size"
    )
    tickets = company.tickets.merge(people, on="customer_id")
    fcr = tickets.dropna(subset=["fcr"]).groupby(["device", "plan"])["fcr"].agg(["mean", "size"])
    art = tickets.groupby(["device", "plan"])["art_hours"].median()
    assert len(nps) == 6  # unknown devices are left out of the cut, not a seventh cell
    for (device, plan), row in nps.iterrows():
        assert cells.loc[("nps", device, plan), "value"] == pytest.approx(row["value"])
        assert cells.loc[("nps", device, plan), "n"] == row["n"]
        assert cells.loc[("fcr", device, plan), "value"] == pytest.approx(
            fcr.loc[(device, plan), "mean"]
        )
        assert cells.loc[("fcr", device, plan), "n"] == fcr.loc[(device, plan), "size"]
        assert cells.loc[("art_hours", device, plan), "value"] == pytest.approx(
            art.loc[(device, plan)]
        )


def test_survey_scores_by_the_linked_tickets_topic_agent_and_team_equal_a_merge(
    company: CxData,
) -> None:
    linked = company.responses.merge(
        company.tickets[["ticket_id", "topic", "agent", "team"]], on="ticket_id"
    )
    linked = linked.assign(
        value=_points(linked), metric=linked["kind"].replace({"csat": "csat_top2"})
    )
    for cut, column in (("ticket_topic", "topic"), ("agent", "agent"), ("team", "team")):
        table = metric_table(company, ["nps", "csat_top2"], [cut]).set_index(["metric", cut])
        direct = linked.groupby(["metric", column])["value"].agg(["mean", "size"])
        assert len(table) == len(direct) and len(direct) > 2
        for (metric, value), row in direct.iterrows():
            assert table.loc[(metric, value), "value"] == pytest.approx(row["mean"])
            assert table.loc[(metric, value), "n"] == row["size"]
    # Every answer that names a stored ticket is in the cut; the rest are not.
    by_topic = metric_table(company, ["nps", "csat_top2"], ["ticket_topic"])
    assert by_topic["n"].sum() == len(linked)


def test_answers_without_a_stored_ticket_are_counted_not_cut(company: CxData) -> None:
    unmatched = company.unmatched()
    # The relationship survey never names a ticket: its answers are not "unlinked".
    assert unmatched["responses_unlinked"] == UNLINKED
    assert unmatched["responses_unknown_ticket"] == UNKNOWN
    assert unmatched["tickets"] == unmatched["responses"] == 0
    message = unmatched_message(unmatched)
    assert f"{UNLINKED} post-contact survey answers name no ticket" in message
    assert f"{UNKNOWN} name a ticket the store lacks" in message
    assert "match no customer" not in message


def test_reopen_rate_by_team_has_the_statsmodels_wilson_interval(company: CxData) -> None:
    table = metric_table(company, ["reopen_rate"], ["team"]).set_index("team")
    resolved = company.tickets.dropna(subset=["resolved_at"])
    for team, group in resolved.groupby("team"):
        reopened, n = int(group["reopened"].sum()), len(group)
        low, high = proportion_confint(reopened, n, method="wilson")
        row = table.loc[team]
        assert row["value"] == pytest.approx(100 * reopened / n)
        assert row["n"] == n
        assert (
            row["pending"]
            == company.tickets["resolved_at"].isna()[company.tickets["team"] == team].sum()
        )
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((100 * low, 100 * high))
    assert table.loc["gamma", "ci_low"] > table.loc["alpha", "ci_high"]  # planted: 30% vs 15%


def test_ticket_metrics_cut_by_agent_and_team(company: CxData) -> None:
    metrics = ["sla_breach", "frt_hours", "art_hours", "fcr", "reopen_rate"]
    for cut in ("agent", "team"):
        table = metric_table(company, metrics, [cut])
        values = company.tickets[cut].unique()
        assert set(table["metric"]) == set(metrics)
        assert (table.groupby("metric")[cut].nunique() == len(values)).all()
        breach = table[table["metric"] == "sla_breach"].set_index(cut)["value"]
        direct = company.tickets.groupby(cut)["sla_breach"].mean()
        pd.testing.assert_series_equal(breach.sort_index(), direct.sort_index(), check_names=False)


def test_an_unknown_cut_names_the_closest_one_and_every_declared_dimension(
    company: CxData,
) -> None:
    with pytest.raises(KeyError, match=r"did you mean 'device'\?.*known: .*plan"):
        metric_table(company, ["nps"], ["devise"])
    with pytest.raises(KeyError, match=r"did you mean 'agent'\?"):
        metric_table(company, ["nps"], ["agnet"])
    assert {"device", "plan", "ticket_topic", "agent", "team", "segment"} <= set(
        known_cuts(company)
    )
    assert "created_at" not in known_cuts(company)  # a date is no cut
    assert dimension_problem("agent") is None and dimension_problem("ticket_topic") is None
    assert dimension_problem("device", ["device", "plan"]) is None
    assert "did you mean `device`" in dimension_problem("devise", ["device", "plan"])
    assert "unknown dimension `device`" in dimension_problem("device")


def test_pain_point_cells_cut_by_every_small_customer_dimension(company: CxData) -> None:
    customers = company.customers.assign(
        email_hash="h", postcode=[f"{i:05d}" for i in range(len(company.customers))]
    )
    # The postcode has a value per customer: thousands of one-customer cells, so skipped.
    assert cell_dimensions(customers) == ["segment", "region", "channel", "device", "plan"]


def _fcr_tickets() -> pd.DataFrame:
    """A's tickets 5 and 20 days apart, B's reopened one, an unresolved one, and Z's last
    ticket, whose resolution a day after the others' windows is the clock."""
    opened = [0, 5, 25, 0, 1, 100]
    created = START + pd.to_timedelta(opened, unit="D")
    return pd.DataFrame(
        {
            "customer_id": ["A", "A", "A", "B", "U", "Z"],
            "created_at": created,
            "first_response_at": created + pd.Timedelta(hours=1),
            "resolved_at": pd.Series(created + pd.Timedelta(hours=2)).where(
                [True, True, True, True, False, True]
            ),
            "reopened": [False, False, False, True, False, False],
        }
    )


@pytest.mark.parametrize(
    ("repeat_days", "expected"),
    [
        # 0: reopening alone decides, and Z's own resolution closes its window at once.
        (0, [100, 100, 100, 0, 0, 100]),
        # 7: A's contact 5 days later undoes the first; 20 days later does not.
        (7, [0, 100, 100, 0, 0, np.nan]),
        # 30: both of A's follow-ups fall in the window.
        (30, [0, 0, 100, 0, 0, np.nan]),
    ],
)
def test_fcr_repeat_window_follows_its_definition(repeat_days: int, expected: list) -> None:
    measured = with_ticket_measures(_fcr_tickets(), repeat_days=repeat_days)
    np.testing.assert_array_equal(measured["fcr"], expected)
    # The repeat-contact rate keeps its own 7-day window whatever FCR counts.
    assert measured["repeat"].tolist()[:2] == [100.0, 0.0]
    np.testing.assert_array_equal(measured["reopen_rate"], [0, 0, 0, 100, np.nan, 0])


def _stored(url: str) -> Engine:
    """A store with three customers, two declaring a device, one a plan, their tickets (the
    last, on 20 Oct, is the clock) and answers: two about stored tickets, one naming none,
    one naming a ticket the store lacks."""
    engine = store.open_store(url)
    customers = pd.DataFrame({"source_id": ["C1", "C2", "C3"], "segment": ["new", "new", "b2b"]})
    customers["attributes"] = [{"device": "mobile", "plan": "pro"}, {"device": "desktop"}, {}]
    store.load_page(engine, store.Customer, customers, "crm", "customers", {})
    tickets = pd.DataFrame(
        {
            "source_id": ["T1", "T2", "T3", "T4"],
            "customer_id": ["C1", "C1", "C2", "C3"],
            "topic": ["delivery", "payment", "delivery", "login"],
            "team": ["alpha", "beta", "alpha", "beta"],
            "created_at": pd.to_datetime(["2026-10-01", "2026-10-04", "2026-10-02", "2026-10-20"]),
            "resolved_at": pd.to_datetime(
                ["2026-10-01 05:00", "2026-10-04 05:00", None, "2026-10-20 05:00"]
            ),
            "reopened": False,
        }
    )
    store.load_page(engine, store.Ticket, tickets, "desk", "tickets", {})
    answers = pd.DataFrame(
        {
            "source_id": ["A1", "A2", "A3", "A4"],
            "customer_id": ["C1", "C2", "C3", "C1"],
            "ticket_id": ["T1", "T3", None, "T9"],
            "survey": "post_contact",
            "kind": "nps",
            "score": [10.0, 3.0, 9.0, 0.0],
            "submitted_at": pd.to_datetime(["2026-10-05"] * 4),
        }
    )
    store.load_page(engine, store.SurveyResponse, answers, "forms", "nps", {})
    return engine


def test_the_store_s_declared_dimensions_are_customer_columns_and_cut(store_url: str) -> None:
    data = CxData.from_store(_stored(store_url))
    by_id = data.customers.set_index("customer_id")
    assert by_id.loc["C1", ["device", "plan"]].tolist() == ["mobile", "pro"]
    assert by_id.loc["C2", "device"] == "desktop" and pd.isna(by_id.loc["C2", "plan"])
    assert pd.isna(by_id.loc["C3", "device"])
    nps = metric_table(data, ["nps"], ["device"]).set_index("device")
    assert nps["value"].to_dict() == {"desktop": -100.0, "mobile": 0.0}  # C1: 10 and 0
    team = metric_table(data, ["nps"], ["team"]).set_index("team")
    assert team["value"].to_dict() == {"alpha": 0.0}  # T1's 10 and T3's 3; A3, A4 unlinked
    assert team.loc["alpha", "n"] == 2
    unmatched = data.unmatched()
    assert (unmatched["responses_unlinked"], unmatched["responses_unknown_ticket"]) == (1, 1)


def test_the_repeat_window_reaches_fcr_through_the_cached_load(sqlite_url: str) -> None:
    engine = _stored(sqlite_url)
    # C1 writes again 3 days after T1: no FCR within 7 days, FCR when only reopening counts.
    week = CxData.latest(engine).tickets.set_index("ticket_id")["fcr"]
    reopen_only = CxData.latest(engine, repeat_days=0).tickets.set_index("ticket_id")["fcr"]
    assert week["T1"] == 0.0 and reopen_only["T1"] == 100.0
    assert CxData.latest(engine) is CxData.latest(engine)


def test_cutting_a_million_customers_by_a_declared_dimension_costs_what_segment_does() -> None:
    rng = np.random.default_rng(0)
    n = 1_000_000
    ids = pd.Series([f"c{i}" for i in range(n)], dtype="str")
    customers = pd.DataFrame(
        {
            "customer_id": ids,
            "segment": pd.Series(rng.choice(["new", "loyal", "premium", "b2b"], n), dtype="str"),
            "region": pd.Series(rng.choice(["north", "south"], n), dtype="str"),
            "device": pd.Series(rng.choice(["mobile", "desktop", "tablet"], n), dtype="str"),
        }
    )
    answers = pd.DataFrame(
        {
            "customer_id": ids.sample(n, replace=True, random_state=1).to_numpy(),
            "kind": "nps",
            "score": rng.integers(0, 11, n).astype(float),
            "survey": "relationship",
            "channel": "email",
            "submitted_at": START,
        }
    )
    empty = pd.DataFrame(columns=["customer_id", "created_at"])
    data = CxData(customers, empty, answers, empty, empty)
    metric_table(data, ["nps"], ["region"])  # the one lookup of each answer's customer

    def seconds(cut: str) -> float:
        began = time.perf_counter()
        metric_table(data, ["nps"], [cut])
        return time.perf_counter() - began

    segment = min(seconds("segment") for _ in range(2))
    device = min(seconds("device") for _ in range(2))
    # Generous: both are one column take and a groupby; a row loop would be 100× slower.
    assert device < 3 * segment + 0.5, (device, segment)


def test_cxloop_metrics_cuts_by_a_declared_dimension(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    _stored(url)
    (tmp_path / "cxloop.yaml").write_text(example_text(), encoding="utf-8")
    cli = str(Path(sys.executable).parent / "cxloop")
    env = {**os.environ, "COLUMNS": "200", "CXLOOP_DATABASE_URL": url}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [cli, "metrics", "--metric", "nps", *args, "--csv"],
            cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env,
        )  # fmt: skip

    shown = run("--by", "device")
    assert shown.returncode == 0, shown.stderr
    assert "desktop" in shown.stdout and "mobile" in shown.stdout
    wrong = run("--by", "devise")
    assert wrong.returncode == 2 and "did you mean `device`" in wrong.stderr, wrong.stderr
