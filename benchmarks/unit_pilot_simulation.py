"""Simulated region pilots with a known truth, run through tasks.unit_pilots.

Eight regions of customers answer on random days; each region carries its own slowly
moving shocks (AR(1) by day), the thing a customer-level test mistakes for an effect. One
region is treated. Checks return `Rate`s: A/A false positives of the unit-level analysis
beside the customer-clustered DiD on the same data, coverage of a planted effect, and
adoptions under a planted pre-trend violation.

Small runs back tests/test_unit_pilots.py; `python -m benchmarks.unit_pilot_simulation`
runs the issue's 500.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from benchmarks.experiment_simulation import Rate
from tasks import unit_pilots

REGIONS = 8
CUSTOMERS = 20
PRE = 42
POST = 14
DAYS = PRE + POST
ANSWER_SHARE = 0.5
RHO = 0.8
SHOCK_SD = 0.6
NOISE_SD = 2.0
ALPHA = 0.05
UP = 1
UNITS = tuple(f"r{r}" for r in range(REGIONS))


@dataclass(frozen=True)
class World:
    """Runs × customers × days of answers (`value`, `answered`); customer c lives in region
    c // CUSTOMERS, region 0 is treated."""

    value: np.ndarray
    answered: np.ndarray

    @property
    def runs(self) -> int:
        return self.value.shape[0]

    def cells(self) -> tuple[np.ndarray, np.ndarray]:
        """Runs × regions × days: the answers' means and counts."""
        by_region = (self.runs, REGIONS, CUSTOMERS, DAYS)
        answered = self.answered.reshape(by_region)
        n = answered.sum(2)
        return (self.value.reshape(by_region) * answered).sum(2) / n, n

    def panel(self, run: int) -> pd.DataFrame:
        """Run `run` as the unit × day panel frame (`unit`, `period`, `value`, `n`)."""
        means, n = self.cells()
        return pd.DataFrame({
            "unit": np.repeat(UNITS, DAYS), "period": np.tile(np.arange(DAYS), REGIONS),
            "value": means[run].ravel(), "n": n[run].ravel(),
        })  # fmt: skip

    def panels(self) -> list[unit_pilots.Panel]:
        """Every run's `Panel`, built from the arrays (balanced by construction)."""
        means, _ = self.cells()
        treated, pre = np.arange(REGIONS) == 0, np.arange(DAYS) < PRE
        periods = pd.RangeIndex(DAYS)
        return [unit_pilots.Panel(m, UNITS, periods, treated, pre) for m in means]


def world(seed: int, runs: int, effect: float = 0.0, trend: float = 0.0) -> World:
    """Region levels, common daily moves, AR(1) region shocks, customer levels and answer
    noise; the treated region gains `effect` from day PRE on and drifts `trend` per day."""
    rng = np.random.default_rng(seed)
    shocks = np.empty((runs, REGIONS, DAYS))
    shocks[..., 0] = rng.normal(size=(runs, REGIONS))
    for day in range(1, DAYS):
        innovation = rng.normal(size=(runs, REGIONS)) * np.sqrt(1 - RHO**2)
        shocks[..., day] = RHO * shocks[..., day - 1] + innovation
    region = (
        rng.normal(size=(runs, REGIONS, 1))
        + rng.normal(scale=0.3, size=(runs, 1, DAYS))
        + SHOCK_SD * shocks
    )
    region[:, 0, :] += trend * np.arange(DAYS) + effect * (np.arange(DAYS) >= PRE)
    customers = np.repeat(region, CUSTOMERS, axis=1) + rng.normal(
        size=(runs, REGIONS * CUSTOMERS, 1)
    )
    value = customers + rng.normal(scale=NOISE_SD, size=customers.shape)
    answered = rng.random(value.shape) < ANSWER_SHARE
    answered[:, ::CUSTOMERS, :] = True  # no empty region-day cell
    return World(value, answered)


def customer_did(w: World) -> tuple[np.ndarray, np.ndarray]:
    """Per run, cxloop's customer-level DiD (value ~ pilot + post + pilot·post by OLS on the
    answers, errors clustered by customer, statsmodels' small-sample factor, normal
    p-value): (effect, p-value). `tests/test_unit_pilots.py` checks it against
    `tasks.experiments.did`.

    The design is saturated in its four arm × period cells, so the fit is the cell means
    and a customer's score is its residual sums over all and over post answers.
    """
    pilot = np.arange(REGIONS * CUSTOMERS) < CUSTOMERS
    post = np.arange(DAYS) >= PRE
    cell = 2 * pilot[:, None] + post[None, :]
    rows = np.array([[1, 0, 0, 0], [1, 0, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=float)
    m = w.answered.astype(float)
    onehot = np.eye(4)[cell]
    counts = np.einsum("rct,ctk->rk", m, onehot)
    sums = np.einsum("rct,ctk->rk", m * w.value, onehot)
    u = m * (w.value - (sums / counts)[:, cell])
    total, late = u.sum(-1), u[..., post].sum(-1)
    scores = np.stack([total, pilot * total, late, pilot * late], axis=-1)
    bread = np.linalg.inv(np.einsum("rk,ki,kj->rij", counts, rows, rows))
    b = np.einsum("rij,rk,kj->ri", bread, sums, rows)
    clusters = (m.sum(-1) > 0).sum(-1)
    n_obs = counts.sum(-1)
    factor = clusters / (clusters - 1) * (n_obs - 1) / (n_obs - rows.shape[1])
    cov = factor[:, None, None] * bread @ np.einsum("rck,rcl->rkl", scores, scores) @ bread
    se = np.sqrt(cov[:, 3, 3])
    return b[:, 3], 2 * stats.norm.sf(np.abs(b[:, 3]) / se)


def analysed(w: World, method: str = "analyse") -> list[unit_pilots.UnitEffect]:
    """`tasks.unit_pilots.analyse` (or `unit_did`) on every run's panel."""
    run = getattr(unit_pilots, method)
    return [run(panel, ALPHA) for panel in w.panels()]


def aa_rates(runs: int, seed: int = 1, method: str = "analyse") -> tuple[Rate, Rate, Rate]:
    """A/A: the unit-level test's rejections (p < alpha), its adoptions (identified,
    significant, up), and the customer-clustered DiD's rejections on the same data."""
    w = world(seed, runs)
    results = analysed(w, method)
    _, customer_p = customer_did(w)
    return (
        Rate(f"{method} p < {ALPHA}", sum(r.p_value < ALPHA for r in results), runs),
        Rate(f"{method} adopts", sum(r.shows_effect(UP) for r in results), runs),
        Rate(f"customer-clustered DiD p < {ALPHA}", int((customer_p < ALPHA).sum()), runs),
    )


def coverage(runs: int, effect: float, seed: int = 2, method: str = "analyse") -> Rate:
    """Share of runs whose interval covers the planted `effect`."""
    results = analysed(world(seed, runs, effect=effect), method)
    return Rate(f"{method} covers {effect:+g}", sum(r.low <= effect <= r.high for r in results),
                runs)  # fmt: skip


def adoptions(runs: int, effect: float, seed: int = 4, method: str = "analyse") -> Rate:
    """Power: adoptions of a pilot that truly raises the treated region by `effect`."""
    results = analysed(world(seed, runs, effect=effect), method)
    return Rate(f"{method} adopts a true {effect:+g}", sum(r.shows_effect(UP) for r in results),
                runs)  # fmt: skip


def trend_adoptions(runs: int, trend: float, seed: int = 3, method: str = "analyse") -> Rate:
    """Adoptions when the treated region drifts up `trend` per day with no effect."""
    results = analysed(world(seed, runs, trend=trend), method)
    return Rate(f"{method} adopts a drift of {trend:+g}/day",
                sum(r.shows_effect(UP) for r in results), runs)  # fmt: skip


def main(runs: int = 500) -> None:
    for method in ("analyse", "unit_did", "synthetic"):
        for rate in aa_rates(runs, method=method):
            print(rate)
        print(coverage(runs, 1.0, method=method))
        print(adoptions(runs, 2.0, method=method))
        for trend in (0.05, 0.1, 0.2):
            print(trend_adoptions(runs, trend, method=method))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 500)
