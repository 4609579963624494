"""What a block of code costs: wall seconds, CPU seconds (with child processes, such as
Prefect's server) and resident memory, current and the peak within the block (sampled)."""

from __future__ import annotations

import os
import resource
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
MIB = 1024 * 1024


def rss_mib() -> float:
    """Current resident set size in MiB (Linux `/proc/self/statm`)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE_BYTES / MIB


def lifetime_peak_mib() -> float:
    """Peak resident set size of this process since it started, in MiB (`ru_maxrss`)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """CPU seconds used so far by this process (all threads) and its live child processes.

    Unlike wall time, this hardly moves when other work shares the machine.
    """
    total = time.process_time()
    ticks = os.sysconf("SC_CLK_TCK")
    for pid in _descendants(os.getpid()):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def _descendants(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        for child in children:
            found += [child, *_descendants(child)]
    return found


@dataclass
class Timed:
    """Wall seconds, peak RSS (MiB) and CPU seconds of one block, filled in when it ends."""

    seconds: float = 0.0
    peak_mib: float = 0.0
    extra: dict = field(default_factory=dict)
    cpu_s: float | None = None


class _Sampler(threading.Thread):
    def __init__(self, interval: float) -> None:
        super().__init__(daemon=True)
        self.interval, self.peak, self.done = interval, rss_mib(), threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval):
            self.peak = max(self.peak, rss_mib())


@contextmanager
def timed(interval: float = 0.05) -> Iterator[Timed]:
    """Time a block and sample its RSS every `interval` seconds; read the result afterwards."""
    result, sampler = Timed(), _Sampler(interval)
    sampler.start()
    start, cpu = time.perf_counter(), cpu_seconds()
    try:
        yield result
    finally:
        result.seconds = time.perf_counter() - start
        result.cpu_s = cpu_seconds() - cpu
        sampler.done.set()
        sampler.join()
        result.peak_mib = max(sampler.peak, rss_mib())
