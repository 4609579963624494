"""GA4 connector against a fake Data API: traffic and funnel rows into `web_metric`, 0-based
offset paging, resume after a crash, re-pulling late days without duplicates, access tokens
renewed by an OAuth client's refresh token, and its secrets kept out of errors. The checks
every vendor shares are in test_vendor_contract.py."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from pytest_httpserver import HTTPServer
from sqlalchemy.engine import Engine
from werkzeug import Response

from connectors.errors import ConfigError, SourceError
from connectors.ga4 import GA4Source
from flows.sync import sync_source
from tasks import store
from tests.fakes.ga4 import (
    CHANNELS,
    CLIENT_ID,
    CLIENT_SECRET,
    REFRESH_TOKEN,
    FakeGA4,
    google_error,
)

TOKEN = "ya29.a0AfB_fake-ga4-access-token"
PROPERTY = "123456789"
FAST = {"backoff_base": 0.01, "max_wait": 5.0, "timeout": 2.0, "rate_limit": [1000, 1]}
TODAY = date.today()
FIRST = TODAY - timedelta(days=4)
# Per day: 2 devices × 2 channels × 2 segments; traffic has 2 metrics, funnel 4 events.
CELLS = 8
PER_DAY = {"traffic": CELLS * 2, "funnel": CELLS * 4}
OAUTH_ENV = ("GA4_CLIENT_ID", "GA4_CLIENT_SECRET", "GA4_REFRESH_TOKEN")


@pytest.fixture
def fake(httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGA4]:
    monkeypatch.setenv("GA4_TOKEN", TOKEN)
    for variable in OAUTH_ENV:
        monkeypatch.delenv(variable, raising=False)
    ga4 = FakeGA4(TOKEN, PROPERTY)
    ga4.seed(FIRST, 5)
    yield ga4.serve(httpserver)


def source(fake: FakeGA4, **options: Any) -> GA4Source:
    defaults = {
        "property_id": PROPERTY,
        "start_date": FIRST.isoformat(),
        "segment_dimension": "newVsReturning",
        "token_url": f"{fake.url}/token",
    }
    return GA4Source(name="web", base_url=fake.url, **(defaults | FAST | options))


def oauth_client(monkeypatch: pytest.MonkeyPatch, refresh_token: str = REFRESH_TOKEN) -> None:
    """An OAuth client's credentials in the environment instead of GA4_TOKEN."""
    monkeypatch.delenv("GA4_TOKEN")
    monkeypatch.setenv("GA4_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("GA4_CLIENT_SECRET", CLIENT_SECRET)
    monkeypatch.setenv("GA4_REFRESH_TOKEN", refresh_token)


def stored(engine: Engine) -> pd.DataFrame:
    return store.read_frame(engine, store.WebMetric).set_index("source_id").sort_index()


def test_traffic_and_funnel_become_web_metric_rows(store_url: str, fake: FakeGA4) -> None:
    engine = store.open_store(store_url)

    written = sync_source(engine, source(fake))

    assert written == {name: 5 * n for name, n in PER_DAY.items()}
    rows = stored(engine)
    assert rows.index.is_unique and len(rows) == 5 * (PER_DAY["traffic"] + PER_DAY["funnel"])
    day = FIRST.strftime("%Y%m%d")
    sessions = rows.loc[f"{FIRST.isoformat()}|mobile|Direct|returning|sessions"]
    assert sessions[["metric", "value", "device", "traffic_source", "segment"]].tolist() == [
        "sessions", 100 + 5 + 3 + 1, "mobile", "direct", "returning",
    ]  # fmt: skip
    assert pd.isna(sessions["step"]) and sessions["date"] == pd.Timestamp(FIRST)
    purchase = rows.loc[f"{FIRST.isoformat()}|desktop|Organic Search|purchase|new|sessions"]
    assert purchase[["step", "value", "traffic_source"]].tolist() == [
        "purchase",
        100 // 5,
        "organic",
    ]
    assert set(rows["metric"]) == {"sessions", "active_users"}
    funnel = fake.requests[-1]
    assert funnel["dimensionFilter"]["filter"]["inListFilter"]["values"] == [
        "view_item", "add_to_cart", "begin_checkout", "purchase",
    ]  # fmt: skip
    assert fake.cells[(day, "mobile", "Direct", "returning")]["sessions"] == 109


def test_without_traffic_source_no_channel_group_is_asked_and_cells_sum_over_it(
    store_url: str, fake: FakeGA4
) -> None:
    engine = store.open_store(store_url)

    sync_source(engine, source(fake, traffic_source=False))

    asked = [[d["name"] for d in body["dimensions"]] for body in fake.requests]
    assert asked == [
        ["date", "deviceCategory", "newVsReturning"],
        ["date", "deviceCategory", "eventName", "newVsReturning"],
    ]
    rows = stored(engine)
    assert rows["traffic_source"].isna().all() and rows.index.is_unique
    assert len(rows) == 5 * (PER_DAY["traffic"] + PER_DAY["funnel"]) // len(CHANNELS)
    day = FIRST.strftime("%Y%m%d")
    served = sum(fake.cells[(day, "mobile", c, "new")]["sessions"] for c in CHANNELS)
    assert rows.loc[f"{FIRST.isoformat()}|mobile|new|sessions", "value"] == served
    bought = sum(fake.cells[(day, "desktop", c, "new")]["events"]["purchase"] for c in CHANNELS)
    assert rows.loc[f"{FIRST.isoformat()}|desktop|purchase|new|sessions", "value"] == bought


def test_pages_by_zero_based_offset_and_resumes_after_a_crash(
    store_url: str, fake: FakeGA4
) -> None:
    fake.plan(range(3, 10), google_error(503, "UNAVAILABLE", "The service is unavailable."))
    engine = store.open_store(store_url)
    with pytest.raises(SourceError, match=r"source web, stream traffic, page 3: .*UNAVAILABLE"):
        sync_source(engine, source(fake, page_size=7, max_retries=1))
    assert len(stored(engine)) == 2 * 7 * 2
    assert store.read_cursor(engine, "web", "traffic")["offset"] == 14
    fake.planned.clear()
    fake.requests.clear()

    assert sync_source(engine, source(fake, page_size=7, reports=["traffic"])) == {
        "traffic": 5 * PER_DAY["traffic"] - 2 * 7 * 2
    }
    assert [r["offset"] for r in fake.requests] == ["14", "21", "28", "35"]
    assert fake.requests[0]["dateRanges"] == [
        {"startDate": FIRST.isoformat(), "endDate": TODAY.isoformat()}
    ]
    rows = stored(engine)
    assert rows.index.is_unique and len(rows) == 5 * PER_DAY["traffic"]


def test_next_sync_repulls_the_last_days_and_updates_late_data(
    store_url: str, fake: FakeGA4
) -> None:
    engine = store.open_store(store_url)
    sync_source(engine, source(fake))
    before = len(stored(engine))
    late = (TODAY - timedelta(days=1)).strftime("%Y%m%d")
    fake.cells[(late, "mobile", "Direct", "new")]["sessions"] = 999
    fake.requests.clear()

    written = sync_source(engine, source(fake, lookback_days=3))

    assert written == {name: 3 * n for name, n in PER_DAY.items()}
    assert {r["dateRanges"][0]["startDate"] for r in fake.requests} == {
        (TODAY - timedelta(days=2)).isoformat()
    }
    rows = stored(engine)
    assert len(rows) == before and rows.index.is_unique
    key = f"{(TODAY - timedelta(days=1)).isoformat()}|mobile|Direct|new|sessions"
    assert rows.loc[key, "value"] == 999


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ('{"dimensionHeaders": [], "metricHeaders": [], "rows": [{}]}', "documented shape"),
    ],
)
def test_malformed_page_names_the_page_and_commits_nothing_of_it(
    store_url: str, fake: FakeGA4, body: str, problem: str
) -> None:
    fake.plan([2], Response(body, 200, content_type="application/json"))
    engine = store.open_store(store_url)
    with pytest.raises(SourceError) as caught:
        sync_source(engine, source(fake, page_size=10))
    message = str(caught.value)
    assert "source web, stream traffic, page 2" in message
    assert problem in message and "nothing of it was saved" in message
    assert len(stored(engine)) == 10 * 2
    assert store.read_cursor(engine, "web", "traffic")["offset"] == 10


def test_permission_error_names_the_variable_and_role(
    sqlite_url: str, fake: FakeGA4, monkeypatch
) -> None:
    monkeypatch.setenv("GA4_TOKEN", "ya29.expired")
    with pytest.raises(SourceError) as caught:
        sync_source(store.open_store(sqlite_url), source(fake))
    message = str(caught.value)
    assert "HTTP 401: UNAUTHENTICATED" in message and "check GA4_TOKEN" in message
    assert "Viewer role" in message
    assert "set GA4_CLIENT_ID, GA4_CLIENT_SECRET and GA4_REFRESH_TOKEN" in message  # renewal


def test_expired_token_is_renewed_on_401_and_every_row_stored_once(
    store_url: str, fake: FakeGA4, monkeypatch
) -> None:
    oauth_client(monkeypatch)
    fake.token_uses = 2  # each token answers two pages, then Google refuses it
    engine = store.open_store(store_url)
    traffic = source(fake, page_size=7, reports=["traffic"])

    assert sync_source(engine, traffic) == {"traffic": 5 * PER_DAY["traffic"]}
    rows = stored(engine)
    assert rows.index.is_unique and len(rows) == 5 * PER_DAY["traffic"]
    # 6 pages of 7 rows: tokens answer pages 1-2, 3-4 and 5-6; pages 3 and 5 are refused once
    assert [r["offset"] for r in fake.requests] == ["0", "7", "14", "14", "21", "28", "28", "35"]
    assert len(fake.token_requests) == 3
    assert fake.token_requests[0] == {
        "grant_type": "refresh_token",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "refresh_token": REFRESH_TOKEN,
    }


def test_token_is_renewed_before_its_expires_in_runs_out(
    sqlite_url: str, fake: FakeGA4, monkeypatch
) -> None:
    oauth_client(monkeypatch)
    fake.expires_in = 3  # seconds, renewed after 1.5; pages go out 0.9 s apart
    engine = store.open_store(sqlite_url)
    traffic = source(fake, page_size=7, reports=["traffic"], rate_limit=[1, 0.9])

    assert sync_source(engine, traffic) == {"traffic": 5 * PER_DAY["traffic"]}
    assert len(fake.requests) == 6  # no page was refused
    assert len(fake.token_requests) >= 2


def test_expires_in_sent_as_a_string_is_read_as_seconds(
    sqlite_url: str, fake: FakeGA4, httpserver: HTTPServer, monkeypatch
) -> None:
    oauth_client(monkeypatch)
    answer = {"access_token": TOKEN, "expires_in": "3599", "token_type": "Bearer"}
    httpserver.expect_oneshot_request("/token", method="POST").respond_with_json(answer)

    written = sync_source(store.open_store(sqlite_url), source(fake, reports=["traffic"]))

    assert written == {"traffic": 5 * PER_DAY["traffic"]} and fake.token_requests == []


def test_a_successful_answer_without_a_token_is_refused_without_echoing_it(
    sqlite_url: str, fake: FakeGA4, httpserver: HTTPServer, monkeypatch
) -> None:
    oauth_client(monkeypatch)
    answer = {"refresh_token": "1//0gRotatedSecret", "token_type": "Bearer"}
    httpserver.expect_oneshot_request("/token", method="POST").respond_with_json(answer)

    with pytest.raises(ConfigError) as caught:
        sync_source(store.open_store(sqlite_url), source(fake, reports=["traffic"]))

    assert "(HTTP 200: no access_token in the answer)" in str(caught.value)
    assert "1//0gRotatedSecret" not in str(caught.value)


def test_refused_refresh_token_names_source_and_variables_never_the_secrets(
    sqlite_url: str, fake: FakeGA4, monkeypatch, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    revoked = "1//0gRevokedRefreshToken-x"
    oauth_client(monkeypatch, revoked)
    with pytest.raises(ConfigError) as caught:
        sync_source(store.open_store(sqlite_url), source(fake))

    message = str(caught.value)
    assert message.startswith(f"sources.web: the OAuth token endpoint {fake.url}/token ")
    assert "(HTTP 400: invalid_grant: Token has been expired or revoked.)" in message
    assert "Check GA4_CLIENT_ID, GA4_CLIENT_SECRET and GA4_REFRESH_TOKEN" in message
    assert len(fake.token_requests) == 1 and not fake.requests
    assert "HTTP Request: POST" in caplog.text
    for secret in (revoked, CLIENT_SECRET):
        assert secret not in message and secret not in caplog.text


@pytest.mark.prefect
def test_ingest_does_not_retry_a_refused_refresh_token(fake: FakeGA4, tmp_path: Path) -> None:
    options = {"property_id": PROPERTY, "start_date": FIRST.isoformat(), "base_url": fake.url}
    options["token_url"] = f"{fake.url}/token"
    config = {"sources": [{"name": "web", "kind": "ga4", "options": options | FAST}]}
    (tmp_path / "cxloop.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    revoked = "1//0gRevokedRefreshToken-x"
    env = {k: v for k, v in os.environ.items() if k != "GA4_TOKEN"}
    env |= {"GA4_CLIENT_ID": CLIENT_ID, "GA4_CLIENT_SECRET": CLIENT_SECRET}
    cxloop = str(Path(sys.executable).parent / "cxloop")
    result = subprocess.run(
        [cxloop, "ingest"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=env | {"GA4_REFRESH_TOKEN": revoked},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2 and "Check GA4_CLIENT_ID" in result.stderr, output
    # One request per stream (traffic, funnel) and no retry: waiting will not fix it.
    assert len(fake.token_requests) == 2 and "Retry" not in output
    assert revoked not in output and CLIENT_SECRET not in output


def test_config_errors(fake: FakeGA4, monkeypatch) -> None:
    with pytest.raises(ConfigError, match="page_size 1–250,000"):
        source(fake, page_size=250_001)
    with pytest.raises(ConfigError, match="start_date must be a date"):
        source(fake, start_date="30daysAgo")
    with pytest.raises(ConfigError, match="property_id"):
        source(fake, property_id="properties/1")
    monkeypatch.setenv("GA4_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("GA4_CLIENT_SECRET", CLIENT_SECRET)
    with pytest.raises(
        ConfigError, match=r"sources\.web: set GA4_REFRESH_TOKEN to a refresh token"
    ):
        source(fake)
