"""Matomo connector against a fake Reporting API on loopback: visits, goal conversions (a goal's
step counting the visits that converted) and funnel steps into `web_metric`, the token only as a
POST field, empty days, filter_offset paging, errors that come with HTTP 200, resuming after a crash
and re-pulling late days. The checks every vendor shares are in test_vendor_contract.py."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import pandas as pd
import pytest
from pytest_httpserver import HTTPServer
from sqlalchemy.engine import Engine
from werkzeug import Response

from connectors.errors import ConfigError, SourceError
from connectors.matomo import MatomoSource
from flows.sync import check_source, sync_source
from tasks import store
from tasks.funnels import funnel
from tests.fakes.matomo import STEPS, FakeMatomo, matomo_error

TOKEN = "3f9a1c0e5b7d2e4f6a8c0b1d3e5f7a9c"
SITE = "7"
FAST = {"backoff_base": 0.01, "max_wait": 5.0, "timeout": 2.0, "rate_limit": [1000, 1]}
TODAY = date.today()
FIRST = TODAY - timedelta(days=6)
EMPTY_DAY = 2
DAYS = [FIRST + timedelta(days=n) for n in range(7) if n != EMPTY_DAY]
STEP_MAP = dict(zip(STEPS, ("view_item", "add_to_cart", "begin_checkout", "purchase"), strict=True))


@pytest.fixture
def fake(httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeMatomo]:
    monkeypatch.setenv("MATOMO_TOKEN", TOKEN)
    matomo = FakeMatomo(TOKEN, SITE)
    matomo.seed(FIRST, 7, empty=[EMPTY_DAY])
    yield matomo.serve(httpserver)


def source(fake: FakeMatomo, **options: Any) -> MatomoSource:
    defaults = {"base_url": fake.url, "site_id": SITE, "start_date": FIRST.isoformat()}
    return MatomoSource(name="web", **FAST, **defaults | {"goals": {"4": "purchase"}} | options)


def stored(engine: Engine) -> pd.DataFrame:
    rows = store.read_frame(engine, store.WebMetric)
    assert rows["source_id"].is_unique
    return rows.set_index("source_id").sort_index()


def test_visits_and_goals_become_web_metric_rows(store_url: str, fake: FakeMatomo) -> None:
    engine = store.open_store(store_url)

    assert sync_source(engine, source(fake)) == {"visits": 6 * 5, "goals": 6 * (3 + 1)}

    rows = stored(engine)
    day = FIRST + timedelta(days=1)
    visits = rows[(rows["date"] == pd.Timestamp(day)) & rows["step"].isna()]
    assert visits.set_index("metric")["value"].to_dict() == {
        "visits": 210, "users": 170, "actions": 630, "bounces": 52, "visit_seconds": 95 * 210,
        "conversions": (1 + 3) + (1 + 1), "converted_visits": 3 + 2, "revenue": 1500.5 * 2,
    }  # fmt: skip
    purchase = rows[rows["step"] == "purchase"].set_index("date")
    assert purchase["metric"].unique().tolist() == ["converted_visits"]
    assert purchase["value"].to_dict() == {pd.Timestamp(d): (d - FIRST).days + 1.0 for d in DAYS}
    assert not (rows["date"] == pd.Timestamp(FIRST + timedelta(days=EMPTY_DAY))).any()
    assert all(r["form"] == {"token_auth": TOKEN} for r in fake.requests)
    assert not any("token_auth" in r["query"] for r in fake.requests)
    bulk = fake.requests[-1]["query"]
    assert bulk["method"] == "API.getBulkRequest"
    assert [c.get("idGoal") for c in fake.calls[-2:]] == [None, "4"]


def test_a_goal_step_counts_the_visits_that_converted_not_the_conversions(
    store_url: str, fake: FakeMatomo
) -> None:
    engine = store.open_store(store_url)

    sync_source(engine, source(fake, reports=["goals"], goals={"1": "signup"}))

    served = {pd.Timestamp(d): fake.conversions[d.isoformat()]["1"] for d in DAYS}
    assert all(g["nb_conversions"] > g["nb_visits_converted"] for g in served.values())
    signup = stored(engine).query("step == 'signup'").set_index("date")
    assert signup["metric"].unique().tolist() == ["converted_visits"]
    assert signup["value"].to_dict() == {d: g["nb_visits_converted"] for d, g in served.items()}


def test_funnel_steps_page_by_filter_offset(store_url: str, fake: FakeMatomo) -> None:
    engine = store.open_store(store_url)
    options = {"funnel_id": "1", "reports": ["funnel"], "page_size": 3, "days_per_request": 4}

    written = sync_source(engine, source(fake, **options, value_map={"step": STEP_MAP}))

    assert written == {"funnel": 6 * len(STEPS)}
    asked = [(c["date"], c["filter_limit"], c["filter_offset"]) for c in fake.calls]
    first_chunk, second_chunk = f"{FIRST},{DAYS[2]}", f"{DAYS[3]},{TODAY}"
    assert asked == [
        (first_chunk, "3", "0"), (first_chunk, "3", "3"),
        (second_chunk, "3", "0"), (second_chunk, "3", "3"),
    ]  # fmt: skip
    web = stored(engine)
    steps = funnel(web, list(STEP_MAP.values()))
    entering = [(200 + 10 * ((d - FIRST).days)) // 2 for d in DAYS]
    assert steps["sessions"].tolist() == [
        sum(e // (position + 1) for e in entering) for position in range(1, 5)
    ]
    assert set(web["metric"]) == {"visits"}


def test_devices_break_every_report_down_and_add_up_to_the_totals(
    store_url: str, fake: FakeMatomo
) -> None:
    engine = store.open_store(store_url)
    options = {"funnel_id": "1", "devices": ["desktop", "smartphone", "tablet"]}

    written = sync_source(engine, source(fake, **options, value_map={"step": STEP_MAP}))

    assert written == {"visits": 4 * 6 * 5, "goals": 4 * 6 * (3 + 1), "funnel": 4 * 6 * 4}
    segments = {c["segment"] for c in fake.calls}
    other = "deviceType!=desktop;deviceType!=smartphone;deviceType!=tablet"
    assert segments == {
        "deviceType==desktop",
        "deviceType==smartphone",
        "deviceType==tablet",
        other,
    }
    rows = stored(engine)
    assert set(rows["device"]) == {"desktop", "mobile", "tablet", "other"}
    visits = rows[(rows["metric"] == "visits") & rows["step"].isna()]
    by_day = visits.groupby("date")["value"].sum()
    assert by_day.to_dict() == {pd.Timestamp(d): 200.0 + 10 * (d - FIRST).days for d in DAYS}
    day = visits[visits["date"] == pd.Timestamp(FIRST + timedelta(days=1))]
    assert day.set_index("device")["value"].to_dict() == {
        "desktop": 105, "mobile": 63, "tablet": 31, "other": 11
    }  # fmt: skip
    steps = funnel(rows, list(STEP_MAP.values()), ["device"])
    assert set(steps["device"]) == {"desktop", "mobile", "tablet", "other"}
    entering = [(200 + 10 * ((d - FIRST).days)) // 2 for d in DAYS]
    desktop = steps[(steps["device"] == "desktop") & (steps["step"] == "view_item")]
    assert desktop["sessions"].item() == sum(int(e // 2 * 0.5) for e in entering)


def test_crash_mid_range_resumes_at_the_last_committed_page(
    store_url: str, fake: FakeMatomo
) -> None:
    fake.plan(range(3, 10), Response("upstream timed out", 503))
    engine = store.open_store(store_url)
    options = {"reports": ["visits"], "days_per_request": 2}
    with pytest.raises(SourceError, match=r"source web, stream visits, page 3: Matomo .*503"):
        sync_source(engine, source(fake, **options, max_retries=1))
    assert len(stored(engine)) == 3 * 5
    assert store.read_cursor(engine, "web", "visits")["offset"] == 4
    fake.planned.clear()
    fake.calls.clear()

    assert sync_source(engine, source(fake, **options)) == {"visits": 3 * 5}

    assert [c["date"] for c in fake.calls] == [f"{DAYS[3]},{DAYS[4]}", f"{TODAY},{TODAY}"]
    assert len(stored(engine)) == 6 * 5
    assert store.read_cursor(engine, "web", "visits") == {"end": TODAY.isoformat()}


def test_next_sync_repulls_the_last_days_and_updates_late_data(
    store_url: str, fake: FakeMatomo
) -> None:
    engine = store.open_store(store_url)
    sync_source(engine, source(fake))
    before = len(stored(engine))
    yesterday = TODAY - timedelta(days=1)
    fake.visits[yesterday.isoformat()]["nb_visits"] = 999
    fake.calls.clear()

    written = sync_source(engine, source(fake, lookback_days=3))

    assert written == {"visits": 3 * 5, "goals": 3 * 4}
    assert {c["date"] for c in fake.calls} == {f"{TODAY - timedelta(days=2)},{TODAY}"}
    rows = stored(engine)
    assert len(rows) == before
    assert rows.loc[f"visits|{yesterday}|all||nb_visits", "value"] == 999


def test_error_with_http_200_names_source_stream_and_message_and_commits_nothing(
    store_url: str, fake: FakeMatomo
) -> None:
    fake.plan([2], matomo_error("Archiving is disabled and no archive exists for this range."))
    engine = store.open_store(store_url)
    with pytest.raises(SourceError) as caught:
        sync_source(engine, source(fake, reports=["visits"], days_per_request=3))
    message = str(caught.value)
    assert message == (
        f"source web, stream visits, VisitsSummary.get for {DAYS[2]}..{DAYS[4]}: Matomo answered "
        "an error: Archiving is disabled and no archive exists for this range. Nothing of this "
        "page was saved."
    )
    assert sorted(set(stored(engine)["date"])) == [pd.Timestamp(d) for d in DAYS[:2]]
    assert store.read_cursor(engine, "web", "visits")["offset"] == 3


def test_one_failing_call_in_a_bulk_request_fails_the_page(
    store_url: str, fake: FakeMatomo
) -> None:
    engine = store.open_store(store_url)
    with pytest.raises(SourceError) as caught:
        sync_source(engine, source(fake, reports=["goals"], goals={"4": "purchase", "99": "x"}))
    assert "stream goals, Goals.get for" in str(caught.value)
    assert "The goal id 99 couldn't be found" in str(caught.value)
    assert stored(engine).empty


def test_wrong_token_goes_as_a_post_field_and_names_the_variable(
    store_url: str, fake: FakeMatomo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MATOMO_TOKEN", "anonymous-but-wrong-0042")
    with pytest.raises(SourceError) as caught:
        sync_source(store.open_store(store_url), source(fake))
    message = str(caught.value)
    assert "requires 'view' access for the website id = 7" in message
    assert "check MATOMO_TOKEN" in message and "view access to site 7" in message
    assert fake.requests[-1]["form"] == {"token_auth": "anonymous-but-wrong-0042"}


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ('{"yesterday": []}', "documented shape (ValueError"),
        (f'{{"{FIRST}": []}}', f"date {FIRST} is outside the {DAYS[2] - timedelta(days=1)}.."),
        ("[1, 2]", "documented shape (TypeError"),
        (f'{{"{DAYS[2]}": {{"nb_visits": "many"}}}}', "documented shape (ValueError"),
    ],
)
def test_malformed_page_names_the_page_and_commits_nothing_of_it(
    store_url: str, fake: FakeMatomo, body: str, problem: str
) -> None:
    fake.plan([2], Response(body, 200, content_type="application/json"))
    engine = store.open_store(store_url)
    with pytest.raises(SourceError) as caught:
        sync_source(engine, source(fake, reports=["visits"], days_per_request=2))
    message = str(caught.value)
    assert "source web, stream visits, page 2" in message
    assert problem in message and "nothing of it was saved" in message
    assert len(stored(engine)) == 2 * 5


def test_sources_check_reads_one_page(fake: FakeMatomo) -> None:
    options = {"base_url": fake.url + "/index.php", "site_id": SITE, "start_date": str(FIRST)}
    check = check_source("web", "matomo", options | FAST)
    assert check.ok and check.detail == "visits: 30 records on the first page", check.detail


def test_config_errors(fake: FakeMatomo) -> None:
    with pytest.raises(ConfigError, match="base_url must be your Matomo's address"):
        source(fake, base_url="analytics.example.com")
    with pytest.raises(ConfigError, match="site_id must be the Matomo site's number"):
        source(fake, site_id="shop")
    with pytest.raises(ConfigError, match="start_date must be a date"):
        source(fake, start_date="last30")
    with pytest.raises(ConfigError, match="the funnel report needs `funnel_id`"):
        source(fake, reports=["funnel"])
    with pytest.raises(ConfigError, match="days_per_request must be 1–366"):
        source(fake, days_per_request=0)
    for devices in (["desktop", "other"], ["deviceType==desktop"]):
        with pytest.raises(ConfigError, match="devices are Matomo device types"):
            source(fake, devices=devices)
