"""amoCRM connector against a fake account on loopback: full and incremental sync, won leads as
orders, 204 for an empty list, pages of the wrong shape, refresh-token rotation across two
runs. The checks every vendor shares (429, 5xx, cut pages, crashes, secrecy) are in
test_vendor_contract.py."""

from __future__ import annotations

import hashlib
import logging
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy.engine import Engine

from connectors.amocrm import AmoCrmSource
from connectors.errors import ConfigError, SourceError
from flows.sync import sync_source
from tasks import store
from tests.fakes.amocrm import FakeAmoCrm
from tests.fakes.loopback import Fault

TOKEN = "amo0long0lived0token0beef"
CLIENT_ID, SECRET, FIRST_REFRESH = (
    "integration-42",
    "amo0client0secret0cafe",
    "amo0refresh0first0feed",
)
FAST = {"backoff_base": 0.01, "max_wait": 5.0, "timeout": 2.0, "rate_limit": [1000, 1]}
LEADS, CONTACTS = "/api/v4/leads", "/api/v4/contacts"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAmoCrm]:
    crm = FakeAmoCrm(TOKEN, CLIENT_ID, SECRET, FIRST_REFRESH)
    crm.seed(contacts=300, leads=200)
    monkeypatch.setenv("AMOCRM_TOKEN", TOKEN)
    for name in ("AMOCRM_CLIENT_ID", "AMOCRM_CLIENT_SECRET", "AMOCRM_REFRESH_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with crm.running():
        yield crm


@pytest.fixture
def oauth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AMOCRM_TOKEN")
    monkeypatch.setenv("AMOCRM_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("AMOCRM_CLIENT_SECRET", SECRET)
    monkeypatch.setenv("AMOCRM_REFRESH_TOKEN", FIRST_REFRESH)


def options(fake: FakeAmoCrm, **extra: Any) -> dict[str, Any]:
    return {"base_url": fake.url, **FAST, **extra}


def sync(engine: Engine, fake: FakeAmoCrm, **extra: Any) -> dict[str, int]:
    return sync_source(engine, AmoCrmSource(name="amo", **options(fake, **extra)))


def frame(engine: Engine, model: type[store.Record]) -> pd.DataFrame:
    return store.read_frame(engine, model).set_index("source_id").sort_index()


def calls(fake: FakeAmoCrm, path: str) -> list[tuple[dict[str, str], int]]:
    return [(query, status) for called, query, status in fake.requests if called == path]


def assert_store_equals_source(engine: Engine, fake: FakeAmoCrm) -> None:
    customers, orders = frame(engine, store.Customer), frame(engine, store.Order)
    assert customers.index.is_unique and set(customers.index) == {
        str(k) for k in fake.records["contacts"]
    }
    assert orders.index.is_unique and set(orders.index) == fake.won()


def test_full_sync_maps_contacts_and_won_leads(store_url: str, fake) -> None:
    engine = store.open_store(store_url)
    written = sync(engine, fake, field_map={"contacts": {"cf.777": "segment"}})
    assert written == {"contacts": 300, "leads": len(fake.won())}

    assert_store_equals_source(engine, fake)
    customers, orders = frame(engine, store.Customer), frame(engine, store.Order)
    assert customers.loc["1", ["email_hash", "segment", "created_at"]].tolist() == [
        hashlib.sha256(b"contact0@example.ru").hexdigest(), "b2b", pd.Timestamp("2025-01-01 00:00"),
    ]  # fmt: skip
    # Lead 4 (i = 3) is won: created 03:30, closed an hour later, of contact 4.
    assert orders.loc["4", ["customer_id", "amount", "status", "created_at"]].tolist() == [
        "4", 1003.0, "won", pd.Timestamp("2025-01-01 04:30"),
    ]  # fmt: skip
    pages = [(q["page"], q["limit"], q["order[id]"]) for q, _ in calls(fake, CONTACTS)]
    assert pages == [("1", "250", "asc"), ("2", "250", "asc")]
    assert {q.get("with") for q, _ in calls(fake, LEADS)} == {"contacts"}
    assert set(store.read_cursor(engine, "amo", "leads")) == {"since"}


def test_second_sync_reads_changes_and_drops_leads_no_longer_won(store_url: str, fake) -> None:
    engine = store.open_store(store_url)
    sync(engine, fake)
    since = store.read_cursor(engine, "amo", "leads")["since"]
    fake.change("leads", [2], status_id=142, closed_at=1767225600)  # lost → won
    fake.change("leads", [4], status_id=555)  # won → reopened
    fake.change("contacts", [7], custom_fields_values=None)
    fake.requests.clear()

    assert sync(engine, fake) == {"contacts": 1, "leads": 1}
    assert calls(fake, LEADS)[0][0]["filter[updated_at][from]"] == str(since)
    orders = frame(engine, store.Order)
    assert "4" not in orders.index and orders.loc["2", "created_at"] == pd.Timestamp("2026-01-01")
    assert pd.isna(frame(engine, store.Customer).loc["7", "email_hash"])
    assert_store_equals_source(engine, fake)


def test_nothing_changed_answers_204_and_writes_nothing(sqlite_url: str, fake) -> None:
    engine = store.open_store(sqlite_url)
    sync(engine, fake)
    fake.requests.clear()
    assert sync(engine, fake) == {"contacts": 0, "leads": 0}
    assert [status for _, _, status in fake.requests] == [204, 204]


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ('{"_page": 2, "_embedded": {"contacts": {"id": 251}}}', "documented shape"),
    ],
)
def test_malformed_page_saves_nothing_of_it_and_keeps_the_cursor(
    store_url: str, fake, body: str, problem: str
) -> None:
    fake.fault(Fault(CONTACTS, 200, body, skip=1))
    engine = store.open_store(store_url)
    with pytest.raises(SourceError) as caught:
        sync(engine, fake, page_size=100)
    message = str(caught.value)
    assert "source amo, stream contacts, page 2: " in message
    assert problem in message and "nothing of it was saved" in message
    assert store.row_counts(engine)["customer"] == 100
    assert store.read_cursor(engine, "amo", "contacts")["page"] == 2


def test_rotated_refresh_token_is_saved_and_used_by_the_next_run(
    sqlite_url: str, fake, oauth, tmp_path: Path, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    saved = tmp_path / "amo-refresh"
    opts = {"refresh_token_file": str(saved), "redirect_uri": "https://shop.ru/amo"}
    engine = store.open_store(sqlite_url)

    assert sync(engine, fake, objects=["contacts"], **opts) == {"contacts": 300}
    first = saved.read_text().strip()
    assert first == fake.refresh_token != FIRST_REFRESH
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left
    assert sync(engine, fake, objects=["leads"], **opts) == {"leads": len(fake.won())}
    second = saved.read_text().strip()
    assert second == fake.refresh_token != first
    assert [g["refresh_token"] for g in fake.grants] == [FIRST_REFRESH, first]
    assert {g["redirect_uri"] for g in fake.grants} == {"https://shop.ru/amo"}

    saved.write_text(first)  # a spent token, as a lost write would leave
    with pytest.raises(ConfigError) as caught:
        sync(engine, fake, **opts)
    message = str(caught.value)
    assert "HTTP 400" in message and "Token has been revoked" in message
    assert "authorised again" in message and str(saved) in message
    for secret in (SECRET, FIRST_REFRESH, first, second, *fake.tokens):
        assert secret not in message + caplog.text


def test_unwritable_token_file_is_a_config_error_saying_the_old_token_is_spent(
    sqlite_url: str, fake, oauth, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-folder" / "amo-refresh"
    opts = {"refresh_token_file": str(missing), "redirect_uri": "https://shop.ru/amo"}
    with pytest.raises(ConfigError, match=r"could not save amoCRM's new refresh token .* spent"):
        sync(store.open_store(sqlite_url), fake, **opts)


def test_bad_token_and_incomplete_oauth_config_say_what_to_fix(
    sqlite_url: str, fake, monkeypatch
) -> None:
    monkeypatch.setenv("AMOCRM_TOKEN", "expired0token")
    with pytest.raises(SourceError) as caught:
        sync(store.open_store(sqlite_url), fake)
    assert "HTTP 401: Unauthorized: Invalid access token — check AMOCRM_TOKEN" in str(caught.value)
    monkeypatch.setenv("AMOCRM_CLIENT_ID", CLIENT_ID)
    with pytest.raises(ConfigError, match=r"refresh_token_file .* and redirect_uri"):
        AmoCrmSource(name="amo", base_url=fake.url)
    with pytest.raises(ConfigError, match="page_size must be 1–250"):
        AmoCrmSource(name="amo", base_url=fake.url, page_size=251)
