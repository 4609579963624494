"""Service standards (`standards:` in cxloop.yaml): each period met, missed, at risk or unknown."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from connectors.errors import ConfigError
from tasks.alerts import Alert
from tasks.metrics import DIMENSIONS, METRICS, SHARE_METRICS, metric_table

if TYPE_CHECKING:
    from tasks.loader import CxData

Direction = Literal["above", "below"]
STATUSES = ("met", "missed", "at_risk", "unknown")
# Fewer units than this in a period give no verdict.
MIN_N = 10
HOUR_METRICS = ("frt_hours", "frt_business_hours", "art_hours")
# Metrics where less is better: their standards default to `below`.
LOWER_IS_BETTER = (*HOUR_METRICS, "ces", "repeat", "sla_breach", "escalation", "negative_comments")
STANDARD_COLUMNS = ("standard", "metric", "where", "target", "direction", "period")
RESULT_COLUMNS = (*STANDARD_COLUMNS, "value", "n", "ci_low", "ci_high", "status")


def metric_range(metric: str) -> tuple[float, float]:
    """The values `metric` can take: NPS −100..100, shares 0..100, hours ≥ 0, scores 0..10."""
    if metric == "nps":
        return -100.0, 100.0
    if metric in SHARE_METRICS:
        return 0.0, 100.0
    if metric in HOUR_METRICS:
        return 0.0, np.inf
    return 0.0, 10.0


def target_problem(metric: str, target: float) -> str | None:
    """Why `target` cannot be a target of `metric` (outside its range), or None."""
    low, high = metric_range(metric)
    if low <= target <= high:
        return None
    span = f">= {low:g}" if high == np.inf else f"within {low:g}..{high:g}"
    return f"a {metric} target must be {span}; fix the target"


def metric_problem(metric: str) -> str | None:
    """Why `metric` is not a known metric (with the closest name), or None."""
    if metric in METRICS:
        return None
    return f"unknown metric{_did_you_mean(metric, METRICS)}; use one of {', '.join(METRICS)}"


def dimension_problem(dimension: str, declared: Sequence[str] = ()) -> str | None:
    """Why `dimension` cannot be filtered on (not a fixed cut, `DIMENSIONS`, nor one of the
    config's `declared` customer dimensions), or None."""
    known = (*DIMENSIONS, *declared)
    if dimension in known:
        return None
    hint = _did_you_mean(dimension, known)
    return f"unknown dimension `{dimension}`{hint}; use one of {', '.join(known)}"


def default_direction(metric: str) -> Direction:
    """`below` for metrics where less is better (hours, effort, repeats), else `above`."""
    return "below" if metric in LOWER_IS_BETTER else "above"


def cut(where: Mapping[str, str]) -> str:
    """The filter as text: `channel=chat,segment=premium` (empty for none)."""
    return ",".join(f"{k}={v}" for k, v in sorted(where.items()))


def label(metric: str, where: Mapping[str, str]) -> str:
    """The standard's name: `frt_hours[channel=chat]`, or the metric alone."""
    return f"{metric}[{cut(where)}]" if where else metric


def evaluate(
    data: CxData,
    standards: Sequence[object],
    period: str = "month",
    csat_scale: int = 5,
    min_n: int = MIN_N,
) -> pd.DataFrame:
    """Each standard per period: `RESULT_COLUMNS`, `status` one of `STATUSES`.

    `standards` have `metric`, `target`, `where` (dimension → value) and `direction`
    (None: `default_direction`). Judged on the 95% CI: met when it lies wholly on the good
    side of the target, missed only when it lies wholly on the wrong side, at risk when it
    straddles it. A median (FRT, ART) is judged on its Brookmeyer–Crowley CI: unknown when
    the data give it none, at risk rather than missed when the CI is open at one end or the
    median is not reached yet. Raises `ConfigError` for a `where` value the data never has,
    with the closest one.
    """
    frames = [_judge(data, i, s, period, csat_scale, min_n) for i, s in enumerate(standards)]
    if not frames:
        return pd.DataFrame(columns=list(RESULT_COLUMNS))
    return pd.concat(frames, ignore_index=True)[list(RESULT_COLUMNS)]


def _judge(
    data: CxData, index: int, standard: object, period: str, csat_scale: int, min_n: int
) -> pd.DataFrame:
    """One standard's rows of `evaluate`."""
    metric, where = standard.metric, dict(standard.where)
    direction = standard.direction or default_direction(metric)
    table = metric_table(data, [metric], list(where), period, csat_scale)
    for dim, value in where.items():
        _check_seen(index, dim, value, table[dim])
        table = table[table[dim] == value]
    low, high = table["ci_low"], table["ci_high"]
    good_low, good_high = (low, high) if direction == "above" else (-high, -low)
    goal = standard.target if direction == "above" else -standard.target
    # A median not reached yet is judged neither way, and a CI open at one end is no miss:
    # a miss alerts, quoting both ends of its CI.
    known = table["value"].notna()
    bounded = known & np.isfinite(low) & np.isfinite(high)
    status = np.select(
        [
            (table["n"] < min_n) | low.isna(),
            known & (good_low >= goal),
            bounded & (good_high < goal),
        ],
        ["unknown", "met", "missed"],
        "at_risk",
    )
    return pd.DataFrame(
        {
            "standard": label(metric, where),
            "metric": metric,
            "where": cut(where),
            "target": float(standard.target),
            "direction": direction,
            "period": table["period"].to_numpy(),
            "value": table["value"].to_numpy(),
            "n": table["n"].to_numpy(),
            "ci_low": table["ci_low"].to_numpy(),
            "ci_high": table["ci_high"].to_numpy(),
            "status": status,
        }
    )


def _check_seen(index: int, dim: str, value: str, seen: pd.Series) -> None:
    """`ConfigError` when the data never has `value` of `dim`."""
    known = sorted(seen.dropna().astype(str).unique())
    if value in known:
        return
    raise ConfigError(
        f"cxloop.yaml: `standards.{index}.where.{dim}`: no {dim} `{value}` in the store"
        f"{_did_you_mean(value, known)}; known: {', '.join(known) or 'none'}."
    )


def summary(results: pd.DataFrame) -> dict[str, int]:
    """Per status, how many standards have it in their latest period (plus `total`)."""
    latest = results.sort_values("period").groupby("standard", sort=False).tail(1)
    counts = latest["status"].value_counts()
    return {s: int(counts.get(s, 0)) for s in STATUSES} | {"total": len(latest)}


def _did_you_mean(word: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(known), n=1)
    return f" (did you mean `{close[0]}`?)" if close else ""


def snapshot_rows(results: pd.DataFrame, computed_at: object) -> pd.DataFrame:
    """`results` as `standard_snapshot` rows (unique on period and standard)."""
    columns = ["period", "standard", "metric", "target", "direction", "value", "n"]
    rows = results[[*columns, "ci_low", "ci_high", "status"]]
    return rows.assign(computed_at=computed_at)


def newly_missed(results: pd.DataFrame, stored: pd.DataFrame) -> list[Alert]:
    """A `standard_missed` alert per standard missed in its latest period that `stored`
    (earlier snapshots) did not already have missed for that period."""
    latest = results.sort_values("period").groupby("standard", sort=False).tail(1)
    missed = latest[latest["status"] == "missed"]
    if not stored.empty:
        known = stored.loc[stored["status"] == "missed", ["period", "standard"]]
        seen = missed.merge(known, on=["period", "standard"], how="left", indicator=True)
        missed = missed[(seen["_merge"] == "left_only").to_numpy()]
    fields = ["standard", "metric", "target", "direction", "value", "n", "ci_low", "ci_high"]
    return [
        Alert(
            "standard_missed",
            f"standard_missed:{row['standard']}",
            row["period"],
            {k: _plain(row[k]) for k in fields},
        )
        for row in missed.to_dict("records")
    ]


def _plain(value: object) -> object:
    """A JSON-ready scalar: numpy numbers as Python ones, NaN as the value's own None."""
    if isinstance(value, (np.generic, float)):
        number = float(value)
        return None if np.isnan(number) else number
    return value


def latest_with_trend(results: pd.DataFrame, previous: int = 3) -> pd.DataFrame:
    """Each standard's latest period (`results`' columns), with `trend`: the values of up to
    `previous` periods before it, oldest first (NaN where a period had no value)."""
    if results.empty:
        return results.assign(trend=pd.Series(dtype=object))
    ordered = results.sort_values(["standard", "period"], kind="stable")
    grouped = ordered.groupby("standard", sort=False)["value"]
    trend = pd.concat([grouped.shift(k) for k in range(previous, 0, -1)], axis=1)
    ordered = ordered.assign(trend=trend.apply(lambda row: row.dropna().tolist(), axis=1))
    latest = ordered.groupby("standard", sort=False).tail(1)
    order = pd.Index([*dict.fromkeys(results["standard"])])
    return latest.set_index("standard").loc[order].reset_index()
