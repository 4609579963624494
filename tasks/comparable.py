"""What a ticket topic costs against comparable customers: a regression-adjusted impact.

The raw gap (NPS of everyone else minus NPS of those who raised the topic) mixes "this topic
hurts" with "people who contact support are less happy" and with who contacts support (new
customers more often, and they score lower anyway). One OLS of each respondent's NPS points
on an indicator per topic, an indicator for having contacted support at all, and the
customer's segment and region (one-hot) separates these: a topic's coefficient is what it
costs a customer of the same segment and region who contacted support anyway. Regression
over matching because topics overlap (one customer, several topics) and every topic is
estimated in one fit, so the key-driver view and the ranking read the same numbers.

The contact effect is told apart from the topics' through contacts without a topic and
customers with several topics; where the data cannot tell them apart (every contact has
exactly one topic) the contact term is left out and `contact_adjusted` says so.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from tasks.identity import is_in
from tasks.moments import Z95

CONTACTED = "contacted support"


def design(
    points: pd.Series, pairs: pd.DataFrame, covariates: pd.DataFrame
) -> tuple[pd.DataFrame, list[str]]:
    """The regression's design matrix (one row per respondent of `points`) and the topics.

    `pairs` holds (`customer_id`, `topic`) per ticket (topic NaN for an untagged contact);
    `covariates` one row per customer (index `customer_id`) with the columns to adjust for.
    Columns that the others already explain (a constant segment, a contact term every topic
    adds up to) are dropped, in the order topics, contact, covariates.
    """
    ids = pd.Index(points.index)
    tagged = pairs.dropna(subset=["topic"])
    topic, topics = pd.factorize(tagged["topic"], sort=True)
    row = ids.get_indexer(tagged["customer_id"])
    matrix = np.zeros((len(ids), len(topics)))
    matrix[row[row >= 0], topic[row >= 0]] = 1.0
    columns = {"const": np.ones(len(ids))}
    columns |= {f"topic:{t}": matrix[:, j] for j, t in enumerate(topics)}
    columns[CONTACTED] = is_in(pd.Series(ids), pairs["customer_id"].dropna()).astype(float)
    extra = covariates.reindex(ids)
    dummies = pd.get_dummies(extra, columns=list(extra.columns), drop_first=True, dtype=float)
    frame = pd.concat([pd.DataFrame(columns, index=ids), dummies.set_axis(ids)], axis=1)
    return frame[independent_columns(frame)], [str(t) for t in topics]


def adjusted_impacts(
    points: pd.Series,
    pairs: pd.DataFrame,
    covariates: pd.DataFrame,
    adjust_for: Sequence[str] = ("segment", "region"),
) -> pd.DataFrame:
    """Per topic: NPS points lost against comparable customers, with a robust 95% CI.

    OLS (HC1 errors, `robust_ols`) of `points` (NPS points per respondent, index
    `customer_id`) on the `design`. Columns `topic`, `impact` (minus the coefficient),
    `impact_ci_low`, `impact_ci_high`, `impact_p` (one-sided: the topic lowers NPS),
    `contact_adjusted`.
    Topics whose column had to be dropped get no row.
    """
    columns = [c for c in adjust_for if c in covariates.columns]
    frame, topics = design(points, pairs, covariates[columns])
    fitted, errors = robust_ols(points.to_numpy(dtype=float), frame.to_numpy())
    params = pd.Series(fitted, index=frame.columns)
    se = pd.Series(errors, index=frame.columns)
    kept = [t for t in topics if f"topic:{t}" in frame.columns]
    names = [f"topic:{t}" for t in kept]
    impact, half = -params[names].to_numpy(), Z95 * se[names].to_numpy()
    return pd.DataFrame(
        {
            "topic": kept,
            "impact": impact,
            "impact_ci_low": impact - half,
            "impact_ci_high": impact + half,
            "impact_p": stats.norm.sf(impact / se[names].to_numpy()),
            "contact_adjusted": CONTACTED in frame.columns,
        }
    )


def robust_ols(y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """OLS coefficients of `y` on the columns of `x` (of full column rank, as
    `independent_columns` leaves it) and their HC1 robust standard errors: statsmodels'
    `OLS(y, x).fit(cov_type="HC1")`, from k × k products only, so a million respondents
    cost a few passes over the rows."""
    n, k = x.shape
    bread = np.linalg.inv(x.T @ x)
    params = bread @ (x.T @ y)
    scaled = x * (y - x @ params)[:, None]
    cov = bread @ (scaled.T @ scaled) @ bread * n / (n - k)
    return params, np.sqrt(np.diag(cov))


def independent_columns(frame: pd.DataFrame, tolerance: float = 1e-9) -> list[str]:
    """Columns kept in order, each only if it adds a dimension to those before it.

    Works on the small Gram matrix X'X, so the check costs one pass over the rows.
    """
    x = frame.to_numpy()
    gram = x.T @ x
    kept: list[int] = []
    for j in range(gram.shape[0]):
        trial = [*kept, j]
        block = gram[np.ix_(trial, trial)]
        scale = max(np.abs(np.diag(block)).max(), 1.0)
        if np.linalg.matrix_rank(block, tol=tolerance * scale) == len(trial):
            kept.append(j)
    return [frame.columns[j] for j in kept]
