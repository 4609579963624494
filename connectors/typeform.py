"""Typeform Responses API: answer sets of configured forms as NPS, CSAT and CES rows.

A form's responses come newest first; the stream pages back through them with `before` (the
last response token of the page) and, once it reaches the end, saves the latest `submitted_at`
so the next sync asks only for responses `since` then (less a few minutes for late arrivals;
re-read responses upsert). Answers are picked by field `ref` (or id) through the `questions`
option; one answer set gives one row per score kind it holds, sharing its comment. Hidden
fields `customer_id` and `email` carry identity. A response with a score outside its scale is
rejected whole, with its response id and the reason; the rest load.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import httpx

from connectors.http import (
    HttpClient,
    HttpStream,
    Request,
    Step,
    json_error,
)
from connectors.paging import TokenPaging
from connectors.surveys import (
    AnswerSet,
    SurveyCursor,
    SurveyOptions,
    SurveyQuestion,
    SurveyResponses,
    newest_first,
    numeric_scale,
    plain,
    survey_fields,
)

API = "https://api.typeform.com"
TOKEN_ENV = "TYPEFORM_TOKEN"
SCOPES = "responses:read"
PAGE_LIMIT = 1000
PAGING = TokenPaging("before")  # a page's last response token asks for the older ones
TYPEFORM = survey_fields("hidden")
"""Typeform's default fields: identity, and the ticket a post-contact survey is about, from
the form's hidden fields (`customer_id`, `email`, `channel`, `ticket_id`)."""


def _message(body: Any) -> str:
    return ": ".join(str(body[k]) for k in ("code", "description") if body.get(k))


def error_message(response: httpx.Response, token_env: str = TOKEN_ENV) -> str:
    """Typeform's `code: description`, with the fix for authentication errors."""
    return json_error(
        response,
        _message,
        f"check {token_env}: it must hold a Typeform personal access token (Account → Personal "
        f"tokens) with the scope {SCOPES}, from the account that owns the form.",
    )


def _answer_value(answer: Mapping[str, Any]) -> Any:
    kind = answer["type"]
    if kind == "choice":
        return answer["choice"].get("label")
    return answer.get(kind)


def form_questions(form: Mapping[str, Any]) -> list[SurveyQuestion]:
    """The questions of a form definition (`GET /forms/{id}`), those inside groups included."""
    found = []
    for spec in form["fields"]:
        props = spec.get("properties") or {}
        if "fields" in props:
            found += form_questions(props)
            continue
        kind = spec["type"]
        if kind == "opinion_scale":
            low = 1 if props.get("start_at_one") else 0
            scale = (low, low + int(props.get("steps", 11)) - 1)
        elif kind == "rating":
            scale = (1, int(props.get("steps", 5)))
        else:
            labels = [c.get("label") for c in props.get("choices") or []]
            scale = (0, 10) if kind == "nps" else numeric_scale(labels)
        found.append(
            SurveyQuestion(
                spec.get("ref") or spec["id"],
                plain(spec.get("title")),
                kind,
                scale,
                nps=kind == "nps",
                open_text=kind in ("long_text", "short_text"),
            )
        )
    return found


class Responses(SurveyResponses, HttpStream):
    """One form's responses (`survey_id` is the form id). Cursor: a `SurveyCursor`, `since`
    between syncs, plus `before` and `high` within one."""

    def questions_listed(self) -> list[SurveyQuestion]:
        """The form's questions, from its definition (`GET /forms/{id}`)."""
        return self.definition("form definition", f"/forms/{self.survey_id}", form_questions)

    def request(self, cursor: dict) -> Request:
        position = SurveyCursor.from_dict(cursor)
        params = {"page_size": self.page_size}
        params |= {"since": position.since} if position.since is not None else {}
        params |= PAGING.ask(position.before)
        return Request("GET", f"/forms/{self.survey_id}/responses", params=params)

    def parse(self, body: Any, cursor: dict) -> Step:
        items = body["items"]
        if not isinstance(items, list) or not all(
            isinstance(i, dict) and i["token"] and isinstance(i.get("answers") or [], list)
            for i in items
        ):
            raise TypeError("`items` must be a list of responses with `token` and `answers`")
        position = SurveyCursor.from_dict(cursor)
        last = items[-1]["token"] if items and int(body["page_count"]) > 1 else None
        before = PAGING.after(last, position.before)
        more = None if before is None else SurveyCursor(before=before)
        times = [i["submitted_at"] for i in items if i.get("submitted_at")]
        return newest_first(items, times, position, more)

    def answer_sets(self, records: Sequence[Mapping[str, Any]]) -> list[AnswerSet]:
        """Submitted responses, each answer under its field id and ref."""
        return [
            AnswerSet(
                response.get("response_id") or response["token"],
                {
                    key: _answer_value(answer)
                    for answer in response.get("answers") or []
                    for key in (answer["field"]["id"], answer["field"].get("ref"))
                    if key
                },
                {"survey": self.survey, "submitted_at": response["submitted_at"]}
                | {f"hidden.{k}": v for k, v in (response.get("hidden") or {}).items()},
            )
            for response in records
            if response.get("submitted_at")
        ]


@dataclass(kw_only=True)
class TypeformSource(SurveyOptions):
    """Typeform forms; the token comes from the environment variable `token_env`.

    `forms` lists form ids, or entries `{id, survey, questions}` where `survey` names the
    stream and the rows' survey (default: the form id) and `questions` overrides the shared
    `questions` option. Typeform allows about 2 requests per second per account; requests go
    one at a time at 1.6 a second, a margin that keeps a sync clear of its 429s.
    """

    VENDOR = "Typeform"
    TOKEN = f"a Typeform personal access token (Account → Personal tokens) with the scope {SCOPES}"
    PAGE_LIMIT = PAGE_LIMIT
    LISTED = "forms"
    QUESTION_KEY = "field ref"
    forms: list[str | dict[str, Any]] = field(default_factory=list)
    base_url: str = API
    token_env: str = TOKEN_ENV
    page_size: int = PAGE_LIMIT
    rate_limit: tuple[int, float] = (1, 0.625)
    kind: str = field(default="typeform", init=False)

    def hooks(self) -> dict[str, Any]:
        return {"error_message": partial(error_message, token_env=self.token_env)}

    def build_streams(self, client: HttpClient) -> list[Responses]:
        """One stream per form."""
        fields = self.fields(TYPEFORM)
        return [
            Responses(self.name, client, form, fields, self.page_size) for form in self.entries()
        ]
