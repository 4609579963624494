"""The pilot's effect by segment: each group's estimate is the pilot's own estimator on that
group, Holm's adjustment matches statsmodels, an interval excludes zero exactly when its
group is flagged, and an A/A pilot flags any group in at most α of runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from tasks.experiments import assignments, cuped, did, estimand_of
from tasks.hypotheses import Hypothesis, load_hypothesis
from tasks.segment_effects import MIN_PER_ARM, holm_levels, segment_effects

SEGMENTS = ("s0", "s1", "s2", "s3")
PILOT = """\
id: segment-pilot
title: A pilot read by segment
owner: cx@example.com
pain_point: ticket:delivery
change: Something changes for the pilot arm
metric: {name: METRIC, direction: increase, expected_effect: EFFECT}
assignment: {method: hash, pilot_share: 0.5, salt: segments}
schedule:
  baseline: {start: 2026-09-01, end: 2026-09-30}
  pilot: {start: 2026-10-01, end: 2026-10-31}
decision: {alpha: 0.05, min_per_arm: 50ANALYSIS}
"""


def pilot(
    tmp_path: Path, metric: str = "csat", effect: str = "+0.3", analysis: str = ""
) -> Hypothesis:
    """A hash-split pilot of `metric` (CUPED, or `analysis`)."""
    text = PILOT.replace("METRIC", metric).replace("EFFECT", effect)
    text = text.replace("ANALYSIS", f", analysis: {analysis}" if analysis else "")
    path = tmp_path / "segment-pilot.yaml"
    path.write_text(text, encoding="utf-8")
    return load_hypothesis(path)


def company(
    seed: int, customers: int = 1200, sizes: tuple[float, ...] = ()
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(customers with a `segment` (shares `sizes`, equal by default) and a `device`, their
    observations with `month` 0 or 1): one to three positive values a customer in September
    and in October, each customer's own level carried across both."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"C{seed}-{i}" for i in range(customers)])
    p = np.asarray(sizes or [1 / len(SEGMENTS)] * len(SEGMENTS))
    people = pd.DataFrame(
        {
            "customer_id": ids,
            "segment": rng.choice(SEGMENTS[: len(p)], customers, p=p / p.sum()),
            "device": rng.choice(["mobile", "desktop"], customers),
        }
    )
    level = rng.normal(3.0, 0.6, customers)
    per = rng.integers(1, 4, (2, customers))
    rows = []
    for month, start in enumerate(("2026-09-01", "2026-10-01")):
        who = np.repeat(np.arange(customers), per[month])
        at = pd.Timestamp(start) + pd.to_timedelta(rng.uniform(0, 30, len(who)), unit="D")
        rows.append(pd.DataFrame({"who": who, "at": at, "month": month}))
    obs = pd.concat(rows, ignore_index=True)
    obs["value"] = level[obs["who"]] + rng.normal(0, 0.8, len(obs))
    obs["customer_id"] = ids[obs["who"]]
    return people, obs


def _armed(h: Hypothesis, people: pd.DataFrame, obs: pd.DataFrame, planted: float) -> tuple:
    """(arms of `h`, observations) with `planted` added to pilot customers of s0 in October."""
    arms = assignments(h, people)
    if planted:
        arm = obs["customer_id"].map(arms.set_index("customer_id")["arm"])
        segment = obs["customer_id"].map(people.set_index("customer_id")["segment"])
        hit = (arm == "pilot") & (segment == "s0") & (obs["month"] == 1)
        obs = obs.assign(value=obs["value"] + planted * hit)
    return arms, obs[["customer_id", "at", "value"]]


def test_holm_levels_step_down_and_hold_at_the_first_group_holm_keeps() -> None:
    p = [0.045, 0.001, 0.5, 0.04, float("nan")]
    levels = holm_levels(p, 0.05)
    # Ranks: 0.001 (α/4), then 0.04 ≥ α/3 stops Holm: it and every larger p stay at α/3.
    np.testing.assert_allclose(levels[:4], [0.05 / 3, 0.05 / 4, 0.05 / 3, 0.05 / 3])
    assert np.isnan(levels[4])
    adjusted = multipletests(p[:4], alpha=0.05, method="holm")
    assert ((np.array(p[:4]) < levels[:4]) == adjusted[0]).all()
    everything = holm_levels([0.001, 0.002, 0.003], 0.05)
    np.testing.assert_allclose(everything, [0.05 / 3, 0.05 / 2, 0.05])


@pytest.mark.parametrize("analysis", ["cuped", "did"])
def test_each_group_is_the_pilots_estimator_on_its_customers_with_holm_from_statsmodels(
    tmp_path: Path, analysis: str
) -> None:
    h = pilot(tmp_path, analysis=analysis)
    people, raw = company(3)
    arms, obs = _armed(h, people, raw, planted=0.6)
    table = segment_effects(h, obs, arms, people, ["segment", "device"])
    rows = table.rows.set_index(["dimension", "group"])
    assert table.family == 6 and rows["estimated"].all()
    baseline, period = h.schedule.baseline, h.schedule.pilot
    estimator = cuped if analysis == "cuped" else did
    for (dimension, group), row in rows.iterrows():
        mine = arms[arms["customer_id"].isin(people.loc[people[dimension] == group, "customer_id"])]
        own = estimator("csat", obs, mine, baseline, period, estimand_of(h.metric), 0.05)
        assert row["estimate"] == pytest.approx(own.value, rel=1e-12)
        assert row["p_value"] == pytest.approx(own.p_value, rel=1e-12)
        z = stats.norm.ppf(1 - row["level"] / 2)
        assert row["ci_high"] - row["ci_low"] == pytest.approx(2 * z * own.se, rel=1e-9)
        assert (row["n_pilot"], row["n_control"]) == (own.n_pilot, own.n_control)
    reference = multipletests(rows["p_value"], alpha=0.05, method="holm")
    np.testing.assert_allclose(rows["p_adjusted"], reference[1], rtol=1e-12)
    assert (rows["flagged"] == reference[0]).all()
    excludes_zero = (rows["ci_low"] > 0) | (rows["ci_high"] < 0)
    assert (excludes_zero == rows["flagged"]).all()
    assert rows.loc[("segment", "s0"), "flagged"]  # the planted effect is found
    assert not rows.loc[[("segment", s) for s in SEGMENTS[1:]], "flagged"].any()


def test_a_relative_effect_by_segment_is_a_ratio_of_means(tmp_path: Path) -> None:
    h = pilot(tmp_path, metric="frt_hours", effect="+20%")
    people, raw = company(4)
    arms, obs = _armed(h, people, raw, planted=0.0)
    rows = segment_effects(h, obs, arms, people).rows.set_index("group")
    mine = arms[arms["customer_id"].isin(people.loc[people["segment"] == "s1", "customer_id"])]
    own = cuped("frt_hours", obs, mine, h.schedule.baseline, h.schedule.pilot, "ratio", 0.05)
    assert own.relative and rows.loc["s1", "estimate"] == pytest.approx(own.value, rel=1e-12)


def test_a_group_with_too_few_customers_shows_too_few_data_and_leaves_the_family(
    tmp_path: Path,
) -> None:
    h = pilot(tmp_path)
    people, raw = company(5, sizes=(0.32, 0.32, 0.32, 0.04))
    arms, obs = _armed(h, people, raw, planted=0.0)
    rows = segment_effects(h, obs, arms, people).rows.set_index("group")
    small = rows.loc["s3"]
    assert min(small["n_pilot"], small["n_control"]) < MIN_PER_ARM
    assert not small["estimated"] and np.isnan(small["estimate"]) and not small["flagged"]
    assert rows.loc[["s0", "s1", "s2"], "estimated"].all()
    assert rows["level"].dropna().min() == pytest.approx(0.05 / 3)  # a family of three


def test_an_aa_pilot_flags_any_segment_in_at_most_alpha_of_200_runs(tmp_path: Path) -> None:
    h = pilot(tmp_path)
    any_flagged, any_unadjusted, found = [], [], []
    for seed in range(200):
        people, raw = company(100 + seed, customers=600)
        arms, obs = _armed(h, people, raw, planted=0.0)
        rows = segment_effects(h, obs, arms, people).rows
        assert rows["estimated"].all()
        any_flagged.append(rows["flagged"].any())
        any_unadjusted.append((rows["p_value"] < 0.05).any())
        if seed < 30:
            arms, obs = _armed(h, people, raw, planted=0.8)
            found.append(segment_effects(h, obs, arms, people).rows.set_index("group")["flagged"])
    assert np.mean(any_flagged) <= 0.08, np.mean(any_flagged)
    # Without the adjustment four segments would flag about 1 − 0.95⁴ ≈ 19% of A/A pilots.
    assert np.mean(any_unadjusted) >= 0.12, np.mean(any_unadjusted)
    flagged = pd.DataFrame(found)
    assert flagged["s0"].mean() >= 0.8 and flagged.drop(columns="s0").to_numpy().mean() <= 0.1
