"""A fake Typeform API for pytest-httpserver: `GET /forms/{id}/responses` and the form
definition `GET /forms/{id}`.

Responses are kept per form and served newest first, as Typeform does without `sort`. Paging is
by `before` (a response token): an unknown token, `page`/`offset`/`after` parameters, `sort`
together with a token, or `page_size` above 1000 get Typeform's 400, so a connector that pages
any other way fails. `plan` scripts the answer to chosen requests (429, 5xx, malformed pages).
With `per_second`, it holds the account to Typeform's rate (a bucket of `per_second` requests
refilled at `per_second` a second) and answers 429 beyond it, counting them in `too_many`.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from werkzeug import Request, Response

from tests.fakes.loopback import PlannedAnswers, json_response


def answer(ref: str, kind: str, value: Any, field_type: str = "opinion_scale") -> dict[str, Any]:
    """One answer as Typeform sends it: `{"field": {id, type, ref}, "type": kind, kind: value}`."""
    return {
        "field": {"id": f"id_{ref}", "type": field_type, "ref": ref},
        "type": kind,
        kind: value,
    }


def error(status: int, code: str, description: str) -> Response:
    return json_response({"code": code, "description": description}, status)


class FakeTypeform(PlannedAnswers[tuple[str, dict[str, str]]]):
    """Typeform on loopback; `requests` holds each request's path and query."""

    def __init__(self, token: str, per_second: float | None = None) -> None:
        super().__init__()
        self.token = token
        self.per_second = per_second
        self.too_many = 0
        self._tokens, self._stamp = per_second or 0.0, time.monotonic()
        self._bucket = threading.Lock()
        self.forms: dict[str, list[dict[str, Any]]] = {}
        self.definitions: dict[str, dict[str, Any]] = {}

    def add(
        self,
        form: str,
        submitted_at: datetime,
        answers: list[dict[str, Any]],
        hidden: dict[str, str] | None = None,
    ) -> str:
        """A new completed response; returns its response id."""
        key = uuid.uuid4().hex[:16]
        self.forms.setdefault(form, []).append(
            {
                "landing_id": key,
                "token": key,
                "response_id": key,
                "landed_at": submitted_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "submitted_at": submitted_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "metadata": {"platform": "other", "user_agent": "Mozilla/5.0", "referer": ""},
                "hidden": hidden or {},
                "calculated": {"score": 0},
                "answers": answers,
            }
        )
        return key

    def define(self, form: str, title: str, fields: list[dict[str, Any]]) -> None:
        """The form's definition: `fields` as Typeform lists them (`id`, `ref`, `title`, `type`,
        `properties`)."""
        self.definitions[form] = {
            "id": form,
            "type": "form",
            "title": title,
            "settings": {"language": "en", "is_public": True},
            "hidden": ["customer_id", "email"],
            "fields": fields,
            "_links": {"display": f"https://example.typeform.com/to/{form}"},
        }

    def rate_limited(self, numbers: Iterable[int], retry_after: str = "0") -> None:
        response = error(429, "RATE_LIMITED", "You have exceeded the allowed request rate.")
        response.headers["Retry-After"] = retry_after
        self.plan(numbers, response)

    def handle(self, request: Request) -> Response:
        query = dict(request.args)
        planned = self.log((request.path, query))
        if planned is not None:
            return planned
        if self.per_second is not None and not self._within_rate():
            return error(429, "RATE_LIMITED", "You have exceeded the allowed request rate.")
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return error(401, "AUTHENTICATION_FAILED", "Authentication credentials not found.")
        parts = request.path.strip("/").split("/")
        if len(parts) == 2 and parts[0] == "forms":
            if parts[1] not in self.definitions:
                return error(404, "FORM_NOT_FOUND", f"Form {parts[1]} not found")
            return json_response(self.definitions[parts[1]])
        if len(parts) != 3 or parts[0] != "forms" or parts[2] != "responses":
            return error(404, "NOT_FOUND", f"No route for {request.path}")
        if parts[1] not in self.forms:
            return error(404, "FORM_NOT_FOUND", f"Form {parts[1]} not found")
        return self._responses(self.forms[parts[1]], query)

    def _responses(self, responses: list[dict[str, Any]], query: dict[str, str]) -> Response:
        for wrong in ("page", "offset", "after"):
            if wrong in query:
                return error(400, "VALIDATION_ERROR", f"unsupported parameter {wrong}")
        if "sort" in query and "before" in query:
            return error(400, "VALIDATION_ERROR", "sort cannot be used with before")
        size = int(query.get("page_size", 25))
        if not 1 <= size <= 1000:
            return error(400, "VALIDATION_ERROR", "page_size must be between 1 and 1000")
        chosen = sorted(responses, key=lambda r: (r["submitted_at"], r["token"]), reverse=True)
        if "since" in query:
            chosen = [r for r in chosen if r["submitted_at"] >= query["since"]]
        if "before" in query:
            tokens = [r["token"] for r in chosen]
            if query["before"] not in tokens:
                return error(400, "VALIDATION_ERROR", "invalid token in before")
            chosen = chosen[tokens.index(query["before"]) + 1 :]
        body = {
            "total_items": len(chosen),
            "page_count": math.ceil(len(chosen) / size),
            "items": chosen[:size],
        }
        return json_response(body)

    def _within_rate(self) -> bool:
        """Whether the account's bucket holds a request now (taking it), else counts a 429."""
        assert self.per_second is not None
        with self._bucket:
            now = time.monotonic()
            refill = (now - self._stamp) * self.per_second
            self._tokens = min(self.per_second, self._tokens + refill)
            self._stamp = now
            if self._tokens < 1:
                self.too_many += 1
                return False
            self._tokens -= 1
            return True
