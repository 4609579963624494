"""`python -m benchmarks --scale 10k,100k,1m`: time cxloop against the baseline, write results.

Each scale: the demo company is written to Parquet once; then, each in a fresh process,
cxloop's steps called directly, the DuckDB baseline, the store's floor (the same rows only
written into SQLite and read back), the cycle under Prefect, and the ingest into PostgreSQL.
Results go to `benchmarks/results/run-<time>.json` and `latest.md`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import agreement, postgres, results
from benchmarks.dataset import label, parse_scale, write_company

HERE = Path(__file__).resolve().parent
CLI = Path(sys.executable).with_name("cxloop")


def worker(kind: str, data_dir: Path, timeout: float, url: str | None = None) -> dict:
    """Run one measured process; a run past `timeout` is stopped and reported as such."""
    out = data_dir / "work" / f"{kind}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    command = [sys.executable, "-m", "benchmarks.worker", kind, str(data_dir),
               str(data_dir / "work"), str(out), *([url] if url else [])]  # fmt: skip
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=HERE.parent, timeout=timeout, capture_output=True,
                              text=True)  # fmt: skip
        failure = None if done.returncode == 0 else done.stderr.strip().splitlines()[-1]
    except subprocess.TimeoutExpired:
        failure = f"stopped after {timeout:.0f} s"
    result = json.loads(out.read_text()) if out.exists() else {"timings": {}, "headline": {}}
    result["failure"] = failure
    result["wall_s"] = time.perf_counter() - start
    return result


def cli_help_seconds(repeats: int = 5) -> float:
    """Median wall time of `cxloop --help` as a fresh subprocess."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([str(CLI), "--help"], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_scale(customers: int, args: argparse.Namespace, pg_url: str | None) -> dict:
    """Every measurement at one scale."""
    data_dir = args.data / label(customers)
    start = time.perf_counter()
    rows = write_company(customers, args.seed, data_dir)
    scale: dict = {"customers": customers, "rows": rows, "total_rows": sum(rows.values()),
                   "generate_and_write_s": time.perf_counter() - start, "notes": [],
                   "load_average": {"before": os.getloadavg()}}  # fmt: skip
    with_report = customers <= args.report_max
    variant = "" if with_report else "-no-report"
    runs = {"cxloop": worker("direct" + variant, data_dir, args.timeout)}
    if not with_report:
        runs["report alone"] = worker("report", data_dir, args.report_timeout)
    runs["baseline"] = worker("baseline", data_dir, args.timeout)
    runs["floor"] = worker("floor", data_dir, args.timeout)
    if not args.no_prefect:
        runs["orchestrated"] = worker("orchestrated" + variant, data_dir, args.timeout)
    if pg_url and customers <= args.postgres_max:
        name = f"bench_{label(customers)}"
        runs["postgresql"] = worker(
            "ingest", data_dir, args.timeout, postgres.fresh_database(pg_url, name)
        )
    scale["load_average"]["after"] = os.getloadavg()
    for side, run in runs.items():
        scale[side] = run["timings"]
        if run["failure"]:
            scale["notes"].append(f"{label(customers)} {side}: {run['failure']}")
    if not with_report:
        _add_report(scale, runs["report alone"], args.report_timeout)
    cxloop_runs = {side: run for side, run in runs.items() if side not in ("baseline", "floor")}
    scale["peak_rss_mib"] = {side: run.get("process_peak_mib") for side, run in cxloop_runs.items()
                             if run.get("process_peak_mib")}  # fmt: skip
    scale["baseline_peak_rss_mib"] = runs["baseline"].get("process_peak_mib")
    scale["ratios"] = {
        stage: scale["cxloop"][stage]["seconds"] / scale["baseline"][stage]["seconds"]
        for stage in results.STAGES
        if stage in scale["cxloop"] and stage in scale["baseline"]
    }
    if runs["cxloop"]["headline"] and runs["baseline"]["headline"]:
        agreed = agreement.compare(runs["cxloop"]["headline"], runs["baseline"]["headline"])
    else:
        agreed = agreement.Agreement(mismatches=["a run did not finish"])
    scale["agreement"] = {"ok": agreed.ok, "compared": agreed.compared,
                          "mismatches": agreed.mismatches}  # fmt: skip
    scale["ingest_rows_per_s"] = {
        backend: t["ingest"]["extra"]["rows"] / t["ingest"]["seconds"]
        for backend, t in (("sqlite", scale["cxloop"]), ("postgresql", scale.get("postgresql")))
        if t and "ingest" in t
    }
    orchestrated = scale.get("orchestrated", {})
    scope = "cycle" if with_report else "cycle less report"
    direct = scale["cxloop"].get(scope, {}).get("seconds")
    if scope in orchestrated and direct:
        cycle = orchestrated[scope]["seconds"]
        scale["prefect"] = {
            "scope": scope,
            "server_startup_s": orchestrated["server start-up"]["seconds"],
            "empty_flow_s": orchestrated["empty flow"]["seconds"],
            "cycle_s": cycle,
            "direct_s": direct,
            "overhead_s": cycle - direct,
            "overhead_share": (cycle - direct) / cycle,
        }
        cycle_cpu, direct_cpu = (
            orchestrated[scope].get("cpu_s"),
            scale["cxloop"][scope].get("cpu_s"),
        )
        if cycle_cpu and direct_cpu:
            scale["prefect"] |= {
                "cycle_cpu_s": cycle_cpu,
                "direct_cpu_s": direct_cpu,
                "overhead_cpu_s": cycle_cpu - direct_cpu,
                "overhead_cpu_share": (cycle_cpu - direct_cpu) / cycle_cpu,
            }
    return scale


def _add_report(scale: dict, alone: dict, timeout: float) -> None:
    """The report stage timed on its own; the cycle is the sum, or a lower bound if it stopped."""
    less = scale["cxloop"].get("cycle less report", {}).get("seconds")
    report = alone["timings"].get("report")
    if report and less:
        scale["cxloop"]["report"] = report
        scale["cxloop"]["cycle"] = {
            "seconds": less + report["seconds"],
            "peak_mib": report["peak_mib"],
            "extra": {"summed": True},
        }
    elif less:
        scale["cycle_at_least_s"] = less + timeout
        scale["notes"].append(
            f"{label(scale['customers'])} report: stopped after {timeout:.0f} s, so the whole "
            f"cycle takes more than {less + timeout:.0f} s"
        )  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--scale", default="10k,100k,1m", help="Customers per run, e.g. 10k,1m.")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--data", type=Path, default=HERE / "data", help="Parquet and stores.")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="Results folder.")
    parser.add_argument("--timeout", type=float, default=1800, help="Seconds per measured run.")
    parser.add_argument("--no-prefect", action="store_true", help="Skip the Prefect cycle.")
    parser.add_argument("--postgres-max", type=lambda s: parse_scale(s), default=parse_scale("1m"),
                        help="Largest scale to ingest into PostgreSQL (0: never).")  # fmt: skip
    parser.add_argument(
        "--report-max",
        type=parse_scale,
        default=parse_scale("100m"),
        help="Above this scale the report runs alone, after the cycle.",
    )
    parser.add_argument(
        "--report-timeout",
        type=float,
        default=900,
        help="Seconds the report may take when it runs alone.",
    )
    parser.add_argument("--resume", type=Path, help="A run's JSON whose scales to keep.")
    args = parser.parse_args(argv)
    run: dict = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": results.machine(),
        "cli_help_seconds": cli_help_seconds(),
        "scales": json.loads(args.resume.read_text())["scales"] if args.resume else {},
    }
    use_pg = args.postgres_max > 0 and postgres.available()
    with postgres.server() if use_pg else nullcontext() as pg_url:
        for customers in sorted(parse_scale(s) for s in args.scale.split(",")):
            if label(customers) in run["scales"]:
                continue
            print(f"== {label(customers)} customers", flush=True)
            run["scales"][label(customers)] = run_scale(customers, args, pg_url)
            _finish(run, args.out)
    print(results.markdown(run))
    return run


def _finish(run: dict, out: Path) -> None:
    """Slopes and targets from the scales so far, written at once (a long run keeps them)."""
    scales = sorted(run["scales"].values(), key=lambda v: v["customers"])
    rows = [v["total_rows"] for v in scales]
    run["slopes"] = {
        stage: results.slope(rows, [(v["cxloop"].get(stage) or {}).get("seconds") for v in scales])
        for stage in results.STAGES
    }
    run["targets"] = [t.__dict__ for t in results.targets(run)]
    json_path, md_path = results.write(run, out)
    print(f"   wrote {json_path} and {md_path}", flush=True)


if __name__ == "__main__":
    main()
