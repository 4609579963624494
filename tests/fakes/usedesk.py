"""A fake Usedesk on 127.0.0.1: `POST /tickets`, `/ticket`, `/clients`, `/users`, `/groups`,
each with `api_token` in the JSON body.

Records keep Usedesk's shapes: integer ids, dates as `YYYY-MM-DD HH:MM:SS` in UTC+0, ticket
status ids, comments with `from` (`user` agent, `client`, `trigger`) and `type` (`public`,
`private`). Lists answer 100 records a call, newest first, paged by `offset` (a 0-based page
index); `updated_after`/`created_after` keep records at or after a minute. Scripted faults
answer 429, 5xx, slow and malformed pages; a wrong token answers 401 with `{"error"}`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from tests.fakes.loopback import Answer, LoopbackServer

EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
PAGE = 100
AGENTS = {7: "Анна Петрова", 8: "Иван Смирнов"}
ADMINS = {9: "Ольга Админ"}
GROUPS = {3: "Логистика", 4: "Оплата"}


def stamp(moment: datetime) -> str:
    """Usedesk's date format: to the second, UTC+0, no offset."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


class FakeUsedesk(LoopbackServer):
    """Usedesk on loopback; `requests` are (path, body without the token) pairs."""

    def __init__(self, token: str):
        super().__init__()
        self.token = token
        self.tickets: dict[int, dict[str, Any]] = {}
        self.comments: dict[int, list[dict[str, Any]]] = {}
        self.clients: dict[int, dict[str, Any]] = {}
        self.requests: list[tuple[str, dict[str, Any]]] = []

    def seed(self, clients: int, tickets: int) -> None:
        """Clients an hour apart; tickets of those clients, each with a client message and,
        except every fifth, a private note then a public agent reply 30 minutes later."""
        for i in range(clients):
            self.clients[i + 1] = {
                "id": i + 1,
                "name": f"Клиент {i}",
                "emails": [f"Client{i}@Example.com"],
                "phone": [],
                "tickets": [],
                "_created": stamp(EPOCH + timedelta(hours=i)),  # filtered on, not listed
            }
        for i in range(tickets):
            self.add_ticket(i % clients + 1, EPOCH + timedelta(hours=i), replied=i % 5 != 4)

    def add_ticket(self, client: int, at: datetime, *, replied: bool = True) -> int:
        """A new ticket from `client` created and last updated at `at`; returns its id."""
        with self._lock:
            key = max(self.tickets, default=0) + 1
            self.tickets[key] = {
                "id": key,
                "subject": f"Где мой заказ {key}?",
                "client_id": client,
                "client_name": f"Клиент {client - 1}",
                "assignee_id": [7, 8, 9, None][key % 4],
                "group": [3, 4][key % 2],
                "channel_id": [21, 22][key % 2],
                "status": [1, 2, 3][key % 3],
                "priority": "medium",
                "type": "question",
                "tags": [],
                "created_at": stamp(at),
                "last_updated_at": stamp(at),
            }
            notes = [self._comment(key, "client", "public", at)]
            if replied:
                notes.append(self._comment(key, "user", "private", at + timedelta(minutes=10)))
                notes.append(self._comment(key, "user", "public", at + timedelta(minutes=30)))
            self.comments[key] = notes
        return key

    def _comment(self, ticket: int, sender: str, kind: str, at: datetime) -> dict[str, Any]:
        return {
            "id": ticket * 10 + len(self.comments.get(ticket, [])),
            "message": "Здравствуйте",
            "from": sender,
            "type": kind,
            "user_id": 7 if sender == "user" else None,
            "client_id": None if sender == "user" else self.tickets[ticket]["client_id"],
            "ticket_id": ticket,
            "published_at": stamp(at),
        }

    def change(self, ids: list[int], **fields: Any) -> None:
        """Sets `fields` on tickets `ids`, all updated now."""
        with self._lock:
            for key in ids:
                self.tickets[key].update(fields, last_updated_at=stamp(datetime.now(UTC)))

    # --- endpoints --------------------------------------------------------------------------

    def answer(self, method: str, url: str, headers: dict[str, str], raw: bytes) -> Answer:
        path = urlsplit(url).path
        body = json.loads(raw) if raw else {}
        token = body.pop("api_token", None)
        with self._lock:
            self.requests.append((path, body))
        if method != "POST":
            return self._error(405, "Method not allowed")
        if token != self.token:
            return self._error(401, "Invalid api token")
        faulted = self.faulted(path, lambda status: self._error(status, "Server error"))
        if faulted is not None:
            return faulted
        handler = {
            "/tickets": self._tickets,
            "/ticket": self._ticket,
            "/clients": self._clients,
            "/users": self._users,
            "/groups": self._groups,
        }.get(path)
        if handler is None:
            return self._error(404, "Method not found")
        with self._lock:
            return handler(body)

    def _tickets(self, body: dict[str, Any]) -> Answer:
        return self._page(self.tickets, body, "last_updated_at", body.get("updated_after"))

    def _clients(self, body: dict[str, Any]) -> Answer:
        return self._page(self.clients, body, "_created", body.get("created_after"))

    def _page(
        self, records: dict[int, dict[str, Any]], body: dict[str, Any], field: str, since: Any
    ) -> Answer:
        if not isinstance(body.get("offset", 0), int):
            return self._error(400, "offset must be a number")
        rows = sorted(records.values(), key=lambda r: -r["id"])
        if since is not None:
            floor = datetime.strptime(since, "%Y-%m-%d %H:%M")
            rows = [r for r in rows if datetime.fromisoformat(r[field]) >= floor]
        start = body.get("offset", 0) * PAGE
        page = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows[start:][:PAGE]]
        return 200, {}, json.dumps(page)

    def _ticket(self, body: dict[str, Any]) -> Answer:
        key = int(body.get("ticket_id") or 0)
        if key not in self.tickets:
            return self._error(404, "Ticket not found")
        ticket = self.tickets[key]
        detail = {
            "id": str(key),
            "status_id": str(ticket["status"]),
            "published_at": ticket["created_at"],
        }
        return 200, {}, json.dumps({"ticket": detail, "comments": self.comments[key]})

    def _users(self, body: dict[str, Any]) -> Answer:
        people = ADMINS if body.get("user_type") == "admin" else AGENTS
        if body.get("user_type") == "support":
            people = {}
        users = [{"id": k, "name": v, "email": f"u{k}@shop.ru", "groups": []}
                 for k, v in people.items()]  # fmt: skip
        return 200, {}, json.dumps(users)

    def _groups(self, body: dict[str, Any]) -> Answer:
        return (
            200,
            {},
            json.dumps([{"id": k, "name": v, "deleted": False} for k, v in GROUPS.items()]),
        )

    @staticmethod
    def _error(status: int, message: str) -> Answer:
        return status, {}, json.dumps({"error": message})
