"""`Moments` against numpy and scipy, its pooling identities, and the log scale."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from connectors.errors import HypothesisError
from tasks.moments import Moments, log_values, moments_table, normal_ci


@pytest.fixture
def sample() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    values = rng.normal(40, 25, 900)
    values[rng.random(900) < 0.1] = np.nan
    return pd.DataFrame({"g": rng.choice(["a", "b", "c"], 900), "value": values})


def test_one_sample_matches_numpy_and_scipy(sample: pd.DataFrame) -> None:
    known = sample["value"].dropna().to_numpy()
    moments = Moments.of(sample["value"])
    assert moments.n == len(known)
    assert moments.mean == pytest.approx(known.mean(), rel=1e-12)
    assert moments.variance == pytest.approx(known.var(ddof=1), rel=1e-12)
    assert moments.se == pytest.approx(stats.sem(known), rel=1e-12)
    interval = stats.norm.interval(0.95, loc=known.mean(), scale=stats.sem(known))
    assert moments.ci() == pytest.approx(interval, rel=1e-12)


def test_groups_match_pandas_per_group(sample: pd.DataFrame) -> None:
    moments = Moments.by(sample, "g")
    direct = sample.groupby("g")["value"].agg(["count", "mean", "var", "sem"])
    assert moments.n.tolist() == direct["count"].tolist()
    pd.testing.assert_series_equal(moments.mean, direct["mean"], check_names=False, rtol=1e-12)
    pd.testing.assert_series_equal(moments.variance, direct["var"], check_names=False, rtol=1e-12)
    pd.testing.assert_series_equal(moments.se, direct["sem"], check_names=False, rtol=1e-12)


def test_groups_with_one_or_no_value_have_no_variance() -> None:
    frame = pd.DataFrame({"g": ["one", "none", "two", "two"], "value": [5.0, np.nan, 1.0, 3.0]})
    moments = Moments.by(frame, ["g"])
    assert moments.n.to_dict() == {"none": 0, "one": 1, "two": 2}
    assert np.isnan(moments.mean["none"]) and moments.mean["one"] == 5.0
    assert np.isnan(moments.variance["one"]) and moments.variance["two"] == 2.0
    assert np.isnan(Moments.of(pd.Series([7.0])).se)
    assert np.isnan(Moments.of(pd.Series([], dtype=float)).mean)
    assert moments_table(frame, "g")["rows"].to_dict() == {"none": 1, "one": 1, "two": 2}


def test_a_constant_sample_has_variance_zero_despite_rounding() -> None:
    # 3 × 0.1: the sum of squares comes out a hair below sum² / n.
    moments = Moments.of(pd.Series([0.1, 0.1, 0.1]))
    assert moments.variance == 0.0 and moments.se == 0.0


def test_pooled_moments_are_the_moments_of_the_pooled_sample(sample: pd.DataFrame) -> None:
    first, second = sample.iloc[:400], sample.iloc[400:]
    pooled = Moments.of(first["value"]) + Moments.of(second["value"])
    whole = Moments.of(sample["value"])
    assert pooled.n == whole.n
    assert (pooled.mean, pooled.variance) == pytest.approx((whole.mean, whole.variance))
    # By group, a group only one side has is pooled with nothing.
    halves = Moments.by(first[first["g"] != "c"], "g") + Moments.by(second, "g")
    expected = Moments.by(pd.concat([first[first["g"] != "c"], second]), "g")
    pd.testing.assert_series_equal(halves.n, expected.n, check_dtype=False)
    pd.testing.assert_series_equal(halves.variance, expected.variance, rtol=1e-12)


def test_everyone_minus_a_group_is_the_rest(sample: pd.DataFrame) -> None:
    rest = Moments.of(sample["value"]) - Moments.by(sample, "g")
    for group in ("a", "b", "c"):
        others = Moments.of(sample.loc[sample["g"] != group, "value"])
        assert rest.n[group] == others.n
        assert rest.mean[group] == pytest.approx(others.mean, rel=1e-12)
        assert rest.se[group] == pytest.approx(others.se, rel=1e-9)


def test_normal_ci_is_symmetric_at_z() -> None:
    assert normal_ci(10.0, 2.0, z=1.5) == (7.0, 13.0)
    assert normal_ci(10.0, 2.0) == pytest.approx(stats.norm.interval(0.95, loc=10, scale=2))


def test_log_values_refuse_non_positive_values_unless_floored() -> None:
    values = pd.Series([1.0, np.e, 0.0, -2.0])
    with pytest.raises(HypothesisError, match=r"frt_hours: .* 2 are 0 or less"):
        log_values(values, "frt_hours")
    floored = log_values(values, "frt_hours", floor=1e-6)
    assert floored.tolist() == pytest.approx([0.0, 1.0, np.log(1e-6), np.log(1e-6)])
    assert log_values(values[:2], "frt_hours").tolist() == pytest.approx([0.0, 1.0])
