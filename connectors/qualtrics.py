"""Qualtrics response exports: responses of configured surveys as NPS, CSAT and CES rows.

A sync of a survey starts an export (`POST /API/v3/surveys/{id}/export-responses`, JSON format,
`startDate` for an incremental one), polls its progress every `poll_interval` seconds until it
is `complete` or `failed`, downloads the ZIP and reads the JSON file inside it. The responses,
oldest recorded first, are then committed in pages of `page_size`; each page saves the last
response it holds, so a crash resumes at the next one (the export is asked for again from the
same `startDate` and what was committed is skipped). At the end the latest `recordedDate`, less a
few minutes, becomes the next sync's `startDate`; re-read responses upsert. Answers are picked by
the keys of the export's `values` (`QID1`, `QID2_TEXT`, …) through the `questions` option;
embedded data fields `customer_id`, `email` and `channel` carry identity, `ticket_id` the ticket a
post-contact survey is about. A response with a score
outside its scale is rejected whole, with its response id; the rest load.
"""

from __future__ import annotations

import io
import json
import re
import time
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import httpx

from connectors.base import Page
from connectors.canonical import FieldMap, utc_naive
from connectors.errors import ConfigError, SourceError
from connectors.http import (
    HttpClient,
    Request,
    SecretHeader,
    json_error,
    vendor_client,
)
from connectors.surveys import (
    LATE_ARRIVALS,
    AnswerSet,
    SurveyCursor,
    SurveyEntry,
    SurveyOptions,
    SurveyQuestion,
    SurveyResponses,
    iso,
    numeric_scale,
    plain,
    survey_fields,
)

TOKEN_ENV = "QUALTRICS_TOKEN"
PAGE_ROWS = 1000
ZIP_TYPES = frozenset(
    {"application/zip", "application/octet-stream", "application/x-zip-compressed"}
)
DATACENTER = re.compile(r"^[a-z]{2,4}\d*$")
PERMISSIONS = (
    "a Qualtrics API token (Account Settings → Qualtrics IDs → API → Generate Token) of a user "
    "with the Access API permission who can see the survey's responses"
)

QUALTRICS = survey_fields("values")
"""Qualtrics' default fields: identity and the ticket a post-contact survey is about, from the
survey's embedded data among `values` (`customer_id`, `email`, `channel`, `ticket_id`)."""


def _message(body: Any) -> str | None:
    error = body["meta"]["error"]
    if not error["errorMessage"]:
        return None
    return f"{error.get('errorCode')}: {error['errorMessage']}"


def error_message(response: httpx.Response, token_env: str = TOKEN_ENV) -> str:
    """Qualtrics' `errorCode: errorMessage` (under `meta.error`), with the fix for
    authentication errors."""
    return json_error(
        response,
        _message,
        f"check {token_env}: it must hold {PERMISSIONS}, and `datacenter` must be that "
        "account's (Qualtrics IDs → User → Datacenter ID).",
    )


class ExportClient(HttpClient):
    """The shared client, except that an export file (a ZIP) comes back as its bytes."""

    def _decode(self, response: httpx.Response, where: str) -> Any:
        if response.headers.get("Content-Type", "").split(";")[0].strip() in ZIP_TYPES:
            return response.content
        return super()._decode(response, where)


def definition_questions(body: Mapping[str, Any]) -> list[SurveyQuestion]:
    """The answerable questions of a survey definition (`GET /API/v3/survey-definitions/{id}`),
    in QID order; a text entry is named by its export key `QIDn_TEXT`."""
    questions = body["result"]["Questions"]
    found = []
    for qid in sorted(questions, key=lambda q: int(re.sub(r"\D", "", q) or 0)):
        spec = questions[qid]
        kind, selector = spec["QuestionType"], spec.get("Selector")
        if kind == "DB":  # descriptive text: nothing to answer
            continue
        recodes = spec.get("RecodeValues") or {}
        values = [recodes.get(choice, choice) for choice in spec.get("Choices") or {}]
        text = kind == "TE"
        found.append(
            SurveyQuestion(
                f"{qid}_TEXT" if text else qid,
                plain(spec.get("QuestionText")) or str(spec.get("DataExportTag", "")),
                f"{kind}/{selector}",
                (0, 10) if selector == "NPS" else numeric_scale(values),
                nps=selector == "NPS",
                open_text=text,
            )
        )
    return found


def _order(response: Mapping[str, Any]) -> tuple[str, str]:
    return iso(utc_naive(response["values"]["recordedDate"])), str(response["responseId"])


def _answers(values: Mapping[str, Any]) -> dict[str, Any]:
    """`values`, with each text entry also under its question id (`QID2` for `QID2_TEXT`)."""
    texts = {k.removesuffix("_TEXT"): v for k, v in values.items() if k.endswith("_TEXT")}
    return texts | dict(values)


class Responses(SurveyResponses):
    """One survey's responses, read from one export per sync. Cursor: a `SurveyCursor`,
    `since` between syncs, plus `after` (the last committed recorded date and response id)
    within one."""

    def __init__(
        self, options: QualtricsSource, client: HttpClient, entry: SurveyEntry, fields: FieldMap
    ) -> None:
        super().__init__(options.name, client, entry, fields, options.page_size)
        self.poll_interval = options.poll_interval
        self.export_timeout = options.export_timeout

    def questions_listed(self) -> list[SurveyQuestion]:
        """The survey's questions, from its definition (`GET /API/v3/survey-definitions/{id}`)."""
        path = f"/API/v3/survey-definitions/{self.survey_id}"
        return self.definition("survey definition", path, definition_questions)

    def read(self, cursor: dict) -> Iterator[Page]:
        """Pages of the responses recorded since `cursor`'s `since` that follow its `after`."""
        where = f"source {self.source}, stream {self.name}"
        position = SurveyCursor.from_dict(cursor)
        responses = self.export(position.since, where)
        if not responses:
            return
        newest = utc_naive(responses[-1]["values"]["recordedDate"])
        final = SurveyCursor(iso(newest - LATE_ARRIVALS))
        done = position.after or ("", "")
        left = [r for r in responses if _order(r) > done]
        if not left:
            yield Page([], final.to_dict(), 1)
            return
        for number, start in enumerate(range(0, len(left), self.page_size), start=1):
            chunk = left[start : start + self.page_size]
            last = start + self.page_size >= len(left)
            step = final if last else SurveyCursor(position.since, after=_order(chunk[-1]))
            yield Page(self.transform(chunk, f"{where}, page {number}"), step.to_dict(), number)

    def export(self, since: str | None, where: str) -> list[dict]:
        """The responses recorded since `since` (all if None), oldest first, from a finished
        export; `SourceError` naming the export if it fails, times out or is malformed."""
        base = f"/API/v3/surveys/{self.survey_id}/export-responses"
        body = {"format": "json"} | ({"startDate": since} if since else {})
        try:
            progress = self.client.send(Request("POST", base, json=body), f"{where}, export")
            progress_id = progress["result"]["progressId"]
            file_id = self._finished(f"{base}/{progress_id}", progress_id, where)
        except (KeyError, TypeError) as exc:
            raise SourceError(
                f"{where}: Qualtrics answered the export of survey {self.survey_id} without the "
                f"documented shape ({type(exc).__name__}: {exc}); nothing was saved. Rerun; if it "
                "persists, report it to Qualtrics."
            ) from None
        within = f"{where}, export file {file_id}"
        content = self.client.send(Request("GET", f"{base}/{file_id}/file"), within)
        return self._responses(content, within)

    def _finished(self, path: str, progress_id: str, where: str) -> str:
        """The file id of the export once Qualtrics says it is complete."""
        deadline = time.monotonic() + self.export_timeout
        within = f"{where}, export {progress_id}"
        while True:
            time.sleep(self.poll_interval)
            result = self.client.send(Request("GET", path), within)["result"]
            if result["status"] == "complete":
                return str(result["fileId"])
            if result["status"] == "failed":
                reason = result.get("error") or {}
                said = (
                    f": {reason.get('errorCode')}: {reason.get('errorMessage')}" if reason else ""
                )
                raise SourceError(
                    f"{within}: Qualtrics could not export the responses of survey "
                    f"{self.survey_id} (progress {progress_id} failed{said}); nothing was saved. "
                    "Rerun to start a new export; if it fails again, give Qualtrics support "
                    "this progress id."
                )
            if time.monotonic() > deadline:
                raise SourceError(
                    f"{within}: the export of survey {self.survey_id} was still "
                    f"{result.get('percentComplete', 0):g}% done after {self.export_timeout:g} s; "
                    "nothing was saved. Rerun later or raise export_timeout."
                )

    def _responses(self, content: Any, where: str) -> list[dict]:
        try:
            with zipfile.ZipFile(io.BytesIO(content)) as archive:
                (name,) = [n for n in archive.namelist() if n.endswith(".json")]
                responses = json.loads(archive.read(name))["responses"]
            if not isinstance(responses, list) or not all(
                isinstance(r, dict) and r["responseId"] and isinstance(r["values"], dict)
                for r in responses
            ):
                raise TypeError("`responses` must be a list of responses with `values`")
            return sorted(responses, key=_order)
        except (zipfile.BadZipFile, KeyError, TypeError, ValueError) as exc:
            raise SourceError(
                f"{where}: Qualtrics sent an export file without the documented shape (a ZIP "
                f"holding one JSON file of `responses`: {type(exc).__name__}: {exc}); nothing of "
                "it was saved. Rerun to export again; if it persists, report it to Qualtrics."
            ) from None

    def answer_sets(self, records: Sequence[Mapping[str, Any]]) -> list[AnswerSet]:
        """Responses, each text entry also under its question id."""
        return [
            AnswerSet(
                str(response["responseId"]),
                _answers(response["values"]),
                {"survey": self.survey, "submitted_at": response["values"]["recordedDate"]}
                | {f"values.{k}": v for k, v in response["values"].items()},
            )
            for response in records
        ]


@dataclass(kw_only=True)
class QualtricsSource(SurveyOptions):
    """Qualtrics surveys; the token comes from the environment variable `token_env`.

    `surveys` lists survey ids (`SV_…`), or entries `{id, survey, questions}` where `survey`
    names the stream and the rows' survey (default: the survey id) and `questions` (export keys
    such as `QID1`, `QID2_TEXT`) overrides the shared `questions` option. `datacenter` (e.g.
    `fra1`) gives the base URL `https://{datacenter}.qualtrics.com` unless `base_url` is set.
    """

    VENDOR = "Qualtrics"
    TOKEN = PERMISSIONS
    AUTH = partial(SecretHeader, header="X-API-TOKEN", scheme="")
    LISTED = "surveys"
    QUESTION_KEY = "export key (QID)"
    surveys: list[str | dict[str, Any]] = field(default_factory=list)
    datacenter: str = ""
    base_url: str = ""
    token_env: str = TOKEN_ENV
    page_size: int = PAGE_ROWS
    poll_interval: float = 2.0
    export_timeout: float = 1800.0
    rate_limit: tuple[int, float] = (100, 60.0)
    kind: str = field(default="qualtrics", init=False)

    def check(self) -> None:
        super().check()
        where = f"sources.{self.name}.options"
        if not self.base_url and not DATACENTER.match(self.datacenter):
            raise ConfigError(
                f"{where}: give `datacenter`, the account's datacenter id such as fra1, iad1 or "
                "ca1 (Account Settings → Qualtrics IDs → User), or `base_url`."
            )
        if self.page_size < 1 or self.poll_interval < 0 or self.export_timeout <= 0:
            raise ConfigError(
                f"{where}: page_size must be ≥ 1, poll_interval ≥ 0 and export_timeout > 0 "
                "(seconds)."
            )

    def url(self) -> str:
        return self.base_url or f"https://{self.datacenter}.qualtrics.com"

    def client(self) -> HttpClient:
        hooks = {"error_message": partial(error_message, token_env=self.token_env)}
        return vendor_client(self.VENDOR, self, self.url(), self.auth(), ExportClient, **hooks)

    def build_streams(self, client: HttpClient) -> list[Responses]:
        """One stream per survey."""
        fields = self.fields(QUALTRICS)
        return [Responses(self, client, survey, fields) for survey in self.entries()]
