"""`cxloop listen` on loopback: signed Typeform, Usedesk, Jivo and amoCRM webhooks stored raw
before the acknowledgement and mapped like pulled records; forged ones refused and stored
nowhere; vendor retries stored once; a failed mapping kept and mapped after the fix; a
detractor after a contact raised as a Prefect event; a pull reconciling what webhooks gave."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pandas as pd
import pytest
import yaml
from prefect.events import Event
from prefect.events.clients import AssertingEventsClient
from prefect.events.worker import EventsWorker
from prefect.testing.fixtures import asserting_events_worker  # noqa: F401
from sqlalchemy.engine import Engine

from benchmarks import webhooks as benchmark
from connectors.jivo import chat_records
from connectors.usedesk import UsedeskSource
from connectors.webhooks import signed, typeform_body
from flows.listen import DEMO_FORMS, demo_webhooks, send_demo_webhooks
from flows.sync import sync_source
from tasks import store
from tests.fakes.usedesk import FakeUsedesk
from tests.fakes.webhooks import running_listen, until

SECRET = "tf-webhook-secret-5ee"
TOKEN = "ud0api0channel0token0f00d"
JIVO_TOKEN = "jivo-path-token-77"
AMO_TOKEN = "amo-query-token-31"
FORM = "nps-after-chat"
QUESTIONS = {"nps": "nps", "comment": "why"}


@pytest.fixture(autouse=True)
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CXLOOP_WEBHOOK_SECRET_SURVEYS", SECRET)
    monkeypatch.setenv("CXLOOP_WEBHOOK_SECRET_UD", TOKEN)
    monkeypatch.setenv("CXLOOP_WEBHOOK_SECRET_CHAT", JIVO_TOKEN)
    monkeypatch.setenv("CXLOOP_WEBHOOK_SECRET_AMO", AMO_TOKEN)
    monkeypatch.setenv("USEDESK_API_TOKEN", TOKEN)


@pytest.fixture(autouse=True)
def events(asserting_events_worker: EventsWorker) -> Callable[[], list[Event]]:  # noqa: F811
    """The Prefect events emitted so far (the worker's queue drained first)."""

    def emitted() -> list[Event]:
        asserting_events_worker.drain()
        client = AssertingEventsClient.last
        return list(client.events) if client else []

    return emitted


def sources(forms: list[str] | None = None, usedesk_url: str = "http://127.0.0.1:9") -> list:
    forms = [FORM] if forms is None else forms
    return [
        {
            "name": "surveys",
            "kind": "typeform",
            "options": {"forms": forms, "questions": QUESTIONS},
        },
        {"name": "ud", "kind": "usedesk", "options": {"base_url": usedesk_url}},
        {"name": "chat", "kind": "jivo", "options": {"rates": {"meh": 3}}},
        {"name": "amo", "kind": "amocrm", "options": {"base_url": "http://127.0.0.1:9"}},
    ]


def config(path: Path, url: str, listed: list) -> Path:
    path.write_text(yaml.safe_dump({"database_url": url, "sources": listed}), encoding="utf-8")
    return path


@pytest.fixture
def setup(tmp_path: Path, store_url: str) -> tuple[Path, Engine]:
    return config(tmp_path / "cxloop.yaml", store_url, sources()), store.open_store(store_url)


def answer_body(
    event: str, token: str, nps: float, ticket: str | None = None, why: str = ""
) -> dict:
    hidden = {"customer_id": "C1"} | ({"ticket_id": ticket} if ticket else {})
    body = typeform_body(event, FORM, token, pd.Timestamp("2026-10-01 12:00"), {"nps": nps}, hidden)
    if why:
        text = {"field": {"id": "why", "type": "long_text", "ref": "why"}, "type": "text"}
        body["form_response"]["answers"].append(text | {"text": why})
    return body


def post_typeform(url: str, body: dict, secret: str = SECRET, **headers: str) -> httpx.Response:
    raw, sent = signed(body, secret)
    return httpx.post(f"{url}/webhooks/typeform/surveys", content=raw, headers=sent | headers)


def inbox(engine: Engine) -> pd.DataFrame:
    return store.read_frame(engine, store.Inbox)


def responses(engine: Engine) -> pd.DataFrame:
    return store.read_frame(engine, store.SurveyResponse)


def all_mapped(engine: Engine, count: int) -> Callable[[], bool]:
    def done() -> bool:
        rows = inbox(engine)
        return len(rows) == count and rows["mapped_at"].notna().all()

    return done


def chat_finished(chat: int, rate: str | None = None, visitor_says: str = "Где мой заказ?") -> dict:
    return {
        "event_name": "chat_finished",
        "chat_id": chat,
        "user_token": "C7",
        "visitor": {"name": "Ира", "email": "ira@example.com", "phone": "+79123456789"},
        "assigned_agent": {"id": 9, "name": "Дежурный"},
        "agents": [{"id": "1", "name": "Анна"}, {"id": "2", "name": "Борис"}],
        "chat": {
            "messages": [
                {"message": visitor_says, "timestamp": 1791000000, "type": "visitor"},
                {
                    "message": "Сейчас проверю",
                    "timestamp": 1791000090,
                    "type": "agent",
                    "agent_id": 2,
                },
                {"message": "Спасибо", "timestamp": 1791000300, "type": "visitor"},
                {"message": "Уже везут", "timestamp": 1791000400, "type": "agent", "agent_id": 1},
            ],
            "rate": rate,
        },
    }


def test_signed_typeform_answer_is_stored_raw_then_mapped_like_a_pulled_one(setup) -> None:
    path, engine = setup
    body = answer_body("ev-1", "resp1", 10, ticket="T9", why="Great")
    with running_listen(path) as url:
        answered = post_typeform(url, body)
        assert answered.status_code == 200
        assert answered.json() == {"result": "ok"}
        assert inbox(engine)["event_id"].tolist() == ["ev-1"]  # committed before the 200
        until(all_mapped(engine, 1), 30, "the event was not mapped")
    (row,) = responses(engine).to_dict("records")
    assert json.loads(inbox(engine)["payload"][0]) == body
    assert (row["source"], row["source_id"], row["survey"]) == ("surveys", "resp1:nps", FORM)
    assert (row["score"], row["comment"], row["ticket_id"]) == (10.0, "Great", "T9")


def test_wrong_or_missing_signatures_and_secrets_are_refused_and_stored_nowhere(setup) -> None:
    path, engine = setup
    body = answer_body("ev-forged", "forged", 2, ticket="T1")
    raw, headers = signed(body, SECRET)
    tampered = raw.replace(b'"number": 2', b'"number": 9')
    chat = json.dumps(chat_finished(5, "bad")).encode()
    ticket = {"secret": "not-the-token", "ticket": {"id": 1, "published_at": "2026-10-01 10:00:00"}}
    with running_listen(path) as url:
        refused = [
            post_typeform(url, body, secret="guessed"),
            httpx.post(f"{url}/webhooks/typeform/surveys", content=raw),
            httpx.post(f"{url}/webhooks/typeform/surveys", content=tampered, headers=headers),
            httpx.post(f"{url}/webhooks/jivo/chat", content=chat),
            httpx.post(f"{url}/webhooks/jivo/chat?token=wrong", content=chat),
            httpx.post(f"{url}/webhooks/usedesk/ud", json=ticket),
            httpx.post(f"{url}/webhooks/usedesk/ud", content=b"secret=" + TOKEN.encode()),
            httpx.post(f"{url}/webhooks/amocrm/amo?token=", content=b"leads[add][0][id]=1"),
        ]
        assert [r.status_code for r in refused] == [401] * len(refused)
        assert httpx.post(f"{url}/webhooks/jivo/surveys", content=chat).status_code == 404
        assert post_typeform(url, body).status_code == 200  # the same body, signed, passes
        until(all_mapped(engine, 1), 30, "the signed event was not mapped")
    assert inbox(engine)["event_id"].tolist() == ["ev-forged"]
    assert store.read_frame(engine, store.Ticket).empty


def test_a_vendor_retry_is_stored_once(setup) -> None:
    path, engine = setup
    body = answer_body("ev-2", "resp2", 8)
    ticket = {
        "secret": TOKEN,
        "ticket": {"id": 41, "status_id": 1, "subject": "Где заказ?", "client_id": 5,
                   "channel_id": 21, "published_at": "2026-10-01 10:00:00",
                   "last_updated_at": "2026-10-01 10:00:00"},
    }  # fmt: skip
    with running_listen(path) as url:
        for _ in range(3):
            assert post_typeform(url, body).status_code == 200
            assert httpx.post(f"{url}/webhooks/usedesk/ud", json=ticket).status_code == 200
        until(all_mapped(engine, 2), 30, "the events were not mapped")
        assert post_typeform(url, body).status_code == 200  # a late retry, after mapping
    assert sorted(inbox(engine)["event_id"]) == ["ev-2", "ticket:41:2026-10-01 10:00:00"]
    assert responses(engine)["source_id"].tolist() == ["resp2:nps"]
    tickets = store.read_frame(engine, store.Ticket)
    assert tickets[["source", "source_id", "status", "text"]].values.tolist() == [
        ["ud", "41", "open", "Где заказ?"]
    ]


def test_a_mapping_failure_keeps_the_raw_event_and_maps_it_after_the_fix(
    tmp_path: Path, sqlite_url: str
) -> None:
    engine = store.open_store(sqlite_url)
    broken = config(tmp_path / "cxloop.yaml", sqlite_url, sources(forms=["another-form"]))
    with running_listen(broken) as url:
        assert post_typeform(url, answer_body("ev-3", "resp3", 9)).status_code == 200
        until(lambda: inbox(engine)["error"].notna().all(), 30, "no mapping error recorded")
    (kept,) = inbox(engine).to_dict("records")
    assert kept["mapped_at"] is None or pd.isna(kept["mapped_at"])
    assert f"form {FORM} is not in sources.surveys.options.forms" in kept["error"]
    assert json.loads(kept["payload"])["event_id"] == "ev-3"
    assert responses(engine).empty
    fixed = config(tmp_path / "cxloop.yaml", sqlite_url, sources())
    with running_listen(fixed):
        until(all_mapped(engine, 1), 30, "the kept event was not mapped after the fix")
    assert inbox(engine)["error"].isna().all()
    assert responses(engine)["source_id"].tolist() == ["resp3:nps"]


def test_a_detractor_after_a_contact_raises_the_alert_within_a_minute(
    tmp_path: Path, sqlite_url: str, events
) -> None:
    engine = store.open_store(sqlite_url)
    path = config(tmp_path / "cxloop.yaml", sqlite_url, sources())
    why = "Ждал неделю, пишите на ira@example.com или +7 912 345-67-89"
    with running_listen(path) as url:
        chat = f"{url}/webhooks/jivo/chat?token={JIVO_TOKEN}"
        assert httpx.post(chat, json=chat_finished(501, rate="good")).status_code == 200
        assert httpx.post(chat, json=chat_finished(502, rate="bad")).status_code == 200
        started = time.monotonic()
        assert (
            post_typeform(url, answer_body("ev-4", "r4", 3, ticket="501", why=why)).status_code
            == 200
        )
        assert post_typeform(url, answer_body("ev-5", "r5", 10, ticket="501")).status_code == 200
        assert post_typeform(url, answer_body("ev-6", "r6", 2)).status_code == 200  # no contact
        until(lambda: len(detractor_events(events())) >= 2, 60, "no alert within a minute")
        assert time.monotonic() - started < 60
        until(all_mapped(engine, 5), 30, "the events were not mapped")
    alerts = {e.payload["answer"]: e for e in detractor_events(events())}
    assert sorted(alerts) == ["502:csat", "r4:nps"]
    survey = alerts["r4:nps"].payload
    assert (survey["ticket_id"], survey["agent"], survey["score"]) == ("501", "Борис", 3.0)
    assert survey["comment"] == "Ждал неделю, пишите на [email] или [phone]"
    assert "ira@example.com" not in json.dumps([e.payload for e in alerts.values()])
    assert alerts["502:csat"].payload["agent"] == "Борис"
    assert alerts["502:csat"].resource.id == "cxloop.alert.detractor.chat.502:csat"


def detractor_events(emitted: list[Event]) -> list[Event]:
    return [e for e in emitted if e.event == "cxloop.alert.detractor"]


def test_jivo_chat_becomes_a_chat_ticket_with_first_response_agent_and_rating() -> None:
    chat, rating = chat_records(chat_finished(7, rate="meh"), {"meh": 3.0})
    assert chat["channel"] == "chat"
    assert chat["started_at"] == "2026-10-03T04:00:00+00:00"
    assert chat["first_response_at"] == "2026-10-03T04:01:30+00:00"  # 90 s later
    assert chat["agent"] == "Борис"  # who wrote first, not the one listed first
    assert chat["text"] == "Где мой заказ?\nСпасибо"
    assert rating is not None
    assert (rating["id"], rating["chat_id"], rating["score"]) == ("7:csat", "7", 3.0)
    unrated = chat_finished(8)
    unrated["chat"]["messages"] = unrated["chat"]["messages"][:1]
    chat, rating = chat_records(unrated, {})
    assert (chat["first_response_at"], chat["agent"], rating) == (None, "Дежурный", None)


def test_an_unknown_jivo_rating_waits_in_the_inbox_with_the_fix(setup) -> None:
    path, engine = setup
    with running_listen(path) as url:
        chat = f"{url}/webhooks/jivo/chat?token={JIVO_TOKEN}"
        assert httpx.post(chat, json=chat_finished(9, rate="so-so")).status_code == 200
        until(lambda: inbox(engine)["error"].notna().all(), 30, "no mapping error recorded")
    assert "unknown rating 'so-so'" in inbox(engine)["error"][0]
    assert "sources.chat.options.rates" in inbox(engine)["error"][0]


def test_amocrm_won_lead_is_an_order_and_one_reopened_leaves(setup) -> None:
    path, engine = setup
    won = {"leads[status][0][id]": "77", "leads[status][0][status_id]": "142",
           "leads[status][0][price]": "1500", "leads[status][0][last_modified]": "1791000000",
           "account[subdomain]": "shop"}  # fmt: skip
    reopened = won | {
        "leads[status][0][status_id]": "143",
        "leads[status][0][last_modified]": "1791000900",
    }
    form = {"content-type": "application/x-www-form-urlencoded"}
    with running_listen(path) as url:
        hook = f"{url}/webhooks/amocrm/amo?token={AMO_TOKEN}"
        assert httpx.post(hook, content=urlencode(won), headers=form).status_code == 200
        until(all_mapped(engine, 1), 30, "the won lead was not mapped")
        (order,) = store.read_frame(engine, store.Order).to_dict("records")
        assert (order["source_id"], order["amount"], order["status"]) == ("77", 1500.0, "won")
        assert order["created_at"] == pd.Timestamp("2026-10-03 04:00:00")
        assert httpx.post(hook, content=urlencode(reopened), headers=form).status_code == 200
        until(all_mapped(engine, 2), 30, "the reopened lead was not mapped")
    assert store.read_frame(engine, store.Order).empty


@pytest.fixture
def usedesk() -> Iterator[FakeUsedesk]:
    desk = FakeUsedesk(TOKEN)
    desk.seed(clients=5, tickets=12)
    with desk.running():
        yield desk


def test_a_pull_fills_in_the_webhook_that_never_arrived_and_upserts_the_rest(
    tmp_path: Path, sqlite_url: str, usedesk: FakeUsedesk
) -> None:
    engine = store.open_store(sqlite_url)
    path = config(tmp_path / "cxloop.yaml", sqlite_url, sources(usedesk_url=usedesk.url))
    first = usedesk.tickets[1]
    hook = {"secret": TOKEN, "ticket": {k: first[k] for k in ("id", "subject", "client_id",
            "assignee_id", "channel_id", "last_updated_at")} | {"status_id": first["status"],
            "published_at": first["created_at"]}}  # fmt: skip
    rating = {"secret": TOKEN, "csi": {"id": 3, "ticket_id": 1, "client_id": first["client_id"],
              "rating": 1, "comment": "Долго", "created_at": "2025-01-01 02:00:00"}}  # fmt: skip
    with running_listen(path) as url:
        for body in (hook, rating):
            assert httpx.post(f"{url}/webhooks/usedesk/ud", json=body).status_code == 200
        until(all_mapped(engine, 2), 30, "the Usedesk events were not mapped")
        assert store.read_frame(engine, store.Ticket)["source_id"].tolist() == ["1"]
        # The scheduled pull, into the same store under the same source name.
        options = {"base_url": usedesk.url, "backoff_base": 0.01, "rate_limit": [1000, 1]}
        sync_source(engine, UsedeskSource(name="ud", **options))
        tickets = store.read_frame(engine, store.Ticket).set_index("source_id")
        assert sorted(tickets.index, key=int) == [str(k) for k in sorted(usedesk.tickets)]
        pulled_agent = tickets.loc["1", "agent"]
        assert pulled_agent == "Иван Смирнов" and pd.notna(tickets.loc["1", "first_response_at"])
        # A later webhook about the ticket keeps what only the pull knows.
        again = hook | {"ticket": hook["ticket"] | {"last_updated_at": "2025-01-02 00:00:00",
                                                    "status_id": 3}}  # fmt: skip
        assert httpx.post(f"{url}/webhooks/usedesk/ud", json=again).status_code == 200
        until(all_mapped(engine, 3), 30, "the later event was not mapped")
    tickets = store.read_frame(engine, store.Ticket).set_index("source_id")
    assert len(tickets) == len(usedesk.tickets)
    assert (tickets.loc["1", "agent"], tickets.loc["1", "status"]) == (pulled_agent, "closed")
    assert pd.notna(tickets.loc["1", "first_response_at"])
    (answer,) = responses(engine).to_dict("records")
    assert (answer["ticket_id"], answer["kind"], answer["score"]) == ("1", "csat", 1.0)


def test_demo_emits_its_post_contact_surveys_as_signed_typeform_calls(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = store.open_store(sqlite_url)
    forms = [{"id": form, "questions": {kind: kind}} for form, kind in DEMO_FORMS.items()]
    demo = {"name": "demo-surveys", "kind": "typeform", "options": {"forms": forms}}
    path = config(tmp_path / "cxloop.yaml", sqlite_url, [demo])
    monkeypatch.setenv("CXLOOP_WEBHOOK_SECRET_DEMO_SURVEYS", "demo-secret")
    expected = demo_webhooks(500, 7)
    assert expected and {b["form_response"]["form_id"] for b in expected} <= set(DEMO_FORMS)
    with running_listen(path) as url:
        sent = send_demo_webhooks(f"{url}/webhooks/typeform/demo-surveys", 500, 7, rate=200)
        assert sent == len(expected)
        until(all_mapped(engine, sent), 60, "the demo's surveys were not all mapped")
    stored = responses(engine)
    assert len(stored) == sent
    assert stored["ticket_id"].str.fullmatch(r"T\d+").all()
    assert set(stored["survey"]) <= set(DEMO_FORMS)


def test_benchmark_stores_every_event_it_sends(tmp_path: Path) -> None:
    result = benchmark.run(events=50, rate=50, workdir=tmp_path)
    assert (result["sent"], result["stored"], result["mapped"]) == (50, 50, 50)
    assert result["refused"] == 0


def test_config_without_a_webhook_source_or_secret_names_the_variable(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    from connectors.errors import ConfigError
    from flows.listen import open_listener

    monkeypatch.delenv("CXLOOP_WEBHOOK_SECRET_SURVEYS")
    only: list[dict[str, Any]] = [sources()[0]]
    with pytest.raises(ConfigError, match="no source takes webhooks"):
        open_listener(config(tmp_path / "cxloop.yaml", sqlite_url, only))
    assert "CXLOOP_WEBHOOK_SECRET_SURVEYS" in caplog.text
