"""A fake SurveyMonkey v3 API for pytest-httpserver: `GET /v3/surveys/{id}/responses/bulk` and
`GET /v3/surveys/{id}/details`.

Responses are served page by page (`page`, 1-based, at most 100 `per_page`) in the asked order of
`date_modified`, filtered by `start_modified_at` (which must look like `YYYY-MM-DDTHH:MM:SS`) and
`status`; `links.next` is present while pages remain. Unknown parameters get SurveyMonkey's 400.
Every answer carries the `X-Ratelimit-App-Global-*` headers of a per-minute window
(`minute_limit` calls per `window_seconds`); a call over the limit gets the 429 of error 1040.
`plan` scripts the answer to chosen requests and `before` runs a change before one is answered.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from werkzeug import Request, Response

from tests.fakes.loopback import PlannedAnswers, json_response

PARAMS = frozenset(
    {"per_page", "page", "start_created_at", "end_created_at", "start_modified_at",
     "end_modified_at", "sort_order", "sort_by", "status", "simple"}
)  # fmt: skip
MOMENT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$")


def error(status: int, code: str, name: str, message: str) -> Response:
    """SurveyMonkey's error body: `{"error": {id, name, docs, message, http_status_code}}`."""
    body = {
        "error": {
            "id": code,
            "name": name,
            "docs": "https://developer.surveymonkey.com/api/v3/#error-codes",
            "message": message,
            "http_status_code": status,
        }
    }
    return json_response(body, status)


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S+00:00")


def nps_question(qid: str, heading: str) -> dict[str, Any]:
    """An NPS question: a one-row matrix whose choices 0–10 carry their number as weight."""
    return {
        "id": qid,
        "family": "matrix",
        "subtype": "nps",
        "headings": [{"heading": heading}],
        "answers": {
            "rows": [{"id": f"{qid}r", "text": "", "position": 1, "visible": True}],
            "choices": [
                {"id": f"{qid}{n:02d}", "text": str(n), "weight": n, "position": n + 1}
                for n in range(11)
            ],
        },
    }


def rating_question(qid: str, heading: str, labels: list[str]) -> dict[str, Any]:
    """A single-choice rating whose choices are scored 1, 2, … in the order of `labels`."""
    return {
        "id": qid,
        "family": "single_choice",
        "subtype": "vertical",
        "headings": [{"heading": heading}],
        "answers": {
            "choices": [
                {"id": f"{qid}{n:02d}", "text": label, "weight": n, "position": n}
                for n, label in enumerate(labels, start=1)
            ]
        },
    }


def open_question(qid: str, heading: str) -> dict[str, Any]:
    """An open-ended essay question."""
    return {
        "id": qid,
        "family": "open_ended",
        "subtype": "essay",
        "headings": [{"heading": heading}],
    }


class FakeSurveyMonkey(PlannedAnswers[tuple[str, dict[str, str], float]]):
    """SurveyMonkey on loopback; `requests` holds each request's path, query and arrival time."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token
        self.details: dict[str, dict[str, Any]] = {}
        self.responses: dict[str, list[dict[str, Any]]] = {}
        self.changes: dict[int, Callable[[], None]] = {}
        self.minute_limit = 120
        self.window_seconds = 60.0
        self._window_end = 0.0
        self._used = 0
        self._next_id = 100_000_000

    def survey(self, survey_id: str, title: str, questions: list[dict[str, Any]]) -> None:
        """Define a survey with one page holding `questions`."""
        self.details[survey_id] = {
            "id": survey_id,
            "title": title,
            "question_count": len(questions),
            "page_count": 1,
            "pages": [{"id": f"{survey_id}p1", "title": "", "questions": questions}],
            "custom_variables": {"customer_id": "", "email": ""},
        }
        self.responses.setdefault(survey_id, [])

    def add(
        self,
        survey_id: str,
        modified: datetime,
        answers: dict[str, Any],
        custom_variables: dict[str, str] | None = None,
        status: str = "completed",
    ) -> str:
        """A response answering question id → value (a choice's text for choice questions, free
        text for open ones); returns its id."""
        self._next_id += 1
        key = str(self._next_id)
        questions = {q["id"]: q for q in self.details[survey_id]["pages"][0]["questions"]}
        answered = []
        for qid, value in answers.items():
            choices = (questions[qid].get("answers") or {}).get("choices")
            if choices is None:
                answered.append({"id": qid, "answers": [{"text": value}]})
                continue
            chosen = next(c for c in choices if c["text"] == str(value))
            row = (questions[qid]["answers"].get("rows") or [{}])[0].get("id")
            answer = {"choice_id": chosen["id"]} | ({"row_id": row} if row else {})
            answered.append({"id": qid, "answers": [answer]})
        self.responses[survey_id].append(
            {
                "id": key,
                "survey_id": survey_id,
                "collector_id": "400000001",
                "response_status": status,
                "date_created": stamp(modified),
                "date_modified": stamp(modified),
                "custom_variables": custom_variables or {},
                "href": f"https://api.surveymonkey.com/v3/surveys/{survey_id}/responses/{key}",
                "pages": [{"id": f"{survey_id}p1", "questions": answered}],
            }
        )
        return key

    def modify(self, survey_id: str, key: str, modified: datetime) -> None:
        """The respondent edits response `key` at `modified`."""
        response = next(r for r in self.responses[survey_id] if r["id"] == key)
        response["date_modified"] = stamp(modified)

    def before(self, number: int, change: Callable[[], None]) -> None:
        """Run `change` just before request `number` (counted from now on) is answered."""
        self.changes[len(self.requests) + number] = change

    def rate_limited(self, numbers: Iterable[int], reset: int = 1) -> None:
        """Requests `numbers` get the 429 of a spent minute window that resets in `reset` s."""
        response = error(429, "1040", "Rate limit reached", "Too many requests were made.")
        response.headers.update(self._rate_headers(0, reset))
        self.plan(numbers, response)

    def handle(self, request: Request) -> Response:
        query = dict(request.args)
        planned = self.log((request.path, query, time.monotonic()))
        change = self.changes.pop(len(self.requests), None)
        if change is not None:
            change()
        if planned is not None:
            return planned
        remaining, reset = self._spend()
        if remaining < 0:
            response = error(429, "1040", "Rate limit reached", "Too many requests were made.")
        else:
            response = self._route(request, query)
        response.headers.update(self._rate_headers(max(remaining, 0), reset))
        return response

    def _route(self, request: Request, query: dict[str, str]) -> Response:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return error(401, "1011", "Authorization Error", "The authorization token is invalid.")
        match = re.fullmatch(r"/v3/surveys/([^/]+)/(details|responses/bulk)", request.path)
        if not match:
            return error(404, "1020", "Resource Not Found", f"No route for {request.path}")
        survey_id, what = match.groups()
        if survey_id not in self.details:
            return error(404, "1020", "Resource Not Found", f"Survey {survey_id} not found.")
        if what == "details":
            return json_response(self.details[survey_id])
        return self._bulk(survey_id, request.path, query)

    def _bulk(self, survey_id: str, path: str, query: dict[str, str]) -> Response:
        unknown = sorted(set(query) - PARAMS)
        if unknown:
            return error(400, "1002", "Bad Request", f"Invalid query parameters: {unknown}")
        size, page = int(query.get("per_page", 50)), int(query.get("page", 1))
        if not 1 <= size <= 100 or page < 1:
            return error(400, "1002", "Bad Request", "per_page must be 1–100 and page ≥ 1.")
        since = query.get("start_modified_at")
        if since is not None and not MOMENT.match(since):
            return error(
                400, "1002", "Bad Request", "start_modified_at must be YYYY-MM-DDTHH:MM:SS"
            )
        chosen = [
            r
            for r in self.responses[survey_id]
            if (since is None or r["date_modified"][:19] > since)
            and query.get("status", r["response_status"]) == r["response_status"]
        ]
        newest = query.get("sort_order", "DESC") == "DESC"
        chosen.sort(key=lambda r: (r["date_modified"], r["id"]), reverse=newest)
        last = max(1, math.ceil(len(chosen) / size))
        links = {"self": self._link(path, query, page)}
        if page < last:
            links["next"] = self._link(path, query, page + 1)
            links["last"] = self._link(path, query, last)
        if page > 1:
            links["prev"] = self._link(path, query, page - 1)
        body = {
            "data": chosen[(page - 1) * size : page * size],
            "per_page": size,
            "page": page,
            "total": len(chosen),
            "links": links,
        }
        return json_response(body)

    def _link(self, path: str, query: dict[str, str], page: int) -> str:
        return f"{self.url}{path}?{urlencode(query | {'page': page})}"

    def _spend(self) -> tuple[int, int]:
        """Calls left in the current window after this one (−1: over the limit), and the
        whole seconds until the window resets."""
        now = time.monotonic()
        if now >= self._window_end:
            self._window_end, self._used = now + self.window_seconds, 0
        self._used += 1
        return self.minute_limit - self._used, max(1, math.ceil(self._window_end - now))

    def _rate_headers(self, remaining: int, reset: int) -> dict[str, str]:
        return {
            "X-Ratelimit-App-Global-Minute-Limit": str(self.minute_limit),
            "X-Ratelimit-App-Global-Minute-Remaining": str(remaining),
            "X-Ratelimit-App-Global-Minute-Reset": str(reset),
            "X-Ratelimit-App-Global-Day-Limit": "500",
            "X-Ratelimit-App-Global-Day-Remaining": "400",
            "X-Ratelimit-App-Global-Day-Reset": "43200",
        }
