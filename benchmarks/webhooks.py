"""Webhook benchmark: `cxloop listen` in its own process on loopback takes signed Typeform
answers at a steady rate; every one must be stored and mapped, and the acknowledgement's 99th
percentile stay under 200 ms.

Each call goes out at its scheduled time on its own (a slow answer does not delay the next),
and its time is from sending to the 200. The answers name no ticket, so no alert is emitted
(that path is timed by tests/test_listen.py). Run: `python -m benchmarks.webhooks [--events
1000 --rate 50]`; results go to `benchmarks/results/webhooks.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import yaml
from sqlalchemy.engine import Engine

from connectors.webhooks import signed, typeform_body
from tasks import store
from tests.fakes.webhooks import listen_process

RESULTS = Path(__file__).parent / "results" / "webhooks.json"
SECRET = "benchmark-webhook-secret"
FORM = "bench-nps"
MAP_WAIT_SECONDS = 120


def run(events: int = 1000, rate: float = 50.0, workdir: Path | None = None) -> dict:
    """Sends `events` signed answers at `rate` per second to a fresh listen with a SQLite store
    under `workdir`; counts sent, refused, stored and mapped, and acknowledgement times (ms)."""
    workdir = Path(workdir or tempfile.mkdtemp(prefix="cxloop-webhooks-"))
    url = f"sqlite:///{workdir / 'store.db'}"
    source = {"name": "bench", "kind": "typeform", "options": {"forms": [FORM]}}
    source["options"]["questions"] = {"nps": "nps", "comment": "why"}
    config = workdir / "cxloop.yaml"
    config.write_text(yaml.safe_dump({"database_url": url, "sources": [source]}), encoding="utf-8")
    at = pd.Timestamp("2026-10-01 12:00")
    calls = [
        signed(typeform_body(f"bench-{i}", FORM, f"r{i}", at, {"nps": i % 11}, {}), SECRET)
        for i in range(events)
    ]
    with listen_process(config, {"CXLOOP_WEBHOOK_SECRET_BENCH": SECRET}) as base:
        started = time.perf_counter()
        times, refused = asyncio.run(_post_all(f"{base}/webhooks/typeform/bench", calls, rate))
        sending = time.perf_counter() - started
        engine = store.open_store(url)
        mapped_in = _mapped_within(engine, events)
    inbox = store.read_frame(engine, store.Inbox)
    ms = np.array(times) * 1000
    return {
        "events": events,
        "rate_per_second": rate,
        "sent": len(times),
        "refused": refused,
        "stored": len(inbox),
        "mapped": int(inbox["mapped_at"].notna().sum()),
        "achieved_per_second": round(len(times) / sending, 1),
        "ack_ms_p50": round(float(np.percentile(ms, 50)), 1),
        "ack_ms_p99": round(float(np.percentile(ms, 99)), 1),
        "ack_ms_max": round(float(ms.max()), 1),
        "all_mapped_seconds_after_last_ack": mapped_in,
    }


async def _post_all(
    url: str, calls: list[tuple[bytes, dict[str, str]]], rate: float
) -> tuple[list[float], int]:
    """Seconds from send to answer of each call, and how many were not answered 200."""
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        start = time.monotonic()

        async def one(number: int, raw: bytes, headers: dict[str, str]) -> tuple[float, bool]:
            await asyncio.sleep(max(0.0, start + number / rate - time.monotonic()))
            sent = time.perf_counter()
            response = await client.post(url, content=raw, headers=headers)
            return time.perf_counter() - sent, response.status_code == 200

        answers = await asyncio.gather(*(one(i, *call) for i, call in enumerate(calls)))
    return [seconds for seconds, _ in answers], sum(not ok for _, ok in answers)


def _mapped_within(engine: Engine, events: int) -> float | None:
    """Seconds until all `events` were mapped; None if not within `MAP_WAIT_SECONDS`."""
    started = time.perf_counter()
    while time.perf_counter() - started < MAP_WAIT_SECONDS:
        inbox = store.read_frame(engine, store.Inbox, ["mapped_at"])
        if len(inbox) == events and inbox["mapped_at"].notna().all():
            return round(time.perf_counter() - started, 2)
        time.sleep(0.1)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=50.0)
    args = parser.parse_args()
    result = run(args.events, args.rate)
    machine = {"python": platform.python_version(), "cpus": os.cpu_count()}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {"at": datetime.now(UTC).isoformat(), "machine": machine, "run": result}, indent=2
        )
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
