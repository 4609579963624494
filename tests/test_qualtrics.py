"""Qualtrics connector against a fake export API: start, poll and download an export, pages of
responses by export key, embedded-data identity, incremental `startDate`, a crash resumed, a
failed or malformed export, rejected scores, a rate-limited export start. The checks every
vendor shares are in test_vendor_contract.py."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import re
import time
import zipfile
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
from connectors.qualtrics import QualtricsSource
from flows.sync import sync_source
from tasks import store
from tasks.loader import CxData
from tasks.mapping import to_canonical
from tests.fakes.qualtrics import FakeQualtrics, answer, choice, descriptive, nps, text_entry

TOKEN = "qx_8Zt3mK9pQ2vN7wL4rB6yH1cF5dJ0sAe"
SURVEY = "SV_8dKx3vQz1Lm2Np4"
CSAT = ["Very dissatisfied", "Dissatisfied", "Neutral", "Satisfied", "Very satisfied"]
QUESTIONS = {"nps": "QID1", "csat": "QID2", "comment": "QID3_TEXT"}
FAST = {"backoff_base": 0.01, "max_wait": 5.0, "timeout": 2.0, "rate_limit": [1000, 1]}
START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def fake(httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeQualtrics]:
    monkeypatch.setenv("QUALTRICS_TOKEN", TOKEN)
    qualtrics = FakeQualtrics(TOKEN)
    qualtrics.survey(
        SURVEY,
        "Post-purchase NPS",
        [
            descriptive("QID4", "Thank you for your order!"),
            nps("QID1", "<div>How likely are you to <b>recommend</b> us?</div>"),
            choice("QID2", "How satisfied are you with the order?", CSAT),
            text_entry("QID3", "What could we do better?"),
        ],
    )
    yield qualtrics.serve(httpserver)


def seed(fake: FakeQualtrics, count: int, start: datetime = START) -> list[str]:
    """`count` responses a minute apart, each with NPS, CSAT and a comment."""
    return [
        fake.add(
            SURVEY,
            start + timedelta(minutes=i),
            {"QID1": i % 11, "QID2": i % 5 + 1, "QID3_TEXT": f"comment {i}"},
            {"customer_id": f"c{i}"},
        )
        for i in range(count)
    ]


def make(fake: FakeQualtrics, **options: Any) -> QualtricsSource:
    defaults = {
        "surveys": [{"id": SURVEY, "survey": "post-purchase"}],
        "questions": QUESTIONS,
        "base_url": fake.url,
        "poll_interval": 0,
    }
    return QualtricsSource(name="qx", **FAST | defaults | options)


def stored(engine: Engine) -> pd.DataFrame:
    return store.read_frame(engine, store.SurveyResponse).set_index("source_id").sort_index()


def zipped(name: str, content: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, content)
    return buffer.getvalue()


def test_export_polled_until_complete_gives_a_row_per_score_kind(
    store_url: str, fake: FakeQualtrics
) -> None:
    fake.polls_needed = 3
    key = fake.add(
        SURVEY,
        START,
        {"QID1": 9, "QID2": 4, "QID3_TEXT": "Долго ждал курьера"},
        {"customer_id": "crm-42", "channel": "email"},
    )
    engine = store.open_store(store_url)

    assert sync_source(engine, make(fake)) == {"post-purchase": 2}

    base = f"/API/v3/surveys/{SURVEY}/export-responses"
    calls = [
        (method, re.sub(r"ES_\w+|[\w-]+-def", "ID", path)) for method, path, _ in fake.requests
    ]
    assert calls == [("POST", base)] + [("GET", f"{base}/ID")] * 4 + [("GET", f"{base}/ID/file")]
    assert fake.export_bodies() == [{"format": "json"}]
    rows = stored(engine)
    assert list(rows.index) == [f"{key}:csat", f"{key}:nps"]
    assert rows["score"].tolist() == [4.0, 9.0]
    assert set(rows["comment"]) == {"Долго ждал курьера"}
    assert set(rows["customer_id"]) == {"crm-42"} and set(rows["channel"]) == {"email"}
    assert set(rows["submitted_at"]) == {pd.Timestamp("2026-03-01 09:00")}


def test_failed_export_names_source_survey_and_progress_and_saves_nothing(
    store_url: str, fake: FakeQualtrics
) -> None:
    seed(fake, 3)
    fake.fail_exports = True
    engine = store.open_store(store_url)

    with pytest.raises(SourceError) as caught:
        sync_source(engine, make(fake))

    (progress_id,) = fake.exports
    message = str(caught.value)
    assert message.startswith(f"source qx, stream post-purchase, export {progress_id}: ")
    assert f"survey {SURVEY} (progress {progress_id} failed: RCE_2.1: The export" in message
    assert "nothing was saved" in message and TOKEN not in message
    assert stored(engine).empty and store.read_cursor(engine, "qx", "post-purchase") == {}


def test_export_still_running_at_export_timeout_is_a_clear_error(fake: FakeQualtrics) -> None:
    seed(fake, 3)
    fake.polls_needed = 10_000
    stream = make(fake, poll_interval=0.01, export_timeout=0.2).streams()[0]

    with pytest.raises(SourceError, match=r"still \d+(\.\d+)?% done after 0.2 s.*export_timeout"):
        next(stream.read({}))
    assert 3 <= len(fake.requests) <= 25  # polled at the interval, then gave up


def crash_after(engine: Engine, source: QualtricsSource, pages: int) -> None:
    """What a sync commits before its process is killed once `pages` pages are stored."""
    stream = source.streams()[0]
    read = stream.read(store.read_cursor(engine, source.name, stream.name))
    for page in itertools.islice(read, pages):
        rows = to_canonical(stream.table, page.records, f"page {page.number}")
        store.load_page(engine, store.SurveyResponse, rows, source.name, stream.name, page.cursor)


def test_pages_the_export_and_resumes_after_a_crash_without_gaps_or_duplicates(
    store_url: str, fake: FakeQualtrics
) -> None:
    keys = seed(fake, 25)
    engine = store.open_store(store_url)
    crash_after(engine, make(fake, page_size=10), pages=2)
    assert len(stored(engine)) == 2 * 20
    cursor = store.read_cursor(engine, "qx", "post-purchase")
    assert cursor == {"after": ["2026-03-01T09:19:00Z", keys[19]]}

    assert sync_source(engine, make(fake, page_size=10)) == {"post-purchase": 2 * 5}

    assert fake.export_bodies() == [{"format": "json"}] * 2
    rows = stored(engine)
    assert rows.index.is_unique and {k.split(":")[0] for k in rows.index} == set(keys)
    assert store.read_cursor(engine, "qx", "post-purchase") == {"since": "2026-03-01T09:19:00Z"}


def test_second_sync_exports_only_since_the_latest_response(
    store_url: str, fake: FakeQualtrics
) -> None:
    seed(fake, 12)
    engine = store.open_store(store_url)
    sync_source(engine, make(fake, page_size=5))
    later = seed(fake, 3, START + timedelta(hours=2))

    # 3 new and the 6 recorded from 09:06 (the overlap) upserted again
    assert sync_source(engine, make(fake)) == {"post-purchase": 2 * 9}

    assert fake.export_bodies()[-1] == {"format": "json", "startDate": "2026-03-01T09:06:00Z"}
    rows = stored(engine)
    assert rows.index.is_unique and len(rows) == 2 * 15
    assert {f"{k}:nps" for k in later} <= set(rows.index)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"PK\x03\x04 truncated", "BadZipFile"),
        (zipped("responses.csv", "responseId,QID1\nR_1,9\n"), "ValueError"),
        (zipped("x.json", json.dumps({"result": []})), "KeyError: 'responses'"),
        (zipped("x.json", json.dumps({"responses": [{"responseId": "R_1"}]})), "KeyError"),
    ],
)
def test_malformed_export_file_names_the_file_and_saves_nothing(
    store_url: str, fake: FakeQualtrics, content: bytes, problem: str
) -> None:
    seed(fake, 3)
    fake.polls_needed = 0
    fake.plan([3], Response(content, 200, content_type="application/zip"))  # POST, poll, file
    engine = store.open_store(store_url)

    with pytest.raises(SourceError) as caught:
        sync_source(engine, make(fake))

    message = str(caught.value)
    assert message.startswith("source qx, stream post-purchase, export file ")
    assert problem in message and "nothing of it was saved" in message
    assert stored(engine).empty and store.read_cursor(engine, "qx", "post-purchase") == {}


def test_out_of_scale_scores_reject_the_response_and_load_the_rest(
    store_url: str, fake: FakeQualtrics, caplog: pytest.LogCaptureFixture
) -> None:
    seed(fake, 3)
    eleven = fake.add(SURVEY, START, {"QID1": 11}, {"customer_id": "x"})
    six = fake.add(SURVEY, START, {"QID1": 8, "QID2": 6}, {"customer_id": "y"})
    engine = store.open_store(store_url)
    surveys = make(fake)

    assert sync_source(engine, surveys) == {"post-purchase": 6}

    assert sorted(surveys.streams()[0].rejected, key=lambda r: r.where) == sorted(
        [
            Rejection(f"response {six}", "csat score 6 is outside 1–5"),
            Rejection(f"response {eleven}", "nps score 11 is outside 0–10"),
        ],
        key=lambda r: r.where,
    )
    assert not set(stored(engine)["customer_id"]) & {"x", "y"}
    assert "stream post-purchase, page 1: rejected 2 responses, the rest loaded" in caplog.text


def test_embedded_data_joins_responses_to_customers(store_url: str, fake: FakeQualtrics) -> None:
    engine = store.open_store(store_url)
    customers = to_canonical(
        "customer",
        [
            {"source_id": "C1", "email": "anna@example.com"},
            {"source_id": "C2", "email": "olga@example.com"},
        ],
        "crm",
    )
    store.load_page(engine, store.Customer, customers, "crm", "contacts", {})
    fake.add(SURVEY, START, {"QID1": 10}, {"customer_id": "C1"})
    by_email = fake.add(SURVEY, START, {"QID1": 2}, {"email": "OLGA@example.com "})
    fake.add(SURVEY, START, {"QID1": 6}, {"email": "who@example.com"})

    sync_source(engine, make(fake, questions={"nps": "QID1"}))

    rows = stored(engine)
    assert (
        rows.loc[f"{by_email}:nps", "email_hash"] == hashlib.sha256(b"olga@example.com").hexdigest()
    )
    data = CxData.from_store(engine)
    joined = data.responses.set_index("score")["customer_id"]  # each respondent scored apart
    assert joined[10.0] == "C1" and joined[2.0] == "C2"
    assert pd.isna(joined[6.0]) and data.unmatched()["responses"] == 1


def test_comment_may_name_the_question_instead_of_its_text_key(fake: FakeQualtrics) -> None:
    key = fake.add(SURVEY, START, {"QID1": 7, "QID3_TEXT": "ok"})
    (page,) = make(fake, questions={"nps": "QID1", "comment": "QID3"}).streams()[0].read({})
    assert [(r["source_id"], r["comment"]) for r in page.records] == [(f"{key}:nps", "ok")]


def test_rate_limited_export_start_waits_then_succeeds(
    store_url: str, fake: FakeQualtrics, caplog: pytest.LogCaptureFixture
) -> None:
    seed(fake, 2)
    busy = answer(status=429, error=("TOO_MANY_REQUESTS", "Too many requests, retry later."))
    busy.headers["Retry-After"] = "1"
    fake.plan([1], busy)
    engine = store.open_store(store_url)
    started = time.monotonic()

    assert sync_source(engine, make(fake)) == {"post-purchase": 2 * 2}

    assert time.monotonic() - started >= 0.9
    assert len(fake.export_bodies()) == 2
    assert "HTTP 429: TOO_MANY_REQUESTS: Too many requests" in caplog.text


def test_bad_token_names_the_variable_and_hides_the_token(
    fake: FakeQualtrics, monkeypatch: pytest.MonkeyPatch, sqlite_url: str
) -> None:
    monkeypatch.setenv("QUALTRICS_TOKEN", "qx_revoked_token_0000")
    with pytest.raises(SourceError) as caught:
        sync_source(store.open_store(sqlite_url), make(fake))
    message = str(caught.value)
    assert "export: Qualtrics answered HTTP 401: AUTH_1.2: Invalid API token" in message
    assert "check QUALTRICS_TOKEN" in message and "Access API permission" in message


def test_config_errors(fake: FakeQualtrics, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="give `datacenter`"):
        make(fake, base_url="")
    with pytest.raises(ConfigError, match="give `datacenter`"):
        make(fake, base_url="", datacenter="fra1.example.com/x")
    with pytest.raises(ConfigError, match="poll_interval ≥ 0"):
        make(fake, poll_interval=-1)
    with pytest.raises(ConfigError, match=r"surveys\[0\]: questions name no score field"):
        make(fake, questions={"comment": "QID3_TEXT"})
    assert make(fake, base_url="", datacenter="fra1").streams()[0].survey_id == SURVEY
    monkeypatch.delenv("QUALTRICS_TOKEN")
    with pytest.raises(ConfigError, match=r"sources\.qx: set QUALTRICS_TOKEN"):
        make(fake)


def test_embedded_ticket_id_lands_in_the_response_and_field_map_renames_it(
    store_url: str, fake: FakeQualtrics
) -> None:
    fake.add(SURVEY, START, {"QID1": 4}, {"customer_id": "c1", "ticket_id": "T-1001"})
    fake.add(SURVEY, START, {"QID1": 9}, {"CaseNumber": "T-2002"})
    about, other = (r["responseId"] for r in fake.responses[SURVEY])
    engine = store.open_store(store_url)

    sync_source(engine, make(fake))
    rows = stored(engine)
    assert rows.loc[f"{about}:nps", "ticket_id"] == "T-1001"
    assert pd.isna(rows.loc[f"{other}:nps", "ticket_id"])

    sync_source(engine, make(fake, field_map={"values.CaseNumber": "ticket_id"}))
    rows = stored(engine)
    assert rows.loc[f"{other}:nps", "ticket_id"] == "T-2002"  # the override wins
    assert pd.isna(rows.loc[f"{about}:nps", "ticket_id"])
