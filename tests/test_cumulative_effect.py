"""The primary estimate over the pilot's days: every point is the pilot's estimator on the data
up to its day, and the last point is the estimate `evaluate` decides on."""

from __future__ import annotations

import itertools
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest

from tasks.cumulative_effect import cumulative_effect, cut_days
from tasks.experiments import always_valid, cuped, estimand_of, evaluate, pilot_observations
from tasks.experiments import tuned_tau2 as tuned
from tasks.hypotheses import Period
from tests.test_pilots_from_operations import METHODS, company, routing
from tests.test_segment_effects import _armed, pilot
from tests.test_segment_effects import company as segment_company


@pytest.mark.parametrize(
    ("metric", "effect", "sequential"),
    [("csat", "+0.3", True), ("frt_hours", "+20%", False), ("frt_hours", "+20%", True)],
)
def test_every_point_is_cuped_on_the_data_up_to_its_day(
    tmp_path: Path, metric: str, effect: str, sequential: bool
) -> None:
    h = pilot(tmp_path, metric=metric, effect=effect)
    h = h.model_copy(update={"decision": h.decision.model_copy(update={"sequential": sequential})})
    people, raw = segment_company(8, customers=900)
    arms, obs = _armed(h, people, raw, planted=0.4)
    # A fifth of the customers lack a baseline, so the filled-in baseline changes by day.
    obs = obs[~(obs["customer_id"].str.endswith("3") & (obs["at"] < "2026-10-01"))]
    found = cumulative_effect(h, obs, arms, date(2026, 10, 20)).points
    assert found["day"].tolist()[-1] == date(2026, 10, 20) and len(found) == 20
    start, days = h.schedule.pilot.start, 31
    for point in found.itertuples():
        period = Period(start=start, end=point.day)
        own = cuped(metric, obs, arms, h.schedule.baseline, period, estimand_of(h.metric), 0.05)
        if sequential:
            share = ((point.day - start).days + 1) / days
            own = always_valid(own, 0.05, tuned(own.se, share, 0.05))
        assert (point.n_pilot, point.n_control) == (own.n_pilot, own.n_control)
        np.testing.assert_allclose(
            [point.estimate, point.ci_low, point.ci_high, point.p_value],
            [own.value, own.ci_low, own.ci_high, own.p_value],
            rtol=1e-9,
        )


@pytest.mark.parametrize("method", ["hash", "attribute", "list"])
@pytest.mark.parametrize("sequential", [True, False])
def test_the_last_point_is_the_final_estimate(
    tmp_path: Path, method: str, sequential: bool
) -> None:
    (tmp_path / "ops").mkdir()
    ids = "".join(f"C{i}\n" for i in range(0, 600, 2))
    (tmp_path / "ops" / "pilot.csv").write_text(f"customer_id\n{ids}", encoding="utf-8")
    h = routing(tmp_path, sequential, **{METHODS["attribute"]: METHODS[method]})
    data = company(21)
    evaluation = evaluate(h, data)
    final = evaluation.primary
    obs = pilot_observations(h.metric.name, data, h)
    newest = data.newest().date()  # the 26th: the always-valid interval is tuned to 26 of 31 days
    points = cumulative_effect(h, obs, evaluation.arms, newest).points
    last = points.iloc[-1]
    assert last["day"] == newest < h.schedule.pilot.end
    assert (last["n_pilot"], last["n_control"]) == (final.n_pilot, final.n_control)
    np.testing.assert_allclose(
        [last["estimate"], last["ci_low"], last["ci_high"], last["p_value"]],
        [final.value, final.ci_low, final.ci_high, final.p_value],
        rtol=1e-9,
    )
    # Early days of data narrow down to the final interval.
    widths = (points["ci_high"] - points["ci_low"]).to_numpy()
    assert widths[0] > widths[-1]


def test_a_long_pilot_is_recomputed_weekly_up_to_its_last_day() -> None:
    pilot_period = Period(start=date(2026, 1, 1), end=date(2026, 6, 30))
    cuts, step = cut_days(pilot_period, date(2026, 5, 2))
    assert step == "week" and len(cuts) <= 90 and cuts[-1] == date(2026, 5, 2)
    assert cuts[0] == date(2026, 1, 7)
    assert all(b - a == timedelta(days=7) for a, b in itertools.pairwise(cuts[:-1]))
    short, step = cut_days(pilot_period, date(2026, 1, 31))
    assert step == "day" and len(short) == 31
