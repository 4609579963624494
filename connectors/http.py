"""Shared HTTP layer: one client per source with auth, rate limiting, retries and clear errors.

Vendor modules say what is vendor-specific (base URL, documented rate limit, where the error
message sits in a body, rate-limit headers); this module does the rest. `HttpStream` is the
paging loop a vendor stream plugs `request` and `parse` into.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import partial
from typing import Any, TypeVar

import httpx
from pydantic import SecretStr

from connectors.base import Page
from connectors.errors import ConfigError, SourceError

log = logging.getLogger(__name__)

RETRYABLE = frozenset({429, 500, 502, 503, 504})
ERROR_BODY_CHARS = 300
RENEW_BEFORE = 60.0
Parsed = TypeVar("Parsed")


class SecretHeader(httpx.Auth):
    """Puts a secret in a request header (`Authorization: Bearer …` by default), added per request
    so it is never part of the client's default headers, its repr or a log line."""

    def __init__(self, secret: SecretStr, header: str = "Authorization", scheme: str = "Bearer"):
        self.secret = secret
        self.header = header
        self.scheme = scheme

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        value = self.secret.get_secret_value()
        request.headers[self.header] = f"{self.scheme} {value}" if self.scheme else value
        yield request

    def redact(self, text: str) -> str:
        """`text` with the secret replaced by `***`."""
        value = self.secret.get_secret_value()
        return text.replace(value, "***") if value else text


@dataclass(frozen=True)
class OAuthClient:
    """An OAuth 2.0 client of a vendor's token endpoint `token_url`: it asks for access tokens
    by the refresh-token grant when it holds a refresh token, else by client credentials."""

    token_url: str
    client_id: str
    client_secret: SecretStr
    refresh_token: SecretStr | None = None

    def grant(self) -> dict[str, str]:
        """The form of a token request."""
        form = {"client_id": self.client_id, "client_secret": self.client_secret.get_secret_value()}
        if self.refresh_token is None:
            return form | {"grant_type": "client_credentials"}
        return form | {
            "grant_type": "refresh_token",
            "refresh_token": self.refresh_token.get_secret_value(),
        }

    def secrets(self) -> list[str]:
        """The client secret and the refresh token, if any."""
        held = [self.client_secret, *([self.refresh_token] if self.refresh_token else [])]
        return [secret.get_secret_value() for secret in held]


class OAuthRefresh(httpx.Auth):
    """Sends `Authorization: Bearer …` with access tokens that `client` gets.

    A token is asked for before the first request, again `RENEW_BEFORE` seconds before its
    `expires_in` runs out (halfway through a shorter life; never, when the vendor gives no
    `expires_in`), and once on a 401, the request then resent with the new token. A token
    endpoint that refuses is a `ConfigError` naming `source` and ending in `fix`; its 429 or 5xx
    answers the request, so that `HttpClient` retries it. A source's streams share one instance
    from several threads: one of them renews the token while the others wait for it.
    """

    requires_response_body = True

    def __init__(self, source: str, client: OAuthClient, fix: str) -> None:
        self.source = source
        self.client = client
        self.fix = fix
        self._lock = threading.Lock()
        self._token: str | None = None
        self._renew_at = 0.0
        self._issued: list[str] = []

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        refused = None
        for _ in range(2):  # a 401 gets one new token and one resend
            token = yield from self._current(request, refused)
            if token is None:
                return
            request.headers["Authorization"] = f"Bearer {token}"
            response = yield request
            if response.status_code != 401:
                return
            refused = token

    def redact(self, text: str) -> str:
        """`text` with the client secret, the refresh token and every access token issued
        replaced by `***`."""
        for value in self.client.secrets() + self._issued:
            text = text.replace(value, "***")
        return text

    def _current(
        self, request: httpx.Request, refused: str | None
    ) -> Generator[httpx.Request, httpx.Response, str | None]:
        """The token to send: the one held unless there is none, the API `refused` it or it is
        due for renewal, else a new one; None when the token endpoint answered 429 or 5xx."""
        with self._lock:
            if self._token not in (None, refused) and time.monotonic() < self._renew_at:
                return self._token
            response = yield httpx.Request(
                "POST",
                self.client.token_url,
                data=self.client.grant(),
                headers={"Accept": "application/json"},
                extensions={"timeout": request.extensions.get("timeout", {})},
            )
            if response.status_code in RETRYABLE:
                log.warning(
                    f"sources.{self.source}: the OAuth token endpoint {self.client.token_url} "
                    f"answered HTTP {response.status_code}; retried like the API"
                )
                return None
            self._token, self._renew_at = self._issue(response)
            return self._token

    def _issue(self, response: httpx.Response) -> tuple[str, float]:
        """The access token a token endpoint's answer holds and the monotonic time to renew it;
        `ConfigError` with the endpoint's `error: error_description` when it holds none."""
        body = json_body(response)
        body = body if isinstance(body, dict) else {}
        token = body.get("access_token")
        if response.is_success and isinstance(token, str) and token:
            self._issued.append(token)
            life = _seconds(body.get("expires_in"))
            return token, time.monotonic() + life - min(RENEW_BEFORE, life / 2)
        named = [str(body[key]) for key in ("error", "error_description") if key in body]
        # A successful answer without a token is not echoed: it may hold other secrets.
        shown = "no access_token in the answer" if response.is_success else body_text(response)
        problem = ": ".join(named) or shown
        raise ConfigError(
            self.redact(
                f"sources.{self.source}: the OAuth token endpoint {self.client.token_url} "
                f"issued no access token (HTTP {response.status_code}: {problem}). {self.fix}"
            )
        )


def _seconds(expires_in: Any) -> float:
    """A token's `expires_in` as seconds; forever when absent or not a positive number (some
    endpoints send it as a string)."""
    try:
        life = float(expires_in)
    except (TypeError, ValueError):
        return math.inf
    return life if life > 0 else math.inf


class RateLimiter:
    """Token bucket: at most `requests` per `per_seconds`, bursting up to `requests`.

    Thread-safe; a caller that finds the bucket empty reserves its token and sleeps until due.
    """

    def __init__(self, requests: int, per_seconds: float):
        if requests < 1 or per_seconds <= 0:
            raise ValueError(f"need ≥1 request per >0 s, got {requests}/{per_seconds}")
        self.capacity = float(requests)
        self.rate = requests / per_seconds
        self._tokens = self.capacity
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        """Wait until a request may be sent."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= 1
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait:
            time.sleep(wait)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry 429, 5xx and transport failures (seconds)."""

    attempts: int = 5
    base_delay: float = 1.0
    max_wait: float = 60.0

    def backoff(self, attempt: int) -> float:
        """Exponential delay before retry `attempt` (1-based), with ±50% jitter, capped."""
        delay = min(self.max_wait, self.base_delay * 2 ** (attempt - 1))
        return delay * random.uniform(0.5, 1.0)


@dataclass(frozen=True)
class Request:
    """One HTTP call a stream wants made; `limiter` overrides the client's for this endpoint."""

    method: str
    path: str
    params: Mapping[str, Any] | None = None
    json: Any = None
    limiter: RateLimiter | None = None


def retry_after(response: httpx.Response) -> float | None:
    """Seconds the `Retry-After` header asks to wait (delta seconds or an HTTP date), if any."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def body_text(response: httpx.Response) -> str:
    """The start of a response body, for errors of vendors without a structured message."""
    return response.text[:ERROR_BODY_CHARS].strip() or response.reason_phrase


def json_body(response: httpx.Response) -> Any:
    """The decoded JSON body of a response, or None when it is not JSON."""
    try:
        return response.json()
    except ValueError:
        return None


def json_error(response: httpx.Response, read: Callable[[Any], str | None], auth_fix: str) -> str:
    """The message `read` finds in a JSON error body, with ` — {auth_fix}` on a 401 or 403.

    The start of the body instead when it is not JSON, or `read` finds no message (returns
    nothing, or raises `KeyError`, `TypeError` or `AttributeError` on another shape).
    """
    try:
        message = read(response.json())
    except (ValueError, KeyError, TypeError, AttributeError):
        return body_text(response)
    if not message:
        return body_text(response)
    if response.status_code in (401, 403):
        message += f" — {auth_fix}"
    return message


class HttpClient:
    """One `httpx.Client` for a source: auth, client-side rate limit, retries with backoff.

    `error_message(response)` gives the vendor's own message (and a fix, if the vendor module
    knows one); `wait_hint(response)` gives the seconds the vendor's rate-limit headers ask to
    pause before the next request, if any. `Retry-After` wins over the hint on a retry.
    `transient(response)` says whether an answer other than 429/5xx is a passing failure to
    retry like them (a vendor's limit sent as 403, or as an error inside an HTTP-200 body).
    """

    def __init__(
        self,
        vendor: str,
        base_url: str,
        auth: httpx.Auth,
        limiter: RateLimiter,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy = RetryPolicy(),
        error_message: Callable[[httpx.Response], str] = body_text,
        wait_hint: Callable[[httpx.Response], float | None] = lambda _: None,
        transient: Callable[[httpx.Response], bool] = lambda _: False,
    ):
        self.vendor = vendor
        self.auth = auth
        self.limiter = limiter
        self.retry = retry
        self.error_message = error_message
        self.wait_hint = wait_hint
        self.transient = transient
        self._client = httpx.Client(base_url=base_url, auth=auth, timeout=timeout)
        self._not_before = 0.0

    def send(self, request: Request, where: str) -> Any:
        """The decoded JSON body of a successful response to `request`.

        Raises `SourceError` naming `where` (source, stream, page) with the vendor's message
        when retries run out, on other 4xx answers, and on a body that is not JSON.
        """
        for attempt in range(1, self.retry.attempts + 1):
            self._pace(request.limiter or self.limiter)
            try:
                response = self._client.request(
                    request.method, request.path, params=request.params, json=request.json
                )
            except httpx.TransportError as exc:
                problem, wait = f"{type(exc).__name__} ({exc})", self.retry.backoff(attempt)
            else:
                hint = self.wait_hint(response)
                passing = response.status_code in RETRYABLE or self.transient(response)
                if response.status_code < 400 and not passing:
                    if hint:
                        if hint > 1:
                            log.warning(
                                self._say(f"{where}: {self.vendor} asks to pause {hint:.0f} s")
                            )
                        self._not_before = time.monotonic() + hint
                    return self._decode(response, where)
                problem = f"HTTP {response.status_code}: {self.error_message(response)}"
                if not passing:
                    raise SourceError(self._say(f"{where}: {self.vendor} answered {problem}"))
                wait = retry_after(response)
                wait = hint if wait is None else wait
                wait = self.retry.backoff(attempt) if wait is None else wait
                if wait > self.retry.max_wait:
                    raise SourceError(
                        self._say(
                            f"{where}: {self.vendor} answered {problem}; it asks to wait "
                            f"{wait:.0f} s, more than max_wait ({self.retry.max_wait:.0f} s). "
                            "Rerun later or raise max_wait."
                        )
                    )
            if attempt == self.retry.attempts:
                break
            retries = self.retry.attempts - 1
            log.warning(self._say(f"{where}: {problem}; retry {attempt}/{retries} in {wait:.2f} s"))
            time.sleep(wait)
        raise SourceError(
            self._say(
                f"{where}: {self.vendor} failed after {self.retry.attempts} attempts: {problem}. "
                "Check the vendor's status page, or raise timeout or max_retries in the source "
                "options."
            )
        )

    def fetch(
        self, request: Request, where: str, what: str, parse: Callable[[Any], Parsed]
    ) -> Parsed:
        """What `parse` reads from the decoded answer to `request`, `what` it is (e.g. "a page").

        Raises `SourceError` naming `where` as `send` does, and when `parse` finds the answer
        without the vendor's documented shape (raises `KeyError`, `TypeError`, `ValueError` or
        `AttributeError`).
        """
        body = self.send(request, where)
        try:
            return parse(body)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SourceError(
                f"{where}: {self.vendor} sent {what} without the documented shape "
                f"({type(exc).__name__}: {exc}); nothing of it was saved. Rerun to fetch it "
                "again; if it persists, report it to the vendor."
            ) from None

    def _pace(self, limiter: RateLimiter) -> None:
        pause = self._not_before - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        limiter.acquire()

    def _decode(self, response: httpx.Response, where: str) -> Any:
        if response.status_code == 204:  # No Content: e.g. amoCRM's empty list
            return {}
        try:
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SourceError(
                self._say(
                    f"{where}: {self.vendor} sent a page that is not JSON ({exc}); nothing of it "
                    "was saved. Rerun to fetch it again; if it persists, report it to the vendor."
                )
            ) from None

    def _say(self, text: str) -> str:
        return self.auth.redact(text)


@dataclass(kw_only=True)
class HttpOptions:
    """Options every HTTP source takes in its `options:`, besides its own.

    `rate_limit` is `[requests, seconds]`, defaulting to the vendor's documented limit.
    """

    name: str
    rate_limit: tuple[float, float]
    timeout: float = 30.0
    max_retries: int = 5
    backoff_base: float = 1.0
    max_wait: float = 60.0


def retry_policy(options: HttpOptions) -> RetryPolicy:
    """The retry options as a policy; `ConfigError` naming the option that is out of range."""
    for option in ("max_retries", "backoff_base", "max_wait"):
        if getattr(options, option) < 0:
            raise ConfigError(f"sources.{options.name}.options: {option} must be 0 or more.")
    return RetryPolicy(options.max_retries + 1, options.backoff_base, options.max_wait)


def page_size_within(source: str, page_size: int, limit: int, vendor: str) -> None:
    """`ConfigError` unless `page_size` is 1 to `limit`, the vendor's maximum."""
    if not 1 <= page_size <= limit:
        raise ConfigError(
            f"sources.{source}.options: page_size must be 1–{limit} ({vendor}'s maximum)."
        )


def env_secret(source: str, variable: str, how: str) -> SecretStr:
    """The secret in environment variable `variable`; `ConfigError` saying how to get one."""
    value = os.environ.get(variable, "").strip()
    if not value:
        raise ConfigError(f"sources.{source}: set {variable} to {how}.")
    return SecretStr(value)


def env_oauth(
    source: str,
    token_url: str,
    variables: tuple[str, str, str],
    *,
    refresh_required: bool,
    fix: str,
) -> OAuthRefresh | None:
    """Token renewal by the OAuth client whose id, secret and refresh token are in the
    environment variables `variables`; None when the client id's variable is unset.

    Without a refresh token, the client-credentials grant, unless `refresh_required`. A missing
    secret (or refresh token) is a `ConfigError` naming its variable. The token endpoint's
    refusal names the variables in use, then `fix`.
    """
    id_env, secret_env, refresh_env = variables
    client_id = os.environ.get(id_env, "").strip()
    if not client_id:
        return None
    secret = env_secret(source, secret_env, f"the client secret of the OAuth client in {id_env}")
    refresh = None
    if refresh_required or os.environ.get(refresh_env, "").strip():
        refresh = env_secret(
            source, refresh_env, f"a refresh token issued to the OAuth client in {id_env}"
        )
    used = f"{id_env}, {secret_env} and {refresh_env}" if refresh else f"{id_env} and {secret_env}"
    client = OAuthClient(token_url, client_id, secret, refresh)
    return OAuthRefresh(source, client, f"Check {used}: {fix}")


def rate_limiter(source: str, limit: Sequence[float], option: str = "rate_limit") -> RateLimiter:
    """A limiter from a `[requests, seconds]` option; `ConfigError` naming the option if bad."""
    try:
        return RateLimiter(*limit)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"sources.{source}.options: {option} is [requests, seconds]: {exc}"
        ) from None


def vendor_client(
    vendor: str,
    options: HttpOptions,
    base_url: str,
    auth: httpx.Auth,
    kind: type[HttpClient] = HttpClient,
    **hooks: Any,
) -> HttpClient:
    """The source's client (an `HttpClient`, or the vendor's `kind` of one) with its rate
    limit, timeout and retry options applied."""
    return kind(
        vendor,
        base_url,
        auth,
        rate_limiter(options.name, options.rate_limit),
        timeout=options.timeout,
        retry=retry_policy(options),
        **hooks,
    )


@dataclass(frozen=True)
class Step:
    """What one response yields: records, the cursor to save after them, and whether it was the
    stream's last page."""

    records: Sequence[Mapping[str, Any]]
    cursor: dict
    done: bool


class HttpStream(ABC):
    """A paged vendor endpoint. Subclasses declare what to ask (`request`) and how to read the
    answer (`parse`); `read` runs the loop, one page in memory at a time."""

    name: str
    table: str
    path: str
    page_size: int

    def __init__(self, source: str, client: HttpClient) -> None:
        self.source = source
        self.client = client

    @abstractmethod
    def request(self, cursor: dict) -> Request:
        """The call that fetches the page after `cursor`."""

    @abstractmethod
    def parse(self, body: Any, cursor: dict) -> Step:
        """The page's records and next cursor; `KeyError`, `TypeError` or `ValueError` on a
        body that does not have the vendor's documented shape."""

    def transform(self, records: Sequence[Mapping[str, Any]], where: str) -> list[dict]:
        """Records as the page carries them to the loader; by default as the vendor sent them."""
        return [dict(r) for r in records]

    def read(self, cursor: dict) -> Iterator[Page]:
        """Pages after `cursor`; each carries the cursor to save once its records are stored."""
        number = 0
        while True:
            number += 1
            where = f"source {self.source}, stream {self.name}, page {number}"
            parse = partial(self.parse, cursor=cursor)
            step = self.client.fetch(self.request(cursor), where, "a page", parse)
            yield Page(self.transform(step.records, where), step.cursor, number)
            if step.done:
                return
            cursor = step.cursor
