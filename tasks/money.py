"""Money at stake: NPS and conversion points turned into revenue per period through orders.

An NPS point is worth what the orders say: promoters and detractors differ in revenue per
customer over the window, and an NPS point is 1/200 of turning one detractor into a
promoter. So a pain point that costs `impact` NPS points to each of its `reach` customers
puts revenue at stake

    revenue_at_stake = reach × impact × (revenue per promoter − revenue per detractor) / 200

per analysis window (customers without an order count as 0 revenue; the difference is taken
within each segment, so a segment that spends more and scores higher is not mistaken for it).
A configured value per NPS point per customer replaces the one from orders. A conversion leak
of `impact` points over `reach` sessions loses reach × impact / 100 orders of the average
order value.

When a published churn model scores customers (`tasks.churn`), the money scale is churn
instead: a pain point puts at risk what its affected customers are expected to stop spending
beyond comparable customers who were not affected,

    revenue_at_risk = Σ over affected scored customers i of (p_i − p̄_s(i)) × value_i

where p is the model's churn probability, value the customer's revenue in the model's last
horizon, and p̄_s the mean probability of the unaffected scored customers of the same stratum
(segment, region, contacted support or not). Its CI treats each stratum's comparable mean as
estimated and the affected probabilities as draws around it: per stratum, variance
σ²_s × (Σ value_i² + (Σ value_i)² / n_comparable). Customers the model does not score had no
order in its last horizon, so nothing of theirs is at risk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from connectors.errors import ConfigError
from tasks.moments import Z95

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

NPS_FORMULA = (
    "reach × impact × (revenue per promoter − revenue per detractor, within segment) / 200"
)
CONFIGURED_FORMULA = "reach × impact × configured value per NPS point"
CONVERSION_FORMULA = "reach × impact / 100 × average order value"
CHURN_FORMULA = (
    "Σ over affected customers of (churn probability − comparable customers' mean, same "
    "segment, region and support contact) × their revenue in the churn model's horizon"
)
CHURN_COLUMNS = ["scored", "churn_uplift", "revenue_at_risk", "revenue_ci_low", "revenue_ci_high"]


@dataclass(frozen=True)
class PointValue:
    """Revenue per customer per NPS point and per conversion point, and where they came from."""

    per_nps_point: float
    average_order: float
    revenue_promoter: float
    revenue_detractor: float
    formula: str

    @classmethod
    def from_orders(
        cls,
        orders: pd.DataFrame,
        latest: pd.DataFrame,
        configured: float | None = None,
        strata: pd.Series | None = None,
    ) -> PointValue:
        """Values from the window's orders and each respondent's latest NPS score (`latest`:
        `customer_id`, `score`); `configured` (per customer per NPS point) overrides the
        promoter–detractor difference. NaN throughout without orders.

        With `strata` (customer → segment), the difference is taken within each stratum and
        averaged by its respondents, so a segment that both spends more and scores higher
        does not pass for NPS buying revenue; a negative difference counts as 0.
        """
        paid = orders
        if len(orders):
            paid = orders[["customer_id", "amount"]].dropna(subset=["customer_id"])
        if not len(paid):
            nan = float("nan")
            value = configured if configured is not None else nan
            return cls(value, nan, nan, nan, _formula(configured))
        frame = pd.DataFrame(
            {
                "revenue": _revenue(paid, latest["customer_id"]),
                "group": np.select([latest["score"] >= 9, latest["score"] <= 6], ["p", "d"], "n"),
                "stratum": "all"
                if strata is None
                else strata.reindex(latest["customer_id"]).fillna("?").to_numpy(),
            }
        )
        means = frame.groupby(["stratum", "group"])["revenue"].mean().unstack("group")
        means = means.reindex(columns=["p", "d"])
        weights = frame.groupby("stratum").size().reindex(means.index)
        both = means.notna().all(axis=1)
        difference = (means["p"] - means["d"])[both]
        spread = float(np.average(difference, weights=weights[both])) if both.any() else np.nan
        overall = frame.groupby("group")["revenue"].mean()
        value = configured if configured is not None else max(spread, 0.0) / 200
        return cls(
            value,
            float(paid["amount"].mean()),
            float(overall.get("p", np.nan)),
            float(overall.get("d", np.nan)),
            _formula(configured),
        )


def _revenue(paid: pd.DataFrame, customers: pd.Series) -> np.ndarray:
    """Each of `customers`' total order amount in `paid` (0 without orders). Customer
    numbers (`tasks.loader.CxData.numbered`) are summed by position: hashing millions of
    order ids costs seconds."""
    ids = paid["customer_id"]
    if pd.api.types.is_float_dtype(ids) and pd.api.types.is_float_dtype(customers):
        size = int(np.nanmax([ids.max(), customers.max(), 0])) + 1
        amounts = paid["amount"].fillna(0.0).to_numpy(dtype=float)
        total = np.bincount(ids.to_numpy().astype(np.int64), amounts, minlength=size)
        return total[customers.to_numpy().astype(np.int64)]
    return paid.groupby("customer_id")["amount"].sum().reindex(customers).fillna(0.0).to_numpy()


def revenue_at_stake(
    reach: pd.Series, impact: pd.Series, unit: pd.Series, value: PointValue
) -> pd.Series:
    """Revenue per window that each pain point puts at stake (0 where its impact is not a
    loss); see the module docstring for the formulas."""
    loss = reach * impact.clip(lower=0)
    per_point = np.where(
        unit.str.startswith("conversion"), value.average_order / 100, value.per_nps_point
    )
    return loss * per_point


def formulas(unit: pd.Series, value: PointValue) -> pd.Series:
    """The formula behind each row's revenue at stake, for its explanation."""
    return pd.Series(
        np.where(unit.str.startswith("conversion"), CONVERSION_FORMULA, value.formula),
        index=unit.index,
    )


def published_scores(engine: Engine) -> pd.DataFrame:
    """`customer_id`, `probability` and `value` of the published churn model's scores (none
    when the last model was not published): what `churn_at_risk` prices pain points with."""
    from tasks import store

    return store.read_frame(
        engine, store.CustomerChurnRisk, ["customer_id", "probability", "value"]
    )


def churn_at_risk(members: pd.DataFrame, scores: pd.DataFrame, strata: pd.Series) -> pd.DataFrame:
    """Per `key` of `members` (`key`, `customer_id`): expected revenue its affected customers
    put at risk beyond comparable ones (see the module docstring), index `key`.

    `scores` holds `customer_id`, `probability`, `value` per scored customer; `strata` maps
    customer ids to their comparison stratum. Columns `scored` (affected customers compared),
    `churn_uplift` (value-weighted probability over the comparable customers', in points),
    `revenue_at_risk` and its 95% CI `revenue_ci_low`, `revenue_ci_high`. Affected customers
    of a stratum with fewer than two unaffected scored customers are not compared.
    """
    scored = scores.drop_duplicates("customer_id").set_index("customer_id")
    p = scored["probability"].astype(float)
    frame = pd.DataFrame(
        {
            "stratum": strata.reindex(scored.index).fillna("?").to_numpy(),
            "p": p.to_numpy(),
            "p2": (p**2).to_numpy(),
        },
        index=scored.index,
    )
    totals = frame.groupby("stratum")[["p", "p2"]].agg(["size", "sum"])
    hit = members[["key", "customer_id"]].dropna().drop_duplicates()
    hit = hit.join(frame, on="customer_id", how="inner")
    hit["v"] = scored["value"].astype(float).reindex(hit["customer_id"]).to_numpy()
    hit = hit.assign(pv=hit["p"] * hit["v"], v2=hit["v"] ** 2)
    by = hit.groupby(["key", "stratum"])[["p", "p2", "v", "pv", "v2"]]
    cells = by.sum().join(by.size().rename("n"))
    stratum = cells.index.get_level_values("stratum")
    n_c = totals[("p", "size")].reindex(stratum).to_numpy() - cells["n"].to_numpy()
    sum_c = totals[("p", "sum")].reindex(stratum).to_numpy() - cells["p"].to_numpy()
    sq_c = totals[("p2", "sum")].reindex(stratum).to_numpy() - cells["p2"].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_c = sum_c / n_c
        var_c = np.clip(sq_c - n_c * mean_c**2, 0, None) / (n_c - 1)
    compared = pd.DataFrame(
        {
            "n": cells["n"].to_numpy(),
            "v": cells["v"].to_numpy(),
            "risk": cells["pv"].to_numpy() - mean_c * cells["v"].to_numpy(),
            "var": var_c * (cells["v2"].to_numpy() + cells["v"].to_numpy() ** 2 / n_c),
        },
        index=cells.index.get_level_values("key"),
    )[n_c >= 2]
    per_key = compared.groupby(level=0).sum()
    half = Z95 * np.sqrt(per_key["var"])
    with np.errstate(divide="ignore", invalid="ignore"):
        uplift = 100 * per_key["risk"] / per_key["v"].where(per_key["v"] > 0)
    return pd.DataFrame(
        {
            "scored": per_key["n"].astype(int),
            "churn_uplift": uplift,
            "revenue_at_risk": per_key["risk"],
            "revenue_ci_low": per_key["risk"] - half,
            "revenue_ci_high": per_key["risk"] + half,
        }
    ).rename_axis("key")


def require_orders(orders: pd.DataFrame) -> None:
    """Raises `ConfigError` when ranking by revenue has no orders to price points with."""
    if not len(orders) or orders["amount"].dropna().empty:
        raise ConfigError(
            "ranking.by: revenue needs orders to price NPS points, but the store has none; "
            "ingest an orders stream or set ranking.by: nps in cxloop.yaml."
        )


def _formula(configured: float | None) -> str:
    return CONFIGURED_FORMULA if configured is not None else NPS_FORMULA
