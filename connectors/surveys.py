"""What every survey source shares: the `questions` mapping and its config entries, answer
sets into score rows (`score_rows`, `SurveyResponses`), newest-first incremental cursors
(`newest_first`) and question listings for `cxloop sources inspect`
(`SurveyOptions.list_questions`)."""

from __future__ import annotations

import html
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, ClassVar, NamedTuple

from connectors.base import Rejection, log_rejections
from connectors.canonical import FieldMap, utc_naive
from connectors.cursors import StoredCursor
from connectors.errors import ConfigError
from connectors.http import HttpClient, Parsed, Request, Step
from connectors.http_source import HttpSource
from connectors.scales import SurveyScales

# Incremental syncs ask again for this much before the latest response seen.
LATE_ARRIVALS = timedelta(minutes=5)
SCORE_KINDS = ("nps", "csat", "ces")


def survey_fields(identity: str) -> FieldMap:
    """Default fields of a survey source's flat rows (one per score kind of an answer set), with
    `customer_id`, `email`, `channel` and `ticket_id` (the help-desk ticket a post-contact
    survey is about) read from the vendor's `identity` fields of those names."""
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
            f"{identity}.ticket_id": "ticket_id",
        }
    )


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


class SurveyEntry(NamedTuple):
    """One configured survey: its vendor id, the name its stream and rows carry, its questions."""

    id: str
    survey: str
    questions: Questions


def survey_entry(
    where: str, entry: str | dict[str, Any], shared: Mapping[str, Any], key: str
) -> SurveyEntry:
    """One configured survey from its entry: a bare id, or `{id, survey, questions}` whose
    `questions` override the source's `shared` ones; `key` says what names a question in this
    vendor (e.g. "field ref"). `ConfigError` naming `where` if malformed."""
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
    return SurveyEntry(str(survey_id), str(survey), questions)


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


@dataclass(frozen=True)
class SurveyCursor(StoredCursor):
    """Where a survey stream's reads stand: `since`, the time the next sync asks from, as the
    vendor takes it; while a sync pages newest first, also where the next page starts
    (Typeform's `before`, a response token; SurveyMonkey's `page`, from 1) and the newest time
    read so far (`high`); while Qualtrics pages one export, `after` instead: the recorded date
    and id of the last response stored.

    Saved as the JSON `{"since"}` (`{}` until a first sync reads through), plus `"before"` or
    `"page"`, and `"high"` (`YYYY-MM-DDTHH:MM:SSZ`); or plus `"after"`, a two-item list.
    """

    since: str | None = None
    before: str | None = None
    page: int | None = None
    after: tuple[str, str] | None = None
    high: str | None = None


def newest_first(
    records: Sequence[Mapping[str, Any]],
    times: Iterable[str],
    cursor: SurveyCursor,
    more: SurveyCursor | None,
    since: Callable[[datetime], str] = iso,
) -> Step:
    """The step of a stream read newest first, from one page's `records` and their `times`.

    While `more` (where the next page starts, e.g. `SurveyCursor(before=token)`) is given, the
    cursor keeps the sync's `since` and the newest time seen (`high`); on the last page it
    becomes `{"since": high - LATE_ARRIVALS}`, written by `since`, for the next sync. Records
    changed while a sync pages move to its front, so they shift older ones to later pages:
    re-read, never skipped.
    """
    seen = [utc_naive(t) for t in times]
    if cursor.high is not None:
        seen.append(utc_naive(cursor.high))
    high = max(seen, default=None)
    kept = SurveyCursor(cursor.since)
    if more is None:
        last = kept if high is None else SurveyCursor(since(high - LATE_ARRIVALS))
        return Step(records, last.to_dict(), done=True)
    following = replace(more, since=cursor.since, high=iso(high) if high else None)
    return Step(records, following.to_dict(), done=False)


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


class SurveyResponses(ABC):
    """One survey's responses as canonical `survey_response` rows; `rejected` holds the answer
    sets left out, across reads. A vendor's stream says how its responses read as answer sets
    (`answer_sets`) and reads its pages by its own `read`, or as an `HttpStream`: a base listed
    after this one, as this `__init__` sets the `source` and `client` that `HttpStream`'s
    would."""

    table = "survey_response"

    def __init__(
        self, source: str, client: HttpClient, entry: SurveyEntry, fields: FieldMap, page_size: int
    ) -> None:
        self.source, self.client = source, client
        self.name, self.survey_id, self.survey = entry.survey, entry.id, entry.survey
        self.questions, self.fields = entry.questions, fields
        self.page_size = page_size
        self.rejected: list[Rejection] = []

    @abstractmethod
    def answer_sets(self, records: Sequence[Mapping[str, Any]]) -> list[AnswerSet]:
        """The vendor's `records` (responses) as answer sets."""

    def transform(self, records: Sequence[Mapping[str, Any]], where: str) -> list[dict]:
        """One flat row per score kind each answer set holds, mapped by `fields`."""
        flat, rejected = score_rows(self.answer_sets(records), self.questions, where)
        self.rejected.extend(rejected)
        return self.fields.apply(flat, self.table, where)

    def definition(self, what: str, path: str, parse: Callable[[Any], Parsed]) -> Parsed:
        """What `parse` reads (questions, choices) from the survey's `what` (e.g. "form
        definition") at `path`; `SourceError` if it lacks the vendor's documented shape."""
        where = f"source {self.source}, stream {self.name}, {what}"
        return self.client.fetch(Request("GET", path), where, "a survey definition", parse)


@dataclass(kw_only=True)
class SurveyOptions(HttpSource):
    """Options every survey source takes besides its list of surveys (the option `LISTED`, its
    questions named by a `QUESTION_KEY`): the shared `questions` mapping and overrides of its
    default fields and values. Its streams list their questions (`questions_listed`), and each
    keeps its `rejected` answer sets across reads."""

    FIELD_MAP_TABLE: ClassVar[str] = "survey_response"
    LISTED: ClassVar[str]
    QUESTION_KEY: ClassVar[str]
    questions: dict[str, Any] = field(default_factory=dict)
    field_map: dict[str, str] = field(default_factory=dict)
    value_map: dict[str, dict[str, str]] = field(default_factory=dict)

    KEEP_STREAMS = True

    def check(self) -> None:
        self.entries()
        super().check()

    def entries(self) -> list[SurveyEntry]:
        """Each configured survey; `ConfigError` if none is listed or one is malformed."""
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
