"""cxloop's cycle as users run it: the `improvement_cycle` Prefect flow on the ephemeral server.

The ingest flow's connector is pointed at the benchmark's Parquet files (the config still says
`demo`, which the real connector would regenerate), so both cycles do the same work. The
server's start-up is timed on its own, as is one empty flow run.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.direct import skip_report, use_parquet
from benchmarks.rss import Timed, timed


def run(config_path: Path, data_dir: Path, with_report: bool = True) -> dict[str, Timed]:
    """Timings of server start-up, an empty flow and the whole cycle under Prefect."""
    from prefect import flow
    from prefect.client.orchestration import get_client

    from flows.cycle import improvement_cycle

    use_parquet(data_dir)
    if not with_report:
        skip_report()
    cycle = "cycle" if with_report else "cycle less report"

    @flow(name="benchmark-empty-flow")
    def empty() -> None:
        return None

    out: dict[str, Timed] = {}
    with timed() as out["server start-up"], get_client(sync_client=True) as client:
        client.hello()
    with timed() as out["empty flow"]:
        empty()
    try:
        with timed() as out[cycle]:
            improvement_cycle(config_path)
    except Exception as exc:  # a failed step still tells how long the cycle ran
        out[cycle].extra["failure"] = f"{type(exc).__name__}: {exc}"
    return out
