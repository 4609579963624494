"""Token paging (`connectors.paging.TokenPaging`): the field that asks for a page, the next
page's token, the last page, and a token that repeats the one a page was asked for, refused
at that page by HubSpot's and Typeform's streams against a server on loopback, with nothing of
the page saved and the pages before kept."""

from __future__ import annotations

from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from connectors.errors import SourceError
from connectors.hubspot import HubSpotSource
from connectors.paging import TokenPaging
from connectors.typeform import TypeformSource
from flows.sync import sync_stream
from tasks import store

FAST = {"backoff_base": 0.01, "max_wait": 5.0, "timeout": 2.0, "rate_limit": [1000, 1]}
AFTER = TokenPaging("after")


def test_first_page_is_asked_for_without_a_token() -> None:
    assert AFTER.ask(None) == {}
    assert AFTER.ask("MTAw") == {"after": "MTAw"}


def test_next_token_is_the_one_the_answer_names_as_text() -> None:
    assert AFTER.after("MTAw", None) == "MTAw"
    assert AFTER.after(200, "100") == "200"  # HubSpot's search names its offset as a number


def test_last_page_names_no_token() -> None:
    assert AFTER.after(None, "MTAw") is None
    assert AFTER.after(None, None) is None


def test_token_repeating_the_one_the_page_was_asked_for_is_refused() -> None:
    with pytest.raises(ValueError, match=r"`after` token 'MTAw' is the one this page was asked"):
        AFTER.after("MTAw", "MTAw")
    with pytest.raises(ValueError, match="would not advance"):
        TokenPaging("before").after(7, "7")


def contact(key: str) -> dict[str, Any]:
    properties = {"email": f"{key}@example.com", "lastmodifieddate": "2026-03-01T09:00:00Z"}
    return {"id": key, "properties": properties, "createdAt": "2026-03-01T09:00:00Z"}


def test_hubspot_list_naming_its_own_token_again_stops_at_that_page(
    sqlite_url: str, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUBSPOT_TOKEN", "pat-na1-test")
    path = "/crm/v3/objects/contacts"
    first = {"results": [contact("1"), contact("2")], "paging": {"next": {"after": "Mg"}}}
    stuck = {"results": [contact("3")], "paging": {"next": {"after": "Mg"}}}
    httpserver.expect_ordered_request(path, method="GET").respond_with_json(first)
    httpserver.expect_ordered_request(path, method="GET").respond_with_json(stuck)
    options = {"base_url": httpserver.url_for("").rstrip("/"), "objects": ["contacts"], **FAST}
    stream = HubSpotSource(name="crm", **options).streams()[0]
    engine = store.open_store(sqlite_url)

    with pytest.raises(SourceError, match=r"stream contacts, page 2: .*`after` token 'Mg'"):
        sync_stream(engine, "crm", stream)

    asked = [request.args.get("after") for request, _ in httpserver.log]
    assert asked == [None, "Mg"]
    rows = store.read_frame(engine, store.Customer)
    assert sorted(rows["source_id"]) == ["1", "2"]  # page 1 kept, nothing of page 2
    assert store.read_cursor(engine, "crm", "contacts")["after"] == "Mg"


def response(token: str) -> dict[str, Any]:
    answer = {"field": {"id": "q1", "ref": "nps_q", "type": "nps"}, "type": "number", "number": 9}
    return {"token": token, "submitted_at": "2026-03-01T09:00:00Z", "answers": [answer]}


def test_typeform_page_ending_on_the_token_it_was_asked_before_stops_at_that_page(
    sqlite_url: str, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TYPEFORM_TOKEN", "tfp_test")
    path = "/forms/F1/responses"
    first = {"total_items": 4, "page_count": 2, "items": [response("r4"), response("r3")]}
    stuck = {"total_items": 4, "page_count": 2, "items": [response("r2"), response("r3")]}
    httpserver.expect_ordered_request(path).respond_with_json(first)
    httpserver.expect_ordered_request(path).respond_with_json(stuck)
    source = TypeformSource(
        name="surveys",
        base_url=httpserver.url_for("").rstrip("/"),
        forms=["F1"],
        questions={"nps": "nps_q"},
        **FAST,
    )
    engine = store.open_store(sqlite_url)

    with pytest.raises(SourceError, match=r"stream F1, page 2: .*`before` token 'r3'"):
        sync_stream(engine, "surveys", source.streams()[0])

    asked = [request.args.get("before") for request, _ in httpserver.log]
    assert asked == [None, "r3"]
    rows = store.read_frame(engine, store.SurveyResponse)
    assert sorted(rows["source_id"]) == ["r3:nps", "r4:nps"]
    assert store.read_cursor(engine, "surveys", "F1")["before"] == "r3"
