"""Connector paging benchmark: HubSpot contacts from the loopback fake under a rate limit.

Shows that a stream keeps to the configured request rate (≥ 90% of it is the bar; the first
second includes one bucket's burst) and that paging memory does not grow with the number of
records. The fake serves from this process, so its id index is built before measuring.
Run: `python -m benchmarks.connector_paging`.
"""

from __future__ import annotations

import json
import os
import platform
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

from connectors import open_source
from tests.fakes.hubspot import FakeHubSpot

TOKEN = "pat-na1-benchmark"
RESULTS = Path(__file__).parent / "results" / "connector-paging.json"


def page_through(records: int, requests_per_second: int) -> dict:
    """Page every contact of a fake portal with `records` contacts; timing and peak memory."""
    fake = FakeHubSpot(TOKEN, interval_ms=1000)
    fake.seed(contacts=records, deals=0, tickets=0)
    os.environ["HUBSPOT_TOKEN"] = TOKEN
    with fake.running():
        options = {
            "base_url": fake.url,
            "objects": ["contacts"],
            "rate_limit": [requests_per_second, 1],
        }
        (stream,) = open_source("bench", "hubspot", options).streams()
        fake.by_id("contacts")
        tracemalloc.start()
        started, seen = time.perf_counter(), 0
        for page in stream.read({}):
            seen += len(page.records)
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    requests = len(fake.requests)
    return {
        "records": seen,
        "requests": requests,
        "seconds": round(elapsed, 2),
        "limit_per_second": requests_per_second,
        "achieved_per_second": round(requests / elapsed, 2),
        "share_of_limit": round(requests / elapsed / requests_per_second, 3),
        "peak_traced_mib": round(peak / 2**20, 2),
    }


def main() -> None:
    runs = [page_through(n, 40) for n in (20_000, 100_000)]
    RESULTS.parent.mkdir(exist_ok=True)
    machine = {"python": platform.python_version(), "cpus": os.cpu_count()}
    RESULTS.write_text(
        json.dumps(
            {"at": datetime.now(UTC).isoformat(), "machine": machine, "runs": runs}, indent=2
        )
    )
    print("| records | requests | seconds | limit (req/s) | achieved | share | peak MiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        print(
            f"| {r['records']:,} | {r['requests']:,} | {r['seconds']} | {r['limit_per_second']} "
            f"| {r['achieved_per_second']} | {r['share_of_limit']:.0%} | {r['peak_traced_mib']} |"
        )


if __name__ == "__main__":
    main()
