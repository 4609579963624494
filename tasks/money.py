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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from connectors.errors import ConfigError

NPS_FORMULA = (
    "reach × impact × (revenue per promoter − revenue per detractor, within segment) / 200"
)
CONFIGURED_FORMULA = "reach × impact × configured value per NPS point"
CONVERSION_FORMULA = "reach × impact / 100 × average order value"


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
        paid = orders.dropna(subset=["customer_id"]) if len(orders) else orders
        if not len(paid):
            nan = float("nan")
            value = configured if configured is not None else nan
            return cls(value, nan, nan, nan, _formula(configured))
        revenue = paid.groupby("customer_id")["amount"].sum()
        frame = pd.DataFrame(
            {
                "revenue": revenue.reindex(latest["customer_id"]).fillna(0.0).to_numpy(),
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


def require_orders(orders: pd.DataFrame) -> None:
    """Raises `ConfigError` when ranking by revenue has no orders to price points with."""
    if not len(orders) or orders["amount"].dropna().empty:
        raise ConfigError(
            "ranking.by: revenue needs orders to price NPS points, but the store has none; "
            "ingest an orders stream or set ranking.by: nps in cxloop.yaml."
        )


def _formula(configured: float | None) -> str:
    return CONFIGURED_FORMULA if configured is not None else NPS_FORMULA
