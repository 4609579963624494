"""One measured run in a fresh process, so each has its own peak RSS and import state.

`python -m benchmarks.worker KIND DATA_DIR WORK_DIR OUT_JSON [DATABASE_URL]` with KIND one
of `direct`, `orchestrated`, `baseline`, `floor` (the store's floor, `benchmarks.floor`),
`ingest`, `report` (the report flow alone on the store `direct` left), or
`direct-no-report` / `orchestrated-no-report`.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from benchmarks.rss import Timed, lifetime_peak_mib


def main(kind: str, data_dir: Path, work: Path, out: Path, url: str | None = None) -> None:
    customers, seed = (int(v) for v in (data_dir / "company.txt").read_text().split(":"))
    work.mkdir(parents=True, exist_ok=True)
    repo = Path(__file__).resolve().parents[1]
    if kind == "baseline":
        import yaml

        from benchmarks import baseline

        config = yaml.safe_load((repo / "flows" / "cxloop.example.yaml").read_text())
        result = baseline.run(data_dir, work / "baseline.duckdb", repo / "hypotheses", config)
        _write(out, result["timings"], result["headline"], finished=True)
        return
    if kind == "floor":
        from benchmarks import floor

        _write(out, floor.run(data_dir, work), {}, finished=True)
        return
    os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="cxloop-bench-prefect-")
    from benchmarks import direct

    kind, _, variant = kind.partition("-")
    with_report = variant != "no-report"
    if kind in ("direct", "report"):
        direct.strip_prefect()
    database = work / f"{'direct' if kind == 'report' else kind}.db"
    for suffix in ("", "-wal", "-shm") if kind != "report" else ():
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    url = url or f"sqlite:///{database}"
    config = direct.write_config(work, url, customers, seed)
    headline: dict = {}
    if kind == "direct":
        timings = direct.run_cycle(config, data_dir, with_report)
        headline = direct.headline(url)
    elif kind == "report":
        timings = direct.run_report(config)
    elif kind == "orchestrated":
        from benchmarks import orchestrated

        timings = orchestrated.run(config, data_dir, with_report)
    elif kind == "ingest":
        from benchmarks.rss import timed

        with timed() as stage:
            stage.extra["rows"] = direct.ingest(data_dir, url)
        timings = {"ingest": stage}
    else:
        raise SystemExit(f"unknown kind {kind!r}")
    _write(out, timings, headline, finished=True)


def _write(out: Path, timings: dict[str, Timed], headline: dict, finished: bool = False) -> None:
    result = {
        "timings": {name: asdict(t) for name, t in timings.items()},
        "headline": headline,
        "process_peak_mib": lifetime_peak_mib(),
        "finished": finished,
    }
    out.write_text(json.dumps(result, default=str), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), *sys.argv[5:])
