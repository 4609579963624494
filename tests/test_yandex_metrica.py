"""Yandex Metrica connector against a fake Reporting API: rows into `web_metric`, 1-based offset
paging, resume after a crash, sampled reports surfaced, pages of the wrong shape. The checks
every vendor shares are in test_vendor_contract.py."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import pandas as pd
import pytest
from pytest_httpserver import HTTPServer
from sqlalchemy.engine import Engine
from werkzeug import Response

from connectors.errors import SourceError
from connectors.yandex_metrica import YandexMetricaSource
from flows.sync import sync_source
from tasks import store
from tests.fakes.yandex_metrica import DEVICES, SOURCES, FakeMetrica, metrica_error

TOKEN = "y0_AgAAAAfakeMetricaOAuthToken"
COUNTER, GOAL = "44147844", "271828"
FAST = {"backoff_base": 0.01, "max_wait": 5.0, "timeout": 2.0, "rate_limit": [1000, 1]}
TODAY = date.today()
FIRST = TODAY - timedelta(days=3)
ROWS_PER_DAY = 2 * 3  # devices × traffic sources
PER_DAY = ROWS_PER_DAY * 3 + 1  # visits, users, goal visits; one sample_share row


@pytest.fixture
def fake(httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeMetrica]:
    monkeypatch.setenv("YANDEX_METRICA_TOKEN", TOKEN)
    metrica = FakeMetrica(TOKEN, COUNTER, GOAL)
    metrica.seed(FIRST, 4)
    yield metrica.serve(httpserver)


def source(fake: FakeMetrica, **options: Any) -> YandexMetricaSource:
    options = {
        "counter": COUNTER,
        "start_date": FIRST.isoformat(),
        "goals": {GOAL: "purchase"},
    } | options
    return YandexMetricaSource(name="metrica", base_url=fake.url, **FAST, **options)


def stored(engine: Engine) -> pd.DataFrame:
    return store.read_frame(engine, store.WebMetric).set_index("source_id").sort_index()


def test_visits_users_and_goals_become_web_metric_rows(store_url: str, fake: FakeMetrica) -> None:
    engine = store.open_store(store_url)

    sync_source(engine, source(fake))

    rows = stored(engine)
    assert rows.index.is_unique and len(rows) == 4 * PER_DAY
    day = FIRST.isoformat()
    visits = rows.loc[f"{day}|Smartphones|ad||visits"]
    assert visits[["metric", "value", "device", "traffic_source"]].tolist() == [
        "visits", 50.0 + 4 + 1, "mobile", "paid",
    ]  # fmt: skip
    goal = rows.loc[f"{day}|Desktop|organic|purchase|goal_visits"]
    assert goal[["step", "value"]].tolist() == ["purchase", 5.0]
    assert rows.loc[f"{day}|sample_share", "value"] == 1.0
    assert fake.requests[0]["metrics"] == f"ym:s:visits,ym:s:users,ym:s:goal{GOAL}visits"


def test_funnel_step_stores_the_visits_that_reached_the_goal_not_its_reaches(
    store_url: str, fake: FakeMetrica
) -> None:
    engine = store.open_store(store_url)

    sync_source(engine, source(fake))

    served = pd.DataFrame(list(fake.cells.values()))
    visits, reaches = served[f"ym:s:goal{GOAL}visits"], served[f"ym:s:goal{GOAL}reaches"]
    assert (reaches > visits).all()  # the fake can tell them apart
    steps = stored(engine).query("step == 'purchase'")
    assert steps["metric"].unique().tolist() == ["goal_visits"]
    assert steps["value"].sum() == visits.sum()


def test_without_traffic_source_no_source_dimension_is_asked_and_cells_sum_over_it(
    store_url: str, fake: FakeMetrica
) -> None:
    engine = store.open_store(store_url)

    sync_source(engine, source(fake, traffic_source=False))

    assert fake.requests[0]["dimensions"] == "ym:s:date,ym:s:deviceCategory"
    rows = stored(engine)
    assert rows["traffic_source"].isna().all() and rows.index.is_unique
    assert len(rows) == 4 * (len(DEVICES) * 3 + 1)
    day = FIRST.isoformat()
    served = sum(fake.cells[(day, "Smartphones", s)]["ym:s:visits"] for s, _ in SOURCES)
    assert rows.loc[f"{day}|Smartphones||visits", "value"] == served
    goal = sum(fake.cells[(day, "Desktop", s)][f"ym:s:goal{GOAL}visits"] for s, _ in SOURCES)
    assert rows.loc[f"{day}|Desktop|purchase|goal_visits", "value"] == goal


def test_pages_by_one_based_offset_and_resumes_after_a_crash(
    store_url: str, fake: FakeMetrica
) -> None:
    fake.plan(range(3, 9), metrica_error(503, "backend_error", "Internal error"))
    engine = store.open_store(store_url)
    with pytest.raises(SourceError, match=r"stream traffic, page 3: .*backend_error"):
        sync_source(engine, source(fake, page_size=5, max_retries=1))
    assert store.read_cursor(engine, "metrica", "traffic")["offset"] == 11
    fake.planned.clear()
    fake.requests.clear()

    sync_source(engine, source(fake, page_size=5))

    assert [r["offset"] for r in fake.requests] == ["11", "16", "21"]
    rows = stored(engine)
    assert rows.index.is_unique and len(rows) == 4 * PER_DAY
    assert store.read_cursor(engine, "metrica", "traffic") == {"end": TODAY.isoformat()}


def test_next_sync_repulls_the_last_days_without_duplicates(
    store_url: str, fake: FakeMetrica
) -> None:
    engine = store.open_store(store_url)
    sync_source(engine, source(fake))
    late = (TODAY - timedelta(days=1)).isoformat()
    fake.cells[(late, "Desktop", "direct")]["ym:s:visits"] = 777.0
    fake.requests.clear()

    assert sync_source(engine, source(fake, lookback_days=2)) == {"traffic": 2 * PER_DAY}

    assert fake.requests[0]["date1"] == late and fake.requests[0]["date2"] == TODAY.isoformat()
    rows = stored(engine)
    assert rows.index.is_unique and len(rows) == 4 * PER_DAY
    assert rows.loc[f"{late}|Desktop|direct||visits", "value"] == 777.0


def test_sampled_report_is_logged_and_stored_as_sample_share(
    store_url: str, fake: FakeMetrica, caplog: pytest.LogCaptureFixture
) -> None:
    fake.sample_share = 0.25
    engine = store.open_store(store_url)
    metrica = source(fake, accuracy="low")

    sync_source(engine, metrica)

    assert metrica.streams()[0].sampled_pages == 1
    assert "Metrica sampled this report (sample_share 0.250)" in caplog.text
    shares = stored(engine).query("metric == 'sample_share'")
    assert shares["value"].tolist() == [0.25] * 4 and shares["device"].isna().all()
    assert fake.requests[0]["accuracy"] == "low"


@pytest.mark.parametrize(
    ("body", "problem"),
    [('{"data": [{"dimensions": []}], "total_rows": 9}', "shape")],
)
def test_malformed_page_names_the_page_and_commits_nothing_of_it(
    store_url: str, fake: FakeMetrica, body: str, problem: str
) -> None:
    fake.plan([2], Response(body, 200, content_type="application/json"))
    engine = store.open_store(store_url)
    with pytest.raises(SourceError) as caught:
        sync_source(engine, source(fake, page_size=4))
    message = str(caught.value)
    assert "source metrica, stream traffic, page 2" in message and problem in message
    assert len(stored(engine)) == 4 * 3 + 1
    assert store.read_cursor(engine, "metrica", "traffic")["offset"] == 5


def test_bad_token_names_the_variable_and_permission(
    store_url: str, fake: FakeMetrica, monkeypatch
) -> None:
    monkeypatch.setenv("YANDEX_METRICA_TOKEN", "y0_revoked")
    with pytest.raises(SourceError) as caught:
        sync_source(store.open_store(store_url), source(fake))
    message = str(caught.value)
    assert "HTTP 403: invalid_token" in message and "check YANDEX_METRICA_TOKEN" in message
    assert "metrika:read" in message
