"""Pain points ranked by reach × impact × confidence / effort, every component visible.

A candidate is a set of affected customers (for now: customers who raised a ticket on a
topic). Reach is how many customers that is; impact is how many NPS points lower the
affected customers' latest score is than everyone else's, with its 95% CI; confidence
shrinks the score when that CI is wide; effort comes from `efforts:` in the config.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tasks.metrics import Z95, CxData, nps_points
from tasks.text import redact_pii

MIN_RESPONDENTS = 30
VERBATIMS = 3


def confidence(impact: pd.Series, half_width: pd.Series, respondents: pd.Series) -> pd.Series:
    """0–1: one minus the CI half-width relative to the impact; 0 if the CI reaches zero.

    Candidates with fewer than `MIN_RESPONDENTS` affected respondents get 0.
    """
    ratio = half_width / impact.where(impact > 0)
    score = (1 - ratio).clip(0, 1).fillna(0.0)
    return score.where(respondents >= MIN_RESPONDENTS, 0.0)


def latest_nps(data: CxData) -> pd.DataFrame:
    """Each respondent's most recent NPS response: relationship NPS counts a customer once."""
    answers = data.responses[data.responses["kind"] == "nps"]
    return answers.sort_values("submitted_at", kind="stable").groupby("customer_id").tail(1)


def key_drivers(data: CxData) -> pd.DataFrame:
    """NPS points each ticket topic costs, holding the other topics fixed, with 95% CIs.

    OLS of each respondent's latest NPS points on one indicator per topic (robust HC1
    errors), so topics that co-occur are not double-counted. Columns `key`, `driver_impact`
    (points lost), `driver_ci_low`, `driver_ci_high`, `driver_p`.
    """
    import statsmodels.api as sm

    latest = latest_nps(data)
    pairs = data.tickets[["customer_id", "topic"]].dropna().drop_duplicates()
    exposure = pd.crosstab(pairs["customer_id"], pairs["topic"]).clip(upper=1)
    design = exposure.reindex(latest["customer_id"], fill_value=0).astype(float)
    fit = sm.OLS(nps_points(latest["score"]).to_numpy(), sm.add_constant(design.to_numpy())).fit(
        cov_type="HC1"
    )
    ci = fit.conf_int()[1:]
    return pd.DataFrame(
        {
            "key": "ticket:" + design.columns.astype(str),
            "driver_impact": -fit.params[1:],
            "driver_ci_low": -ci[:, 1],
            "driver_ci_high": -ci[:, 0],
            "driver_p": fit.pvalues[1:],
        }
    )


def rank_pain_points(data: CxData, efforts: dict[str, float]) -> pd.DataFrame:
    """One row per ticket topic, best score first, with every score component and evidence.

    `efforts` maps pain-point keys (`ticket:delivery`) to person-weeks; `default` applies to
    the rest and such rows are flagged `effort_is_default`. The evidence carries the key-driver
    estimate of the same impact and whether it agrees (the ranking's impact within its CI).
    """
    latest = latest_nps(data)
    points = nps_points(latest["score"]).to_numpy()
    affected_pairs = data.tickets[["customer_id", "topic"]].dropna().drop_duplicates()
    base = data.customers["customer_id"].nunique()
    rows = []
    for topic, pairs in affected_pairs.groupby("topic"):
        hit = latest["customer_id"].isin(pairs["customer_id"]).to_numpy()
        inside, outside = points[hit], points[~hit]
        impact = outside.mean() - inside.mean() if len(inside) and len(outside) else np.nan
        se = np.sqrt(inside.var(ddof=1) / len(inside) + outside.var(ddof=1) / len(outside))
        rows.append(
            {
                "key": f"ticket:{topic}",
                "kind": "ticket_topic",
                "title": f"Tickets about {str(topic).replace('_', ' ')}",
                "reach": len(pairs),
                "reach_share": len(pairs) / base,
                "impact": impact,
                "impact_ci_low": impact - Z95 * se,
                "impact_ci_high": impact + Z95 * se,
                "respondents": len(inside),
                "evidence": _evidence(data, topic, latest, hit, inside, outside),
            }
        )
    ranked = pd.DataFrame(rows)
    if ranked.empty:
        return ranked
    ranked["confidence"] = confidence(
        ranked["impact"], (ranked["impact_ci_high"] - ranked["impact"]), ranked["respondents"]
    )
    default_effort = efforts.get("default", 2.0)
    ranked["effort"] = ranked["key"].map(efforts).fillna(default_effort).astype(float)
    ranked["effort_is_default"] = ~ranked["key"].isin(efforts)
    ranked["score"] = (
        ranked["reach_share"]
        * 100
        * ranked["impact"].clip(lower=0)
        * ranked["confidence"]
        / ranked["effort"]
    )
    ranked = ranked.sort_values("score", ascending=False, ignore_index=True)
    ranked["rank"] = np.arange(1, len(ranked) + 1)
    drivers = key_drivers(data).set_index("key")
    drivers = drivers.round(2).assign(driver_p=drivers["driver_p"].map(lambda p: float(f"{p:.2g}")))
    for row, key in enumerate(ranked["key"]):
        if key in drivers.index:
            driver = drivers.loc[key].to_dict()
            driver["driver_agrees"] = bool(
                driver["driver_ci_low"] <= ranked.at[row, "impact"] <= driver["driver_ci_high"]
            )
            ranked.at[row, "evidence"] = {**ranked.at[row, "evidence"], **driver}
    return ranked.drop(columns=["respondents"])


def _evidence(
    data: CxData,
    topic: str,
    latest: pd.DataFrame,
    hit: np.ndarray,
    inside: np.ndarray,
    outside: np.ndarray,
) -> dict:
    """Counts and a few redacted verbatims from affected detractors, newest first."""
    voices = latest[hit & (latest["score"] <= 6).to_numpy() & latest["comment"].notna().to_numpy()]
    quotes = voices.sort_values("submitted_at", ascending=False)["comment"].drop_duplicates()
    return {
        "tickets": int((data.tickets["topic"] == topic).sum()),
        "respondents_affected": len(inside),
        "respondents_unaffected": len(outside),
        "nps_affected": round(float(inside.mean()), 1) if len(inside) else None,
        "nps_unaffected": round(float(outside.mean()), 1) if len(outside) else None,
        "verbatims": [redact_pii(q) for q in quotes.head(VERBATIMS)],
    }


def backlog(ranked: pd.DataFrame, links: pd.DataFrame) -> pd.DataFrame:
    """The improvement roadmap: ranked pain points with the hypotheses addressing them.

    `links` has `key` (pain point), `hypothesis`, `status` and `decision` (latest, or None).
    `state` is `addressed` once a pilot on it was adopted, `piloting` while one is approved
    or running, `learned` when pilots concluded without adoption, else `open`.
    """
    merged = ranked[["rank", "key", "title", "score"]].merge(links, on="key", how="left")

    def keys_with(mask: pd.Series) -> pd.Series:
        return merged["key"].isin(merged.loc[mask, "key"])

    merged["state"] = np.select(
        [
            keys_with(merged["decision"] == "adopt"),
            keys_with(merged["status"].isin(["approved", "running"])),
            keys_with(merged["hypothesis"].notna()),
        ],
        ["addressed", "piloting", "learned"],
        "open",
    )
    return merged.sort_values(["rank", "hypothesis"], na_position="last", ignore_index=True)
