"""Webhooks `cxloop listen` takes: per vendor, how a request is verified, what names the event
(so a vendor's retry is stored once) and the canonical rows it gives.

Rows come through the field maps of the vendor's pull connector and carry the same `source_id`
it gives the same record, so the next scheduled pull upserts onto them and fills in any
event that never arrived. An event gives only the columns it carries: the store keeps what a
pull wrote in the others (Usedesk's assignee names, say, which only its API lists).

Secrets: each source's webhook secret is in the environment variable `secret_env(source)`,
`CXLOOP_WEBHOOK_SECRET_<SOURCE>` (upper case, `-` as `_`). Typeform signs the raw body
(`Typeform-Signature: sha256=<base64 HMAC-SHA256>`); Usedesk sends its API channel's token
as `secret` in the body; Jivo and amoCRM sign nothing, so their URL carries the secret as
`?token=`. Every comparison takes constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import import_module
from typing import Any, ClassVar
from urllib.parse import parse_qsl

from pydantic import SecretStr

from connectors.amocrm import AMOCRM, WON
from connectors.canonical import FieldMap
from connectors.errors import ConfigError, SourceError
from connectors.surveys import survey_entry
from connectors.typeform import PAGE_LIMIT, TYPEFORM, Responses
from connectors.usedesk import USEDESK

# kind → "module:class", imported only when a source of that kind takes webhooks.
RECEIVERS = {
    "amocrm": "connectors.webhooks:AmoCrmReceiver",
    "jivo": "connectors.jivo:JivoReceiver",
    "typeform": "connectors.webhooks:TypeformReceiver",
    "usedesk": "connectors.webhooks:UsedeskReceiver",
}


def secret_env(source: str) -> str:
    """The environment variable that holds source `source`'s webhook secret."""
    return "CXLOOP_WEBHOOK_SECRET_" + re.sub(r"[^A-Z0-9]", "_", source.upper())


@dataclass(frozen=True)
class Call:
    """One webhook request: its raw body, lower-cased headers and query parameters."""

    body: bytes
    headers: Mapping[str, str]
    query: Mapping[str, str]


@dataclass(frozen=True)
class Mapped:
    """What one event gives: canonical rows per table, and per table the `source_id`s of
    records the event says are gone (an amoCRM lead no longer won)."""

    rows: dict[str, list[dict]] = field(default_factory=dict)
    deleted: dict[str, list[str]] = field(default_factory=dict)


def digest(payload: str) -> str:
    """`sha256:<hex>` of `payload`: the event id of a vendor that sends none (a retry repeats
    the same body)."""
    return "sha256:" + hashlib.sha256(payload.encode()).hexdigest()


def same(given: str | bytes, secret: SecretStr) -> bool:
    """Whether `given` is the secret, compared in constant time."""
    given = given.encode() if isinstance(given, str) else given
    return hmac.compare_digest(given, secret.get_secret_value().encode())


class Receiver(ABC):
    """One configured source's webhooks; `options` are the source's `options:` in cxloop.yaml."""

    kind: ClassVar[str]

    def __init__(self, source: str, options: Mapping[str, Any], secret: SecretStr) -> None:
        self.source, self.options, self.secret = source, options, secret

    @abstractmethod
    def verified(self, call: Call) -> bool:
        """Whether the vendor sent `call` (its signature or secret matches)."""

    def event_id(self, payload: str) -> str:
        """The vendor's id of the event in `payload`; its digest if the payload names none."""
        try:
            return self.named(payload) or digest(payload)
        except (ValueError, KeyError, TypeError, AttributeError):
            return digest(payload)

    def named(self, payload: str) -> str | None:
        """The vendor's own id of the event, None when it gives none."""
        return None

    @abstractmethod
    def mapped(self, payload: str) -> Mapped:
        """The rows the event gives; `SourceError` naming the source and the fix if it cannot
        be mapped (it stays in the inbox until it can)."""

    def where(self, event: str) -> str:
        """Where an event is, for error messages."""
        return f"source {self.source}, webhook {event}"


def open_receiver(source: str, kind: str, options: Mapping[str, Any]) -> Receiver | None:
    """The receiver for a configured source, or None if its kind takes no webhooks;
    `ConfigError` naming the variable if its secret is not set."""
    if kind not in RECEIVERS:
        return None
    variable = secret_env(source)
    secret = os.environ.get(variable, "").strip()
    if not secret:
        raise ConfigError(
            f"sources.{source}: set {variable} to the secret of its {kind} webhook (see the "
            "README, Real-time feedback)."
        )
    module, cls = RECEIVERS[kind].split(":")
    return getattr(import_module(module), cls)(source, options, SecretStr(secret))


def query_token(call: Call, secret: SecretStr) -> bool:
    """Whether the URL's `token` parameter is the secret (for vendors that sign nothing)."""
    return same(call.query.get("token", ""), secret)


def unix_iso(seconds: Any) -> str | None:
    """Unix seconds as ISO 8601 UTC; None when absent or 0."""
    return datetime.fromtimestamp(int(seconds), UTC).isoformat() if seconds else None


def known_columns(rows: list[dict], record: Mapping[str, Any], fields: FieldMap) -> list[dict]:
    """`rows` mapped from `record` by `fields`, without the columns whose vendor field the
    record lacks, so an upsert keeps what a pull stored in them."""
    lacking = {column for name, column in fields.fields.items() if name not in record}
    return [{k: v for k, v in row.items() if k not in lacking} for row in rows]


def typeform_signature(secret: str, body: bytes) -> str:
    """The `Typeform-Signature` header Typeform sends with `body`: `sha256=` and the base64
    HMAC-SHA256 of the raw body keyed with the webhook's secret."""
    mac = hmac.new(secret.encode(), body, hashlib.sha256)
    return "sha256=" + base64.b64encode(mac.digest()).decode()


def typeform_body(
    event: str, form: str, token: str, at: datetime, scores: Mapping[str, float], hidden: dict
) -> dict:
    """A Typeform `form_response` webhook body answered `at` (UTC): one `number` answer per
    field ref in `scores`, and the `hidden` fields."""
    stamp = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    answers = [
        {"field": {"id": ref, "type": "rating", "ref": ref}, "type": "number", "number": score}
        for ref, score in scores.items()
    ]
    response = {"form_id": form, "token": token, "landed_at": stamp, "submitted_at": stamp}
    response |= {"hidden": hidden, "answers": answers}
    return {"event_id": event, "event_type": "form_response", "form_response": response}


def signed(body: dict, secret: str) -> tuple[bytes, dict[str, str]]:
    """`body` as Typeform sends it: the raw JSON and its headers, signature included."""
    raw = json.dumps(body, ensure_ascii=False).encode()
    headers = {
        "content-type": "application/json",
        "typeform-signature": typeform_signature(secret, raw),
    }
    return raw, headers


class TypeformReceiver(Receiver):
    """Typeform `form_response` events of the forms the source lists, mapped like pulled
    responses (same questions, field map and `response id:kind` ids)."""

    kind = "typeform"

    def __init__(self, source: str, options: Mapping[str, Any], secret: SecretStr) -> None:
        super().__init__(source, options, secret)
        where = f"sources.{source}.options"
        shared = options.get("questions") or {}
        entries = [
            survey_entry(f"{where}.forms[{i}]", entry, shared, "field ref")
            for i, entry in enumerate(options.get("forms") or [])
        ]
        self.forms = {entry.id: entry for entry in entries}
        self.fields = TYPEFORM.override(options.get("field_map"), options.get("value_map"))

    def verified(self, call: Call) -> bool:
        given = call.headers.get("typeform-signature", "")
        expected = typeform_signature(self.secret.get_secret_value(), call.body)
        return hmac.compare_digest(given.encode(), expected.encode())

    def named(self, payload: str) -> str | None:
        return str(json.loads(payload)["event_id"])

    def mapped(self, payload: str) -> Mapped:
        body = json.loads(payload)
        if body.get("event_type") != "form_response":
            return Mapped()
        response = body["form_response"]
        form = str(response["form_id"])
        where = self.where(f"{body.get('event_id')} (form {form})")
        if form not in self.forms:
            raise SourceError(
                f"{where}: form {form} is not in sources.{self.source}.options.forms; add it "
                "with its questions and restart `cxloop listen`, which then maps the waiting "
                "events."
            )
        # A webhook reads nothing from the API: the stream only maps, so it needs no client.
        stream = Responses(self.source, None, self.forms[form], self.fields, PAGE_LIMIT)  # type: ignore[arg-type]
        rows = stream.transform([response], where)
        if stream.rejected:
            rejected = stream.rejected[0]
            raise SourceError(f"{where}: {rejected.where}: {rejected.reason}")
        return Mapped({"survey_response": rows})


USEDESK_CSAT = FieldMap(
    fields={
        "id": "source_id",
        "client_id": "customer_id",
        "ticket_id": "ticket_id",
        "rating": "score",
        "comment": "comment",
        "created_at": "submitted_at",
        "survey": "survey",
        "kind": "kind",
    }
)
"""A Usedesk ticket rating (`csi`) as a CSAT answer about its ticket. Usedesk documents no
list of ratings, so only its webhook gives them; its rating scale is unconfirmed, read as
given on the configured `csat_scale`."""


class UsedeskReceiver(Receiver):
    """Usedesk's JSON webhooks (tick "JSON request" on the API channel): a new or changed
    ticket as its ticket row, a rating as a CSAT answer; other events are kept, not mapped."""

    kind = "usedesk"

    def __init__(self, source: str, options: Mapping[str, Any], secret: SecretStr) -> None:
        super().__init__(source, options, secret)
        field_map, value_map = options.get("field_map") or {}, options.get("value_map") or {}
        self.fields = USEDESK["tickets"].override(
            field_map.get("tickets"), value_map.get("tickets")
        )

    def verified(self, call: Call) -> bool:
        try:
            sent = json.loads(call.body).get("secret")
        except (ValueError, AttributeError):
            return False
        return isinstance(sent, str) and same(sent, self.secret)

    def named(self, payload: str) -> str | None:
        body = json.loads(payload)
        if "csi" in body:
            return f"csi:{body['csi']['id']}"
        if "ticket" in body:
            ticket = body["ticket"]
            return f"ticket:{ticket['id']}:{ticket.get('last_updated_at')}"
        if "comment" in body:
            return f"comment:{body['comment']['id']}"
        if "ticket_id" in body:
            return f"change:{body['ticket_id']}:{body.get('changed_at')}"
        return None

    def mapped(self, payload: str) -> Mapped:
        body = json.loads(payload)
        if "csi" in body:
            rating = body["csi"] | {"survey": f"{self.source}_csat", "kind": "csat"}
            rating["id"] = f"csi:{rating['id']}"
            rows = USEDESK_CSAT.apply([rating], "survey_response", self.where(rating["id"]))
            return Mapped({"survey_response": rows})
        if "ticket" not in body:
            return Mapped()
        ticket = {
            k: str(v) if isinstance(v, int) and not isinstance(v, bool) else v
            for k, v in body["ticket"].items()
        }
        if "status_id" in ticket:
            ticket["status"] = str(ticket["status_id"])
        if "published_at" in ticket and "created_at" not in ticket:
            ticket["created_at"] = ticket["published_at"]
        rows = self.fields.apply([ticket], "ticket", self.where(f"ticket {ticket['id']}"))
        return Mapped({"ticket": known_columns(rows, ticket, self.fields)})


class AmoCrmReceiver(Receiver):
    """amoCRM lead webhooks (form-encoded `leads[<action>][<n>][<field>]`): a lead in status
    142 as its order, at its price and the time of the change; any other lead or a deleted
    one leaves the orders, as the pull does. amoCRM names no event, so the body's digest
    does (a retry repeats it)."""

    kind = "amocrm"

    def __init__(self, source: str, options: Mapping[str, Any], secret: SecretStr) -> None:
        super().__init__(source, options, secret)
        field_map, value_map = options.get("field_map") or {}, options.get("value_map") or {}
        self.fields = AMOCRM["leads"].override(field_map.get("leads"), value_map.get("leads"))

    def verified(self, call: Call) -> bool:
        return query_token(call, self.secret)

    def mapped(self, payload: str) -> Mapped:
        leads: dict[tuple[str, str], dict[str, str]] = {}
        for key, value in parse_qsl(payload, keep_blank_values=True):
            found = re.fullmatch(r"leads\[(\w+)\]\[(\d+)\]\[(\w+)\]", key)
            if found:
                action, number, name = found.groups()
                leads.setdefault((action, number), {})[name] = value
        won, gone = [], []
        for (action, _), lead in leads.items():
            if action != "delete" and lead.get("status_id") == WON:
                changed = lead.get("last_modified") or lead.get("updated_at")
                won.append(lead | {"closed_at": unix_iso(changed)})
            else:
                gone.append(lead["id"])
        rows = [
            row
            for lead in won
            for row in known_columns(
                self.fields.apply([lead], "orders", self.where(f"lead {lead['id']}")),
                lead,
                self.fields,
            )
        ]
        return Mapped({"orders": rows}, {"orders": gone})
