"""What every fake vendor API with its own threaded server on 127.0.0.1 shares: serving,
scripted faults and their bookkeeping (`LoopbackServer`)."""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

Answer = tuple[int, dict[str, str], str]
"""Status, headers and JSON text of a `LoopbackServer`'s answer."""


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

    def take(self, faults: list[Fault], path: str) -> Fault | None:
        """The fault of `faults` that answers a request to `path` now, counted as used."""
        with self._lock:
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

    def faulted(
        self, path: str, error: Callable[[int], Answer], headers: dict[str, str] | None = None
    ) -> Answer | None:
        """The scripted answer to a request to `path`, after its fault's delay; None when no
        fault answers it. A fault without a body answers `error(status)`; one with a body
        carries `headers` under its own, leaving out those it gives as ""."""
        fault = self.take(self.faults, path)
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


def _handler(fake: LoopbackServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
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
