"""SurveyMonkey connector against a fake v3 API: choices resolved through `/details`, a row per
score kind, custom-variable identity, `links.next` paging newest change first, incremental
`start_modified_at`, rate-limit headers and 429s, rejected scores, errors. The checks every
vendor shares are in test_vendor_contract.py."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest
from pytest_httpserver import HTTPServer
from sqlalchemy.engine import Engine
from werkzeug import Response

from connectors.base import Rejection
from connectors.errors import ConfigError, SourceError
from connectors.surveymonkey import SurveyMonkeySource
from flows.sync import sync_source
from tasks import store
from tasks.loader import CxData
from tasks.mapping import to_canonical
from tests.fakes.surveymonkey import (
    FakeSurveyMonkey,
    error,
    nps_question,
    open_question,
    rating_question,
)

TOKEN = "sm_live_7c1d9e3b5a2f4e6d8c0b1a3f5e7d9c2b"
SURVEY = "412345678"
CSAT = ["Very dissatisfied", "Dissatisfied", "Neutral", "Satisfied", "Very satisfied"]
QUESTIONS = {"nps": "901", "csat": "902", "comment": "903"}
FAST = {"backoff_base": 0.01, "max_wait": 5.0, "timeout": 2.0, "rate_limit": [1000, 1]}
START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def fake(httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSurveyMonkey]:
    monkeypatch.setenv("SURVEYMONKEY_TOKEN", TOKEN)
    surveymonkey = FakeSurveyMonkey(TOKEN)
    surveymonkey.survey(
        SURVEY,
        "After delivery",
        [
            nps_question("901", "How likely are you to recommend us?"),
            rating_question("902", "How satisfied are you with the delivery?", CSAT),
            open_question("903", "What should we <b>improve</b>?"),
        ],
    )
    yield surveymonkey.serve(httpserver)


def seed(fake: FakeSurveyMonkey, count: int, start: datetime = START) -> list[str]:
    """`count` responses a minute apart, each with NPS, CSAT and a comment."""
    return [
        fake.add(
            SURVEY,
            start + timedelta(minutes=i),
            {"901": i % 11, "902": CSAT[i % 5], "903": f"comment {i}"},
            {"customer_id": f"c{i}"},
        )
        for i in range(count)
    ]


def make(fake: FakeSurveyMonkey, **options: Any) -> SurveyMonkeySource:
    defaults = {"surveys": [{"id": SURVEY, "survey": "after-delivery"}], "questions": QUESTIONS}
    return SurveyMonkeySource(name="sm", base_url=fake.url, **FAST | defaults | options)


def stored(engine: Engine) -> pd.DataFrame:
    return store.read_frame(engine, store.SurveyResponse).set_index("source_id").sort_index()


def bulk(fake: FakeSurveyMonkey) -> list[dict[str, str]]:
    return [query for path, query, _ in fake.requests if path.endswith("/responses/bulk")]


def test_choices_resolve_through_details_into_a_row_per_score_kind(
    store_url: str, fake: FakeSurveyMonkey
) -> None:
    key = fake.add(
        SURVEY,
        START,
        {"901": 9, "902": "Satisfied", "903": "Курьер опоздал"},
        {"customer_id": "crm-42", "channel": "email"},
    )
    engine = store.open_store(store_url)

    assert sync_source(engine, make(fake)) == {"after-delivery": 2}

    rows = stored(engine)
    assert list(rows.index) == [f"{key}:csat", f"{key}:nps"]
    assert rows["score"].tolist() == [4.0, 9.0]  # "Satisfied" weighs 4 of 5
    assert set(rows["comment"]) == {"Курьер опоздал"}
    assert set(rows["customer_id"]) == {"crm-42"} and set(rows["channel"]) == {"email"}
    assert set(rows["survey"]) == {"after-delivery"}
    assert set(rows["submitted_at"]) == {pd.Timestamp("2026-03-01 09:00")}


def test_follows_links_next_newest_first_and_reads_details_once(
    store_url: str, fake: FakeSurveyMonkey
) -> None:
    seed(fake, 25)
    engine = store.open_store(store_url)

    assert sync_source(engine, make(fake, page_size=10)) == {"after-delivery": 2 * 25}

    paths = [path for path, _, _ in fake.requests]
    assert paths.count(f"/v3/surveys/{SURVEY}/details") == 1 and paths[0].endswith("/details")
    assert [q["page"] for q in bulk(fake)] == ["1", "2", "3"]
    assert {(q["sort_by"], q["sort_order"], q["status"], q["per_page"]) for q in bulk(fake)} == {
        ("date_modified", "DESC", "completed", "10")
    }
    assert "start_modified_at" not in bulk(fake)[0]
    assert store.read_cursor(engine, "sm", "after-delivery") == {"since": "2026-03-01T09:19:00"}


def test_resumes_after_a_crash_mid_pagination(store_url: str, fake: FakeSurveyMonkey) -> None:
    seed(fake, 35)
    # Request 1 reads the details, 2 and 3 pages 1 and 2; page 3 fails every attempt.
    fake.plan(range(4, 10), error(500, "1050", "Internal Server Error", "Try again later."))
    engine = store.open_store(store_url)
    with pytest.raises(SourceError, match=r"source sm, stream after-delivery, page 3"):
        sync_source(engine, make(fake, page_size=10, max_retries=2))
    assert len(stored(engine)) == 2 * 20
    assert store.read_cursor(engine, "sm", "after-delivery") == {
        "page": 3,
        "high": "2026-03-01T09:34:00Z",
    }
    fake.planned.clear()
    fake.requests.clear()

    assert sync_source(engine, make(fake, page_size=10)) == {"after-delivery": 2 * 15}

    assert [q["page"] for q in bulk(fake)] == ["3", "4"]
    rows = stored(engine)
    assert rows.index.is_unique and len(rows) == 2 * 35
    assert store.read_cursor(engine, "sm", "after-delivery") == {"since": "2026-03-01T09:29:00"}


def test_second_sync_asks_only_for_changes_since_the_latest_one(
    store_url: str, fake: FakeSurveyMonkey
) -> None:
    first = seed(fake, 12)
    engine = store.open_store(store_url)
    sync_source(engine, make(fake, page_size=5))
    later = seed(fake, 3, START + timedelta(hours=2))
    fake.modify(SURVEY, first[0], START + timedelta(hours=3))
    fake.requests.clear()

    # 3 new, 1 edited, and the 5 changed in the overlap (09:07–09:11) upserted again
    assert sync_source(engine, make(fake, page_size=20)) == {"after-delivery": 2 * 9}

    assert [q["start_modified_at"] for q in bulk(fake)] == ["2026-03-01T09:06:00"]
    rows = stored(engine)
    assert rows.index.is_unique and len(rows) == 2 * 15
    assert {f"{k}:nps" for k in [*later, first[0]]} <= set(rows.index)


def test_responses_changed_while_paging_are_read_again_never_lost(
    store_url: str, fake: FakeSurveyMonkey
) -> None:
    keys = seed(fake, 6)  # newest first: pages [5 4] [3 2] [1 0]
    # Before page 2: one response already read and one not yet read are edited; both move to
    # the front, so the rest shift to later pages (re-read) instead of earlier ones (skipped).
    fake.before(3, lambda: fake.modify(SURVEY, keys[4], START + timedelta(hours=1)))
    fake.before(3, lambda: fake.modify(SURVEY, keys[3], START + timedelta(hours=1)))
    engine = store.open_store(store_url)

    sync_source(engine, make(fake, page_size=2))
    first = {k.split(":")[0] for k in stored(engine).index}
    sync_source(engine, make(fake, page_size=2))

    assert first == set(keys) - {keys[3]}
    assert {k.split(":")[0] for k in stored(engine).index} == set(keys)


def test_rate_limit_headers_pause_until_the_window_resets(
    store_url: str, fake: FakeSurveyMonkey
) -> None:
    seed(fake, 5)
    fake.minute_limit, fake.window_seconds = 2, 1.0
    engine = store.open_store(store_url)

    assert sync_source(engine, make(fake, page_size=2)) == {"after-delivery": 2 * 5}

    # details, page 1 (0 calls left: pause for the reset), page 2, page 3 (pause again)
    times = [at for _, _, at in fake.requests]
    assert len(times) == 4
    assert times[2] - times[1] >= 0.9


def test_429_rate_limit_reached_waits_for_the_reset_then_succeeds(
    store_url: str, fake: FakeSurveyMonkey, caplog: pytest.LogCaptureFixture
) -> None:
    seed(fake, 4)
    fake.rate_limited([2], reset=1)
    engine = store.open_store(store_url)

    assert sync_source(engine, make(fake)) == {"after-delivery": 2 * 4}

    times = [at for _, _, at in fake.requests]
    assert len(times) == 3
    assert times[2] - times[1] >= 0.9  # the reset header, not the 0.01 s backoff
    assert "HTTP 429: 1040 Rate limit reached: Too many requests" in caplog.text


def test_spent_daily_allowance_stops_with_how_long_to_wait(
    store_url: str, fake: FakeSurveyMonkey
) -> None:
    seed(fake, 4)
    spent = error(429, "1040", "Rate limit reached", "Too many requests were made.")
    spent.headers.update(
        {"X-Ratelimit-App-Global-Day-Remaining": "0", "X-Ratelimit-App-Global-Day-Reset": "43200"}
    )
    fake.plan([2], spent)
    engine = store.open_store(store_url)

    with pytest.raises(SourceError) as caught:
        sync_source(engine, make(fake))

    assert "page 1: SurveyMonkey answered HTTP 429: 1040 Rate limit reached" in str(caught.value)
    assert "asks to wait 43200 s, more than max_wait (5 s)" in str(caught.value)
    assert len(fake.requests) == 2 and stored(engine).empty


@pytest.mark.parametrize(
    ("body", "problem"),
    [('{"data": {}, "page": 2}', "documented shape")],
)
def test_malformed_page_names_the_page_and_commits_nothing_of_it(
    store_url: str, fake: FakeSurveyMonkey, body: str, problem: str
) -> None:
    seed(fake, 9)
    fake.plan([3], Response(body, 200, content_type="application/json"))
    engine = store.open_store(store_url)
    with pytest.raises(SourceError) as caught:
        sync_source(engine, make(fake, page_size=3))
    message = str(caught.value)
    assert "source sm, stream after-delivery, page 2" in message
    assert problem in message and "nothing of it was saved" in message
    assert len(stored(engine)) == 2 * 3


def test_out_of_scale_or_unknown_answers_reject_the_response_and_load_the_rest(
    store_url: str, fake: FakeSurveyMonkey, caplog: pytest.LogCaptureFixture
) -> None:
    seven = ["1", "2", "3", "4", "5", "6", "7"]
    fake.survey(
        "555", "Support", [nps_question("911", "NPS"), rating_question("912", "CSAT", seven)]
    )
    kept = fake.add("555", START, {"911": 10, "912": "5"}, {"customer_id": "ok"})
    six = fake.add("555", START, {"911": 8, "912": "6"}, {"customer_id": "x"})
    gone = fake.add("555", START, {"911": 7}, {"customer_id": "y"})
    fake.responses["555"][-1]["pages"][0]["questions"][0]["answers"][0]["choice_id"] = "404"
    engine = store.open_store(store_url)
    surveys = make(fake, surveys=["555"], questions={"nps": "911", "csat": "912"})

    assert sync_source(engine, surveys) == {"555": 2}

    assert sorted(surveys.streams()[0].rejected, key=lambda r: r.where) == sorted(
        [
            Rejection(f"response {six}", "csat score 6 is outside 1–5"),
            Rejection(f"response {gone}", "nps answer 'unknown choice 404' is not a number"),
        ],
        key=lambda r: r.where,
    )
    assert list(stored(engine).index) == [f"{kept}:csat", f"{kept}:nps"]
    assert "stream 555, page 1: rejected 2 responses, the rest loaded" in caplog.text


def test_custom_variables_join_responses_to_customers(
    store_url: str, fake: FakeSurveyMonkey
) -> None:
    engine = store.open_store(store_url)
    customers = to_canonical(
        "customer",
        [
            {"source_id": "C1", "email": "anna@example.com", "segment": "new"},
            {"source_id": "C2", "email": "olga@example.com", "segment": "vip"},
        ],
        "crm",
    )
    store.load_page(engine, store.Customer, customers, "crm", "contacts", {})
    fake.add(SURVEY, START, {"901": 10}, {"customer_id": "C1"})
    by_email = fake.add(SURVEY, START, {"901": 3}, {"email": " Olga@Example.COM "})
    fake.add(SURVEY, START, {"901": 7}, {"email": "who@example.com"})

    sync_source(engine, make(fake))

    rows = stored(engine)
    assert (
        rows.loc[f"{by_email}:nps", "email_hash"] == hashlib.sha256(b"olga@example.com").hexdigest()
    )
    assert pd.isna(rows.loc[f"{by_email}:nps", "customer_id"])
    data = CxData.from_store(engine)
    joined = data.responses.set_index("score")["customer_id"]  # each respondent scored apart
    assert joined[10.0] == "C1" and joined[3.0] == "C2"
    assert pd.isna(joined[7.0]) and data.unmatched()["responses"] == 1


def test_bad_token_names_the_variable_and_scopes_and_hides_the_token(
    fake: FakeSurveyMonkey, monkeypatch: pytest.MonkeyPatch, sqlite_url: str
) -> None:
    monkeypatch.setenv("SURVEYMONKEY_TOKEN", "sm_revoked_token_1234")
    with pytest.raises(SourceError) as caught:
        sync_source(store.open_store(sqlite_url), make(fake))
    message = str(caught.value)
    assert "survey details: SurveyMonkey answered HTTP 401: 1011 Authorization Error" in message
    assert "check SURVEYMONKEY_TOKEN" in message and "responses_read_detail" in message


def test_config_errors(fake: FakeSurveyMonkey, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="page_size must be 1–100"):
        make(fake, page_size=101)
    with pytest.raises(ConfigError, match=r"surveys\[0\]: questions: .*'nsp'"):
        make(fake, questions={"nsp": "901"})
    with pytest.raises(ConfigError, match="give the question id of nps, csat or ces"):
        make(fake, questions={"comment": "903"})
    with pytest.raises(ConfigError, match="list the survey ids"):
        make(fake, surveys=[])
    monkeypatch.delenv("SURVEYMONKEY_TOKEN")
    with pytest.raises(ConfigError, match=r"sources\.sm: set SURVEYMONKEY_TOKEN"):
        make(fake)


def test_custom_variable_ticket_id_lands_in_the_response_and_field_map_renames_it(
    store_url: str, fake: FakeSurveyMonkey
) -> None:
    about = fake.add(SURVEY, START, {"901": 3}, {"customer_id": "c1", "ticket_id": "T-1001"})
    other = fake.add(SURVEY, START, {"901": 8}, {"case": "T-2002", "ticket_id": "ignored"})
    engine = store.open_store(store_url)

    sync_source(engine, make(fake))
    assert stored(engine).loc[f"{about}:nps", "ticket_id"] == "T-1001"

    sync_source(engine, make(fake, field_map={"custom_variables.case": "ticket_id"}))
    rows = stored(engine)
    assert rows.loc[f"{other}:nps", "ticket_id"] == "T-2002"  # the override wins
    assert pd.isna(rows.loc[f"{about}:nps", "ticket_id"])
