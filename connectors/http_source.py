"""An HTTP vendor account as a source: options checked as it is built (`check`), then opened
(`open`: the secret read from the environment, the client made).

A vendor declares what differs as class attributes (`VENDOR`, `TOKEN`, `PAGE_LIMIT`, `AUTH`)
and overrides only what its API needs (`check`, `auth`, `hooks`, `build_streams`).
`HttpSource.offline` builds the options alone, opening nothing: every check that needs no
secret, file or network runs there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import httpx
from pydantic import SecretStr

from connectors.base import Stream
from connectors.http import (
    HttpClient,
    HttpOptions,
    SecretHeader,
    env_secret,
    page_size_within,
    rate_limiter,
    retry_policy,
    vendor_client,
)

# Set while `HttpSource.offline` builds a source: its options are checked, nothing is opened.
_OFFLINE: ContextVar[bool] = ContextVar("offline", default=False)


@contextmanager
def _offline() -> Iterator[None]:
    token = _OFFLINE.set(True)
    try:
        yield
    finally:
        _OFFLINE.reset(token)


@dataclass(kw_only=True)
class HttpSource(HttpOptions):
    """A vendor account read over HTTP. A subclass declares:

    - `VENDOR`, the vendor's name in messages ("HubSpot");
    - `TOKEN`, what the secret in its variable must be, for the error when it is unset;
    - `SECRET_OPTION`, the option naming that variable (`token_env` unless set);
    - `PAGE_LIMIT`, the vendor's largest `page_size` (None: no limit, or the vendor's own
      `check_page_size`);
    - `AUTH`, what puts the secret on a request (`SecretHeader`: `Authorization: Bearer`);
    - `KEEP_STREAMS`, whether its streams are built once, when it is opened, to keep what they
      saw (rejections, sampling) across reads; else each `streams()` call builds new ones;

    and the options `base_url` and the one `SECRET_OPTION` names, with the vendor's defaults.
    """

    VENDOR: ClassVar[str]
    TOKEN: ClassVar[str] = ""
    SECRET_OPTION: ClassVar[str] = "token_env"
    PAGE_LIMIT: ClassVar[int | None] = None
    AUTH: ClassVar[Callable[[SecretStr], httpx.Auth]] = SecretHeader
    KEEP_STREAMS: ClassVar[bool] = False

    def __post_init__(self) -> None:
        self.check()
        if not _OFFLINE.get():
            self.open()

    @classmethod
    def offline(cls, **options: Any) -> Self:
        """The source with its options checked, reading no environment variable and opening
        no client; its streams are not there to read."""
        with _offline():
            return cls(**options)

    def check(self) -> None:
        """`ConfigError` naming the first option out of range; reads nothing outside them."""
        self.check_page_size()
        retry_policy(self)
        rate_limiter(self.name, self.rate_limit)

    def check_page_size(self) -> None:
        """`ConfigError` unless `page_size` is 1 to `PAGE_LIMIT`; no check without a limit."""
        if self.PAGE_LIMIT is not None:
            page_size_within(self.name, self.page_size, self.PAGE_LIMIT, self.VENDOR)

    def open(self) -> None:
        """Read the secret and make the client (and the streams, if kept)."""
        self._client = self.client()
        self._kept = self.build_streams(self._client) if self.KEEP_STREAMS else None

    def client(self) -> HttpClient:
        """The source's client: its auth, rate limit, retries and the vendor's hooks."""
        return vendor_client(self.VENDOR, self, self.url(), self.auth(), **self.hooks())

    def url(self) -> str:
        """The API's base URL, without a trailing slash."""
        return str(self.base_url).rstrip("/")

    def secret(self) -> SecretStr:
        """The secret in the variable `SECRET_OPTION` names; `ConfigError` saying how to get one."""
        return env_secret(self.name, getattr(self, self.SECRET_OPTION), self.token())

    def token(self) -> str:
        """What the secret must be, as the error for an unset variable says it."""
        return self.TOKEN

    def auth(self) -> httpx.Auth:
        """What puts the secret on each request."""
        return self.AUTH(self.secret())

    def hooks(self) -> dict[str, Any]:
        """`HttpClient` hooks (`error_message`, `wait_hint`, `transient`) of the vendor."""
        return {}

    def build_streams(self, client: HttpClient) -> list[Stream]:
        """The streams the source offers on `client`, in load order."""
        return []

    def streams(self) -> list[Stream]:
        """The streams on the client opened: the kept ones, or new ones."""
        return self._kept if self._kept is not None else self.build_streams(self._client)
