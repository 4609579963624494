"""Synthetic control for one treated series: weights, placebos in space, conformal inference.

The weights are the demeaned synthetic control (Doudchenko & Imbens 2016, Ferman & Pinto
2021): non-negative donor weights summing to one that best match the treated series after
each series loses its fitting-period mean, so a treated unit whose level lies outside the
donors' range is still matched on its movements. On the demeaned series this is Abadie's
synthetic control with the pre-period outcomes as predictors and equal V, which is what
`pysyncon.Synth` fits given those series and that V (tests/test_unit_pilots.py compares).

Inference is Chernozhukov, Wüthrich & Zhu (2021): under H0 "the effect is θ in every post
period" the series minus θ is refitted on all periods and the post block's mean absolute
residual is ranked among every cyclic block of the same length; the confidence set holds
the θ not rejected.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize

GRID_POINTS = 13
BISECTIONS = 8
WIDENINGS = 6


def simplex_weights(donors: np.ndarray, target: np.ndarray) -> np.ndarray:
    """argmin ‖target − donors·w‖² over w ≥ 0, Σw = 1 (`donors` periods × units).

    NNLS with the sum constraint as one heavily weighted row finds the support; the
    equality-constrained least squares on that support then makes the optimum exact.
    """
    k = donors.shape[1]
    heavy = 1e4 * max(float(np.abs(donors).max()), float(np.abs(target).max()), 1.0)
    w, _ = optimize.nnls(np.vstack([donors, np.full(k, heavy)]), np.append(target, heavy))
    support = w > 0
    return _polished(donors, target, support) if support.any() else np.full(k, 1 / k)


def _polished(donors: np.ndarray, target: np.ndarray, support: np.ndarray) -> np.ndarray:
    """Exact least squares with Σw = 1 on `support` (KKT system), other weights 0."""
    a = donors[:, support]
    m = a.shape[1]
    kkt = np.zeros((m + 1, m + 1))
    kkt[:m, :m], kkt[:m, m], kkt[m, :m] = 2 * a.T @ a, 1.0, 1.0
    rhs = np.append(2 * a.T @ target, 1.0)
    try:
        solution = np.linalg.solve(kkt, rhs)[:m]
    except np.linalg.LinAlgError:  # collinear donors: any least-squares optimum will do
        solution = np.linalg.lstsq(kkt, rhs, rcond=None)[0][:m]
    w = np.zeros(donors.shape[1])
    w[support] = np.clip(solution, 0, None)
    return w / w.sum()


@dataclass(frozen=True)
class Fit:
    """Donor `weights`, the `intercept` (treated minus synthetic fitting-period means) and
    the `gap` (treated − synthetic − intercept) in every period."""

    weights: np.ndarray
    intercept: float
    gap: np.ndarray


def fit(treated: np.ndarray, donors: np.ndarray, rows: np.ndarray) -> Fit:
    """Demeaned synthetic control of `treated` (periods) from `donors` (periods × units),
    fitted on the periods where `rows` is true."""
    y_mean, d_mean = treated[rows].mean(), donors[rows].mean(axis=0)
    w = simplex_weights(donors[rows] - d_mean, treated[rows] - y_mean)
    intercept = float(y_mean - d_mean @ w)
    return Fit(w, intercept, treated - intercept - donors @ w)


def rmspe(gap: np.ndarray) -> float:
    """Root mean squared prediction error of a gap series."""
    return float(np.sqrt(np.mean(gap**2)))


def placebo_gaps(treated: np.ndarray, donors: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Gap series (first row the treated, then each donor as a placebo with the other donors
    as its pool, Abadie, Diamond & Hainmueller 2010), each fitted on `rows`: series × periods."""
    series = np.column_stack([treated, donors])
    gaps = np.empty((series.shape[1], series.shape[0]))
    for i in range(series.shape[1]):
        pool = np.delete(series, [0, i] if i else [0], axis=1)
        gaps[i] = fit(series[:, i], pool, rows).gap
    return gaps


def rmspe_ratios(gaps: np.ndarray, pre: np.ndarray) -> np.ndarray:
    """Post/pre RMSPE ratio of each gap series (rows of `placebo_gaps` fitted on `pre`)."""
    post = np.sqrt(np.mean(gaps[:, ~pre] ** 2, axis=1))
    return post / np.maximum(np.sqrt(np.mean(gaps[:, pre] ** 2, axis=1)), 1e-12)


def conformal_p(treated: np.ndarray, donors: np.ndarray, pre: np.ndarray, theta: float) -> float:
    """p-value of H0 "the effect is `theta` in every post period": the post block's mean
    absolute residual ranked among all cyclic blocks of its length (moving-block
    permutations, q = 1)."""
    adjusted = treated - theta * (~pre)
    u = np.abs(fit(adjusted, donors, np.ones_like(pre)).gap)
    length, starts = int((~pre).sum()), int(pre.sum())
    cumulative = np.concatenate([[0.0], np.cumsum(np.concatenate([u, u]))])
    blocks = cumulative[length : length + u.size] - cumulative[: u.size]
    observed = blocks[starts]
    return float(np.mean(blocks >= observed - 1e-12 * max(observed, 1.0)))


def confidence_set(
    treated: np.ndarray, donors: np.ndarray, pre: np.ndarray, estimate: float, alpha: float
) -> tuple[float, float]:
    """Hull of the effects `conformal_p` does not reject at `alpha`: a grid around
    `estimate`, widened while its ends are still accepted (±inf past that), each end then
    bisected. NaN bounds when nothing is accepted."""
    scale = max(rmspe(fit(treated, donors, pre).gap[pre]), 1e-9)
    for _ in range(WIDENINGS):
        grid = estimate + np.linspace(-6, 6, GRID_POINTS) * scale
        accepted = np.array([conformal_p(treated, donors, pre, g) > alpha for g in grid])
        if not accepted.any():
            return float("nan"), float("nan")
        if not (accepted[0] or accepted[-1]):
            break
        scale *= 4
    else:
        return -np.inf, np.inf
    first, last = np.flatnonzero(accepted)[[0, -1]]
    low = _edge(treated, donors, pre, alpha, grid[first - 1], grid[first])
    high = _edge(treated, donors, pre, alpha, grid[last + 1], grid[last])
    return low, high


def _edge(treated: np.ndarray, donors: np.ndarray, pre: np.ndarray, alpha: float,
          rejected: float, accepted: float) -> float:  # fmt: skip
    """The accepted end of [rejected, accepted] after bisecting the step of p(θ) > alpha."""
    for _ in range(BISECTIONS):
        middle = (rejected + accepted) / 2
        if conformal_p(treated, donors, pre, middle) > alpha:
            accepted = middle
        else:
            rejected = middle
    return float(accepted)
