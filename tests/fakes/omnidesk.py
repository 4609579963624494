"""A fake Omnidesk on 127.0.0.1: cases, a case's messages, users, staff and groups, behind HTTP
Basic with a staff e-mail and API key.

Records keep Omnidesk's shapes: integer ids (0 for none), RFC 2822 timestamps with the
account's offset (+03:00), lists answered as an object keyed `"0"`, `"1"`, … of wrapped records
(`{"case": {…}}`) plus `total_count`, paged by `page` (1-based, at most 500) and `limit` (at most
100), newest first; `from_updated_time` (a Unix time) keeps records updated at or after it.
Every answer carries the rate-limit headers; scripted faults answer 429 with `retry_after`,
5xx, slow and malformed pages.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fakes.loopback import Answer, Fault, LoopbackServer

ACCOUNT_TZ = timezone(timedelta(hours=3))
EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
STAFF = {11: "Мария Кузнецова", 12: "Пётр Орлов"}
GROUPS = {5: "Доставка", 6: "Возвраты"}
RATINGS = ["high", "middle", "low", "", "high"]


def rfc2822(moment: datetime) -> str:
    """Omnidesk's timestamp format, with the account's offset."""
    return format_datetime(moment.astimezone(ACCOUNT_TZ))


class FakeOmnidesk(LoopbackServer):
    """Omnidesk on loopback; `requests` are (path, query) pairs."""

    def __init__(self, email: str, key: str):
        super().__init__()
        self.basic = base64.b64encode(f"{email}:{key}".encode()).decode()
        self.cases: dict[int, dict[str, Any]] = {}
        self.messages: dict[int, list[dict[str, Any]]] = {}
        self.users: dict[int, dict[str, Any]] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.updated: dict[tuple[str, int], datetime] = {}

    def seed(self, users: int, cases: int) -> None:
        """Users an hour apart; cases of those users, each with a user message and, except every
        fourth, a rule's auto-reply, a staff note and a staff reply 20 minutes later; every
        fifth rating in `RATINGS` is empty."""
        for i in range(users):
            at = EPOCH + timedelta(hours=i)
            self.users[i + 1] = {
                "user_id": i + 1,
                "user_full_name": f"Пользователь {i}",
                "user_email": f"User{i}@Example.ru",
                "user_phone": "",
                "created_at": rfc2822(at),
                "updated_at": rfc2822(at),
            }
            self.updated["users", i + 1] = at
        for i in range(cases):
            self.add_case(i % users + 1, EPOCH + timedelta(hours=i), replied=i % 4 != 3)

    def add_case(self, user: int, at: datetime, *, replied: bool = True) -> int:
        """A new case from `user` created and last updated at `at`; returns its id."""
        with self._lock:
            key = max(self.cases, default=0) + 1
            rating = RATINGS[key % 5]
            self.cases[key] = {
                "case_id": key,
                "case_number": f"664-{key:06d}",
                "subject": f"Не пришла посылка {key}",
                "user_id": user,
                "staff_id": [11, 12, 13, 0][key % 4],
                "group_id": [5, 6][key % 2],
                "status": ["open", "waiting", "closed"][key % 3],
                "priority": "normal",
                "channel": ["email", "chat", "telegram"][key % 3],
                "deleted": False,
                "spam": False,
                "created_at": rfc2822(at),
                "updated_at": rfc2822(at),
                "closed_at": rfc2822(at + timedelta(hours=2)) if key % 3 == 2 else "-",
                "rating": rating,
                "rating_comment": f"Спасибо {key}" if rating else "",
                "rated_staff_id": 11 if rating else 0,
                "custom_fields": {},
                "labels": [],
            }
            self.updated["cases", key] = at
            thread = [self._message(key, 0, at, user=user)]
            if replied:
                thread.append(self._message(key, 11, at + timedelta(minutes=1), rule=True))
                thread.append(self._message(key, 11, at + timedelta(minutes=10), note=True))
                thread.append(self._message(key, 12, at + timedelta(minutes=20)))
            self.messages[key] = thread
        return key

    def _message(
        self, case: int, staff: int, at: datetime, *, user: int = 0, note: bool = False,
        rule: bool = False,
    ) -> dict[str, Any]:  # fmt: skip
        return {
            "message_id": case * 100 + len(self.messages.get(case, [])),
            "user_id": user,
            "staff_id": staff,
            "content": "Здравствуйте",
            "note": note,
            "sent_via_rule": rule,
            "created_at": rfc2822(at),
        }

    def change(self, ids: list[int], **fields: Any) -> None:
        """Sets `fields` on cases `ids`, all updated now."""
        now = datetime.now(UTC)
        with self._lock:
            for key in ids:
                self.cases[key].update(fields, updated_at=rfc2822(now))
                self.updated["cases", key] = now

    # --- endpoints --------------------------------------------------------------------------

    def answer(self, method: str, url: str, headers: dict[str, str], raw: bytes) -> Answer:
        parts = urlsplit(url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        with self._lock:
            self.requests.append((parts.path, query))
        if headers.get("authorization") != f"Basic {self.basic}":
            return self._error(401, "Unauthorized", "Wrong staff e-mail or API key")
        faulted = self.faulted(parts.path, self._server_error, self._limits())
        if faulted is not None:
            return faulted
        segments = parts.path.removeprefix("/api/").removesuffix(".json").split("/")
        with self._lock:
            if segments == ["cases"]:
                return self._list("cases", "case", self.cases, query)
            if segments == ["users"]:
                return self._list("users", "user", self.users, query)
            if segments == ["staff"]:
                staff = {k: {"staff_id": k, "staff_full_name": v, "active": True}
                         for k, v in STAFF.items()}  # fmt: skip
                return self._list("staff", "staff", staff, query)
            if segments == ["groups"]:
                groups = {k: {"group_id": k, "group_title": v} for k, v in GROUPS.items()}
                return self._list("groups", "group", groups, query)
            if len(segments) == 3 and segments[0] == "cases" and segments[2] == "messages":
                thread = dict(enumerate(self.messages.get(int(segments[1]), [])))
                return self._list("messages", "message", thread, query, newest_first=False)
        return self._error(404, "Not found", "No such method")

    def _list(
        self, kind: str, wrapper: str, records: dict[int, dict[str, Any]], query: dict[str, str],
        *, newest_first: bool = True,
    ) -> Answer:  # fmt: skip
        page, limit = int(query.get("page", 1)), int(query.get("limit", 100))
        if not (1 <= page <= 500 and 1 <= limit <= 100):
            return self._error(400, "Bad request", "page must be 1–500 and limit 1–100")
        keys = sorted(records, reverse=newest_first)
        if "from_updated_time" in query:
            since = datetime.fromtimestamp(int(query["from_updated_time"]), UTC)
            keys = [k for k in keys if self.updated[kind, k] >= since]
        chosen = keys[(page - 1) * limit : page * limit]
        body: dict[str, Any] = {str(i): {wrapper: records[k]} for i, k in enumerate(chosen)}
        return 200, self._limits(), json.dumps(body | {"total_count": len(keys)})

    @staticmethod
    def _limits() -> dict[str, str]:
        return {"rate_limit_per_minute": "750", "api_calls_left": "700", "retry_after": "0"}

    @staticmethod
    def _error(status: int, error: str, description: str) -> Answer:
        return status, {}, json.dumps({"error": error, "description": description})

    def _server_error(self, status: int) -> Answer:
        return self._error(status, "Server error", "Try again later")

    def rate_limited(self, path: str, retry_after: str) -> None:
        """The next request to `path` is over the minute's limit."""
        headers = self._limits() | {"api_calls_left": "0", "retry_after": retry_after}
        body = json.dumps({"error": "Too many requests", "description": "Rate limit exceeded"})
        self.fault(Fault(path, 429, body, headers))
