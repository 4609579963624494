"""The long-term holdout: a fixed share of customers kept out of every pilot and every adopted
change, and the cumulative effect of all that was adopted, everyone else against them.

Membership is a hash of the customer id with the holdout's own salt (`connectors.arms`), so
it never moves and operations can reproduce the list. Effects are differences everyone else
− holdout, per customer (the unit the holdout was drawn by), with 95% CIs: Welch's normal
interval for means (NPS points per customer, revenue per customer) and Newcombe's for the
churn share.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from connectors.arms import assign_arms
from tasks import store
from tasks.metrics import difference_ci, nps_points, wilson_interval
from tasks.moments import Moments, normal_ci

if TYPE_CHECKING:  # `tasks.loader` imports the metrics this module uses
    from sqlalchemy.engine import Engine

    from tasks.loader import CxData


@dataclass(frozen=True)
class Holdout:
    """`share` of all customers (0 < share ≤ 0.5), drawn by `salt`, held out since `since`."""

    share: float
    salt: str
    since: date

    def members(self, customer_ids: pd.Series) -> np.ndarray:
        """Whether each customer is held out (a boolean array aligned with `customer_ids`)."""
        return assign_arms(customer_ids, f"holdout:{self.salt}", self.share) == "pilot"


@dataclass(frozen=True)
class HoldoutEffect:
    """One metric's cumulative effect: everyone else's value, the holdout's, and the
    difference with its 95% CI, over `n_rest` and `n_holdout` customers."""

    metric: str
    unit: str
    rest: float
    holdout: float
    effect: float
    ci_low: float
    ci_high: float
    n_rest: int
    n_holdout: int


def cumulative_effects(
    data: CxData, holdout: Holdout, until: pd.Timestamp, horizon_days: int = 90
) -> list[HoldoutEffect]:
    """NPS, churn and revenue of everyone else against the holdout from `holdout.since` to
    `until` (exclusive).

    NPS: each answering customer's mean NPS points over the window. Revenue: each customer's
    order revenue in the window (0 without orders), over customers who existed before it
    ended. Churn: the share, among customers with an order before the window, with no order
    in its last `horizon_days` days.
    """
    since = pd.Timestamp(holdout.since)
    existed = ~(data.customers["created_at"] >= until)  # an unknown creation time counts
    customers = data.customers.loc[existed, "customer_id"]
    held = pd.Series(holdout.members(customers), index=customers.to_numpy())
    answers = data.responses[
        (data.responses["kind"] == "nps")
        & data.responses["score"].notna()
        & data.responses["submitted_at"].between(since, until, inclusive="left")
    ]
    points = nps_points(answers["score"]).groupby(answers["customer_id"].to_numpy()).mean()
    orders = data.orders.dropna(subset=["customer_id"])
    window = orders[orders["created_at"].between(since, until, inclusive="left")]
    revenue = window.groupby("customer_id")["amount"].sum().reindex(held.index, fill_value=0.0)
    return [
        _mean_effect("nps", "points", points, held.reindex(points.index)),
        _churn_effect(orders, held, since, until, horizon_days),
        _mean_effect("revenue", "per customer", revenue, held),
    ]


def _mean_effect(metric: str, unit: str, values: pd.Series, held: pd.Series) -> HoldoutEffect:
    known = held.notna()
    values, held = values[known], held[known].astype(bool)
    rest, out = Moments.of(values[~held]), Moments.of(values[held])
    effect = rest.mean - out.mean
    low, high = normal_ci(effect, float(np.hypot(rest.se, out.se)))
    return HoldoutEffect(metric, unit, rest.mean, out.mean, effect, low, high,
                         int(rest.n), int(out.n))  # fmt: skip


def _churn_effect(
    orders: pd.DataFrame, held: pd.Series, since: pd.Timestamp, until: pd.Timestamp, horizon: int
) -> HoldoutEffect:
    base = pd.Index(orders.loc[orders["created_at"] < since, "customer_id"].unique())
    recent = orders["created_at"].between(until - pd.Timedelta(days=horizon), until, "left")
    churned = ~base.isin(orders.loc[recent, "customer_id"].unique())
    out = held.reindex(base).fillna(False).to_numpy(bool)
    n = np.array([(~out).sum(), out.sum()])
    k = np.array([churned[~out].sum(), churned[out].sum()])
    share = np.divide(k, n, out=np.full(2, np.nan), where=n > 0)
    low, high = wilson_interval(share, n)
    sides = pd.DataFrame({"value": 100 * share, "ci_low": 100 * low, "ci_high": 100 * high})
    rest, held_out = sides.iloc[[0]].reset_index(drop=True), sides.iloc[[1]].reset_index(drop=True)
    ci_low, ci_high = difference_ci(rest, held_out)
    return HoldoutEffect("churn", "% of customers", *map(float, 100 * share),
                         float(100 * (share[0] - share[1])), float(ci_low.iloc[0]),
                         float(ci_high.iloc[0]), int(n[0]), int(n[1]))  # fmt: skip


def adopted_changes(engine: Engine, since: date, until: pd.Timestamp) -> pd.DataFrame:
    """The hypotheses adopted from `since` to `until`: `hypothesis_id`, `as_of` (when the
    verdict was first adopt), `metric`, `estimate`, `ci_low`, `ci_high` of the primary metric."""
    columns = ["hypothesis_id", "metric", "role", "as_of", "estimate", "ci_low", "ci_high"]
    results = store.read_frame(engine, store.ExperimentResult, [*columns, "decision"])
    adopted = results[(results["role"] == "primary") & (results["decision"] == "adopt")]
    at = pd.to_datetime(adopted["as_of"])
    adopted = adopted[(at >= pd.Timestamp(since)) & (at < until)]
    first = adopted.sort_values("as_of").drop_duplicates("hypothesis_id")
    return first[[c for c in columns if c != "role"]].reset_index(drop=True)
