"""Typeform connector against a fake Responses API: answers by ref into one row per score kind,
hidden-field identity, `before` paging, `since` incremental sync, rejected scores, errors. The
checks every vendor shares are in test_vendor_contract.py."""

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
from connectors.typeform import TypeformSource
from flows.sync import sync_source
from tasks import store
from tasks.mapping import to_canonical
from tests.fakes.typeform import FakeTypeform, answer, error

TOKEN = "tfp_9f8e7d6c5b4a39281706f5e4d3c2b1a0"
FORM = "aBcD12"
QUESTIONS = {"nps": "nps_q", "csat": "csat_q", "ces": "ces_q", "comment": "why", "csat_scale": 5}
FAST = {"backoff_base": 0.01, "max_wait": 5.0, "timeout": 2.0, "rate_limit": [1000, 1]}
START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def fake(httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTypeform]:
    monkeypatch.setenv("TYPEFORM_TOKEN", TOKEN)
    typeform = FakeTypeform(TOKEN)
    yield typeform.serve(httpserver)


def seed(fake: FakeTypeform, count: int, start: datetime = START) -> list[str]:
    """`count` responses a minute apart, each with NPS, CSAT and a comment."""
    return [
        fake.add(
            FORM,
            start + timedelta(minutes=i),
            [
                answer("nps_q", "number", i % 11, "nps"),
                answer("csat_q", "number", i % 5 + 1),
                answer("why", "text", f"comment {i}", "long_text"),
            ],
            {"customer_id": f"c{i}"},
        )
        for i in range(count)
    ]


def source(fake: FakeTypeform, **options: Any) -> TypeformSource:
    options = {"forms": [{"id": FORM, "survey": "post-purchase"}], "questions": QUESTIONS} | options
    return TypeformSource(name="surveys", base_url=fake.url, **FAST, **options)


def stored(engine: Engine) -> pd.DataFrame:
    return store.read_frame(engine, store.SurveyResponse).set_index("source_id").sort_index()


def test_one_answer_set_gives_a_row_per_score_kind(store_url: str, fake: FakeTypeform) -> None:
    key = fake.add(
        FORM,
        START,
        [
            answer("nps_q", "number", 9, "nps"),
            answer("csat_q", "choice", {"label": "4"}, "multiple_choice"),
            answer("ces_q", "number", 2),
            answer("why", "text", "Быстрая доставка", "long_text"),
            answer("other", "text", "ignored", "short_text"),
        ],
        {"customer_id": "crm-42", "channel": "email"},
    )
    engine = store.open_store(store_url)

    assert sync_source(engine, source(fake)) == {"post-purchase": 3}

    rows = stored(engine)
    assert list(rows.index) == [f"{key}:ces", f"{key}:csat", f"{key}:nps"]
    assert rows["kind"].tolist() == ["ces", "csat", "nps"]
    assert rows["score"].tolist() == [2.0, 4.0, 9.0]
    assert set(rows["comment"]) == {"Быстрая доставка"}
    assert set(rows["customer_id"]) == {"crm-42"} and set(rows["channel"]) == {"email"}
    assert set(rows["survey"]) == {"post-purchase"}
    assert set(rows["submitted_at"]) == {pd.Timestamp("2026-03-01 09:00")}


def test_hidden_email_becomes_its_hash_and_fields_match_by_id(fake: FakeTypeform) -> None:
    fake.add(
        FORM,
        START,
        [answer("nps_q", "number", 10, "nps")],
        {"email": " Olga@Example.COM "},
    )
    questions = {"nps": "id_nps_q"}  # a field id instead of its ref
    stream = source(fake, questions=questions).streams()[0]
    (page,) = stream.read({})
    rows = to_canonical("survey_response", page.records, "test")

    assert rows["email_hash"].tolist() == [hashlib.sha256(b"olga@example.com").hexdigest()]
    assert "email" not in rows.columns and rows["customer_id"].isna().all()
    assert rows["score"].tolist() == [10.0]


def test_pages_back_by_before_token_and_resumes_after_a_crash(
    store_url: str, fake: FakeTypeform
) -> None:
    keys = seed(fake, 35)
    fake.plan(range(3, 10), error(500, "INTERNAL_ERROR", "boom"))
    engine = store.open_store(store_url)
    with pytest.raises(SourceError, match=r"source surveys, stream post-purchase, page 3"):
        sync_source(engine, source(fake, page_size=10, max_retries=2))
    assert len(stored(engine)) == 2 * 20
    cursor = store.read_cursor(engine, "surveys", "post-purchase")
    assert cursor["before"] == keys[15]  # newest first: page 2 ends with the 20th newest
    fake.planned.clear()
    fake.requests.clear()

    assert sync_source(engine, source(fake, page_size=10)) == {"post-purchase": 2 * 15}

    assert fake.requests[0][1] == {"page_size": "10", "before": keys[15]}
    assert [q.get("before") for _, q in fake.requests] == [keys[15], keys[5]]
    rows = stored(engine)
    assert rows.index.is_unique and len(rows) == 2 * 35
    assert store.read_cursor(engine, "surveys", "post-purchase") == {
        "since": "2026-03-01T09:29:00Z"
    }


def test_second_sync_asks_only_since_the_latest_response(
    store_url: str, fake: FakeTypeform
) -> None:
    seed(fake, 12)
    engine = store.open_store(store_url)
    sync_source(engine, source(fake, page_size=5))
    later = seed(fake, 3, START + timedelta(hours=2))
    fake.requests.clear()

    sync_source(engine, source(fake, page_size=20))

    assert [q for _, q in fake.requests] == [{"page_size": "20", "since": "2026-03-01T09:06:00Z"}]
    rows = stored(engine)
    assert rows.index.is_unique and len(rows) == 2 * 15
    assert {f"{k}:nps" for k in later} <= set(rows.index)


def test_out_of_scale_scores_reject_the_response_and_load_the_rest(
    store_url: str, fake: FakeTypeform, caplog: pytest.LogCaptureFixture
) -> None:
    seed(fake, 3)
    high = fake.add(FORM, START, [answer("nps_q", "number", 11, "nps")], {"customer_id": "x"})
    six = fake.add(
        FORM,
        START,
        [answer("nps_q", "number", 8, "nps"), answer("csat_q", "number", 6)],
        {"customer_id": "y"},
    )
    engine = store.open_store(store_url)
    surveys = source(fake)

    assert sync_source(engine, surveys) == {"post-purchase": 6}

    assert sorted(surveys.streams()[0].rejected, key=lambda r: r.reason) == sorted(
        [
            Rejection(f"response {six}", "csat score 6 is outside 1–5"),
            Rejection(f"response {high}", "nps score 11 is outside 0–10"),
        ],
        key=lambda r: r.reason,
    )
    assert not set(stored(engine)["customer_id"]) & {"x", "y"}
    assert "stream post-purchase, page 1: rejected 2 responses, the rest loaded" in caplog.text


@pytest.mark.parametrize(
    ("body", "problem"),
    [('{"total_items": 3, "items": {}}', "documented shape")],
)
def test_malformed_page_names_the_page_and_commits_nothing_of_it(
    store_url: str, fake: FakeTypeform, body: str, problem: str
) -> None:
    seed(fake, 6)
    fake.plan([2], Response(body, 200, content_type="application/json"))
    engine = store.open_store(store_url)
    with pytest.raises(SourceError) as caught:
        sync_source(engine, source(fake, page_size=3))
    message = str(caught.value)
    assert "source surveys, stream post-purchase, page 2" in message
    assert problem in message and "nothing of it was saved" in message
    assert len(stored(engine)) == 2 * 3


def test_bad_token_names_the_variable_and_scope_and_hides_the_token(
    fake: FakeTypeform, monkeypatch: pytest.MonkeyPatch, sqlite_url: str
) -> None:
    monkeypatch.setenv("TYPEFORM_TOKEN", "tfp_revoked_token")
    with pytest.raises(SourceError) as caught:
        sync_source(store.open_store(sqlite_url), source(fake))
    message = str(caught.value)
    assert "HTTP 401: AUTHENTICATION_FAILED" in message and "check TYPEFORM_TOKEN" in message
    assert "responses:read" in message


def test_config_errors(fake: FakeTypeform, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="page_size must be 1–1000"):
        source(fake, page_size=1001)
    with pytest.raises(ConfigError, match=r"forms\[0\]: questions: .*'nsp'"):
        source(fake, questions={"nsp": "x"})
    with pytest.raises(ConfigError, match="questions name no score field"):
        source(fake, questions={"comment": "why"})
    monkeypatch.delenv("TYPEFORM_TOKEN")
    with pytest.raises(ConfigError, match=r"sources\.surveys: set TYPEFORM_TOKEN"):
        source(fake)


def test_hidden_ticket_id_lands_in_the_response_and_field_map_renames_it(
    store_url: str, fake: FakeTypeform
) -> None:
    about = fake.add(FORM, START, [answer("nps_q", "number", 3, "nps")], {"ticket_id": "T-1"})
    other = fake.add(FORM, START, [answer("nps_q", "number", 9, "nps")], {"case": "T-2"})
    engine = store.open_store(store_url)

    sync_source(engine, source(fake))
    assert stored(engine).loc[f"{about}:nps", "ticket_id"] == "T-1"

    sync_source(engine, source(fake, field_map={"hidden.case": "ticket_id"}))
    rows = stored(engine)
    assert rows.loc[f"{other}:nps", "ticket_id"] == "T-2"  # the override wins
    assert pd.isna(rows.loc[f"{about}:nps", "ticket_id"])


def test_default_pace_keeps_a_multi_page_sync_within_typeforms_rate(
    sqlite_url: str, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TYPEFORM_TOKEN", TOKEN)
    strict = FakeTypeform(TOKEN, per_second=2).serve(httpserver)
    keys = seed(strict, 12)
    engine = store.open_store(sqlite_url)
    paced = {k: v for k, v in FAST.items() if k != "rate_limit"}  # the default pace
    surveys = TypeformSource(
        name="surveys", base_url=strict.url, forms=[FORM], questions=QUESTIONS, page_size=2, **paced
    )

    assert sync_source(engine, surveys) == {FORM: 2 * 12}
    assert strict.too_many == 0 and len(strict.requests) == 6
    assert len(stored(engine)) == 2 * len(keys)

    # The fake does refuse a client that sends faster than Typeform allows.
    hasty = TypeformSource(
        name="hasty", base_url=strict.url, forms=[FORM], questions=QUESTIONS, page_size=1,
        **paced | {"rate_limit": [1000, 1], "backoff_base": 0.3, "max_retries": 8},
    )  # fmt: skip
    sync_source(store.open_store(f"{sqlite_url}-hasty"), hasty)
    assert strict.too_many > 0
