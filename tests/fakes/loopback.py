"""What every fake vendor API shares: a request log with answers scripted for chosen requests
(`PlannedAnswers`, served by pytest-httpserver), or its own threaded server on 127.0.0.1 with
scripted faults (`LoopbackServer`), and a child-process sync to kill mid-way (`kill_mid_sync`)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Generic, Self, TypeVar
from urllib.parse import urlsplit

from pytest_httpserver import HTTPServer
from sqlalchemy.engine import Engine
from werkzeug import Request, Response

from tasks import store

Logged = TypeVar("Logged")
REPO = Path(__file__).resolve().parents[2]
Answer = tuple[int, dict[str, str], str]
"""Status, headers and JSON text of a `LoopbackServer`'s answer."""


def json_response(body: Any, status: int = 200) -> Response:
    """`body` as a JSON answer with `status`."""
    return Response(json.dumps(body), status, content_type="application/json")


class PlannedAnswers(ABC, Generic[Logged]):
    """A fake on pytest-httpserver: `requests` logs what each request asked (as the vendor's
    fake `log`s it), `plan` scripts the answers to chosen ones, `fault` scripts answers by path
    as a `LoopbackServer`'s do, `paths` holds every request's path and `url` is its base URL
    once `serve`d."""

    def __init__(self) -> None:
        self.url = ""
        self.requests: list[Logged] = []
        self.planned: dict[int, Response] = {}
        self.faults: list[Fault] = []
        self.paths: list[str] = []
        self._lock = threading.Lock()
        self._current = threading.local()

    def serve(self, httpserver: HTTPServer) -> Self:
        """Answers every request to `httpserver` with `handle`, at `url`."""
        httpserver.expect_request(re.compile(".*")).respond_with_handler(self._serve)
        self.url = httpserver.url_for("/").rstrip("/")
        return self

    def plan(self, numbers: Iterable[int], response: Response) -> None:
        """Requests `numbers` (1-based, counted from now on) get `response` instead."""
        for number in numbers:
            self.planned[len(self.requests) + number] = response

    def fault(self, fault: Fault) -> None:
        with self._lock:
            self.faults.append(fault)

    def log(self, entry: Logged) -> Response | None:
        """Logs the next request as `entry`; the answer planned or faulted for it, if any."""
        self.requests.append(entry)
        planned = self.planned.pop(len(self.requests), None)
        return planned if planned is not None else self._faulted()

    def error(self, status: int) -> Response:
        """The answer to a `Fault` without a body: a proxy's plain-text error page."""
        return Response(f"upstream answered {status}", status, content_type="text/plain")

    @abstractmethod
    def handle(self, request: Request) -> Response:
        """The answer to `request`."""

    def _serve(self, request: Request) -> Response:
        self.paths.append(request.path)
        self._current.path = request.path
        return self.handle(request)

    def _faulted(self) -> Response | None:
        fault = take(self._lock, self.faults, self._current.path)
        if fault is None:
            return None
        time.sleep(fault.delay)
        if fault.status is None:
            return None
        if fault.body is None:
            response = self.error(fault.status)
            response.headers.update(fault.headers)
            return response
        return Response(fault.body, fault.status, fault.headers, content_type="application/json")


@dataclass
class Fault:
    """A scripted answer for requests whose path contains `path`: the first `skip` matching
    requests pass, the next `times` get `status` with `body` (the vendor's error JSON when None)
    after `delay` seconds. `status=None` answers normally, only late."""

    path: str
    status: int | None = 500
    body: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    skip: int = 0
    times: int = 1


class LoopbackServer(ABC):
    """A fake on its own threaded server at `url` on 127.0.0.1 while `running`: `answer` gets
    each request's method, URL, lower-cased headers and body; `fault` scripts faults that
    `faulted` applies."""

    def __init__(self) -> None:
        self.faults: list[Fault] = []
        self.paths: list[str] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._server.handle_error = lambda *_: None  # clients that timed out hang up
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    @contextmanager
    def running(self) -> Iterator[Self]:
        thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()

    @abstractmethod
    def answer(self, method: str, url: str, headers: dict[str, str], raw: bytes) -> Answer:
        """The answer to one request."""

    def fault(self, fault: Fault) -> None:
        with self._lock:
            self.faults.append(fault)

    def faulted(
        self, path: str, error: Callable[[int], Answer], headers: dict[str, str] | None = None
    ) -> Answer | None:
        """The scripted answer to a request to `path`, after its fault's delay; None when no
        fault answers it. A fault without a body answers `error(status)`; one with a body
        carries `headers` under its own, leaving out those it gives as ""."""
        fault = take(self._lock, self.faults, path)
        if fault is None:
            return None
        time.sleep(fault.delay)
        if fault.status is None:
            return None
        if fault.body is not None:
            sent = (headers or {}) | fault.headers
            return fault.status, {k: v for k, v in sent.items() if v}, fault.body
        status, sent, text = error(fault.status)
        return status, sent | fault.headers, text


def take(lock: threading.Lock, faults: list[Fault], path: str) -> Fault | None:
    """The fault of `faults` that answers a request to `path` now, counted as used."""
    with lock:
        for fault in faults:
            if fault.path in path:
                if fault.skip:
                    fault.skip -= 1
                    return None
                fault.times -= 1
                if fault.times == 0:
                    faults.remove(fault)
                return fault
    return None


def _handler(fake: LoopbackServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            fake.paths.append(urlsplit(self.path).path)
            status, extra, text = fake.answer(self.command, self.path, headers, raw)
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json;charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _serve

        def log_message(self, *_: Any) -> None:
            pass

    return Handler


def kill_mid_sync(
    engine: Engine, url: str, kind: str, options: dict[str, Any], table: str, rows: int
) -> int:
    """Rows committed when a child process syncing source `src` of `kind` into store `url`
    was killed with SIGKILL, once it had committed at least `rows` rows to `table`."""
    script = (
        "import json, sys\n"
        "from connectors import open_source\n"
        "from tasks import store\n"
        "from flows.sync import sync_source\n"
        "sync_source(store.open_store(sys.argv[1]), open_source('src', sys.argv[2], "
        "json.loads(sys.argv[3])))\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, url, kind, json.dumps(options)], cwd=REPO, env=os.environ
    )
    try:
        deadline = time.monotonic() + 60
        while store.row_counts(engine).get(table, 0) < rows:
            assert child.poll() is None, f"the sync ended (exit {child.returncode}) before the kill"
            assert time.monotonic() < deadline, "the sync committed too little in 60 s"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL
    return store.row_counts(engine)[table]
