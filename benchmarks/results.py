"""Benchmark results: machine info, scaling slopes, targets, JSON and the Markdown tables."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import version
from pathlib import Path

import numpy as np

STAGES = ("ingest", "metrics", "ranking", "experiments", "report", "cycle")
# The stage each of the flows' tasks belongs to, for the breakdown table.
TASK_STAGES = {
    "open_streams": "ingest",
    "sync_one": "ingest",
    "load_data": "metrics",
    "snapshot_cut": "metrics",
    "raise_alerts": "metrics",
    "save_pain_points": "ranking",
    "evaluate_and_store": "experiments",
    "render_reports": "report",
    "pdf": "report",
}
FLOOR_ROUTES = ("sqlite3", "adbc")
TARGET_SCALE = 1_000_000
REPO = Path(__file__).resolve().parents[1]


def machine() -> dict:
    """CPU, memory, OS, Python and library versions, and the commit measured.

    `CXLOOP_BENCH_COMMIT` names the commit when the code runs from an exported tree.
    """
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.processor(),
    )  # fmt: skip
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True, text=True
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024**2, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            name: version(name)
            for name in ("pandas", "numpy", "pyarrow", "sqlalchemy", "prefect", "duckdb")
        },
        "commit": os.environ.get("CXLOOP_BENCH_COMMIT")
        or commit + ("+uncommitted" if dirty else ""),
    }


def slope(rows: list[int], seconds: list[float | None]) -> float | None:
    """Least-squares slope of log(seconds) over log(rows); None with fewer than two points."""
    points = [(r, s) for r, s in zip(rows, seconds, strict=True) if s]
    if len(points) < 2:
        return None
    x, y = np.log([p[0] for p in points]), np.log([p[1] for p in points])
    return float(np.polyfit(x, y, 1)[0])


@dataclass(frozen=True)
class Target:
    """One goal from the issue, the figure measured against it and whether it is met."""

    name: str
    figure: str
    met: bool | None


def _seconds(scale: dict, side: str, stage: str) -> float | None:
    return (scale.get(side, {}).get(stage) or {}).get("seconds")


def targets(run: dict) -> list[Target]:
    """The issue's targets, judged at 1M customers (or the largest scale run, said so)."""
    scales = run["scales"]
    if not scales:
        return []
    label = max(scales, key=lambda k: scales[k]["customers"])
    big = scales[label]
    at = f"at {label}" + ("" if big["customers"] >= TARGET_SCALE else " (1m not run)")
    cycle, base = _seconds(big, "cxloop", "cycle"), _seconds(big, "baseline", "cycle")
    found = []
    at_least = big.get("cycle_at_least_s")
    ratio = cycle / base if cycle and base else None
    if ratio:
        ratio_text, cycle_text = f"{ratio:.1f}×", f"{cycle:.0f} s"
    elif at_least and base:
        ratio_text = f"> {at_least / base:.0f}× (report did not finish)"
        cycle_text = f"> {at_least:.0f} s (report did not finish)"
    else:
        ratio_text = cycle_text = "not finished"
    floors = [(route, _seconds(big, "floor", f"{route} total")) for route in FLOOR_ROUTES]
    if base and all(seconds for _, seconds in floors):
        ratio_text += (
            " (store floor alone: "
            + ", ".join(f"{seconds / base:.1f}× via {route}" for route, seconds in floors)
            + ")"
        )
    found.append(Target(f"cycle ≤ 2× baseline {at}", ratio_text, bool(ratio and ratio <= 2)))
    found.append(Target(f"cycle < 300 s {at}", cycle_text, bool(cycle and cycle < 300)))
    peak = max(big.get("peak_rss_mib", {}).values(), default=None)
    found.append(
        Target(
            f"peak RSS < 2 GiB {at}",
            f"{peak:,.0f} MiB" if peak else "n/a",
            bool(peak and peak < 2048),
        )
    )
    slopes = run.get("slopes", {})
    worst = max(
        ((s, v) for s, v in slopes.items() if v is not None), key=lambda p: p[1], default=None
    )
    found.append(
        Target(
            "scaling slope ≤ 1.1 for every stage",
            f"worst {worst[0]} {worst[1]:.2f}" if worst else "needs two scales",
            None if worst is None else worst[1] <= 1.1,
        )
    )
    prefect = big.get("prefect") or {}
    # CPU seconds when measured: wall time moves with whatever else shares the machine.
    unit = "CPU s" if "overhead_cpu_s" in prefect else "s"
    suffix = "_cpu" if unit == "CPU s" else ""
    overhead = prefect.get(f"overhead{suffix}_s")
    share = prefect.get(f"overhead{suffix}_share")
    found.append(
        Target(
            f"Prefect overhead < 10 s and < 10% of the cycle {at}",
            f"{overhead:.1f} {unit}, {share:.1%}" if overhead is not None else "not run",
            None if overhead is None else overhead < 10 and share < 0.10,
        )
    )
    help_s = run.get("cli_help_seconds")
    found.append(Target("`cxloop --help` < 1 s", f"{help_s:.2f} s" if help_s else "n/a",
                        bool(help_s and help_s < 1)))  # fmt: skip
    return found


def write(run: dict, out_dir: Path) -> tuple[Path, Path]:
    """`run-<UTC time>.json` and `latest.md` under `out_dir`; returns both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.fromisoformat(run["started_at"]).strftime("%Y%m%d-%H%M%S")
    json_path = out_dir / f"run-{stamp}.json"
    json_path.write_text(json.dumps(run, indent=2, default=str) + "\n", encoding="utf-8")
    md_path = out_dir / "latest.md"
    md_path.write_text(markdown(run), encoding="utf-8")
    return json_path, md_path


def _cell(seconds: float | None, base: float | None) -> str:
    if seconds is None:
        return "—"
    ratio = f" ({seconds / base:.1f}×)" if base else ""
    return f"{seconds:.2f} s{ratio}"


def _load(scale: dict) -> str:
    load = scale.get("load_average")
    return f"{load['before'][0]:.1f} → {load['after'][0]:.1f}" if load else "—"


def _breakdown(label: str, scale: dict) -> list[str]:
    """Lines of a table of the flows' tasks at one scale: where each stage's time goes."""
    tasks = {name.removeprefix("task "): t for name, t in scale.get("cxloop", {}).items()
             if name.startswith("task ") and name.removeprefix("task ") in TASK_STAGES}  # fmt: skip
    if not tasks:
        return []
    lines = ["", f"Where the time goes at {label} (cxloop's tasks, called directly):", "",
             "| task | stage | calls | seconds | CPU s | peak RSS |",
             "|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for name, t in sorted(tasks.items(), key=lambda kv: list(TASK_STAGES).index(kv[0])):
        cpu = f"{t['cpu_s']:.2f}" if t.get("cpu_s") is not None else "—"
        lines.append(f"| {name} | {TASK_STAGES[name]} | {t['extra'].get('calls', 1)} | "
                     f"{t['seconds']:.2f} | {cpu} | {t['peak_mib']:,.0f} MiB |")  # fmt: skip
    return lines


def markdown(run: dict) -> str:
    """The stage table (cxloop time and × baseline per scale, slope), Prefect, ingest, targets."""
    scales = sorted(run["scales"].items(), key=lambda kv: kv[1]["customers"])
    m = run["machine"]
    per_customer = sum(v["total_rows"] for _, v in scales) / sum(v["customers"] for _, v in scales)
    lines = [
        f"## cxloop benchmark ({run['started_at'][:10]}, {m['cores']} cores, {m['cpu']}, "
        f"{m['memory_gib']} GiB, Python {m['python']}, commit {m['commit']})",
        "",
        "cxloop seconds per stage and, in brackets, cxloop ÷ the hand-written DuckDB baseline "
        "on the same Parquet files; rows are all ingested records "
        f"(about {per_customer:.1f} per customer). "
        "The baseline's report is three plain HTML tables, cxloop's the digest with charts and "
        "a report per pilot: that row compares unlike work.",
        "",
        "| stage | "
        + " | ".join(f"{k} ({v['total_rows']:,} rows)" for k, v in scales)
        + " | slope |",
        "|---|" + "---:|" * (len(scales) + 1),
    ]
    for stage in STAGES:
        cells = [_cell(_seconds(v, "cxloop", stage), _seconds(v, "baseline", stage))
                 for _, v in scales]  # fmt: skip
        s = run.get("slopes", {}).get(stage)
        lines.append(f"| {stage} | " + " | ".join(cells) + f" | {s:.2f} |" if s is not None
                     else f"| {stage} | " + " | ".join(cells) + " | — |")  # fmt: skip
    lines.append(
        "| peak RSS | "
        + " | ".join(
            f"{max(v.get('peak_rss_mib', {}).values(), default=0):,.0f} MiB" for _, v in scales
        )
        + " | |"
    )
    lines.append(
        "| numbers agree | "
        + " | ".join(
            ("yes" if v["agreement"]["ok"] else f"**no** ({len(v['agreement']['mismatches'])})")
            + f" ({v['agreement']['compared']} compared)"
            for _, v in scales
        )
        + " | |"
    )
    lines.append(
        "| machine load (1-min average, before → after) | "
        + " | ".join(_load(v) for _, v in scales)
        + " | |"
    )
    lines += _breakdown(*scales[-1]) if scales else []
    lines += ["", "| Prefect | " + " | ".join(k for k, _ in scales) + " |",
              "|---|" + "---:|" * len(scales)]  # fmt: skip
    for key, name in (
        ("server_startup_s", "ephemeral server start-up (cold, s)"),
        ("empty_flow_s", "one empty flow run (s)"),
        ("cycle_s", "cycle under Prefect (s)"),
        ("direct_s", "same steps called directly (s)"),
        ("overhead_s", "overhead (s)"),
        ("overhead_share", "overhead (% of cycle)"),
        ("cycle_cpu_s", "CPU s under Prefect (with its server)"),
        ("direct_cpu_s", "CPU s called directly"),
        ("overhead_cpu_s", "overhead (CPU s)"),
        ("overhead_cpu_share", "overhead (% of cycle CPU)"),
        ("scope", "measured on"),
    ):
        cells = []
        for _, v in scales:
            value = (v.get("prefect") or {}).get(key)
            cells.append("—" if value is None else str(value) if key == "scope" else
                         f"{value:.1%}" if key.endswith("share") else f"{value:.2f}")  # fmt: skip
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "| ingest (bulk upsert, rows/s) | " + " | ".join(k for k, _ in scales) + " |",
              "|---|" + "---:|" * len(scales)]  # fmt: skip
    for backend in ("sqlite", "postgresql"):
        cells = [f"{r:,.0f}" if (r := v.get("ingest_rows_per_s", {}).get(backend)) else "—"
                 for _, v in scales]  # fmt: skip
        lines.append(f"| {backend} | " + " | ".join(cells) + " |")
    lines += ["", "Store floor (`benchmarks/floor.py`): the same rows only written into unindexed "
              "SQLite tables and read back, in seconds and, in brackets, ÷ the baseline's whole "
              "cycle.", "", "| store floor | " + " | ".join(k for k, _ in scales) + " |",
              "|---|" + "---:|" * len(scales)]  # fmt: skip
    for route in FLOOR_ROUTES:
        for step in ("write", "read", "total"):
            cells = [_cell(_seconds(v, "floor", f"{route} {step}"),
                           _seconds(v, "baseline", "cycle")) for _, v in scales]  # fmt: skip
            lines.append(f"| {route} {step} | " + " | ".join(cells) + " |")
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    for t in targets(run):
        met = "n/a" if t.met is None else ("yes" if t.met else "**no**")
        lines.append(f"| {t.name} | {t.figure} | {met} |")
    notes = [n for _, v in scales for n in v.get("notes", [])]
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"
