"""Text hygiene before every store write: NUL and other control characters never reach
either backend, in text columns and inside JSON, and the same text is stored on both."""

from __future__ import annotations

import pandas as pd

from tasks import store


def _responses(comments: list[str | None]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "source_id": [f"R{i}" for i in range(len(comments))],
            "survey": "post-contact",
            "kind": "nps",
            "score": 9.0,
            "comment": comments,
            "submitted_at": pd.Timestamp("2026-10-01 10:00"),
        }
    )


def test_a_nul_in_one_comment_is_dropped_and_the_rest_of_the_page_loads(store_url: str) -> None:
    engine = store.open_store(store_url)
    comments = ["a\x00b\x07c", "fine", None, "esc\x1b[31m red\x7f, next\x85line\x9f"]
    written, _ = store.load_page(
        engine, store.SurveyResponse, _responses(comments), "typeform", "responses", {"p": 1}
    )

    stored = store.read_frame(engine, store.SurveyResponse).set_index("source_id")["comment"]
    assert written == 4
    assert stored.sort_index().fillna("<null>").tolist() == [
        "abc",
        "fine",
        "<null>",
        "esc[31m red, nextline",
    ]
    assert store.read_cursor(engine, "typeform", "responses") == {"p": 1}


def test_tab_newline_carriage_return_and_non_latin_text_stay(store_url: str) -> None:
    engine = store.open_store(store_url)
    kept = "Курьер\tопоздал\r\nна «три» дня — 😞 ÿ"
    store.load_page(engine, store.SurveyResponse, _responses([kept]), "typeform", "r", {})
    assert store.read_frame(engine, store.SurveyResponse)["comment"].tolist() == [kept]


def test_control_characters_inside_json_are_dropped_and_backslashes_kept(store_url: str) -> None:
    engine = store.open_store(store_url)
    customers = pd.DataFrame({"source_id": ["C1", "C2"], "segment": ["new\x00", "loyal"]})
    customers["attributes"] = [
        {"note": "x\x00y\x08z\x0c", "plan\x01": ["\x1bpro", "tab\there"]},
        {"path": "C:\\u0000dir\\\\x", "sign": "\\\x00"},  # literal backslashes, not escapes
    ]
    store.load_page(engine, store.Customer, customers, "crm", "contacts", {"after": "a\x00b"})

    stored = store.read_frame(engine, store.Customer).set_index("source_id")
    assert stored.loc["C1", "segment"] == "new"
    assert stored.loc["C1", "attributes"] == {"note": "xyz", "plan": ["pro", "tab\there"]}
    assert stored.loc["C2", "attributes"] == {"path": "C:\\u0000dir\\\\x", "sign": "\\"}
    assert store.read_cursor(engine, "crm", "contacts") == {"after": "ab"}


def test_derived_rows_are_cleaned_too(store_url: str) -> None:
    engine = store.open_store(store_url)
    alert = pd.DataFrame(
        {
            "period": ["2026-10"],
            "key": ["nps-drop"],
            "kind": ["nps"],
            "message": ["NPS fell\x00 by 12"],
            "evidence": [{"verbatims": ["late\x00", "rude"]}],
            "raised_at": [pd.Timestamp("2026-10-31")],
        }
    )
    store.save_rows(engine, store.Alert, alert, ("period", "key"))
    stored = store.read_frame(engine, store.Alert)
    assert stored["message"].tolist() == ["NPS fell by 12"]
    assert stored["evidence"].tolist() == [{"verbatims": ["late", "rude"]}]


def test_a_deleted_id_with_a_control_character_removes_the_row_stored_without_it(
    store_url: str,
) -> None:
    engine = store.open_store(store_url)
    store.load_page(engine, store.SurveyResponse, _responses(["a", "b"]), "t", "r", {})
    written, removed = store.load_page(
        engine, store.SurveyResponse, _responses([]), "t", "r", {}, deleted=["R\x001"]
    )
    assert (written, removed) == (0, 1)
    assert store.read_frame(engine, store.SurveyResponse)["source_id"].tolist() == ["R0"]
