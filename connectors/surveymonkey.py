"""SurveyMonkey v3: completed responses of configured surveys as NPS, CSAT and CES rows.

Each survey is one stream reading `GET /v3/surveys/{id}/responses/bulk`, newest change first
(`sort_by=date_modified`, `sort_order=DESC`), following `links.next` until it is absent. At the
end of a sync it saves the latest `date_modified` seen, so the next one asks only for responses
changed since then (`start_modified_at`, less a few minutes; re-read responses upsert). Answers
name choices by id: each sync first reads the survey's `/details` once and resolves every choice
to its weight (when the survey scores choices) or its text. Questions are picked by question id
through the `questions` option; custom variables `customer_id`, `email` and `channel` carry
identity, `ticket_id` the ticket a post-contact survey is about. A response with a score outside
its scale is rejected whole, with its id; the rest load.

SurveyMonkey limits apps per minute and per day; the `X-Ratelimit-App-Global-*` headers say how
many calls are left and when the window resets, and a 429 (error 1040) is waited out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

import httpx

from connectors.base import Page
from connectors.http import (
    HttpClient,
    HttpStream,
    Request,
    Step,
    json_error,
)
from connectors.paging import NextUrlPaging
from connectors.surveys import (
    AnswerSet,
    Parsed,
    SurveyCursor,
    SurveyOptions,
    SurveyQuestion,
    SurveyResponses,
    newest_first,
    numeric_scale,
    plain,
    survey_fields,
)

API = "https://api.surveymonkey.com"
TOKEN_ENV = "SURVEYMONKEY_TOKEN"
SCOPES = "surveys_read, responses_read and responses_read_detail"
PAGE_LIMIT = 100
PAGING = NextUrlPaging("page")  # `links.next` carries the next page's number
RATE_HEADERS = "X-Ratelimit-App-Global"
DAY_SECONDS = 86_400.0

SURVEYMONKEY = survey_fields("custom_variables")
"""SurveyMonkey's default fields: identity and the ticket a post-contact survey is about, from
the survey link's custom variables (`customer_id`, `email`, `channel`, `ticket_id`)."""


def _message(body: Any) -> str | None:
    error = body["error"]
    if not error["message"]:
        return None
    return f"{error.get('id')} {error.get('name')}: {error['message']}"


def error_message(response: httpx.Response, token_env: str = TOKEN_ENV) -> str:
    """SurveyMonkey's `id name: message`, with the fix for authorization errors."""
    return json_error(
        response,
        _message,
        f"check {token_env}: it must hold the access token of a SurveyMonkey app "
        f"(developer.surveymonkey.com → My Apps → Settings) with the scopes {SCOPES}, from the "
        "account that owns the survey.",
    )


def wait_hint(response: httpx.Response) -> float | None:
    """Seconds the `X-Ratelimit-App-Global-*` headers ask to pause: until the minute window
    resets when none is left, until the day resets when a 429 says the day's calls are spent."""
    headers = response.headers
    if response.status_code == 429 and headers.get(f"{RATE_HEADERS}-Day-Remaining") == "0":
        return float(headers.get(f"{RATE_HEADERS}-Day-Reset", DAY_SECONDS))
    if headers.get(f"{RATE_HEADERS}-Minute-Remaining") == "0":
        return float(headers.get(f"{RATE_HEADERS}-Minute-Reset", 60))
    return None


def modified_since(moment: datetime) -> str:
    """`start_modified_at` as SurveyMonkey takes it: `YYYY-MM-DDTHH:MM:SS`, UTC."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


def _choice_value(choice: Mapping[str, Any]) -> Any:
    return choice["weight"] if choice.get("weight") is not None else plain(choice.get("text"))


def _questions(details: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for page in details["pages"]:
        yield from page.get("questions") or []


def choice_values(details: Mapping[str, Any]) -> dict[str, Any]:
    """Each choice id of a survey's `/details`: its weight where the survey scores choices,
    else its text."""
    return {
        str(choice["id"]): _choice_value(choice)
        for question in _questions(details)
        for choice in (question.get("answers") or {}).get("choices") or []
    }


def details_questions(details: Mapping[str, Any]) -> list[SurveyQuestion]:
    """The questions of a survey's `/details`, with the scale their choices span."""
    found = []
    for question in _questions(details):
        choices = (question.get("answers") or {}).get("choices") or []
        headings = question.get("headings") or [{}]
        found.append(
            SurveyQuestion(
                str(question["id"]),
                plain(headings[0].get("heading")),
                f"{question['family']}/{question.get('subtype')}",
                numeric_scale(_choice_value(c) for c in choices),
                nps=question.get("subtype") == "nps",
                open_text=question["family"] == "open_ended",
            )
        )
    return found


class Responses(SurveyResponses, HttpStream):
    """One survey's completed responses; `choices` (choice id → value) is read from the
    survey's `/details` as each read starts. Cursor: a `SurveyCursor`, `since` between syncs,
    plus `page` and `high` within one."""

    choices: dict[str, Any]

    def details(self, parse: Callable[[Any], Parsed]) -> Parsed:
        """What `parse` reads from the survey's `/details`."""
        return self.definition("survey details", f"/v3/surveys/{self.survey_id}/details", parse)

    def questions_listed(self) -> list[SurveyQuestion]:
        """The survey's questions, from its `/details`."""
        return self.details(details_questions)

    def read(self, cursor: dict) -> Iterator[Page]:
        """Pages after `cursor`, choices resolved through the survey's details read once."""
        self.choices = self.details(choice_values)
        yield from super().read(cursor)

    def request(self, cursor: dict) -> Request:
        position = SurveyCursor.from_dict(cursor)
        params = {
            "per_page": self.page_size,
            "page": 1 if position.page is None else position.page,
            "sort_by": "date_modified",
            "sort_order": "DESC",
            "status": "completed",
        }
        if position.since is not None:
            params["start_modified_at"] = position.since
        return Request("GET", f"/v3/surveys/{self.survey_id}/responses/bulk", params=params)

    def parse(self, body: Any, cursor: dict) -> Step:
        data = body["data"]
        if not isinstance(data, list) or not all(
            isinstance(r, dict) and r["id"] and isinstance(r.get("pages") or [], list) for r in data
        ):
            raise TypeError("`data` must be a list of responses with `id` and `pages`")
        page = PAGING.after((body.get("links") or {}).get("next"))
        more = None if page is None else SurveyCursor(page=page)
        times = [r["date_modified"] for r in data]
        return newest_first(data, times, SurveyCursor.from_dict(cursor), more, since=modified_since)

    def answer_sets(self, records: Sequence[Mapping[str, Any]]) -> list[AnswerSet]:
        """Responses, each answer under its question id, choices resolved."""
        return [
            AnswerSet(
                str(response["id"]),
                {
                    str(question["id"]): self._value(question.get("answers") or [])
                    for page in response.get("pages") or []
                    for question in page.get("questions") or []
                },
                {
                    "survey": self.survey,
                    "submitted_at": response.get("date_created") or response["date_modified"],
                }
                | {
                    f"custom_variables.{k}": v
                    for k, v in (response.get("custom_variables") or {}).items()
                },
            )
            for response in records
        ]

    def _value(self, answers: Sequence[Mapping[str, Any]]) -> Any:
        """An answer's value: its choice resolved, or its text; several joined by `; `."""
        values = [
            self.choices.get(str(a["choice_id"]), f"unknown choice {a['choice_id']}")
            if "choice_id" in a
            else a.get("text")
            for a in answers
        ]
        return values[0] if len(values) == 1 else "; ".join(str(v) for v in values)


@dataclass(kw_only=True)
class SurveyMonkeySource(SurveyOptions):
    """SurveyMonkey surveys; the token comes from the environment variable `token_env`.

    `surveys` lists survey ids, or entries `{id, survey, questions}` where `survey` names the
    stream and the rows' survey (default: the survey id) and `questions` (question ids)
    overrides the shared `questions` option. Apps get 120 requests a minute by default.
    """

    VENDOR = "SurveyMonkey"
    TOKEN = f"the access token of a SurveyMonkey app with the scopes {SCOPES}"
    PAGE_LIMIT = PAGE_LIMIT
    LISTED = "surveys"
    QUESTION_KEY = "question id"
    surveys: list[str | dict[str, Any]] = field(default_factory=list)
    base_url: str = API
    token_env: str = TOKEN_ENV
    page_size: int = PAGE_LIMIT
    rate_limit: tuple[int, float] = (120, 60.0)
    kind: str = field(default="surveymonkey", init=False)

    def hooks(self) -> dict[str, Any]:
        return {
            "error_message": partial(error_message, token_env=self.token_env),
            "wait_hint": wait_hint,
        }

    def build_streams(self, client: HttpClient) -> list[Responses]:
        """One stream per survey."""
        fields = self.fields(SURVEYMONKEY)
        return [
            Responses(self.name, client, survey, fields, self.page_size)
            for survey in self.entries()
        ]
