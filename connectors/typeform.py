"""Typeform Responses API: answer sets of configured forms as NPS, CSAT and CES rows.

A form's responses come newest first; the stream pages back through them with `before` (the
last response token of the page) and, once it reaches the end, saves the latest `submitted_at`
so the next sync asks only for responses `since` then (less a few minutes for late arrivals;
re-read responses upsert). Answers are picked by field `ref` (or id) through the `questions`
option; one answer set gives one row per score kind it holds, sharing its comment. Hidden
fields `customer_id` and `email` carry identity. A response with a score outside its scale is
rejected whole, with its response id and the reason; the rest load.

The survey pieces SurveyMonkey and Qualtrics share with Typeform live here too: the `questions`
mapping and its config entries, answer sets into score rows (`score_rows`), newest-first
incremental cursors (`newest_first`) and question listings for `cxloop sources inspect`.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any, ClassVar, TypeVar

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
from tasks.errors import ConfigError, SourceError
from tasks.mapping import FieldMap, utc_naive

API = "https://api.typeform.com"
TOKEN_ENV = "TYPEFORM_TOKEN"
SCOPES = "responses:read"
PAGE_LIMIT = 1000
# Incremental syncs ask again for this much before the latest response seen.
LATE_ARRIVALS = timedelta(minutes=5)
SCORE_KINDS = ("nps", "csat", "ces")
Parsed = TypeVar("Parsed")


def survey_fields(identity: str) -> FieldMap:
    """Default fields of a survey source's flat rows (one per score kind of an answer set), with
    `customer_id`, `email` and `channel` read from the vendor's `identity` fields."""
    return FieldMap(
        fields={
            "id": "source_id",
            "survey": "survey",
            "kind": "kind",
            "score": "score",
            "comment": "comment",
            "submitted_at": "submitted_at",
            f"{identity}.customer_id": "customer_id",
            f"{identity}.email": "email",
            f"{identity}.channel": "channel",
        }
    )


TYPEFORM = survey_fields("hidden")
"""Typeform's default fields: identity from the form's hidden fields."""


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


def survey_entry(
    where: str, entry: str | dict[str, Any], shared: Mapping[str, Any], key: str
) -> tuple[str, str, Questions]:
    """(id, survey name, questions) of one configured survey: a bare id, or `{id, survey,
    questions}` whose `questions` override the source's `shared` ones; `key` says what names a
    question in this vendor (e.g. "field ref"). `ConfigError` naming `where` if malformed."""
    entry = {"id": entry} if isinstance(entry, str) else dict(entry)
    try:
        questions = Questions(**(dict(shared) | entry.pop("questions", {})))
    except TypeError as exc:
        raise ConfigError(
            f"{where}: questions: {exc}; use {', '.join(asdict(Questions()))}."
        ) from None
    survey_id = entry.pop("id", None)
    survey = entry.pop("survey", survey_id)
    if not survey_id or entry:
        raise ConfigError(f"{where}: give `id` and optionally `survey` and `questions`.")
    if not questions.scores():
        raise ConfigError(
            f"{where}: questions name no score field; give the {key} of nps, csat or ces."
        )
    return str(survey_id), str(survey), questions


@dataclass(frozen=True)
class AnswerSet:
    """One respondent's answers: the response id, each answer's value by every key that names
    its question (ref, id, QID…), and the vendor fields all rows of it share."""

    key: str
    values: Mapping[str, Any]
    common: Mapping[str, Any]


def score_rows(
    answer_sets: Iterable[AnswerSet], questions: Questions, where: str
) -> tuple[list[dict], list[Rejection]]:
    """Flat rows, one per score kind each answer set holds (`id` is `key:kind`), sharing its
    comment; and the answer sets rejected whole for a score that is not a number or lies
    outside its scale (logged as a warning naming `where`)."""
    ranges = SurveyScales(questions.csat_scale, questions.ces_scale).ranges()
    flat, rejected = [], []
    for answers in answer_sets:
        common = dict(answers.common) | {"comment": answers.values.get(questions.comment)}
        rows, problem = [], None
        for kind, ref in questions.scores().items():
            if ref not in answers.values:
                continue
            value = answers.values[ref]
            try:
                score = float(value)
            except (TypeError, ValueError):
                problem = f"{kind} answer {value!r} is not a number"
                break
            low, high = ranges[kind]
            if not low <= score <= high:
                problem = f"{kind} score {score:g} is outside {low}–{high}"
                break
            rows.append(common | {"id": f"{answers.key}:{kind}", "kind": kind, "score": score})
        if problem:
            rejected.append(Rejection(f"response {answers.key}", problem))
        else:
            flat.extend(rows)
    log_rejections(rejected, where, "responses")
    return flat, rejected


def iso(moment: datetime) -> str:
    """`YYYY-MM-DDTHH:MM:SSZ` of a naive UTC datetime."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def newest_first(
    records: Sequence[Mapping[str, Any]],
    times: Iterable[str],
    cursor: dict,
    more: dict | None,
    since: Callable[[datetime], str] = iso,
) -> Step:
    """The step of a stream read newest first, from one page's `records` and their `times`.

    While `more` (what asks for the next page, e.g. `{"before": token}`) is given, the cursor
    keeps the sync's `since` and the newest time seen (`high`); on the last page it becomes
    `{"since": high - LATE_ARRIVALS}`, written by `since`, for the next sync. Records changed
    while a sync pages move to its front, so they shift older ones to later pages: re-read, never
    skipped.
    """
    seen = [utc_naive(t) for t in times]
    if "high" in cursor:
        seen.append(utc_naive(cursor["high"]))
    high = max(seen, default=None)
    kept = {"since": cursor["since"]} if "since" in cursor else {}
    if more is None:
        return Step(records, kept if high is None else {"since": since(high - LATE_ARRIVALS)}, True)
    return Step(records, kept | more | ({"high": iso(high)} if high else {}), done=False)


@dataclass(frozen=True)
class SurveyQuestion:
    """A question as its survey lists it: `key` is what `questions:` names it by, `scale` its
    (lowest, highest) numeric answer when known."""

    key: str
    title: str
    type: str
    scale: tuple[float, float] | None = None
    nps: bool = False
    open_text: bool = False


@dataclass(frozen=True)
class SurveyQuestions:
    """One configured survey's questions; `option` is the source option that lists surveys."""

    option: str
    id: str
    survey: str
    questions: list[SurveyQuestion]


def plain(text: Any) -> str:
    """Question text without HTML tags, entities or runs of white space; block tags (`p`,
    `div`, `br`, `li`) part words, inline ones (`b`, `span`) do not."""
    spaced = re.sub(r"<(?:br|/?p|/?div|/?li)\b[^>]*>", " ", str(text or ""), flags=re.I)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", spaced)).split())


def numeric_scale(values: Iterable[Any]) -> tuple[float, float] | None:
    """(lowest, highest) of `values` if there are some and all are numbers, else None."""
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        return None
    return (min(numbers), max(numbers)) if numbers else None


def suggest(questions: Sequence[SurveyQuestion]) -> dict[str, str]:
    """The likely question key per kind: an NPS question (else a 0–10 scale) for nps, a 1–5
    scale for csat, a 1–7 scale for ces, open text for comment; each question used once and
    kinds with no likely question left out."""
    fits = {
        "nps": lambda q: q.nps or q.scale == (0, 10),
        "csat": lambda q: q.scale == (1, 5),
        "ces": lambda q: q.scale == (1, 7),
        "comment": lambda q: q.open_text,
    }
    chosen: dict[str, str] = {}
    for kind, fit in fits.items():
        found = next((q.key for q in questions if fit(q) and q.key not in chosen.values()), None)
        if found:
            chosen[kind] = found
    return chosen


def read_definition(
    client: HttpClient, request: Request, where: str, parse: Callable[[Any], Parsed]
) -> Parsed:
    """What `parse` reads (questions, choices) from the survey definition `request` fetches;
    `SourceError` naming `where` if the definition lacks the vendor's documented shape."""
    body = client.send(request, where)
    try:
        return parse(body)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise SourceError(
            f"{where}: {client.vendor} sent a survey definition without the documented shape "
            f"({type(exc).__name__}: {exc}). Rerun; if it persists, report it to the vendor."
        ) from None


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
        self.name, self.survey_id, self.survey = survey, form, survey
        self.path = f"/forms/{form}/responses"
        self.questions = questions
        self.fields = fields
        self.page_size = page_size
        self.rejected: list[Rejection] = []

    def questions_listed(self) -> list[SurveyQuestion]:
        """The form's questions, from its definition (`GET /forms/{id}`)."""
        where = f"source {self.source}, stream {self.name}, form definition"
        request = Request("GET", f"/forms/{self.survey_id}")
        return read_definition(self.client, request, where, form_questions)

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
        more = {"before": items[-1]["token"]} if items and int(body["page_count"]) > 1 else None
        times = [i["submitted_at"] for i in items if i.get("submitted_at")]
        return newest_first(items, times, cursor, more)

    def transform(self, records: Sequence[Mapping[str, Any]], where: str) -> list[dict]:
        """One flat row per score kind each answer set holds, mapped by `fields`."""
        answer_sets = [
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
        flat, rejected = score_rows(answer_sets, self.questions, where)
        self.rejected.extend(rejected)
        return self.fields.apply(flat, self.table, where)


@dataclass(kw_only=True)
class SurveyOptions(HttpOptions):
    """Options every survey source takes besides its list of surveys (the option `LISTED`, its
    questions named by a `QUESTION_KEY`): the shared `questions` mapping and overrides of its
    default fields and values. Its streams list their questions (`questions_listed`)."""

    LISTED: ClassVar[str]
    QUESTION_KEY: ClassVar[str]
    questions: dict[str, Any] = field(default_factory=dict)
    field_map: dict[str, str] = field(default_factory=dict)
    value_map: dict[str, dict[str, str]] = field(default_factory=dict)

    def entries(self) -> list[tuple[str, str, Questions]]:
        """(id, survey, questions) of each configured survey; `ConfigError` if none is listed
        or one is malformed."""
        where = f"sources.{self.name}.options"
        listed = getattr(self, self.LISTED)
        if not listed:
            raise ConfigError(
                f"{where}: list the {self.LISTED[:-1]} ids to read in `{self.LISTED}`."
            )
        return [
            survey_entry(f"{where}.{self.LISTED}[{i}]", entry, self.questions, self.QUESTION_KEY)
            for i, entry in enumerate(listed)
        ]

    def fields(self, defaults: FieldMap) -> FieldMap:
        """`defaults` with the source's `field_map` and `value_map` applied."""
        return defaults.override(self.field_map, self.value_map)

    def list_questions(self) -> list[SurveyQuestions]:
        """Each configured survey's questions, as the vendor's survey definition lists them."""
        return [
            SurveyQuestions(self.LISTED, s.survey_id, s.survey, s.questions_listed())
            for s in self.streams()
        ]


@dataclass(kw_only=True)
class TypeformSource(SurveyOptions):
    """Typeform forms; the token comes from the environment variable `token_env`.

    `forms` lists form ids, or entries `{id, survey, questions}` where `survey` names the
    stream and the rows' survey (default: the form id) and `questions` overrides the shared
    `questions` option. Typeform allows about 2 requests per second per account.
    """

    LISTED = "forms"
    QUESTION_KEY = "field ref"
    forms: list[str | dict[str, Any]] = field(default_factory=list)
    base_url: str = API
    token_env: str = TOKEN_ENV
    page_size: int = PAGE_LIMIT
    rate_limit: tuple[int, float] = (2, 1.0)
    kind: str = field(default="typeform", init=False)

    def __post_init__(self) -> None:
        forms = self.entries()
        if not 1 <= self.page_size <= PAGE_LIMIT:
            raise ConfigError(
                f"sources.{self.name}.options: page_size must be 1–{PAGE_LIMIT} (Typeform's "
                "maximum)."
            )
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
        fields = self.fields(TYPEFORM)
        self._streams = [
            Responses(self.name, self._client, form, survey, questions, fields, self.page_size)
            for form, survey, questions in forms
        ]

    def streams(self) -> list[Responses]:
        """One stream per form; each keeps its `rejected` answer sets across reads."""
        return self._streams
