"""Sufficient statistics of a mean, `Moments(n, sum, sum_sq)`, and the log scale of a metric.

After gbstats' `SampleMeanStatistic`: a sample is kept as its count, sum and sum of squares,
so samples pool by addition, a subsample is taken out by subtraction, and the mean, the
sample variance and the standard error follow. The fields are numbers for one sample, or
Series aligned on a group index for a table of them (`Moments.by`); every operation works
on both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from connectors.errors import HypothesisError

Z95 = 1.959963984540054

Number = float | pd.Series | np.ndarray
# The squared values' column while grouping, named to clash with no column of the caller.
SQUARED = "__squared__"


@dataclass(frozen=True)
class Moments:
    """Count, sum and sum of squares of a sample's non-missing values."""

    n: Number
    sum: Number
    sum_sq: Number

    @classmethod
    def of(cls, values: pd.Series) -> Moments:
        """The moments of `values`, NaN left out."""
        known = values.dropna().to_numpy(dtype=float)
        return cls(n=len(known), sum=float(known.sum()), sum_sq=float((known**2).sum()))

    @classmethod
    def by(cls, frame: pd.DataFrame, by: str | Sequence[str], value: str = "value") -> Moments:
        """The moments of `value` per group of `by` (NaN left out), as Series on the groups;
        a group whose values are all NaN has `n` 0."""
        return cls.from_frame(moments_table(frame, by, value))

    @classmethod
    def from_frame(cls, table: pd.DataFrame) -> Moments:
        """The moments in `table`'s `n`, `sum` and `sum_sq` columns, one sample per row."""
        return cls(n=table["n"], sum=table["sum"], sum_sq=table["sum_sq"])

    @property
    def mean(self) -> Number:
        """The sample mean; NaN where `n` is 0."""
        n, total, _ = self._arrays()
        return self._shaped(_ratio(total, n, n > 0))

    @property
    def variance(self) -> Number:
        """The sample variance (ddof=1); NaN where `n` < 2.

        Rounding can leave a constant sample a hair below 0; it is 0.
        """
        return self._shaped(self._variance())

    @property
    def se(self) -> Number:
        """The standard error of the mean, √(variance / n); NaN where `n` < 2."""
        n = self._arrays()[0]
        return self._shaped(np.sqrt(_ratio(self._variance(), n, n > 1)))

    def ci(self, z: float = Z95) -> tuple[Number, Number]:
        """The normal CI (low, high) of the mean, 95% by default."""
        return normal_ci(self.mean, self.se, z)

    def __add__(self, other: Moments) -> Moments:
        """The pooled sample; a group one side lacks counts as empty there."""
        return self._combined(other, 1)

    def __sub__(self, other: Moments) -> Moments:
        """The sample without the subsample `other` (e.g. everyone but a group's members)."""
        return self._combined(other, -1)

    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # On arrays, not Series: a table's handful of groups costs pandas more per operation
        # than the arithmetic itself.
        return tuple(np.asarray(x, dtype=float) for x in (self.n, self.sum, self.sum_sq))

    def _variance(self) -> np.ndarray:
        n, total, squares = self._arrays()
        centred = np.maximum(squares - _ratio(total**2, n, n > 0), 0.0)
        return _ratio(centred, n - 1, n > 1)

    def _shaped(self, values: np.ndarray) -> Number:
        """`values` as the fields are: a Series on their groups, or a number."""
        if isinstance(self.n, pd.Series):
            return pd.Series(values, index=self.n.index)
        return values if isinstance(self.n, np.ndarray) else float(values)

    def _combined(self, other: Moments, sign: int) -> Moments:
        return Moments(
            n=_plus(self.n, other.n, sign),
            sum=_plus(self.sum, other.sum, sign),
            sum_sq=_plus(self.sum_sq, other.sum_sq, sign),
        )


def moments_table(
    frame: pd.DataFrame, by: str | Sequence[str], value: str = "value"
) -> pd.DataFrame:
    """Per group of `by`: `n`, `sum` and `sum_sq` of the non-NaN `value`s, and `rows`, all
    the group's rows (NaN included).

    The keys are grouped once (the costly step) and every column is read from that grouping.
    """
    keys = [by] if isinstance(by, str) else list(by)
    values = frame[value].astype(float)
    grouped = frame.assign(**{value: values, SQUARED: values**2}).groupby(keys, observed=True)
    known, rows = grouped[value], grouped.size()
    # Plain arrays on the groups' one index: aligning four equal indexes costs as much as a sum.
    columns = {
        "n": known.count(),
        "sum": known.sum(),
        "sum_sq": grouped[SQUARED].sum(),
        "rows": rows,
    }
    return pd.DataFrame({name: column.to_numpy() for name, column in columns.items()}, rows.index)


def normal_ci(estimate: Number, se: Number, z: float = Z95) -> tuple[Number, Number]:
    """The normal CI (low, high) of `estimate` with standard error `se`, 95% by default."""
    return estimate - z * se, estimate + z * se


def log_values(values: pd.Series, metric: str, floor: float | None = None) -> pd.Series:
    """The natural log of `metric`'s `values`, for an estimate on the log scale (a ratio of
    geometric means).

    A value of 0 or less has no log: it raises `HypothesisError`, unless `floor` (> 0) first
    lifts such values to it, where a level is only shown, not tested.
    """
    if floor is not None:
        return np.log(values.clip(lower=floor))
    if (values <= 0).any():
        raise HypothesisError(
            f"{metric}: the log-scale estimand needs positive values, but "
            f"{int((values <= 0).sum()):,} are 0 or less; use the ratio of means."
        )
    return np.log(values)


def _ratio(top: np.ndarray, bottom: np.ndarray, defined: np.ndarray) -> np.ndarray:
    """`top / bottom` where `defined`, else NaN."""
    return np.divide(top, bottom, out=np.full(np.shape(top), np.nan), where=defined)


def _plus(a: Number, b: Number, sign: int) -> Number:
    if isinstance(a, pd.Series) and isinstance(b, pd.Series):
        return a.add(sign * b, fill_value=0)
    return a + sign * b
