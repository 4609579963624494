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
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any

import httpx

from connectors.files import Rejection, SurveyScales, log_rejections
from connectors.http import (
    HttpClient,
    HttpOptions,
    HttpStream,
    Request,
    SecretHeader,
    Step,
    body_text,
    env_secret,
    vendor_client,
)
from tasks.errors import ConfigError
from tasks.mapping import FieldMap, utc_naive

API = "https://api.typeform.com"
TOKEN_ENV = "TYPEFORM_TOKEN"
SCOPES = "responses:read"
PAGE_LIMIT = 1000
# Incremental syncs ask again for this much before the latest response seen.
LATE_ARRIVALS = timedelta(minutes=5)
SCORE_KINDS = ("nps", "csat", "ces")

TYPEFORM = FieldMap(
    fields={
        "id": "source_id",
        "survey": "survey",
        "kind": "kind",
        "score": "score",
        "comment": "comment",
        "submitted_at": "submitted_at",
        "hidden.customer_id": "customer_id",
        "hidden.email": "email",
        "hidden.channel": "channel",
    }
)
"""Typeform's default fields: one flattened row per score kind of an answer set."""


@dataclass(frozen=True)
class Questions:
    """Which form fields (by `ref`, or id) hold each score and the comment; CSAT and CES scales."""

    nps: str | None = None
    csat: str | None = None
    ces: str | None = None
    comment: str | None = None
    csat_scale: int = 5
    ces_scale: int = 7

    def scores(self) -> dict[str, str]:
        """Field ref per configured score kind."""
        return {kind: ref for kind in SCORE_KINDS if (ref := getattr(self, kind))}


def error_message(response: httpx.Response, token_env: str = TOKEN_ENV) -> str:
    """Typeform's `code: description`, with the fix for authentication errors."""
    try:
        body = response.json()
    except ValueError:
        return body_text(response)
    if not isinstance(body, dict) or not (body.get("description") or body.get("code")):
        return body_text(response)
    message = ": ".join(str(body[k]) for k in ("code", "description") if body.get(k))
    if response.status_code in (401, 403):
        message += (
            f" — check {token_env}: it must hold a Typeform personal access token (Account → "
            f"Personal tokens) with the scope {SCOPES}, from the account that owns the form."
        )
    return message


def _answer_value(answer: Mapping[str, Any]) -> Any:
    kind = answer["type"]
    if kind == "choice":
        return answer["choice"].get("label")
    return answer.get(kind)


class Responses(HttpStream):
    """One form's responses as canonical `survey_response` rows; `rejected` holds the answer
    sets left out. Cursor: `{"since"}` between syncs, plus `before` and `high` within one."""

    table = "survey_response"
    primary_key = "response_id"
    cursor_field = "submitted_at"

    def __init__(
        self,
        source: str,
        client: HttpClient,
        form: str,
        survey: str,
        questions: Questions,
        fields: FieldMap,
        page_size: int = PAGE_LIMIT,
    ) -> None:
        super().__init__(source, client)
        self.name, self.form, self.survey = survey, form, survey
        self.path = f"/forms/{form}/responses"
        self.questions = questions
        self.scales = SurveyScales(questions.csat_scale, questions.ces_scale)
        self.fields = fields
        self.page_size = page_size
        self.rejected: list[Rejection] = []

    def request(self, cursor: dict) -> Request:
        params = {"page_size": self.page_size}
        params |= {key: cursor[key] for key in ("since", "before") if key in cursor}
        return Request("GET", self.path, params=params)

    def parse(self, body: Any, cursor: dict) -> Step:
        items = body["items"]
        if not isinstance(items, list) or not all(
            isinstance(i, dict) and i["token"] and isinstance(i.get("answers") or [], list)
            for i in items
        ):
            raise TypeError("`items` must be a list of responses with `token` and `answers`")
        seen = [utc_naive(i["submitted_at"]) for i in items if i.get("submitted_at")]
        if "high" in cursor:
            seen.append(utc_naive(cursor["high"]))
        high = max(seen, default=None)
        kept = {"since": cursor["since"]} if "since" in cursor else {}
        if not items or int(body["page_count"]) <= 1:
            if high is None:
                return Step(items, kept, done=True)
            return Step(items, {"since": _iso(high - LATE_ARRIVALS)}, done=True)
        step = kept | {"before": items[-1]["token"]}
        return Step(items, step | ({"high": _iso(high)} if high else {}), done=False)

    def transform(self, records: Sequence[Mapping[str, Any]], where: str) -> list[dict]:
        """One flat row per score kind each answer set holds, mapped by `fields`."""
        ranges = self.scales.ranges()
        flat, rejected = [], []
        for response in records:
            if not response.get("submitted_at"):
                continue
            answers = {
                key: answer
                for answer in response.get("answers") or []
                for key in (answer["field"]["id"], answer["field"].get("ref"))
                if key
            }
            comment = answers.get(self.questions.comment)
            common = {
                "survey": self.survey,
                "submitted_at": response["submitted_at"],
                "comment": _answer_value(comment) if comment else None,
            }
            common |= {f"hidden.{k}": v for k, v in (response.get("hidden") or {}).items()}
            key = response.get("response_id") or response["token"]
            rows, problem = [], None
            for kind, ref in self.questions.scores().items():
                if ref not in answers:
                    continue
                value = _answer_value(answers[ref])
                try:
                    score = float(value)
                except (TypeError, ValueError):
                    problem = f"{kind} answer {value!r} is not a number"
                    break
                low, high = ranges[kind]
                if not low <= score <= high:
                    problem = f"{kind} score {score:g} is outside {low}–{high}"
                    break
                rows.append(common | {"id": f"{key}:{kind}", "kind": kind, "score": score})
            if problem:
                rejected.append(Rejection(f"response {key}", problem))
            else:
                flat.extend(rows)
        self.rejected.extend(rejected)
        log_rejections(rejected, where, "responses")
        return self.fields.apply(flat, self.table, where)


def _iso(moment: Any) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(kw_only=True)
class TypeformSource(HttpOptions):
    """Typeform forms; the token comes from the environment variable `token_env`.

    `forms` lists form ids, or entries `{id, survey, questions}` where `survey` names the
    stream and the rows' survey (default: the form id) and `questions` overrides the shared
    `questions` option. Typeform allows about 2 requests per second per account.
    """

    forms: list[str | dict[str, Any]] = field(default_factory=list)
    questions: dict[str, Any] = field(default_factory=dict)
    base_url: str = API
    token_env: str = TOKEN_ENV
    page_size: int = PAGE_LIMIT
    rate_limit: tuple[int, float] = (2, 1.0)
    field_map: dict[str, str] = field(default_factory=dict)
    value_map: dict[str, dict[str, str]] = field(default_factory=dict)
    kind: str = field(default="typeform", init=False)

    def __post_init__(self) -> None:
        where = f"sources.{self.name}.options"
        if not self.forms:
            raise ConfigError(f"{where}: list the form ids to read in `forms`.")
        if not 1 <= self.page_size <= PAGE_LIMIT:
            raise ConfigError(f"{where}: page_size must be 1–{PAGE_LIMIT} (Typeform's maximum).")
        forms = [self._form(i, entry) for i, entry in enumerate(self.forms)]
        token = env_secret(
            self.name,
            self.token_env,
            f"a Typeform personal access token (Account → Personal tokens) with the scope {SCOPES}",
        )
        self._client = vendor_client(
            "Typeform",
            self,
            self.base_url,
            SecretHeader(token),
            error_message=partial(error_message, token_env=self.token_env),
        )
        fields = TYPEFORM.override(self.field_map, self.value_map)
        self._streams = [
            Responses(self.name, self._client, form, survey, questions, fields, self.page_size)
            for form, survey, questions in forms
        ]

    def _form(self, index: int, entry: str | dict[str, Any]) -> tuple[str, str, Questions]:
        where = f"sources.{self.name}.options.forms[{index}]"
        entry = {"id": entry} if isinstance(entry, str) else dict(entry)
        try:
            questions = Questions(**(self.questions | entry.pop("questions", {})))
        except TypeError as exc:
            raise ConfigError(
                f"{where}: questions: {exc}; use {', '.join(asdict(Questions()))}."
            ) from None
        form = entry.pop("id", None)
        survey = entry.pop("survey", form)
        if not form or entry:
            raise ConfigError(f"{where}: give `id` and optionally `survey` and `questions`.")
        if not questions.scores():
            raise ConfigError(
                f"{where}: questions name no score field; give the field ref of nps, csat or ces."
            )
        return form, survey, questions

    def streams(self) -> list[Responses]:
        """One stream per form; each keeps its `rejected` answer sets across reads."""
        return self._streams
