"""`cxloop listen` running on 127.0.0.1 for tests and benchmarks: in this process on a thread
(`running_listen`, so tests can watch its Prefect events), or as its own process
(`listen_process`), and a wait for the inbox to settle."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn

from flows.listen import create_app, open_listener

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_listen(config: Path, remap_seconds: float = 60.0) -> Iterator[str]:
    """The listen service for `config` on a thread of this process; yields its base URL."""
    listener = open_listener(config)
    listener.remap_seconds = remap_seconds
    port = free_port()
    settings = uvicorn.Config(
        create_app(listener), host="127.0.0.1", port=port, log_level="warning", access_log=False
    )
    server = uvicorn.Server(settings)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        until(lambda: server.started, 30, "listen did not start in 30 s")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


@contextmanager
def listen_process(config: Path, env: dict[str, str]) -> Iterator[str]:
    """`cxloop listen`'s entry function for `config` in a child process; yields its base URL
    once it answers."""
    port = free_port()
    script = "import sys; from pathlib import Path; from flows.listen import listen; "
    script += "listen(Path(sys.argv[1]), '127.0.0.1', int(sys.argv[2]))"
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(config), str(port)],
        cwd=REPO,
        env=os.environ | env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        until(lambda: _answers(url) or child.poll() is not None, 60, "listen did not start")
        if child.poll() is not None:
            raise RuntimeError(f"listen exited: {child.stderr.read().decode()[-2000:]}")
        yield url
    finally:
        child.terminate()
        child.wait(30)


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def until(done: Callable[[], object], seconds: float, message: str) -> None:
    """Waits until `done()` is true; `AssertionError` with `message` after `seconds`."""
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, message
        time.sleep(0.02)
