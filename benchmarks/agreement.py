"""Do cxloop and the baseline report the same headline numbers?"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

KPI_METRICS = ("nps", "csat_top2", "frt_hours")
RTOL = 1e-6
# The store keeps microseconds, the Parquet files nanoseconds: hours may differ by ~1e-10.
ATOL = 1e-6


@dataclass
class Agreement:
    """How many numbers were compared and which ones differ (one sentence each)."""

    compared: int = 0
    mismatches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.compared > 0 and not self.mismatches


def compare(cxloop: dict[str, list[dict]], baseline: dict[str, list[dict]]) -> Agreement:
    """Compare KPIs (NPS, CSAT, FRT by segment), pain points and pilot DiD estimates."""
    result = Agreement()
    kpis = [r for r in cxloop["kpis"] if r["metric"] in KPI_METRICS]
    _match(result, "kpi", kpis, baseline["kpis"], ("segment", "metric"), ("value", "n"))
    _match(
        result,
        "pain point",
        cxloop["pain_points"],
        baseline["pain_points"],
        ("topic",),
        ("rank", "reach", "impact", "score"),
    )
    _match(
        result,
        "pilot",
        cxloop["pilots"],
        baseline["pilots"],
        ("hypothesis_id", "metric"),
        ("estimate", "n_pilot", "n_control"),
    )
    return result


def _match(
    result: Agreement,
    what: str,
    ours: list[dict],
    theirs: list[dict],
    keys: tuple[str, ...],
    values: tuple[str, ...],
) -> None:
    index = {tuple(r[k] for k in keys): r for r in theirs}
    if len(ours) != len(theirs):
        result.mismatches.append(f"{what}: cxloop has {len(ours)} rows, baseline {len(theirs)}")
    for row in ours:
        key = tuple(row[k] for k in keys)
        other = index.get(key)
        if other is None:
            result.mismatches.append(f"{what} {key}: missing from the baseline")
            continue
        for name in values:
            result.compared += 1
            a, b = row[name], other[name]
            if not _close(a, b):
                result.mismatches.append(f"{what} {key} {name}: cxloop {a}, baseline {b}")


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=RTOL, abs_tol=ATOL)
