"""`cxloop sources inspect NAME` against fake Typeform, SurveyMonkey and Qualtrics APIs: a table
of each survey's questions and a `questions:` snippet that loads the survey when pasted; clear
errors for an unknown name, a kind without questions and a vendor refusing the token."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from pytest_httpserver import HTTPServer
from typer.testing import CliRunner, Result
from werkzeug import Request, Response

from connectors import open_source
from flows.cli import app
from flows.sync import sync_source
from tasks import store
from tests.fakes import qualtrics as qx
from tests.fakes import surveymonkey as sm
from tests.fakes.qualtrics import FakeQualtrics
from tests.fakes.surveymonkey import FakeSurveyMonkey
from tests.fakes.typeform import FakeTypeform, answer

# Tables are read back cell by cell: a console narrower than a question would wrap it.
pytestmark = pytest.mark.usefixtures("wide_console")

TOKENS = {
    "TYPEFORM_TOKEN": "tfp_inspect_5d4c3b2a1f0e",
    "SURVEYMONKEY_TOKEN": "sm_inspect_9a8b7c6d5e4f",
    "QUALTRICS_TOKEN": "qx_inspect_1a2b3c4d5e6f",
}
CSAT = ["Very dissatisfied", "Dissatisfied", "Neutral", "Satisfied", "Very satisfied"]
WHEN = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@dataclass
class Vendors:
    typeform: FakeTypeform
    surveymonkey: FakeSurveyMonkey
    qualtrics: FakeQualtrics
    url: str


@pytest.fixture
def vendors(httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Vendors]:
    for variable, token in TOKENS.items():
        monkeypatch.setenv(variable, token)
    typeform = FakeTypeform(TOKENS["TYPEFORM_TOKEN"])
    typeform.define(
        "aBcD12",
        "After purchase",
        [
            {"id": "f1", "ref": "nps_q", "title": "How likely are you to recommend us?",
             "type": "nps", "properties": {}},
            {"id": "f2", "ref": "csat_q", "title": "How happy are you with [the] order?",
             "type": "opinion_scale", "properties": {"steps": 5, "start_at_one": True}},
            {"id": "f3", "title": "About you", "type": "group", "properties": {"fields": [
                {"id": "f4", "ref": "why", "title": "What could be better?",
                 "type": "long_text", "properties": {}},
            ]}},
        ],
    )  # fmt: skip
    surveymonkey = FakeSurveyMonkey(TOKENS["SURVEYMONKEY_TOKEN"])
    surveymonkey.survey(
        "412345678",
        "After delivery",
        [
            sm.open_question("903", "What should we <b>improve</b>?"),
            sm.nps_question("901", "How likely are you to recommend us?"),
            sm.rating_question("902", "How satisfied are you with the delivery?", CSAT),
        ],
    )
    qualtrics = FakeQualtrics(TOKENS["QUALTRICS_TOKEN"])
    qualtrics.survey(
        "SV_8dKx3vQz1Lm2Np4",
        "Support follow-up",
        [
            qx.descriptive("QID4", "Thank you!"),
            qx.text_entry("QID3", "What went wrong?"),
            qx.choice("QID2", "How easy was it to get help?", [str(n) for n in range(1, 8)]),
            qx.nps("QID1", "<div>How likely are you to <i>recommend</i> us?</div>"),
        ],
    )

    def route(request: Request) -> Response:
        # Through each fake's own entry point, which records the path its faults match on.
        if request.path.startswith("/forms"):
            return typeform._serve(request)
        if request.path.startswith("/v3/"):
            return surveymonkey._serve(request)
        return qualtrics._serve(request)

    httpserver.expect_request(re.compile(".*")).respond_with_handler(route)
    url = httpserver.url_for("/").rstrip("/")
    surveymonkey.url = url
    yield Vendors(typeform, surveymonkey, qualtrics, url)


def sources(url: str) -> list[dict[str, Any]]:
    """A configuration's sources: one of each survey kind, their questions not chosen yet."""
    return [
        {"name": "tf", "kind": "typeform",
         "options": {"base_url": url, "forms": [{"id": "aBcD12", "survey": "post-purchase"}]}},
        {"name": "sm", "kind": "surveymonkey",
         "options": {"base_url": url, "surveys": ["412345678"]}},
        {"name": "qx", "kind": "qualtrics",
         "options": {"base_url": url, "surveys": [{"id": "SV_8dKx3vQz1Lm2Np4",
                                                   "survey": "support"}]}},
        {"name": "crm", "kind": "hubspot", "options": {}},
    ]  # fmt: skip


def inspect(tmp_path: Path, url: str, name: str) -> Result:
    config = tmp_path / "cxloop.yaml"
    config.write_text(yaml.safe_dump({"sources": sources(url)}), encoding="utf-8")
    return CliRunner().invoke(
        app, ["sources", "inspect", name, "--config", str(config)], env={"COLUMNS": "200"}
    )


def snippet(output: str) -> dict[str, Any]:
    """The YAML after the snippet's comment lines, as it would be pasted."""
    text = output[output.index("# Paste under") :].split("\n", 2)[2]
    return yaml.safe_load(textwrap.dedent(text))


def rows(output: str) -> list[list[str]]:
    """The table's data rows, cell by cell."""
    return [
        [cell.strip() for cell in line.strip()[1:-1].split("│")]
        for line in output.splitlines()
        if line.startswith("│")
    ]


def test_typeform_form_questions_and_a_snippet_that_loads_the_form(
    tmp_path: Path, vendors: Vendors
) -> None:
    result = inspect(tmp_path, vendors.url, "tf")

    assert result.exit_code == 0, result.output
    assert "post-purchase (aBcD12)" in result.output
    assert rows(result.output) == [
        ["nps_q", "How likely are you to recommend us?", "nps", "0–10"],
        ["csat_q", "How happy are you with [the] order?", "opinion_scale", "1–5"],
        ["why", "What could be better?", "long_text", ""],
    ]
    pasted = snippet(result.output)
    assert pasted == {
        "forms": [
            {
                "id": "aBcD12",
                "survey": "post-purchase",
                "questions": {"nps": "nps_q", "csat": "csat_q", "comment": "why"},
            }
        ]
    }
    key = vendors.typeform.add(
        "aBcD12",
        WHEN,
        [answer("nps_q", "number", 10, "nps"), answer("csat_q", "number", 5)],
    )
    engine = store.open_store(f"sqlite:///{tmp_path / 'store.db'}")
    loaded = open_source("tf", "typeform", {"base_url": vendors.url} | pasted)
    assert sync_source(engine, loaded) == {"post-purchase": 2}
    stored = store.read_frame(engine, store.SurveyResponse)
    assert sorted(stored["source_id"]) == [f"{key}:csat", f"{key}:nps"]


def test_surveymonkey_details_questions_and_snippet(tmp_path: Path, vendors: Vendors) -> None:
    result = inspect(tmp_path, vendors.url, "sm")

    assert result.exit_code == 0, result.output
    assert "412345678 (412345678)" in result.output
    assert rows(result.output) == [
        ["903", "What should we improve?", "open_ended/essay", ""],
        ["901", "How likely are you to recommend us?", "matrix/nps", "0–10"],
        ["902", "How satisfied are you with the delivery?", "single_choice/vertical", "1–5"],
    ]
    assert snippet(result.output) == {
        "surveys": [
            {
                "id": "412345678",
                "survey": "412345678",
                "questions": {"nps": "901", "csat": "902", "comment": "903"},
            }
        ]
    }


def test_qualtrics_definition_questions_and_snippet(tmp_path: Path, vendors: Vendors) -> None:
    result = inspect(tmp_path, vendors.url, "qx")

    assert result.exit_code == 0, result.output
    assert "support (SV_8dKx3vQz1Lm2Np4)" in result.output
    assert rows(result.output) == [
        ["QID1", "How likely are you to recommend us?", "MC/NPS", "0–10"],
        ["QID2", "How easy was it to get help?", "MC/SAVR", "1–7"],
        ["QID3_TEXT", "What went wrong?", "TE/ML", ""],
    ]  # QID4 is descriptive text: nothing to answer
    assert snippet(result.output)["surveys"][0]["questions"] == {
        "nps": "QID1",
        "ces": "QID2",
        "comment": "QID3_TEXT",
    }
    assert [path for _, path, _ in vendors.qualtrics.requests] == [
        "/API/v3/survey-definitions/SV_8dKx3vQz1Lm2Np4"
    ]


def test_a_kind_without_questions_and_an_unknown_name_are_clear_errors(
    tmp_path: Path, vendors: Vendors
) -> None:
    crm = inspect(tmp_path, vendors.url, "crm")
    assert crm.exit_code == 2
    assert "sources.crm: kind hubspot does not list questions" in crm.output

    unknown = inspect(tmp_path, vendors.url, "nps")
    assert unknown.exit_code == 2
    assert "no source named 'nps'; the sources are tf, sm, qx, crm" in unknown.output
    assert "Traceback" not in crm.output + unknown.output


def test_a_refused_token_is_named_and_never_shown(
    tmp_path: Path, vendors: Vendors, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SURVEYMONKEY_TOKEN", "sm_revoked_inspect_777")
    result = inspect(tmp_path, vendors.url, "sm")

    assert result.exit_code == 2
    assert "HTTP 401: 1011 Authorization Error" in result.output
    assert "check SURVEYMONKEY_TOKEN" in result.output
    assert "sm_revoked_inspect_777" not in result.output
