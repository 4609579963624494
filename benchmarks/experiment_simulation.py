"""Simulated pilots with a known truth, run through cxloop's own estimators and tests.

Each check returns a `Rate` (hits out of runs, with a Wilson 95% interval): false adopts of
A/A pilots under daily looks, power at the reported MDE (DiD, CUPED, the sequential test),
coverage of planted effects (FRT −30%, NPS +8, a baseline-free −50%), and adoptions of
pilots whose guardrail is truly at twice its margin (or unharmed). Customer-level pilots are
vectorised across runs: each run's arms become `Moments` arrays that `regression_adjusted` and the
always-valid test take whole. DiD runs call `tasks.experiments.did` per run.

Small runs back `tests/test_experiment_simulation.py`; `python -m
benchmarks.experiment_simulation` runs the larger ones the README quotes.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
from scipy import optimize, stats

from tasks.experiments import (
    Moments,
    always_valid,
    always_valid_p,
    critical_multiple,
    did,
    noninferiority,
    regression_adjusted,
    tuned_tau2,
)
from tasks.hypotheses import Period

ALPHA = 0.05
DAYS = 30
BASE = Period(start=date(2026, 9, 1), end=date(2026, 9, 30))
PILOT = Period(start=date(2026, 10, 1), end=date(2026, 10, 30))


@dataclass(frozen=True)
class Rate:
    """`hits` out of `runs`, with the Wilson 95% interval."""

    name: str
    hits: int
    runs: int

    @property
    def share(self) -> float:
        return self.hits / self.runs

    @property
    def wilson(self) -> tuple[float, float]:
        from statsmodels.stats.proportion import proportion_confint

        low, high = proportion_confint(self.hits, self.runs, alpha=0.05, method="wilson")
        return float(low), float(high)

    def __str__(self) -> str:
        low, high = self.wilson
        return f"{self.name}: {self.share:.1%} of {self.runs:,} (Wilson 95% {low:.1%} … {high:.1%})"


@dataclass(frozen=True)
class World:
    """Customer-level pilots, runs × customers per arm: `x` baseline means, `y` pilot-period
    means (the pilot arm's carry the planted effect), `day` each customer's pilot-period day."""

    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    day: dict[str, np.ndarray]

    def moments(self, last_day: int = DAYS) -> tuple[Moments, Moments]:
        """Each arm's `Moments` over the customers seen by `last_day`, one entry per run."""
        found = []
        for arm in ("pilot", "control"):
            seen = self.day[arm] <= last_day
            x, y = self.x[arm] * seen, self.y[arm] * seen
            found.append(Moments(seen.sum(-1), y.sum(-1), (y * y).sum(-1), x.sum(-1),
                                 (x * x).sum(-1), (x * y).sum(-1)))  # fmt: skip
        return found[0], found[1]

    def daily(self) -> tuple[Moments, Moments]:
        """`moments` after each day: fields shaped runs × days."""
        found = []
        for arm in ("pilot", "control"):
            seen = (self.day[arm][..., None] <= np.arange(1, DAYS + 1)).astype(float)
            x, y = self.x[arm], self.y[arm]
            sums = [np.einsum("rc,rcd->rd", v, seen) for v in (np.ones_like(x), y, y * y, x,
                                                                x * x, x * y)]  # fmt: skip
            found.append(Moments(*sums))
        return found[0], found[1]

    def frame(self, run: int) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Run `run` as observations (`customer_id`, `at`, `value`: one baseline and one
        pilot-period row per customer) and arms, for the pandas estimators."""
        rows, arms = [], []
        for arm in ("pilot", "control"):
            ids = [f"{arm[0]}{i}" for i in range(self.x[arm].shape[1])]
            at = pd.Timestamp(PILOT.start) + pd.to_timedelta(self.day[arm][run] - 1, unit="D")
            rows.append(pd.DataFrame({"customer_id": ids, "at": pd.Timestamp(BASE.start),
                                      "value": self.x[arm][run]}))  # fmt: skip
            rows.append(pd.DataFrame({"customer_id": ids, "at": at, "value": self.y[arm][run]}))
            arms.append(pd.DataFrame({"customer_id": ids, "arm": arm}))
        return pd.concat(rows, ignore_index=True), pd.concat(arms, ignore_index=True)


def normal_world(rng: np.random.Generator, runs: int, customers: int, effect: float,
                 rho: float = 0.6) -> World:  # fmt: skip
    """Unit-variance customer means, baseline and pilot period correlated `rho`; the pilot
    arm's pilot-period means shifted by `effect`."""
    x, y, day = {}, {}, {}
    for arm, shift in (("pilot", effect), ("control", 0.0)):
        level = rng.normal(size=(runs, customers))
        x[arm] = np.sqrt(rho) * level + np.sqrt(1 - rho) * rng.normal(size=(runs, customers))
        y[arm] = np.sqrt(rho) * level + np.sqrt(1 - rho) * rng.normal(size=(runs, customers))
        y[arm] += shift
        day[arm] = rng.integers(1, DAYS + 1, size=(runs, customers))
    return World(x, y, day)


def frt_world(rng: np.random.Generator, runs: int, customers: int, factor: float,
              baseline: bool = True, tickets: int = 2) -> World:  # fmt: skip
    """FRT hours, log-normal per ticket around a customer's own level, `tickets` per customer
    and period; the pilot multiplies its pilot-period FRT by `factor` (ratio of means − 1 is
    `factor` − 1). Without `baseline` every baseline mean is 0: no customer has one."""
    x, y, day = {}, {}, {}
    for arm, scale in (("pilot", factor), ("control", 1.0)):
        level = rng.normal(np.log(4.0), 0.6, size=(runs, customers, 1))
        pre = np.exp(level + rng.normal(0, 0.8, size=(runs, customers, tickets))).mean(-1)
        post = np.exp(level + rng.normal(0, 0.8, size=(runs, customers, tickets))).mean(-1)
        x[arm], y[arm] = (pre if baseline else np.zeros_like(pre)), post * scale
        day[arm] = rng.integers(1, DAYS + 1, size=(runs, customers))
    return World(x, y, day)


NPS_CUTS = (-0.5, 0.6)  # latent score below the first: detractor, above the second: promoter


def _nps(shift: float) -> float:
    """NPS in points of a latent N(shift, 1) cut at `NPS_CUTS`."""
    detractor = stats.norm.cdf(NPS_CUTS[0] - shift)
    promoter = stats.norm.sf(NPS_CUTS[1] - shift)
    return 100 * (promoter - detractor)


def nps_world(rng: np.random.Generator, runs: int, customers: int,
              points: float) -> tuple[World, float]:  # fmt: skip
    """One NPS answer per customer and period (−100 / 0 / +100) from a latent score shared
    across periods; the pilot shifts its latent score so NPS rises by `points` exactly.
    Returns the world and that shift's true effect in points."""
    shift = optimize.brentq(lambda s: _nps(s) - _nps(0.0) - points, -2, 2)
    x, y, day = {}, {}, {}
    for arm, move in (("pilot", shift), ("control", 0.0)):
        level = rng.normal(0, np.sqrt(0.5), size=(runs, customers))
        scores = [level + rng.normal(0, np.sqrt(0.5), size=(runs, customers)) for _ in "xy"]
        scores[1] = scores[1] + move
        points_of = [np.select([s < NPS_CUTS[0], s > NPS_CUTS[1]], [-100.0, 100.0], 0.0)
                     for s in scores]  # fmt: skip
        x[arm], y[arm] = points_of
        day[arm] = rng.integers(1, DAYS + 1, size=(runs, customers))
    return World(x, y, day), _nps(shift) - _nps(0.0)


def aa_false_adopts(runs: int = 1000, customers: int = 200, seed: int = 1) -> tuple[Rate, Rate]:
    """A/A pilots evaluated after every day: adopted (significant in the expected direction
    at any look) by the always-valid test, and by fixed-horizon p-values for contrast."""
    world = normal_world(np.random.default_rng(seed), runs, customers, 0.0)
    coef, se = regression_adjusted(*world.daily(), relative=False)
    share = np.arange(1, DAYS + 1) / DAYS
    p = always_valid_p(coef, se, tuned_tau2(se, share, ALPHA))
    naive = 2 * stats.norm.sf(np.abs(coef) / se)
    sequential = ((p < ALPHA) & (coef > 0)).any(axis=1)
    fixed = ((naive < ALPHA) & (coef > 0)).any(axis=1)
    name = "A/A false adopts, {}, daily looks"
    return (
        Rate(name.format("always-valid"), int(sequential.sum()), runs),
        Rate(name.format("fixed-horizon p"), int(fixed.sum()), runs),
    )


def _reported_mde(world: World, analysis: str, sequential: bool) -> float:
    """The MDE the evaluation of run 0 reports (effect 0), for the analysis and test given."""
    from tasks.experiments import cuped

    obs, arms = world.frame(0)
    estimate = (cuped if analysis == "cuped" else did)("m", obs, arms, BASE, PILOT)
    if sequential:
        estimate = always_valid(estimate, ALPHA, tuned_tau2(estimate.se, 1.0, ALPHA))
    return estimate.mde(ALPHA)


def cuped_power(runs: int = 1000, customers: int = 200, seed: int = 2,
                sequential: bool = False) -> Rate:  # fmt: skip
    """Pilots with the MDE a null pilot's evaluation reports planted, adopted at the pilot's
    end by CUPED (fixed-horizon, or the always-valid test)."""
    rng = np.random.default_rng(seed)
    mde = _reported_mde(normal_world(rng, 1, customers, 0.0), "cuped", sequential)
    coef, se = regression_adjusted(*normal_world(rng, runs, customers, mde).moments(), False)
    if sequential:
        adopted = (always_valid_p(coef, se, tuned_tau2(se, 1.0, ALPHA)) < ALPHA) & (coef > 0)
    else:
        adopted = coef / se > stats.norm.ppf(1 - ALPHA / 2)
    test = "always-valid" if sequential else "fixed-horizon"
    return Rate(f"power at the reported MDE, CUPED, {test}", int(adopted.sum()), runs)


def did_power(runs: int = 500, customers: int = 200, seed: int = 3,
              sequential: bool = False) -> Rate:  # fmt: skip
    """`cuped_power` for difference-in-differences, `tasks.experiments.did` per run."""
    rng = np.random.default_rng(seed)
    mde = _reported_mde(normal_world(rng, 1, customers, 0.0), "did", sequential)
    world = normal_world(rng, runs, customers, mde)
    adopted = 0
    for run in range(runs):
        estimate = did("m", *world.frame(run), BASE, PILOT)
        if sequential:
            estimate = always_valid(estimate, ALPHA, tuned_tau2(estimate.se, 1.0, ALPHA))
        adopted += estimate.p_value < ALPHA and estimate.value > 0
    test = "always-valid" if sequential else "fixed-horizon"
    return Rate(f"power at the reported MDE, DiD, {test}", adopted, runs)


def _covered(name: str, coef: np.ndarray, se: np.ndarray, truth: float) -> tuple[Rate, Rate]:
    half_fixed = stats.norm.ppf(1 - ALPHA / 2) * se
    half_seq = critical_multiple(se, tuned_tau2(se, 1.0, ALPHA), ALPHA) * se
    return tuple(
        Rate(f"{name}, {test}", int((np.abs(coef - truth) <= half).sum()), len(coef))
        for test, half in (("fixed-horizon", half_fixed), ("always-valid", half_seq))
    )


def frt_coverage(runs: int = 1000, customers: int = 300, seed: int = 4) -> tuple[Rate, Rate]:
    """Coverage of a planted −30% FRT (ratio of means, CUPED) by the 95% CIs."""
    world = frt_world(np.random.default_rng(seed), runs, customers, 0.7)
    coef, se = regression_adjusted(*world.moments(), relative=True)
    return _covered("coverage of FRT −30%, CUPED", coef, se, -0.3)


def nps_coverage(runs: int = 1000, customers: int = 300, seed: int = 5) -> tuple[Rate, Rate]:
    """Coverage of a planted +8 NPS points (CUPED) by the 95% CIs."""
    world, truth = nps_world(np.random.default_rng(seed), runs, customers, 8.0)
    coef, se = regression_adjusted(*world.moments(), relative=False)
    return _covered("coverage of NPS +8, CUPED", coef, se, truth)


def baseline_free_coverage(runs: int = 1000, customers: int = 300,
                           seed: int = 6) -> tuple[Rate, Rate]:  # fmt: skip
    """Coverage of a planted −50% FRT for customers without a baseline: the regression
    adjustment falls back to the post-period difference."""
    world = frt_world(np.random.default_rng(seed), runs, customers, 0.5, baseline=False)
    coef, se = regression_adjusted(*world.moments(), relative=True)
    return _covered("coverage of FRT −50% without baseline", coef, se, -0.5)


def guardrail_adoptions(runs: int = 1000, customers: int = 300, seed: int = 7,
                        margin: float = 0.3, harm: float = 2.0) -> Rate:  # fmt: skip
    """Pilots whose primary metric clearly improves while a guardrail metric (harm: a drop)
    truly drops by `harm` × `margin`, evaluated after every day: adopted when the primary is
    significant and the guardrail's always-valid CI clears the margin at the same look."""
    rng = np.random.default_rng(seed)
    share = np.arange(1, DAYS + 1) / DAYS
    coef, se = regression_adjusted(*normal_world(rng, runs, customers, 0.5).daily(), False)
    primary = (always_valid_p(coef, se, tuned_tau2(se, share, ALPHA)) < ALPHA) & (coef > 0)
    g_coef, g_se = regression_adjusted(
        *normal_world(rng, runs, customers, -harm * margin).daily(), False
    )
    holds = noninferiority(g_coef, g_se, -margin, tuned_tau2(g_se, share, ALPHA)) < ALPHA
    adopted = int((primary & holds).any(axis=1).sum())
    return Rate(f"adopted with a guardrail at {harm:g}× its margin", adopted, runs)


def main() -> None:
    """The larger runs the README quotes, one line each."""
    checks = [
        *aa_false_adopts(runs=10_000),
        cuped_power(runs=4_000),
        cuped_power(runs=4_000, sequential=True),
        did_power(runs=1_000),
        did_power(runs=1_000, sequential=True),
        *frt_coverage(runs=5_000),
        *nps_coverage(runs=5_000),
        *baseline_free_coverage(runs=5_000),
        guardrail_adoptions(runs=5_000),
        guardrail_adoptions(runs=5_000, harm=0.0),
    ]
    for rate in checks:
        print(f"- {rate}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
