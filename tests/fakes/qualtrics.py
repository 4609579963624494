"""A fake Qualtrics API for pytest-httpserver: the three-step response export and the survey
definition.

`POST /API/v3/surveys/{id}/export-responses` takes `{"format": "json", "startDate"?}` (any other
key or format gets Qualtrics' 400) and answers a `progressId`; its progress stays `inProgress` for
`polls_needed` polls, then turns `complete` with a `fileId` (or `failed`, when `fail_exports` is
set); `GET …/{fileId}/file` sends a ZIP holding one JSON file `{"responses": [...]}` of the
responses recorded at or after `startDate` when the export completed.
`GET /API/v3/survey-definitions/{id}` answers the survey's `Questions`. Every call needs the
`X-API-TOKEN` header; `plan` scripts the answer to chosen requests.
"""

from __future__ import annotations

import io
import json
import re
import uuid
import zipfile
from datetime import datetime
from typing import Any

from werkzeug import Request, Response

from tests.fakes.loopback import PlannedAnswers, json_response

EXPORT_KEYS = frozenset(
    {"format", "startDate", "endDate", "limit", "useLabels", "compress", "questionIds",
     "embeddedDataIds", "surveyMetadataIds", "exportResponsesInProgress", "timeZone"}
)  # fmt: skip


def answer(result: Any = None, status: int = 200, error: tuple[str, str] | None = None) -> Response:
    """Qualtrics' envelope: `{"result": …, "meta": {httpStatus, requestId, error?}}`."""
    meta: dict[str, Any] = {"httpStatus": f"{status}", "requestId": str(uuid.uuid4())}
    body: dict[str, Any] = {"meta": meta}
    if error:
        meta["error"] = {"errorCode": error[0], "errorMessage": error[1]}
    else:
        body["result"] = result
    return json_response(body, status)


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def nps(qid: str, text: str) -> dict[str, Any]:
    """A Net Promoter question: multiple choice with the NPS selector, choices 0–10."""
    choices = {str(n): {"Display": str(n)} for n in range(11)}
    return _question(qid, text, "MC", "NPS", choices)


def choice(qid: str, text: str, labels: list[str]) -> dict[str, Any]:
    """A single-answer multiple choice whose choices 1, 2, … are the `labels`."""
    choices = {str(n): {"Display": label} for n, label in enumerate(labels, start=1)}
    return _question(qid, text, "MC", "SAVR", choices)


def text_entry(qid: str, text: str) -> dict[str, Any]:
    """A multi-line text entry, exported as `QIDn_TEXT`."""
    return _question(qid, text, "TE", "ML")


def descriptive(qid: str, text: str) -> dict[str, Any]:
    """Descriptive text: shown, never answered."""
    return _question(qid, text, "DB", "TB")


def _question(
    qid: str, text: str, kind: str, selector: str, choices: dict | None = None
) -> dict[str, Any]:
    spec = {
        "QuestionID": qid,
        "QuestionText": text,
        "DataExportTag": f"Q{qid.removeprefix('QID')}",
        "QuestionType": kind,
        "Selector": selector,
        "Configuration": {"QuestionDescriptionOption": "UseText"},
        "Validation": {"Settings": {"ForceResponse": "OFF", "Type": "None"}},
        "Language": [],
    }
    if choices is not None:
        spec |= {"Choices": choices, "ChoiceOrder": list(choices)}
    return spec


class FakeQualtrics(PlannedAnswers[tuple[str, str, Any]]):
    """Qualtrics on loopback; `requests` holds each request's method, path and JSON body."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token
        self.definitions: dict[str, dict[str, Any]] = {}
        self.responses: dict[str, list[dict[str, Any]]] = {}
        self.exports: dict[str, dict[str, Any]] = {}
        self.files: dict[str, bytes] = {}
        self.polls_needed = 2
        self.fail_exports = False

    def survey(self, survey_id: str, name: str, questions: list[dict[str, Any]]) -> None:
        """Define a survey holding `questions`."""
        self.definitions[survey_id] = {
            "SurveyID": survey_id,
            "SurveyName": name,
            "SurveyStatus": "Active",
            "QuestionCount": str(len(questions)),
            "Questions": {q["QuestionID"]: q for q in questions},
        }
        self.responses.setdefault(survey_id, [])

    def add(
        self,
        survey_id: str,
        recorded: datetime,
        answers: dict[str, Any],
        embedded: dict[str, str] | None = None,
    ) -> str:
        """A finished response with `answers` by export key (`QID1`, `QID2_TEXT`) and embedded
        data fields; returns its response id."""
        key = f"R_{uuid.uuid4().hex[:15]}"
        values = {
            "startDate": stamp(recorded),
            "endDate": stamp(recorded),
            "status": 0,
            "ipAddress": "198.51.100.7",
            "progress": 100,
            "duration": 95,
            "finished": 1,
            "recordedDate": stamp(recorded),
            "_recordId": key,
            "locationLatitude": "55.7522",
            "locationLongitude": "37.6156",
            "distributionChannel": "anonymous",
            "userLanguage": "EN",
        }
        self.responses[survey_id].append(
            {
                "responseId": key,
                "values": values | answers | (embedded or {}),
                "labels": {"status": "IP Address", "finished": "True"},
                "displayedFields": list(answers),
                "displayedValues": {},
            }
        )
        return key

    def export_bodies(self) -> list[dict[str, Any]]:
        """The JSON body of each export started."""
        return [body for method, _, body in self.requests if method == "POST"]

    def handle(self, request: Request) -> Response:
        body = request.get_json(silent=True) if request.method == "POST" else None
        planned = self.log((request.method, request.path, body))
        if planned is not None:
            return planned
        if request.headers.get("X-API-TOKEN") != self.token:
            return answer(status=401, error=("AUTH_1.2", "Invalid API token."))
        path = request.path
        if match := re.fullmatch(r"/API/v3/survey-definitions/([^/]+)", path):
            survey_id = match.group(1)
            if survey_id not in self.definitions:
                return answer(status=404, error=("QM_1.1", f"Survey {survey_id} not found."))
            return answer(self.definitions[survey_id])
        match = re.fullmatch(r"/API/v3/surveys/([^/]+)/export-responses(?:/([^/]+))?(/file)?", path)
        if not match or match.group(1) not in self.definitions:
            return answer(status=404, error=("NOT_FOUND", f"No survey or route for {path}"))
        survey_id, tail, file = match.groups()
        if request.method == "POST" and tail is None:
            return self._start(survey_id, body)
        if file:
            return self._file(tail)
        return self._progress(survey_id, tail)

    def _start(self, survey_id: str, body: Any) -> Response:
        if not isinstance(body, dict) or body.get("format") != "json":
            return answer(status=400, error=("RCE_1.1", "format must be one of csv, tsv, json…"))
        unknown = sorted(set(body) - EXPORT_KEYS)
        if unknown:
            return answer(status=400, error=("RCE_1.2", f"Unrecognized fields: {unknown}"))
        since = body.get("startDate")
        if since is not None:
            try:
                datetime.fromisoformat(since)
            except ValueError:
                return answer(status=400, error=("RCE_1.3", "startDate must be ISO 8601."))
        progress_id = f"ES_{uuid.uuid4().hex[:12]}"
        self.exports[progress_id] = {
            "survey": survey_id,
            "since": since,
            "polls_left": self.polls_needed,
            "fail": self.fail_exports,
        }
        return answer({"progressId": progress_id, "percentComplete": 0.0, "status": "inProgress"})

    def _progress(self, survey_id: str, progress_id: str) -> Response:
        export = self.exports.get(progress_id)
        if export is None or export["survey"] != survey_id:
            return answer(status=404, error=("RCE_1.4", f"Export {progress_id} not found."))
        if export["polls_left"] > 0:
            export["polls_left"] -= 1
            done = 100.0 * (self.polls_needed - export["polls_left"]) / (self.polls_needed + 1)
            return answer({"percentComplete": done, "status": "inProgress"})
        if export["fail"]:
            reason = {"errorCode": "RCE_2.1", "errorMessage": "The export could not be created."}
            return answer({"percentComplete": 40.0, "status": "failed", "error": reason})
        if "file" not in export:
            export["file"] = f"{uuid.uuid4()}-def"
            self.files[export["file"]] = self._zip(survey_id, export["since"])
        return answer({"fileId": export["file"], "percentComplete": 100.0, "status": "complete"})

    def _file(self, file_id: str) -> Response:
        if file_id not in self.files:
            return answer(status=404, error=("RCE_1.5", f"File {file_id} not found."))
        return Response(self.files[file_id], 200, content_type="application/zip")

    def _zip(self, survey_id: str, since: str | None) -> bytes:
        def recorded(r: dict[str, Any]) -> datetime:
            return datetime.fromisoformat(r["values"]["recordedDate"])

        start = datetime.fromisoformat(since) if since else None
        chosen = [r for r in self.responses[survey_id] if start is None or recorded(r) >= start]
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            name = f"{self.definitions[survey_id]['SurveyName']}.json"
            archive.writestr(name, json.dumps({"responses": chosen}))
        return buffer.getvalue()
