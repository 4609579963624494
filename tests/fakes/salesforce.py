"""A fake Salesforce org on 127.0.0.1: the REST `query` and `queryAll` resources with
`nextRecordsUrl` paging, `Sforce-Limit-Info` on every answer, and Salesforce's JSON-array errors.

It understands the SOQL the connector writes (`SELECT fields FROM sObject [WHERE [IsDeleted =
true AND] (SystemModstamp > t OR (SystemModstamp = t AND Id > 'id'))] ORDER BY SystemModstamp,
Id`, the keyset condition optional after `IsDeleted = true`) and answers anything else with
`MALFORMED_QUERY`. Deleted records (`delete`) are in the Recycle Bin: only queryAll sees them.
Query locators hold a snapshot of the result and can be expired (`INVALID_QUERY_LOCATOR`). Once
`api_used` passes `api_max` every request gets 403 `REQUEST_LIMIT_EXCEEDED: TotalRequests Limit
exceeded.`. Users and queues (`Group`, `Type = 'Queue'`) own cases; they are read by `SELECT
Id, Name[, Department] FROM User|Group WHERE [Type = 'Queue' AND] Id IN ('…', …)`, and faults
match their queries by `from=<sObject>` after the path. Scripted faults as in the other fakes;
`refuse` scripts Salesforce's own errors (the
concurrent-request limit, missing access).

`POST /services/oauth2/token` issues access tokens to the connected app `CLIENT_ID` /
`CLIENT_SECRET`, by the refresh-token flow (`REFRESH_TOKEN`) or client credentials, with
Salesforce's OAuth errors (HTTP 400 `invalid_client`, `invalid_grant`). An issued session
answers `token_uses` API requests (any number when None), then it has expired: 401
`INVALID_SESSION_ID`, as for an unknown token.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fakes.loopback import Answer, Fault, LoopbackServer

EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
CONCURRENT_LIMIT = "ConcurrentPerOrgLongTxn Limit exceeded."
CLIENT_ID = "3MVG9fakeConsumerKey.cxloop.test"
CLIENT_SECRET = "F4KE5ECRET0123456789ABCDEF"
REFRESH_TOKEN = "5Aep861fakeRefreshToken.cxloop"
TOKEN_PATH = "/services/oauth2/token"
PREFIX = {"Contact": "003", "Case": "500", "Opportunity": "006", "Account": "001"}
PREFIX |= {"User": "005", "Group": "00G"}
STANDARD = {"Case": {"OwnerId"}}
"""Fields an sObject has even when no seeded record sets them."""
BY_ID = re.compile(
    r"SELECT (?P<fields>[\w, ]+) FROM (?P<sobject>User|Group) WHERE "
    r"(?:Type = 'Queue' AND )?Id IN \((?P<ids>'\w+'(?:, '\w+')*)\)"
)
KEYSET = (
    r"\(SystemModstamp > (?P<since>[\dT:\-]+Z) OR \(SystemModstamp = (?P=since) "
    r"AND Id > '(?P<after>\w+)'\)\)"
)
SOQL = re.compile(
    r"SELECT (?P<fields>[\w., ]+) FROM (?P<sobject>\w+)(?: WHERE (?=[I(])"
    r"(?P<deleted>IsDeleted = true)?(?(deleted)(?: AND (?=\()|(?= ORDER)))"
    rf"(?:{KEYSET})?)? ORDER BY SystemModstamp, Id"
)


def stamp(moment: datetime) -> str:
    """Salesforce's timestamp format: UTC to the second, `.000+0000`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


class FakeSalesforce(LoopbackServer):
    """Salesforce on loopback; `url` is the instance URL, `requests` (path, SOQL or None) the
    API requests, `token_requests` the token endpoint's forms, `issued` its sessions' uses."""

    def __init__(
        self,
        token: str,
        batch_size: int = 2000,
        version: str = "v62.0",
        token_uses: int | None = None,
    ):
        super().__init__()
        self.token, self.batch_size, self.version = token, batch_size, version
        self.token_uses = token_uses
        self.token_requests: list[dict[str, str]] = []
        self.issued: dict[str, int] = {}
        self.records: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in PREFIX}
        self.requests: list[tuple[str, str | None]] = []
        self.api_used, self.api_max = 0, 15_000
        self._locators: dict[str, list[dict[str, Any]]] = {}

    # --- data -------------------------------------------------------------------------------

    def add(self, sobject: str, fields: dict[str, Any], at: datetime) -> str:
        """A new record created and last modified at `at`; returns its 18-character Id."""
        with self._lock:
            key = f"{PREFIX[sobject]}{len(self.records[sobject]) + 1:012d}AAA"
            self.records[sobject][key] = {"Id": key, **fields, "CreatedDate": stamp(at)}
            self.records[sobject][key]["SystemModstamp"] = stamp(at)
        return key

    def change(self, sobject: str, ids: Iterable[str], **fields: Any) -> None:
        """Sets `fields` on records `ids`, all modified now."""
        with self._lock:
            for key in ids:
                self.records[sobject][key].update(fields, SystemModstamp=stamp(datetime.now(UTC)))

    def delete(self, sobject: str, ids: Iterable[str]) -> None:
        """Moves records `ids` to the Recycle Bin (`IsDeleted`), modified now."""
        self.change(sobject, ids, IsDeleted=True)

    def expire_locators(self) -> None:
        with self._lock:
            self._locators.clear()

    def refuse(
        self,
        path: str,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        *,
        skip: int = 0,
        times: int = 1,
    ) -> None:
        """Requests to `path` (after `skip` of them, `times` times) get Salesforce's error array
        `[{message, errorCode}]`; a header given as "" is left out of the answer."""
        body = json.dumps([{"message": message, "errorCode": code}])
        self.fault(Fault(path, status, body, headers or {}, skip=skip, times=times))

    def seed(self, contacts: int, cases: int, opportunities: int) -> None:
        """Accounts, contacts (every third without an account) and their cases and
        opportunities; three records share each SystemModstamp second."""
        types = ["Customer - Direct", "Customer - Channel"]
        accounts = [self.add("Account", {"Type": t}, EPOCH) for t in types]
        for i in range(contacts):
            self.add(
                "Contact",
                {
                    "Email": f"Person{i}@Example.com " if i % 7 == 0 else f"person{i}@example.com",
                    "AccountId": None if i % 3 == 2 else accounts[i % 3],
                    "MailingState": ["Novosibirsk", "Moscow", None][i % 3],
                    "LeadSource": ["Web", "Phone Inquiry", "Partner Referral"][i % 3],
                    "Device__c": ["Mobile", None, "Desktop"][i % 3],  # a custom field
                },
                EPOCH + timedelta(hours=i // 3),
            )
        owners = [
            self.add("User", {"Name": "Olga Petrova", "Department": "Delivery"}, EPOCH),
            self.add("User", {"Name": "Ivan Sidorov", "Department": None}, EPOCH),
            self.add("Group", {"Name": "Tier 1 Support", "Type": "Queue"}, EPOCH),
        ]
        contact_ids = list(self.records["Contact"])
        for i in range(cases):
            created = EPOCH + timedelta(hours=i // 3)
            self.add(
                "Case",
                {
                    "CaseNumber": f"{i + 1:08d}",
                    "Subject": f"Case {i}",
                    "Description": f"Where is my order {i}?",
                    "Status": "New" if i % 4 == 0 else "Closed",
                    "Origin": ["Phone", "Email", "Web", "Chat"][i % 4],
                    "Reason": ["Delivery", "Billing", "Product quality"][i % 3],
                    "Type": ["Problem", "Question"][i % 2],
                    "Priority": "Medium",
                    "ContactId": None if i % 10 == 9 else contact_ids[i % contacts],
                    "AccountId": None,
                    "ClosedDate": None if i % 4 == 0 else stamp(created + timedelta(hours=5)),
                    "IsEscalated": False,
                    "OwnerId": owners[i % 3],
                },
                created,
            )
        for i in range(opportunities):
            self.add(
                "Opportunity",
                {
                    "Name": f"Opportunity {i}",
                    "Amount": 1000.5 + i,
                    "StageName": ["Closed Won", "Prospecting", "Closed Lost"][i % 3],
                    "ContactId": contact_ids[i % contacts],
                },
                EPOCH + timedelta(hours=i // 3, minutes=30),
            )

    # --- endpoints --------------------------------------------------------------------------

    def answer(self, method: str, url: str, headers: dict[str, str], raw: bytes) -> Answer:
        parts = urlsplit(url)
        if method == "POST" and parts.path == TOKEN_PATH:
            return self.faulted(parts.path, self._unexpected) or self._issue(raw)
        soql = parse_qs(parts.query).get("q", [None])[-1]
        sobject = re.search(r" FROM (\w+)", soql or "")
        with self._lock:
            self.requests.append((parts.path, soql))
            self.api_used += 1
        if not self._session(headers.get("authorization", "")):
            return self._error(401, "INVALID_SESSION_ID", "Session expired or invalid")
        matched = f"{parts.path}?from={sobject[1]}" if sobject else parts.path
        faulted = self.faulted(matched, self._unexpected, self._limits())
        if faulted is not None:
            return faulted
        if self.api_used > self.api_max:
            return self._error(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
        query = f"/services/data/{self.version}/query"
        if method == "GET" and parts.path in (query, f"{query}All") and soql:
            return self._query(soql, deleted=parts.path.endswith("All"))
        if method == "GET" and parts.path.startswith(f"{query}/"):
            return self._more(parts.path.rsplit("/", 1)[1])
        return self._error(404, "NOT_FOUND", "The requested resource does not exist")

    def _session(self, authorization: str) -> bool:
        """Whether `authorization` carries a live session, counting its use."""
        scheme, _, token = authorization.partition(" ")
        with self._lock:
            used = self.issued.get(token)
            if scheme != "Bearer" or (token != self.token and used in (None, self.token_uses)):
                return False
            if used is not None:
                self.issued[token] = used + 1
        return True

    def _issue(self, raw: bytes) -> Answer:
        form = {k: v[-1] for k, v in parse_qs(raw.decode()).items()}
        with self._lock:
            self.token_requests.append(form)
        grant = form.get("grant_type")
        if (form.get("client_id"), form.get("client_secret")) != (CLIENT_ID, CLIENT_SECRET):
            return self._oauth_error("invalid_client", "invalid client credentials")
        if grant == "refresh_token" and form.get("refresh_token") != REFRESH_TOKEN:
            return self._oauth_error("invalid_grant", "expired access/refresh token")
        if grant not in ("refresh_token", "client_credentials"):
            return self._oauth_error("unsupported_grant_type", "grant type not supported")
        token = f"00D5g000004XyZ1!AQ0AQ{secrets.token_urlsafe(32)}"
        with self._lock:
            self.issued[token] = 0
        issued_at = str(int(datetime.now(UTC).timestamp() * 1000))
        body = {
            "access_token": token,
            "signature": secrets.token_urlsafe(32),
            "scope": "api refresh_token",
            "instance_url": self.url,
            "id": f"{self.url}/id/00D5g000004XyZ1EAI/0055g00000AbCdEAAV",
            "token_type": "Bearer",
            "issued_at": issued_at,
        }
        return 200, {}, json.dumps(body)

    def _oauth_error(self, error: str, description: str) -> Answer:
        return 400, {}, json.dumps({"error": error, "error_description": description})

    def _query(self, soql: str, deleted: bool) -> Answer:
        """The first batch of `soql`'s result; with `deleted` (queryAll), of the Recycle Bin too.
        Its `nextRecordsUrl` is under `query` for both, as Salesforce's is."""
        by_id = BY_ID.fullmatch(soql)
        if by_id:
            return self._by_id(by_id["sobject"], by_id["fields"], by_id["ids"], "Type" in soql)
        parsed = SOQL.fullmatch(soql)
        if not parsed or parsed["sobject"] not in self.records:
            return self._error(400, "MALFORMED_QUERY", f"unexpected token: '{soql[:40]}'")
        fields = [f.strip() for f in parsed["fields"].split(",")]
        unknown = [f for f in fields if not self._known(parsed["sobject"], f)]
        if unknown:
            return self._error(
                400,
                "INVALID_FIELD",
                f"No such column '{unknown[0]}' on entity '{parsed['sobject']}'.",
            )
        records = self.records[parsed["sobject"]].values()
        rows = [r for r in records if deleted or not r.get("IsDeleted")]
        if parsed["deleted"]:
            rows = [r for r in rows if r.get("IsDeleted")]
        rows.sort(key=lambda r: (r["SystemModstamp"], r["Id"]))
        if parsed["since"]:
            since = parsed["since"].replace("Z", ".000+0000")
            rows = [r for r in rows if (r["SystemModstamp"], r["Id"]) > (since, parsed["after"])]
        result = [self._public(parsed["sobject"], r, fields) for r in rows]
        with self._lock:
            locator = f"01g{len(self._locators) + 1:012d}AAA"
            self._locators[locator] = result
        return self._batch(locator, 0)

    def _by_id(self, sobject: str, fields: str, ids: str, queues: bool) -> Answer:
        """The records of `sobject` whose Id is listed (only queues, with `queues`)."""
        wanted = {i.strip("'") for i in ids.split(", ")}
        rows = [
            self._public(sobject, r, [f.strip() for f in fields.split(",")])
            for key, r in sorted(self.records[sobject].items())
            if key in wanted and (not queues or r.get("Type") == "Queue")
        ]
        with self._lock:
            locator = f"01g{len(self._locators) + 1:012d}AAA"
            self._locators[locator] = rows
        return self._batch(locator, 0)

    def _more(self, name: str) -> Answer:
        locator, _, offset = name.partition("-")
        if locator not in self._locators:
            return self._error(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return self._batch(locator, int(offset))

    def _batch(self, locator: str, offset: int) -> Answer:
        result = self._locators[locator]
        end = offset + self.batch_size
        body: dict[str, Any] = {
            "totalSize": len(result),
            "done": end >= len(result),
            "records": result[offset:end],
        }
        if end < len(result):
            body["nextRecordsUrl"] = f"/services/data/{self.version}/query/{locator}-{end}"
        return 200, self._limits(), json.dumps(body)

    def _known(self, sobject: str, name: str) -> bool:
        if name.startswith("Account."):
            return sobject == "Contact"
        if name in STANDARD.get(sobject, ()):
            return True
        return name in ("Id", "CreatedDate", "SystemModstamp") or any(
            name in r for r in self.records[sobject].values()
        )

    def _public(self, sobject: str, record: dict[str, Any], fields: list[str]) -> dict[str, Any]:
        url = f"/services/data/{self.version}/sobjects/{sobject}/{record['Id']}"
        out: dict[str, Any] = {"attributes": {"type": sobject, "url": url}}
        for name in fields:
            if name.startswith("Account."):
                account = self.records["Account"].get(record.get("AccountId") or "")
                out["Account"] = None if account is None else {
                    "attributes": {"type": "Account", "url": f"/sobjects/Account/{account['Id']}"},
                    "Type": account["Type"],
                }  # fmt: skip
            else:
                out[name] = record.get(name)
        return out

    def _limits(self) -> dict[str, str]:
        return {"Sforce-Limit-Info": f"api-usage={self.api_used}/{self.api_max}"}

    def _error(self, status: int, code: str, message: str) -> Answer:
        return status, self._limits(), json.dumps([{"message": message, "errorCode": code}])

    def _unexpected(self, status: int) -> Answer:
        return self._error(status, "UNKNOWN_EXCEPTION", "An unexpected error occurred.")
