"""The Kaplan–Meier median's 95% CI: statsmodels' Brookmeyer–Crowley interval, its coverage,
and service standards on FRT judged on it."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from statsmodels.duration.survfunc import SurvfuncRight

from tasks import store
from tasks.loader import CxData
from tasks.metrics import km_median_by, metric_table, with_ticket_measures
from tasks.standards import evaluate, newly_missed, snapshot_rows

# Hand-made groups: times and which are events (1) or censorings (0), each a shape to get right.
HAND_MADE = {
    "uncensored": ([5, 1, 4, 2, 3, 6, 8, 7, 9, 10, 12, 11], "111111111111"),
    "ties_with_censorings": ([1, 1, 2, 2, 2, 3, 3, 4, 4, 4, 5, 6, 6, 7, 8], "101101101110110"),
    "never_half": ([1, 2, 3, 3, 3, 4, 5, 5], "11000000"),
    "one_ticket": ([2.5], "1"),
    "all_censored": ([1, 2, 3], "000"),
    # 60 answers at once, then 40: survival jumps from 1 past 1/2 to 0.4, too far for the set.
    "no_event_time_qualifies": ([1] * 60 + [2] * 40, "1" * 100),
    "ends_near_half": ([*range(1, 14), *[50] * 12], "1" * 13 + "0" * 12),
}


def statsmodels_ci(time: np.ndarray, observed: np.ndarray) -> tuple[float, float]:
    if not observed.any():
        return np.nan, np.nan  # SurvfuncRight has no curve to invert without an event
    with np.errstate(divide="ignore", invalid="ignore"):  # its log(0) where survival hits 0
        fit = SurvfuncRight(time, observed.astype(int))
        return fit.quantile_ci(0.5, alpha=0.05, method="cloglog")


def assert_matches_statsmodels(spells: pd.DataFrame, ours: pd.DataFrame) -> None:
    for group, cell in spells.groupby("g"):
        low, high = statsmodels_ci(cell["time"].to_numpy(float), cell["observed"].to_numpy())
        row = ours.loc[group]
        for mine, theirs in ((row["ci_low"], low), (row["ci_high"], high)):
            if np.isnan(theirs) or np.isinf(theirs):
                assert mine == theirs or (np.isnan(mine) and np.isnan(theirs)), group
            else:
                assert mine == pytest.approx(theirs, abs=1e-9), group


def test_ci_equals_statsmodels_on_hand_made_censored_groups() -> None:
    spells = pd.concat(
        pd.DataFrame({"g": name, "time": np.asarray(t, float), "observed": [c == "1" for c in o]})
        for name, (t, o) in HAND_MADE.items()
    )
    ours = km_median_by(spells, ["g"])
    assert_matches_statsmodels(spells, ours)
    # Each shape is what it claims to be, so the comparison covers all four outcomes.
    assert np.isnan(ours.loc["never_half", "value"])
    assert np.isnan(ours.loc["all_censored", ["value", "ci_low", "ci_high"]]).all()
    assert np.isnan(ours.loc["no_event_time_qualifies", ["ci_low", "ci_high"]]).all()
    assert ours.loc["no_event_time_qualifies", "value"] == 1.0
    assert np.isinf(ours.loc["ends_near_half", "ci_high"])
    assert ours.loc["ends_near_half", "value"] == 13.0
    bounded = ours.loc["uncensored"]
    assert bounded["ci_low"] < bounded["value"] < bounded["ci_high"] < np.inf


def test_ci_equals_statsmodels_on_300_random_groups_at_once() -> None:
    rng = np.random.default_rng(27)
    sizes = rng.integers(1, 70, 300)
    group = np.repeat(np.arange(300), sizes)
    event = rng.exponential(2.0, len(group)).round(1)  # rounded: ties, some with censorings
    # Per group light, heavy or no censoring, so some never reach 1/2.
    scale = rng.choice([1.0, 3.0, 1e6], 300)[group]
    censor = rng.exponential(scale).round(1)
    spells = pd.DataFrame(
        {"g": group, "time": np.minimum(event, censor), "observed": event <= censor}
    )
    ours = km_median_by(spells, ["g"])
    assert len(ours) == 300
    assert_matches_statsmodels(spells, ours)
    assert ours["value"].isna().sum() >= 5 and np.isinf(ours["ci_high"]).sum() >= 20
    assert (np.isfinite(ours["ci_high"])).sum() >= 150


def test_ci_covers_the_true_median_in_95_percent_of_simulated_groups() -> None:
    # Exponential answer times with mean 2 h: true median 2·ln 2; a third censored.
    rng = np.random.default_rng(9)
    groups, size = 1000, 60
    group = np.repeat(np.arange(groups), size)
    event = rng.exponential(2.0, len(group))
    censor = rng.exponential(4.0, len(group))
    spells = pd.DataFrame(
        {"g": group, "time": np.minimum(event, censor), "observed": event <= censor}
    )
    ci = km_median_by(spells, ["g"])
    truth = 2.0 * np.log(2)
    coverage = ((ci["ci_low"] <= truth) & (truth <= ci["ci_high"])).mean()
    assert 0.93 <= coverage <= 0.975
    assert ci["ci_low"].notna().all()


def _frt_data(hours: list[float], waiting: int = 0) -> CxData:
    """Tickets raised on 1 Sep 2026 answered after `hours`, plus `waiting` still unanswered
    at the clock (the last answer plus a day, set by a late ticket answered in 6 min)."""
    start = pd.Timestamp("2026-09-01")
    last = start + pd.Timedelta(hours=max(hours))
    created = [start] * (len(hours) + waiting) + [last + pd.Timedelta(days=1)]
    answered = [start + pd.Timedelta(hours=h) for h in hours]
    answered += [pd.NaT] * waiting + [created[-1] + pd.Timedelta(minutes=6)]
    ids = [f"c{i}" for i in range(len(created))]
    tickets = pd.DataFrame(
        {
            "customer_id": ids,
            "channel": "chat",
            "topic": "payment",
            "created_at": pd.to_datetime(created),
            "first_response_at": pd.to_datetime(answered),
            "resolved_at": pd.NaT,
            "reopened": False,
        }
    )
    customers = pd.DataFrame(
        {"customer_id": ids, "segment": "new", "region": "x", "channel": "web"}
    )
    empty = pd.DataFrame(columns=["customer_id", "kind", "score", "submitted_at"])
    return CxData(customers, with_ticket_measures(tickets), empty, pd.DataFrame(), pd.DataFrame())


def _frt_status(data: CxData, target: float) -> str:
    frt = SimpleNamespace(metric="frt_hours", target=target, where={}, direction=None)
    return evaluate(data, [frt]).set_index("period").loc["2026-09", "status"]


def _frt_cell(data: CxData) -> pd.Series:
    table = metric_table(data, ["frt_hours"], [], "month")
    return table.set_index("period").loc["2026-09"]


def test_frt_standard_straddled_by_its_ci_is_at_risk_and_missed_only_beyond_it() -> None:
    data = _frt_data([float(h) for h in range(1, 41)])
    cell = _frt_cell(data)
    low, value, high = cell["ci_low"], cell["value"], cell["ci_high"]
    assert low < value < high < np.inf
    answered = data.tickets["frt_hours"].to_numpy()  # all in September, all answered
    assert (low, high) == statsmodels_ci(answered, np.ones(len(answered), bool))
    assert _frt_status(data, low - 0.01) == "missed"  # the whole CI is slower than the target
    assert _frt_status(data, (low + value) / 2) == "at_risk"  # the median misses, the CI not
    assert _frt_status(data, (value + high) / 2) == "at_risk"
    assert _frt_status(data, high + 0.01) == "met"


def test_a_missed_frt_standard_alerts_with_its_real_ci() -> None:
    data = _frt_data([float(h) for h in range(1, 41)])
    cell = _frt_cell(data)
    frt = SimpleNamespace(metric="frt_hours", target=5.0, where={}, direction=None)
    results = evaluate(data, [frt])
    latest = results[results["period"] == results["period"].max()]
    assert latest["status"].tolist() == ["missed"]
    (alert,) = newly_missed(latest, pd.DataFrame())
    low, high = f"{cell['ci_low']:.3g}", f"{cell['ci_high']:.3g}"
    assert low != high
    assert f"(95% CI {low} to {high})" in alert.message
    assert alert.evidence["ci_low"] < alert.evidence["value"] < alert.evidence["ci_high"]


def test_frt_standard_with_an_open_ci_is_at_risk_and_with_none_unknown() -> None:
    # 13 answers within 13 h, 12 tickets still waiting past all of them: no upper end.
    open_ended = _frt_data([float(h) for h in range(1, 14)], waiting=12)
    cell = _frt_cell(open_ended)
    assert np.isinf(cell["ci_high"]) and cell["ci_low"] > 0.5
    frt = SimpleNamespace(metric="frt_hours", target=0.5, where={}, direction=None)
    results = evaluate(open_ended, [frt])
    assert results["status"].tolist() == ["at_risk"]
    assert newly_missed(results, pd.DataFrame()) == []
    # 60 answers at 1 h, 40 at 2 h: no event time is close enough to 1/2 to bound the median.
    jump = _frt_data([1.0] * 60 + [2.0] * 40)
    assert np.isnan(_frt_cell(jump)[["ci_low", "ci_high"]].astype(float)).all()
    assert _frt_status(jump, 1.5) == "unknown"


def test_an_open_frt_ci_is_stored_and_read_back_on_both_backends(store_url: str) -> None:
    open_ended = _frt_data([float(h) for h in range(1, 14)], waiting=12)
    frt = SimpleNamespace(metric="frt_hours", target=0.5, where={}, direction=None)
    results = evaluate(open_ended, [frt])
    engine = store.open_store(store_url)
    store.save_rows(engine, store.StandardSnapshot, snapshot_rows(results, store.now_utc()),
                    ("period", "standard"))  # fmt: skip
    stored = store.read_frame(engine, store.StandardSnapshot).iloc[0]
    assert np.isinf(stored["ci_high"]) and stored["ci_low"] == results["ci_low"].iloc[0]
    assert stored["status"] == "at_risk"


def test_art_ci_is_the_uncensored_median_ci_of_resolved_tickets(demo_data: CxData) -> None:
    table = metric_table(demo_data, ["art_hours"], ["channel"]).set_index("channel")
    tickets = demo_data.tickets.dropna(subset=["art_hours"])
    for channel, cell in tickets.groupby("channel"):
        hours = cell["art_hours"].to_numpy()
        row = table.loc[channel]
        assert (row["value"], row["n"]) == (np.median(hours), len(hours))
        assert (row["ci_low"], row["ci_high"]) == statsmodels_ci(hours, np.ones(len(hours), bool))
        assert row["ci_low"] < row["value"] < row["ci_high"]
