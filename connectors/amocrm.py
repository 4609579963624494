"""amoCRM (Kommo) API v4: contacts → customers, won leads → orders, with a long-lived token or
OAuth 2.0 whose refresh token rotates.

Lists page HAL-style (`_links.next.href` carries the next `page`), at most 250 records a page,
in id order so that records changed while a pass runs cannot shift unread ones past a page; a
pass reads everything updated since the previous pass began (`filter[updated_at][from]`, Unix
seconds), less `CLOCK_SKEW`. A list with nothing to give answers 204 with no body. Errors come
as `application/problem+json` (`title`, `detail`).

A lead is an order once it is in the system status 142 ("successfully realised"), at its
`price` and closing time; a lead read in any other status is passed on as deleted, so one that
was won and then reopened leaves the store. Companies are not loaded: the store's customer is a
person, and leads point at contacts.

amoCRM spends a refresh token on every refresh and answers with a new one, so the current one
lives in the file `refresh_token_file` names: written atomically (a temporary file, then
`os.replace`) with mode 0600 the moment the token endpoint answers. The environment variable
only seeds that file on the first run.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from connectors.base import Page
from connectors.canonical import FieldMap
from connectors.crm import CrmOptions, PassCursor
from connectors.errors import ConfigError
from connectors.http import (
    HttpClient,
    HttpStream,
    OAuthClient,
    OAuthRefresh,
    Request,
    SecretHeader,
    Step,
    env_secret,
    json_body,
    json_error,
    vendor_client,
)
from connectors.paging import NextUrlPaging

TOKEN_ENV = "AMOCRM_TOKEN"
OAUTH_ENV = ("AMOCRM_CLIENT_ID", "AMOCRM_CLIENT_SECRET", "AMOCRM_REFRESH_TOKEN")
LIMIT = 250
WON = "142"
CLOCK_SKEW = timedelta(minutes=5)
PAGING = NextUrlPaging("page")  # `_links.next.href` carries the next page's number
TIMES = ("created_at", "updated_at", "closed_at")

AMOCRM: dict[str, FieldMap] = {
    "contacts": FieldMap(
        fields={"id": "source_id", "cf.EMAIL": "email", "created_at": "created_at"}
    ),
    "leads": FieldMap(
        fields={
            "id": "source_id",
            "contact_id": "customer_id",
            "price": "amount",
            "closed_at": "created_at",
            "status_id": "status",
        },
        values={"status": {WON: "won"}},
    ),
}
"""amoCRM's default fields per stream. Custom fields arrive as `cf.<field_code>` (e.g.
`cf.EMAIL`, `cf.PHONE`) or `cf.<field_id>` when they have no code, with their first value;
`contact_id` is a lead's first contact."""

PATHS = {"contacts": ("/api/v4/contacts", "customer"), "leads": ("/api/v4/leads", "orders")}


@dataclass(frozen=True)
class AmoOAuthClient(OAuthClient):
    """amoCRM's token endpoint also wants the integration's `redirect_uri` on a refresh."""

    redirect_uri: str = ""

    def grant(self) -> dict[str, str]:
        return super().grant() | {"redirect_uri": self.redirect_uri}


class RotatingRefresh(OAuthRefresh):
    """OAuth renewal that saves each new refresh token to `store` before using anything else
    of the answer, and redacts the spent ones as well."""

    def __init__(self, source: str, client: AmoOAuthClient, fix: str, store: Path) -> None:
        super().__init__(source, client, fix)
        self.store = store
        self._spent: list[str] = []

    def _issue(self, response: httpx.Response) -> tuple[str, float]:
        body = json_body(response)
        fresh = body.get("refresh_token") if isinstance(body, dict) else None
        if response.is_success and isinstance(fresh, str) and fresh:
            save_secret(self.store, fresh, self.source)
            spent = self.client.refresh_token
            self._spent += [spent.get_secret_value()] if spent else []
            self.client = replace(self.client, refresh_token=SecretStr(fresh))
        return super()._issue(response)

    def redact(self, text: str) -> str:
        for value in self._spent:
            text = text.replace(value, "***")
        return super().redact(text)


def save_secret(path: Path, secret: str, source: str) -> None:
    """Writes `secret` to `path` atomically, readable by its owner only."""
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:  # mkstemp makes it 0600
                out.write(secret + "\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise ConfigError(
            f"sources.{source}: could not save amoCRM's new refresh token to {path} "
            f"({type(exc).__name__}: {exc.strerror}); the old one is spent. Make the folder "
            f"writable, then authorise the integration again and put the new refresh token in "
            f"{OAUTH_ENV[2]}."
        ) from None


def error_message(response: httpx.Response, fix: str) -> str:
    """amoCRM's problem+json `title: detail`, with `fix` for authentication errors."""
    return json_error(
        response,
        lambda body: ": ".join(str(body[k]) for k in ("title", "detail") if body.get(k)),
        fix,
    )


def _at(value: Any) -> str | None:
    """A Unix time in seconds as ISO 8601 UTC; None when absent or 0."""
    return datetime.fromtimestamp(int(value), UTC).isoformat() if value else None


def flatten(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record with ISO times, `cf.<code or id>` = a custom field's first value, and
    `contact_id` = the first embedded contact."""
    row = {k: v for k, v in record.items() if not k.startswith("_")}
    row |= {name: _at(record.get(name)) for name in TIMES}
    for custom in record.get("custom_fields_values") or []:
        values = custom.get("values") or [{}]
        row[f"cf.{custom.get('field_code') or custom['field_id']}"] = values[0].get("value")
    contacts = (record.get("_embedded") or {}).get("contacts") or []
    row["contact_id"] = contacts[0]["id"] if contacts else None
    row["status_id"] = None if row.get("status_id") is None else str(row["status_id"])
    return row


class AmoStream(HttpStream):
    """One amoCRM list; records leave flattened and mapped to canonical columns.

    Cursor: a `PassCursor` (Unix seconds; `since` is when the last pass began, less
    `CLOCK_SKEW`), with `page`.
    """

    page_size = LIMIT

    def __init__(
        self, source: str, client: HttpClient, name: str, fields: FieldMap, page_size: int
    ) -> None:
        super().__init__(source, client)
        self.name, (self.path, self.table) = name, PATHS[name]
        self.fields, self.page_size = fields, page_size
        self._not_won: list[str] = []

    def request(self, cursor: dict) -> Request:
        position = PassCursor.from_dict(cursor)
        params: dict[str, Any] = {
            "page": 1 if position.page is None else position.page,
            "limit": self.page_size,
            "order[id]": "asc",
        }
        if self.name == "leads":
            params["with"] = "contacts"
        if position.since:
            params["filter[updated_at][from]"] = position.since
        return Request("GET", self.path, params=params)

    def parse(self, body: Any, cursor: dict) -> Step:
        records = (body.get("_embedded") or {}).get(self.name, []) if body else []
        if not isinstance(records, list) or not all(
            isinstance(r, dict) and r["id"] for r in records
        ):
            raise TypeError(f"`_embedded.{self.name}` must be a list of records with an `id`")
        position = PassCursor.from_dict(cursor)
        started = position.started or int((datetime.now(UTC) - CLOCK_SKEW).timestamp())
        after = ((body or {}).get("_links") or {}).get("next")
        if not after:
            return Step(records, PassCursor(started).to_dict(), done=True)
        page = PAGING.after(after["href"])
        window = PassCursor(position.since or None, page=page, started=started)
        return Step(records, window.to_dict(), done=False)

    def read(self, cursor: dict) -> Iterator[Page]:
        """Pages of records changed after `cursor`; a leads page passes on the leads it read
        that are not won as deleted."""
        for page in super().read(cursor):
            yield replace(page, deleted=self._not_won)

    def transform(self, records: Sequence[Mapping[str, Any]], where: str) -> list[dict]:
        rows = [flatten(r) for r in records]
        if self.name == "leads":
            self._not_won = [str(r["id"]) for r in rows if r["status_id"] != WON]
            rows = [r for r in rows if r["status_id"] == WON]
        return self.fields.apply(rows, self.table, where)


@dataclass(kw_only=True)
class AmoCrmSource(CrmOptions):
    """An amoCRM account at `base_url` (`https://<subdomain>.amocrm.ru`).

    Credentials: a long-lived token in `token_env`, or an OAuth integration (client id,
    secret and the first refresh token in `client_id_env`, `client_secret_env`,
    `refresh_token_env`, with its `redirect_uri`) whose current refresh token lives in
    `refresh_token_file`; the integration wins when both are set. The rate limit defaults to
    amoCRM's 7 requests/s. Seconds for the time options.
    """

    VENDOR = "amoCRM"
    PAGE_LIMIT = LIMIT
    FIELDS = AMOCRM

    base_url: str
    objects: list[str] = field(default_factory=lambda: list(PATHS))
    token_env: str = TOKEN_ENV
    client_id_env: str = OAUTH_ENV[0]
    client_secret_env: str = OAUTH_ENV[1]
    refresh_token_env: str = OAUTH_ENV[2]
    refresh_token_file: str | None = None
    redirect_uri: str = ""
    page_size: int = LIMIT
    rate_limit: tuple[int, float] = (7, 1.0)
    kind: str = field(default="amocrm", init=False)

    def client(self) -> HttpClient:
        """The client, authorised by the OAuth integration or the long-lived token; a refused
        request names the fix for the one in use."""
        auth, fix = self._auth(self.url())
        hooks = {"error_message": partial(error_message, fix=fix)}
        return vendor_client(self.VENDOR, self, self.url(), auth, **hooks)

    def _auth(self, base_url: str) -> tuple[httpx.Auth, str]:
        """The auth step and the fix a refused request names."""
        if os.environ.get(self.client_id_env, "").strip():
            return self._oauth(base_url)
        token = env_secret(
            self.name,
            self.token_env,
            "a long-lived amoCRM token (amoCRM → amoMarket → your private integration → Keys "
            f"and scopes), or set {self.client_id_env} for an OAuth integration",
        )
        fix = (
            f"check {self.token_env}: it must hold an unexpired long-lived token of an "
            "integration with access to the CRM."
        )
        return SecretHeader(token), fix

    def _oauth(self, base_url: str) -> tuple[httpx.Auth, str]:
        where = f"sources.{self.name}.options"
        if not self.refresh_token_file or not self.redirect_uri:
            raise ConfigError(
                f"{where}: with {self.client_id_env} set, refresh_token_file (where cxloop keeps "
                "the refresh token amoCRM rotates) and redirect_uri (the integration's) are needed."
            )
        store = Path(self.refresh_token_file).expanduser()
        how = f"the client secret of the amoCRM integration in {self.client_id_env}"
        secret = env_secret(self.name, self.client_secret_env, how)
        if store.exists():
            refresh = SecretStr(store.read_text(encoding="utf-8").strip())
        else:
            how = f"the first refresh token of that integration (later ones live in {store})"
            refresh = env_secret(self.name, self.refresh_token_env, how)
        client = AmoOAuthClient(
            f"{base_url}/oauth2/access_token",
            os.environ[self.client_id_env].strip(),
            secret,
            refresh,
            redirect_uri=self.redirect_uri,
        )
        fix = (
            f"Check {self.client_id_env} and {self.client_secret_env}; a refused refresh token "
            f"(in {store}) means the integration must be authorised again: put the new refresh "
            f"token in {self.refresh_token_env} and delete {store}."
        )
        return RotatingRefresh(self.name, client, fix, store), fix

    def build_streams(self, client: HttpClient) -> list[AmoStream]:
        return [
            AmoStream(self.name, client, name, self.object_fields(name), self.page_size)
            for name in self.objects
        ]
