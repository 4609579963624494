"""Jivo live chat: chats arrive only by webhook (Jivo documents no API that lists past chats).

A `chat_finished` event is a ticket on channel `chat`: its id is the chat id, it starts at the
first message, its first response is the first agent message and its agent is that message's
author (else the assigned one). The visitor's rating of the chat, when given, is a CSAT
answer about that ticket. Jivo's message times are Unix seconds. The values `chat.rate`
takes are not documented: `rates` maps each to a score on the CSAT scale (numbers are taken
as they are). Jivo signs nothing, so its webhook URL carries the secret (`?token=`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr

from connectors.base import Stream
from connectors.canonical import FieldMap
from connectors.errors import ConfigError, SourceError
from connectors.webhooks import Call, Mapped, Receiver, known_columns, query_token, unix_iso

JIVO: dict[str, FieldMap] = {
    "chats": FieldMap(
        fields={
            "chat_id": "source_id",
            "user_token": "customer_id",
            "email": "email",
            "channel": "channel",
            "started_at": "created_at",
            "first_response_at": "first_response_at",
            "agent": "agent",
            "text": "text",
        }
    ),
    "ratings": FieldMap(
        fields={
            "id": "source_id",
            "chat_id": "ticket_id",
            "user_token": "customer_id",
            "email": "email",
            "channel": "channel",
            "survey": "survey",
            "kind": "kind",
            "score": "score",
            "rated_at": "submitted_at",
        }
    ),
}
"""Jivo's default fields: `user_token` is the id the site passes to the widget
(`setUserToken`), the customer's CRM id when the site sends it; `text` the visitor's
messages."""

RATES = {"good": 5.0, "positive": 5.0, "bad": 1.0, "negative": 1.0}
"""Default scores of `chat.rate` values; Jivo's own value set is unconfirmed."""


@dataclass(kw_only=True)
class JivoSource:
    """Jivo chats, by webhook only: the source has no streams to pull. `field_map` and
    `value_map` override `JIVO` per object (`chats`, `ratings`); `rates` adds or replaces
    scores of rating values."""

    name: str
    field_map: dict[str, dict[str, str]] = field(default_factory=dict)
    value_map: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    rates: dict[str, float] = field(default_factory=dict)
    kind: str = field(default="jivo", init=False)

    def __post_init__(self) -> None:
        unknown = sorted({*self.field_map, *self.value_map} - set(JIVO))
        if unknown:
            raise ConfigError(
                f"sources.{self.name}.options: unknown Jivo objects {unknown}; use {list(JIVO)}."
            )

    def fields(self, name: str) -> FieldMap:
        """Object `name`'s default fields with the source's overrides."""
        return JIVO[name].override(self.field_map.get(name), self.value_map.get(name))

    def streams(self) -> list[Stream]:
        """None: chats come only through `cxloop listen`."""
        return []


def first_agent_message(messages: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The earliest message an agent wrote, if any."""
    replies = [m for m in messages if m.get("type") == "agent" and m.get("timestamp")]
    return min(replies, key=lambda m: int(m["timestamp"]), default=None)


def chat_records(event: Mapping[str, Any], rates: Mapping[str, float]) -> tuple[dict, dict | None]:
    """A `chat_finished` event as a vendor chat record and, if the visitor rated the chat,
    a rating record (`score` None for a rating value `rates` lacks)."""
    chat = event.get("chat") or {}
    messages = chat.get("messages") or []
    times = [int(m["timestamp"]) for m in messages if m.get("timestamp")]
    first = first_agent_message(messages)
    agents = {str(a.get("id")): a.get("name") for a in event.get("agents") or []}
    assigned = (event.get("assigned_agent") or {}).get("name")
    visitor = event.get("visitor") or {}
    record = {
        "chat_id": str(event["chat_id"]),
        "user_token": event.get("user_token"),
        "email": visitor.get("email"),
        "channel": "chat",
        "started_at": unix_iso(min(times, default=0)),
        "first_response_at": unix_iso(first["timestamp"]) if first else None,
        "agent": agents.get(str(first.get("agent_id"))) if first else assigned,
        "text": "\n".join(m["message"] for m in messages if m.get("type") == "visitor") or None,
    }
    rate = chat.get("rate")
    if rate in (None, ""):
        return record, None
    score = rates.get(str(rate).lower())
    if score is None and str(rate).replace(".", "", 1).isdigit():
        score = float(rate)
    rating = {
        "id": f"{record['chat_id']}:csat",
        "chat_id": record["chat_id"],
        "user_token": record["user_token"],
        "email": record["email"],
        "channel": "chat",
        "survey": "jivo_chat_rating",
        "kind": "csat",
        "score": score,
        "rated_at": unix_iso(max(times, default=0)),
    }
    return record, rating


class JivoReceiver(Receiver):
    """Jivo's webhooks: `chat_finished` gives the chat's ticket and rating; other events are
    kept in the inbox, not mapped."""

    kind = "jivo"

    def __init__(self, source: str, options: Mapping[str, Any], secret: SecretStr) -> None:
        super().__init__(source, options, secret)
        self.settings = JivoSource(name=source, **options)
        self.rates = RATES | {str(k).lower(): float(v) for k, v in self.settings.rates.items()}

    def verified(self, call: Call) -> bool:
        return query_token(call, self.secret)

    def named(self, payload: str) -> str | None:
        body = json.loads(payload)
        key = body.get("chat_id") or body.get("offline_message_id") or body.get("client_id")
        return f"{body['event_name']}:{key}" if key else None

    def mapped(self, payload: str) -> Mapped:
        event = json.loads(payload)
        if event.get("event_name") != "chat_finished":
            return Mapped()
        chat, rating = chat_records(event, self.rates)
        where = self.where(f"chat_finished {chat['chat_id']}")
        if chat["started_at"] is None:
            raise SourceError(f"{where}: the chat has no message with a timestamp to date it.")
        fields = self.settings.fields("chats")
        rows = {"ticket": known_columns(fields.apply([chat], "ticket", where), chat, fields)}
        if rating is not None:
            if rating["score"] is None:
                raise SourceError(
                    f"{where}: unknown rating {event['chat']['rate']!r}; give its score in "
                    f"sources.{self.source}.options.rates and restart `cxloop listen`."
                )
            rows["survey_response"] = self.settings.fields("ratings").apply(
                [rating], "survey_response", where
            )
        return Mapped(rows)
