"""`cxloop serve` as a test drives it: started in a project directory, waited on by condition
(never by a fixed pause), stopped by a signal."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

# A bound for start-up, not a pause: a test goes on as soon as its condition holds.
START_WITHIN = 300


@contextmanager
def serving(project: Path, env: dict[str, str], *args: str) -> Iterator[subprocess.Popen]:
    """`cxloop serve *args` started in `project`, output in serve.out and serve.err; killed
    if a test leaves it running."""
    with (project / "serve.out").open("w") as out, (project / "serve.err").open("w") as err:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "cxloop"), "serve", *args],
            cwd=project,
            env=env,
            stdout=out,
            stderr=err,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def output(project: Path) -> str:
    """What serve printed so far, stdout then stderr."""
    return (project / "serve.out").read_text() + (project / "serve.err").read_text()


def wait_for(
    ready: Callable[[], object], process: subprocess.Popen, project: Path, what: str
) -> None:
    """Return once `ready()` is true; fail if serve exits or `START_WITHIN` passes first."""
    deadline = time.monotonic() + START_WITHIN
    while not ready():
        assert process.poll() is None, f"serve exited before {what}:\n{output(project)}"
        assert time.monotonic() < deadline, f"no {what} in {START_WITHIN} s:\n{output(project)}"
        time.sleep(0.1)


def stop(
    process: subprocess.Popen, project: Path, within: float, with_signal=signal.SIGTERM
) -> str:
    """Send `with_signal`; fail unless serve exits 0 within `within` seconds with no
    traceback. Returns its stderr."""
    process.send_signal(with_signal)
    try:
        process.wait(timeout=within)
    except subprocess.TimeoutExpired:
        pytest.fail(f"serve did not stop within {within} s:\n{output(project)}")
    err = (project / "serve.err").read_text()
    assert process.returncode == 0, output(project)
    assert "Traceback" not in err, output(project)
    return err
