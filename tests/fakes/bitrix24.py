"""A fake Bitrix24 portal on 127.0.0.1: `crm.{contact,deal,activity}.list` and `batch`, reached
through an inbound webhook path or `?auth=` with an OAuth token, with Bitrix24's errors.

Records keep Bitrix24's shapes: string values, IDs as strings, multi-fields (`EMAIL`, `PHONE`)
as lists of `{ID, VALUE, VALUE_TYPE, TYPE_ID}` returned only when selected by name, dates in
ISO 8601 with the portal's offset (+03:00). Lists take `select`, `filter` (`>=`, `>`, `<=`,
`<`, `=` prefixes; a list value means any of), `order` (`{"ID": "ASC"}` only) and `start`, and
answer 50 records with `next` and `total`. `batch` runs `method?query` commands written as PHP
query strings. Scripted faults answer 503 `QUERY_LIMIT_EXCEEDED`, 429 `OPERATION_TIME_LIMIT`,
5xx bursts, slow and malformed pages; scripted command errors fail single commands inside an
HTTP-200 `batch` answer, as Bitrix24 reports them in `result_error`. Users (`user.get`, filtered
by `@ID`, 50 a page) are responsible for activities and belong to departments
(`department.get` by `ID`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

from tests.fakes.loopback import Answer, Fault, LoopbackServer, take

PORTAL_TZ = timezone(timedelta(hours=3))
EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
PAGE = 50
METHODS = {
    "crm.contact.list": "contacts",
    "crm.deal.list": "deals",
    "crm.activity.list": "activities",
}
CREATED = {"contacts": "DATE_CREATE", "deals": "DATE_CREATE", "activities": "CREATED"}
MODIFIED = {"contacts": "DATE_MODIFY", "deals": "DATE_MODIFY", "activities": "LAST_UPDATED"}
MULTI = frozenset({"EMAIL", "PHONE"})
DATES = frozenset({*CREATED.values(), *MODIFIED.values(), "START_TIME", "END_TIME"})
OPERATOR = re.compile(r"(>=|<=|>|<|=)?(.+)")
SUBJECTS = ["Где мой заказ?", "Оплата не прошла", "Возврат товара", "Вопрос по доставке"]


def iso(moment: datetime) -> str:
    """Bitrix24's date format: ISO 8601 to the second with the portal's offset."""
    return moment.astimezone(PORTAL_TZ).isoformat(timespec="seconds")


def php_params(query: str) -> dict[str, Any]:
    """A PHP query string (`filter[>ID]=5&select[0]=*`) as nested values, as PHP reads it."""
    out: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        names = re.findall(r"\[([^\]]*)\]", key)
        node, path = out, [key.split("[", 1)[0], *names]
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = value
    return _lists(out)


def _lists(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    if value and all(k.isdigit() for k in value):
        return [_lists(value[k]) for k in sorted(value, key=int)]
    return {k: _lists(v) for k, v in value.items()}


class FakeBitrix24(LoopbackServer):
    """Bitrix24 on loopback; `webhook_url` is an inbound webhook, `url` the portal, `calls` the
    list calls it ran (batch commands included) and `requests` the HTTP requests."""

    def __init__(self, code: str, token: str, user: str = "1"):
        super().__init__()
        self.code, self.token, self.user = code, token, user
        self.records: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in CREATED}
        self.command_faults: list[Fault] = []
        self.requests: list[tuple[str, Any]] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.operating = 0.0
        self.operating_reset_in = 600.0
        self.webhook_url = f"{self.url}/rest/{user}/{code}/"
        self.users: dict[str, dict[str, Any]] = {}
        self.departments: dict[str, dict[str, Any]] = {
            "1": {"ID": "1", "NAME": "Компания", "SORT": "500", "PARENT": None, "UF_HEAD": "1"},
            "7": {"ID": "7", "NAME": "Поддержка", "SORT": "500", "PARENT": "1", "UF_HEAD": "2"},
        }

    def add_user(self, name: str, last_name: str | None, departments: list[int]) -> str:
        """A new employee in `departments`; returns the user's ID."""
        with self._lock:
            key = str(len(self.users) + 1)
            self.users[key] = {
                "ID": key,
                "ACTIVE": True,
                "NAME": name,
                "LAST_NAME": last_name,
                "SECOND_NAME": None,
                "EMAIL": f"user{key}@example.ru",
                "LAST_LOGIN": iso(EPOCH),
                "DATE_REGISTER": iso(EPOCH),
                "TIME_ZONE": "Europe/Moscow",
                "IS_ONLINE": "N",
                "WORK_POSITION": "Оператор",
                "UF_DEPARTMENT": departments,
                "USER_TYPE": "employee",
            }
        return key

    # --- data -------------------------------------------------------------------------------

    def add(self, kind: str, fields: dict[str, Any], at: datetime) -> str:
        """A new record created and last modified at `at`; returns its ID."""
        with self._lock:
            key = str(max(map(int, self.records[kind]), default=0) + 1)
            stamp = iso(at)
            self.records[kind][key] = {"ID": key, **fields, CREATED[kind]: stamp}
            self.records[kind][key][MODIFIED[kind]] = stamp
        return key

    def change(self, kind: str, ids: Iterable[str], **fields: Any) -> str:
        """Sets `fields` on records `ids`, all modified now; returns the modified time."""
        stamp = iso(datetime.now(UTC))
        with self._lock:
            for key in ids:
                self.records[kind][key].update(fields, **{MODIFIED[kind]: stamp})
        return stamp

    def seed(self, contacts: int, deals: int, activities: int) -> None:
        """A small CRM, one hour apart: contacts; deals and activities of those contacts. Every
        fourth activity is an internal to-do and every fifth outgoing, so not tickets."""
        for i in range(contacts):
            email = f"Person{i}@Example.com " if i % 7 == 0 else f"person{i}@example.com"
            work = {"ID": str(i), "VALUE_TYPE": "WORK"}
            self.add(
                "contacts",
                {
                    "NAME": f"Person {i}",
                    "EMAIL": [work | {"VALUE": email, "TYPE_ID": "EMAIL"}],
                    "PHONE": [work | {"VALUE": f"+7900{i:07d}", "TYPE_ID": "PHONE"}],
                    "HAS_EMAIL": "Y",
                    "TYPE_ID": ["CLIENT", "PARTNER", "SUPPLIER"][i % 3],
                    "SOURCE_ID": ["CALL", "WEB", "RECOMMENDATION"][i % 3],
                    "ADDRESS_PROVINCE": ["Новосибирская область", "Москва", None][i % 3],
                    "UF_CRM_SEGMENT": ["premium", "loyal"][i % 2],
                },
                EPOCH + timedelta(hours=i),
            )  # fmt: skip
        for i in range(deals):
            self.add(
                "deals",
                {
                    "TITLE": f"Deal {i}",
                    "CONTACT_ID": str(i % contacts + 1),
                    "COMPANY_ID": None,
                    "OPPORTUNITY": f"{1000 + i}.50",
                    "CURRENCY_ID": "RUB",
                    "STAGE_ID": ["WON", "NEW", "C1:WON"][i % 3],
                },
                EPOCH + timedelta(hours=i, minutes=30),
            )
        responsible = [
            self.add_user("Мария", "Иванова", [7]),
            self.add_user("Пётр", None, []),
            self.add_user("Анна", "Кузнецова", [7, 1]),
        ]
        providers = ["IMOPENLINES_SESSION", "CRM_EMAIL", "VOXIMPLANT_CALL", "CRM_TODO"]
        for i in range(activities):
            created = EPOCH + timedelta(hours=i)
            self.add(
                "activities",
                {
                    "OWNER_TYPE_ID": "2" if i % 10 == 9 else "3",
                    "OWNER_ID": str(i % contacts + 1),
                    "TYPE_ID": ["6", "4", "2", "6"][i % 4],
                    "PROVIDER_ID": providers[i % 4],
                    "PROVIDER_TYPE_ID": ["livechat", "EMAIL", "CALL", "TODO"][i % 4],
                    "DIRECTION": "2" if i % 5 == 3 else "1",
                    "SUBJECT": SUBJECTS[i % 4],
                    "DESCRIPTION": f"Где мой заказ {i}?",
                    "COMPLETED": "N" if i % 6 == 0 else "Y",
                    "START_TIME": iso(created),
                    "END_TIME": iso(created + timedelta(hours=5)),
                    "RESPONSIBLE_ID": responsible[i % 3],
                },
                created,
            )

    def tickets(self) -> dict[str, dict[str, Any]]:
        """The activities a connector with default options should store as tickets."""
        return {
            key: record
            for key, record in self.records["activities"].items()
            if record["PROVIDER_ID"] != "CRM_TODO" and record["DIRECTION"] == "1"
        }

    # --- endpoints --------------------------------------------------------------------------

    def answer(self, method: str, url: str, headers: dict[str, str], raw: bytes) -> Answer:
        parts = urlsplit(url)
        body = json.loads(raw) if raw else {}
        segments = parts.path.strip("/").split("/")
        name = segments[-1].removesuffix(".json")
        with self._lock:
            self.requests.append((name, body))
        if segments[0] != "rest" or method != "POST":
            return self._error(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
        if len(segments) == 4:
            if segments[1:3] != [self.user, self.code]:
                return self._error(401, "INVALID_CREDENTIALS", "Invalid request credentials")
        elif parse_qs(parts.query).get("auth", [""])[-1] != self.token:
            return self._error(401, "invalid_token", "The access token provided is invalid.")
        faulted = self.faulted(name, self._internal)
        if faulted is not None:
            return faulted
        if name == "batch":
            return 200, {}, json.dumps({"result": self._batch(body["cmd"]), "time": self._time()})
        if name in ("user.get", "department.get"):
            return 200, {}, json.dumps(self._directory(name, body) | {"time": self._time()})
        if name not in METHODS:
            return self._error(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
        status, out = self._list(name, body)
        if status != 200:
            return status, {}, json.dumps(out)
        return 200, {}, json.dumps(out | {"time": self._time()})

    def _batch(self, commands: dict[str, str]) -> dict[str, Any]:
        results, errors, totals, nexts = {}, {}, {}, {}
        for key, command in commands.items():
            name, _, query = command.partition("?")
            failed = self._take_command_fault(name)
            if failed is not None:
                errors[key] = failed
                continue
            if name not in METHODS:
                errors[key] = {
                    "error": "ERROR_METHOD_NOT_FOUND",
                    "error_description": "Method not found!",
                }
                continue
            status, out = self._list(name, php_params(query))
            if status != 200:
                errors[key] = out
                continue
            results[key], totals[key] = out["result"], out["total"]
            if "next" in out:
                nexts[key] = out["next"]
        # PHP encodes an empty array as `[]`, not `{}`.
        return {
            "result": results or [],
            "result_error": errors or [],
            "result_total": totals or [],
            "result_next": nexts or [],
            "result_time": [],
        }  # fmt: skip

    def _directory(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        """Users whose ID is in `filter[@ID]` (all without it), or departments whose ID is in
        `ID`; 50 a page from `start`, in ID order."""
        if name == "user.get":
            wanted = (params.get("filter") or {}).get("@ID")
            records = self.users
        else:
            wanted = params.get("ID")
            records = self.departments
        if wanted is not None:
            wanted = {str(w) for w in (wanted if isinstance(wanted, list) else [wanted])}
        chosen = [r for k, r in sorted(records.items(), key=lambda kv: int(kv[0]))
                  if wanted is None or k in wanted]  # fmt: skip
        start = int(params.get("start", 0))
        out: dict[str, Any] = {"result": chosen[start : start + PAGE], "total": len(chosen)}
        if start + PAGE < len(chosen):
            out["next"] = start + PAGE
        return out

    def _list(self, name: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        kind = METHODS[name]
        with self._lock:
            self.calls.append((name, params))
        if params.get("order", {"ID": "ASC"}) != {"ID": "ASC"}:
            return 400, {"error": "INVALID_ARG_VALUE", "error_description": "Unsupported order"}
        try:
            start = int(params.get("start", 0))
            matches = [
                r
                for r in self.records[kind].values()
                if self._matches(r, params.get("filter") or {})
            ]
        except ValueError as exc:
            return 400, {"error": "INVALID_ARG_VALUE", "error_description": str(exc)}
        matches.sort(key=lambda r: int(r["ID"]))
        select = params.get("select") or ["*"]
        page = [self._public(r, select) for r in matches[start : start + PAGE]]
        out: dict[str, Any] = {"result": page, "total": len(matches)}
        if start + PAGE < len(matches):
            out["next"] = start + PAGE
        return 200, out

    @staticmethod
    def _matches(record: dict[str, Any], filters: dict[str, Any]) -> bool:
        for key, wanted in filters.items():
            op, name = OPERATOR.fullmatch(key).groups()  # type: ignore[union-attr]
            value = record.get(name)
            if name == "ID":
                value, wanted = int(value), int(wanted)
            elif name in DATES:
                value, wanted = datetime.fromisoformat(value), datetime.fromisoformat(wanted)
            if op in (None, "="):
                ok = value in wanted if isinstance(wanted, list) else str(value) == str(wanted)
            else:
                ok = {">=": value >= wanted, ">": value > wanted, "<=": value <= wanted,
                      "<": value < wanted}[op]  # fmt: skip
            if not ok:
                return False
        return True

    @staticmethod
    def _public(record: dict[str, Any], select: list[str]) -> dict[str, Any]:
        """`*` is every plain field; multi-fields and `UF_*` fields only when named."""
        return {
            name: value
            for name, value in record.items()
            if name in select
            or ("*" in select and name not in MULTI and not name.startswith("UF_"))
        }

    def _time(self) -> dict[str, Any]:
        now = datetime.now(UTC)
        return {
            "start": now.timestamp(),
            "finish": now.timestamp(),
            "duration": 0.001,
            "processing": 0.0005,
            "date_start": iso(now),
            "date_finish": iso(now),
            "operating_reset_at": int(now.timestamp() + self.operating_reset_in),
            "operating": self.operating,
        }

    @staticmethod
    def _error(status: int, error: str, description: str) -> Answer:
        return status, {}, json.dumps({"error": error, "error_description": description})

    def _internal(self, status: int) -> Answer:
        return self._error(status, "INTERNAL_SERVER_ERROR", "Internal server error")

    def command_error(
        self, method: str, error: str, description: str, *, skip: int = 0, times: int = 1
    ) -> None:
        """Batch commands calling `method` (after `skip` of them, `times` times) fail with
        `{error, error_description}` in the batch's `result_error`, the others run."""
        body = json.dumps({"error": error, "error_description": description})
        with self._lock:
            self.command_faults.append(Fault(method, 200, body, skip=skip, times=times))

    def _take_command_fault(self, method: str) -> dict[str, str] | None:
        fault = take(self._lock, self.command_faults, method)
        return None if fault is None else json.loads(fault.body or "{}")

    def limit_exceeded(self, name: str, retry_after: str | None = None, times: int = 1) -> None:
        """Bitrix24's 503 for a full request bucket, maybe with Retry-After."""
        body = {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}
        headers = {} if retry_after is None else {"Retry-After": retry_after}
        self.fault(Fault(name, 503, json.dumps(body), headers, times=times))

    def time_limit(self, name: str, times: int = 1) -> None:
        """Bitrix24's 429 for a method that spent its time budget."""
        body = {
            "error": "OPERATION_TIME_LIMIT",
            "error_description": "Method is blocked due to operation time limit.",
        }
        self.fault(Fault(name, 429, json.dumps(body), times=times))
