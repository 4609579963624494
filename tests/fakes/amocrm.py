"""A fake amoCRM account on 127.0.0.1: API v4 contacts and leads with a Bearer token, and the
OAuth token endpoint, which rotates the refresh token on every refresh.

Records keep amoCRM's shapes: integer ids, Unix times in seconds, custom fields as
`custom_fields_values` (`field_code`, `values[{value, enum_code}]`), a lead's contacts under
`_embedded.contacts` when asked `with=contacts`. Lists take `page` (1-based), `limit` (at most
250), `order[id]` and `filter[updated_at][from]`, link the next page in `_links.next.href`, and
answer 204 with no body when nothing matches. Errors are problem+json; scripted faults answer
429, 5xx, slow and malformed pages.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from tests.fakes.loopback import Answer, LoopbackServer

EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
STATUSES = [142, 143, 555]  # won, lost, a pipeline's own stage


def unix(moment: datetime) -> int:
    return int(moment.timestamp())


class FakeAmoCrm(LoopbackServer):
    """amoCRM on loopback; `requests` are (path, query, status answered) triples, `refresh_token`
    the only one the token endpoint takes, `grants` the token requests' forms."""

    def __init__(self, token: str, client_id: str, client_secret: str, refresh_token: str):
        super().__init__()
        self.tokens = {token}
        self.client_id, self.client_secret = client_id, client_secret
        self.refresh_token = refresh_token
        self.records: dict[str, dict[int, dict[str, Any]]] = {"contacts": {}, "leads": {}}
        self.requests: list[tuple[str, dict[str, str], int]] = []
        self.grants: list[dict[str, str]] = []

    def seed(self, contacts: int, leads: int) -> None:
        """Contacts an hour apart, with a work e-mail and a segment field; leads of those
        contacts in `STATUSES` by turn, closed an hour after creation when won or lost."""
        for i in range(contacts):
            at = EPOCH + timedelta(hours=i)
            self.add("contacts", at, {
                "name": f"Контакт {i}",
                "custom_fields_values": [
                    {"field_id": 501, "field_name": "Email", "field_code": "EMAIL",
                     "field_type": "multitext",
                     "values": [{"value": f"Contact{i}@Example.ru", "enum_code": "WORK"}]},
                    {"field_id": 777, "field_name": "Сегмент", "field_code": None,
                     "field_type": "select", "values": [{"value": ["b2b", "b2c"][i % 2]}]},
                ],
            })  # fmt: skip
        for i in range(leads):
            at = EPOCH + timedelta(hours=i, minutes=30)
            status = STATUSES[i % 3]
            self.add("leads", at, {
                "name": f"Сделка {i}",
                "price": 1000 + i,
                "status_id": status,
                "pipeline_id": 10,
                "closed_at": unix(at + timedelta(hours=1)) if status != 555 else None,
                "custom_fields_values": None,
                "_embedded": {"tags": [], "companies": [],
                              "contacts": [{"id": i % contacts + 1, "is_main": True}]},
            })  # fmt: skip

    def add(self, kind: str, at: datetime, fields: dict[str, Any]) -> int:
        """A new record created and updated at `at`; returns its id."""
        with self._lock:
            key = max(self.records[kind], default=0) + 1
            self.records[kind][key] = {
                "id": key,
                "responsible_user_id": 9001,
                "created_at": unix(at),
                "updated_at": unix(at),
                "is_deleted": False,
                "account_id": 31337,
                **fields,
                "_links": {"self": {"href": f"{self.url}/api/v4/{kind}/{key}"}},
            }
        return key

    def change(self, kind: str, ids: list[int], **fields: Any) -> None:
        """Sets `fields` on records `ids`, all updated now."""
        with self._lock:
            for key in ids:
                self.records[kind][key].update(fields, updated_at=unix(datetime.now(UTC)))

    def won(self) -> set[str]:
        return {str(k) for k, r in self.records["leads"].items() if r["status_id"] == 142}

    # --- endpoints --------------------------------------------------------------------------

    def answer(self, method: str, url: str, headers: dict[str, str], raw: bytes) -> Answer:
        status, extra, text = self._answer(method, url, headers, raw)
        parts = urlsplit(url)
        with self._lock:
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            self.requests.append((parts.path, query, status))
        return status, extra, text

    def _answer(self, method: str, url: str, headers: dict[str, str], raw: bytes) -> Answer:
        parts = urlsplit(url)
        if parts.path == "/oauth2/access_token" and method == "POST":
            return self._token({k: v[-1] for k, v in parse_qs(raw.decode()).items()})
        if headers.get("authorization", "").removeprefix("Bearer ") not in self.tokens:
            return self._problem(401, "Unauthorized", "Invalid access token")
        faulted = self.faulted(parts.path, lambda s: self._problem(s, "Internal error", "Retry"))
        if faulted is not None:
            return faulted
        kind = parts.path.removeprefix("/api/v4/")
        if method != "GET" or kind not in self.records:
            return self._problem(404, "Not found", "No such endpoint")
        with self._lock:
            return self._list(kind, {k: v[-1] for k, v in parse_qs(parts.query).items()})

    def _list(self, kind: str, query: dict[str, str]) -> Answer:
        page, limit = int(query.get("page", 1)), int(query.get("limit", 50))
        if limit > 250 or page < 1:
            return self._problem(400, "Bad Request", "limit must be at most 250")
        rows = sorted(self.records[kind].values(), key=lambda r: r["id"])
        if query.get("order[id]") == "desc":
            rows.reverse()
        if "filter[updated_at][from]" in query:
            rows = [r for r in rows if r["updated_at"] >= int(query["filter[updated_at][from]"])]
        chosen = rows[(page - 1) * limit : page * limit]
        if not chosen:
            return 204, {}, ""
        if query.get("with") != "contacts":
            chosen = [r | {"_embedded": {k: v for k, v in r.get("_embedded", {}).items()
                                         if k != "contacts"}} for r in chosen]  # fmt: skip
        links = {"self": {"href": f"{self.url}/api/v4/{kind}?{urlencode(query)}"}}
        if page * limit < len(rows):
            links["next"] = {
                "href": f"{self.url}/api/v4/{kind}?{urlencode(query | {'page': page + 1})}"
            }
        body = {"_page": page, "_links": links, "_embedded": {kind: chosen}}
        return 200, {}, json.dumps(body)

    def _token(self, form: dict[str, str]) -> Answer:
        with self._lock:
            self.grants.append(form)
            known = (form.get("client_id"), form.get("client_secret")) == (
                self.client_id, self.client_secret,
            )  # fmt: skip
            if (
                not known
                or form.get("grant_type") != "refresh_token"
                or not form.get("redirect_uri")
            ):
                return self._problem(400, "Bad Request", "Client authentication failed")
            if form.get("refresh_token") != self.refresh_token:
                body = {"hint": "Token has been revoked", "title": "Некорректный запрос",
                        "type": "https://developers.amocrm.ru/v3/errors/OAuthProblemJson",
                        "status": 400, "detail": "Некорректный запрос"}  # fmt: skip
                return 400, {}, json.dumps(body)
            access, self.refresh_token = secrets.token_hex(16), secrets.token_hex(16)
            self.tokens.add(access)
            body = {"token_type": "Bearer", "expires_in": 86400, "access_token": access,
                    "refresh_token": self.refresh_token}  # fmt: skip
            return 200, {}, json.dumps(body)

    @staticmethod
    def _problem(status: int, title: str, detail: str) -> Answer:
        body = {"title": title, "type": "https://httpstatus.es/" + str(status), "status": status,
                "detail": detail}  # fmt: skip
        return status, {}, json.dumps(body)
