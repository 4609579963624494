"""cxloop's cycle without Prefect: the flows' own code, Prefect's decorators made plain calls.

`strip_prefect()` (called before `flows` is imported) replaces `flow` and `task` by wrappers
that only time each call, and Prefect's logger, events and artifacts by local no-ops. So the
direct cycle runs exactly what `flows/cycle.py` runs, and tracks it as the flows change; the
difference to the orchestrated cycle is Prefect's own cost.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from benchmarks.dataset import ParquetSource
from benchmarks.rss import Timed, timed

REPO = Path(__file__).resolve().parents[1]
CALLS: dict[str, Timed] = {}


class _Done:
    """A finished call standing in for a Prefect future."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def result(self, *args: Any, **kwargs: Any) -> Any:
        return self.value

    def wait(self, *args: Any, **kwargs: Any) -> None:
        return None


def _timed_call(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        with timed() as spent:
            value = fn(*args, **kwargs)
        total = CALLS.setdefault(fn.__name__, Timed())
        total.seconds += spent.seconds
        total.peak_mib = max(total.peak_mib, spent.peak_mib)
        total.cpu_s = (total.cpu_s or 0.0) + (spent.cpu_s or 0.0)
        total.extra["calls"] = total.extra.get("calls", 0) + 1
        return value

    call.fn = fn  # type: ignore[attr-defined]
    call.submit = lambda *a, **k: _Done(call(*a, **k))  # type: ignore[attr-defined]
    call.with_options = lambda **_: call  # type: ignore[attr-defined]
    return call


def _decorator(fn: Callable | None = None, **_options: Any) -> Callable:
    """`@flow`, `@task`, `task(**options)` and `task(**options)(**more)` alike."""
    return _timed_call(fn) if fn is not None else _decorator


def strip_prefect() -> None:
    """Make Prefect's decorators plain timed calls and its logger, events, artifacts local."""
    import prefect
    import prefect.artifacts
    import prefect.events
    import prefect.futures

    prefect.flow = prefect.task = _decorator
    prefect.get_run_logger = lambda *a, **k: logging.getLogger("cxloop")
    prefect.tags = lambda *a, **k: nullcontext()
    prefect.events.emit_event = lambda *a, **k: None
    prefect.artifacts.create_markdown_artifact = lambda *a, **k: None
    prefect.artifacts.create_table_artifact = lambda *a, **k: None
    prefect.futures.wait = lambda futures, *a, **k: None


def write_config(work: Path, database_url: str, customers: int, seed: int) -> Path:
    """A `cxloop.yaml` for the benchmark company, like `cxloop demo` writes."""
    from flows.config import example_text

    config = yaml.safe_load(example_text())
    config["sources"] = [
        {"name": "demo", "kind": "demo", "options": {"customers": customers, "seed": seed}}
    ]
    config["database_url"] = database_url
    config["hypotheses_dir"] = str(REPO / "hypotheses")
    config["reports"] = {**config.get("reports", {}), "out_dir": str(work / "reports")}
    path = work / "cxloop.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def use_parquet(data_dir: Path) -> None:
    """Point the ingest flow's connector at the benchmark's Parquet files."""
    import flows.ingest

    flows.ingest.open_source = lambda name, kind, options: ParquetSource(data_dir, name)


def ingest(data_dir: Path, url: str) -> int:
    """Every stream of the Parquet source into the store at `url`; rows written."""
    from flows.sync import sync_source
    from tasks import store

    return sum(sync_source(store.open_store(url), ParquetSource(data_dir)).values())


def skip_report() -> None:
    """Leave the report subflow out of `improvement_cycle` (for scales where it cannot finish)."""
    import flows.cycle

    flows.cycle.report = lambda *args, **kwargs: ""


def run_cycle(config_path: Path, data_dir: Path, with_report: bool = True) -> dict[str, Timed]:
    """Timed stages of one cycle run by `flows.cycle.improvement_cycle` with Prefect stripped.

    Stages are its subflows; the rank flow is split into metrics (loading the store, KPI
    snapshots, alerts) and ranking (`save_pain_points`). `strip_prefect()` must have run.
    """
    from flows.cycle import improvement_cycle

    use_parquet(data_dir)
    if not with_report:
        skip_report()
    CALLS.clear()
    result = improvement_cycle(config_path)
    out = {name: CALLS[name] for name in ("ingest", "rank", "evaluate_pilots", "report")
           if name in CALLS}  # fmt: skip
    out["ingest"].extra["rows"] = sum(
        n.written for s in result.ingested.values() for n in s.values()
    )
    ranking = CALLS["save_pain_points"]
    stages = {
        "ingest": out["ingest"],
        "metrics": Timed(
            out["rank"].seconds - ranking.seconds,
            out["rank"].peak_mib,
            cpu_s=(out["rank"].cpu_s or 0.0) - (ranking.cpu_s or 0.0),
        ),
        "ranking": ranking,
        "experiments": out["evaluate_pilots"],
    }
    if with_report:
        stages |= {"report": out["report"], "cycle": CALLS["improvement_cycle"]}
    else:
        stages["cycle less report"] = CALLS["improvement_cycle"]
    return stages | {f"task {name}": t for name, t in CALLS.items() if name not in out}


def run_report(config_path: Path) -> dict[str, Timed]:
    """The report flow alone (Prefect stripped) on the store a cycle left."""
    from flows.report import report

    CALLS.clear()
    report(config_path)
    return {"report": CALLS["report"]} | {f"task {n}": t for n, t in CALLS.items()}


def headline(url: str) -> dict[str, list[dict]]:
    """The numbers cxloop stored: KPIs by segment, ranked pain points, pilot estimates."""
    from tasks import store

    engine = store.open_store(url)
    kpis = store.read_frame(
        engine, store.MetricSnapshot, ["period", "dims", "metric", "value", "n"]
    )
    kpis = kpis[kpis["period"].str.contains("..", regex=False)]  # the whole window
    kpis = kpis[kpis["dims"].eq("all") | kpis["dims"].str.startswith("segment=")]
    kpis = kpis.assign(segment=kpis.pop("dims").str.removeprefix("segment=")).drop(columns="period")
    pain = store.read_frame(engine, store.PainPoint, ["key", "rank", "reach", "impact", "score"])
    # The baseline ranks ticket topics only (no `@` cells) and folds no topic under a cell
    # that explains it; compare those in their order by score among themselves.
    topics = pain["key"].str.startswith("ticket:") & ~pain["key"].str.contains("@", regex=False)
    pain = pain[topics].sort_values(["score", "reach"], ascending=False, kind="stable")
    pain = pain.assign(rank=range(1, len(pain) + 1))
    results = store.read_frame(
        engine,
        store.ExperimentResult,
        ["hypothesis_id", "metric", "estimate", "n_pilot", "n_control"],
    )
    return {
        "kpis": _records(kpis),
        "pain_points": _records(pain.rename(columns={"key": "topic"})),
        "pilots": _records(results),
    }


def _records(frame: pd.DataFrame) -> list[dict]:
    return frame.astype(object).where(frame.notna(), None).to_dict("records")
