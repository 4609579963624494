"""Pain points ranked by reach × impact × confidence / effort, every component visible.

A candidate is a group of affected customers (or sessions) found in a cell of the data:

- `ticket:<topic>`: customers with a ticket on the topic, against everyone else's NPS;
- `comment:<topic>:<segment>`: respondents of a segment whose comments name a topic no ticket
  topic covers, against the segment's other respondents;
- `region:<region>`: the region's customers, against everyone else;
- `load:peak_hours`: customers whose tickets came in the busiest hours, against the other
  ticket raisers;
- `funnel:<step>:<device>`: sessions that reached the step before on the device, against the
  conversion into the step on the other devices.

Impacts are points of an outcome share: NPS points (promoters minus detractors, in %) or
conversion points (%). Reach share × impact is then the points at stake for the whole base (or
all funnel entrants), so candidates of every kind rank on one scale. Confidence shrinks the score
when the impact's 95% CI is wide; effort comes from `efforts:` in the config.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tasks.labels import labels, titled
from tasks.metrics import Z95, CxData, funnel, is_in, lookup, nps_points
from tasks.text import Taxonomy, redact_pii, tag_topics

MIN_RESPONDENTS = 30
VERBATIMS = 3
PEAK_LOAD = 1.5  # an hour is a peak when its ticket volume is 1.5× the average hour's
NPS_UNIT = "NPS points"
CONVERSION_UNIT = "conversion points"


def confidence(impact: pd.Series, half_width: pd.Series, respondents: pd.Series) -> pd.Series:
    """0–1: one minus the CI half-width relative to the impact; 0 if the CI reaches zero.

    Candidates with fewer than `MIN_RESPONDENTS` affected respondents get 0.
    """
    ratio = half_width / impact.where(impact > 0)
    score = (1 - ratio).clip(0, 1).fillna(0.0)
    return score.where(respondents >= MIN_RESPONDENTS, 0.0)


def latest_nps(data: CxData) -> pd.DataFrame:
    """Each respondent's most recent scored NPS response: relationship NPS counts a customer
    once."""
    columns = ["customer_id", "score", "comment", "submitted_at"]
    answers = data.responses.loc[data.responses["kind"] == "nps", columns].dropna(
        subset=["customer_id", "score"]
    )
    ordered = answers.sort_values("submitted_at", kind="stable")
    return ordered.drop_duplicates("customer_id", keep="last")


def nps_gaps(points: pd.Series, members: pd.DataFrame) -> pd.DataFrame:
    """Per `key` of `members` (`key`, `customer_id`): NPS of the others minus NPS of members.

    `points` holds each respondent's NPS points, indexed by customer; the comparison group is
    every other customer in `points`. Columns `reach` (distinct members), `respondents`,
    `respondents_unaffected`, `nps_affected`, `nps_unaffected`, `impact`, `impact_ci_low`,
    `impact_ci_high` (normal CI of the difference of means, unequal variances).
    """
    members = members.drop_duplicates(["key", "customer_id"])
    hit = members.join(points.rename("p"), on="customer_id", how="inner")
    inside = hit.assign(p2=hit["p"] ** 2).groupby("key")[["p", "p2"]].agg(["sum", "count"])
    n, s, q = inside[("p", "count")], inside[("p", "sum")], inside[("p2", "sum")]
    n_out, s_out, q_out = len(points) - n, points.sum() - s, (points**2).sum() - q
    mean_in, mean_out = s / n, s_out / n_out
    var_in = (q - n * mean_in**2) / (n - 1)
    var_out = (q_out - n_out * mean_out**2) / (n_out - 1)
    impact = mean_out - mean_in
    half = Z95 * np.sqrt(var_in / n + var_out / n_out)
    gaps = pd.DataFrame(
        {
            "respondents": n,
            "respondents_unaffected": n_out,
            "nps_affected": mean_in,
            "nps_unaffected": mean_out,
            "impact": impact,
            "impact_ci_low": impact - half,
            "impact_ci_high": impact + half,
        }
    )
    reach = members.groupby("key")["customer_id"].nunique().rename("reach")
    unanswered = {"respondents": 0, "respondents_unaffected": len(points)}
    return gaps.join(reach, how="right").fillna(unanswered).reset_index()


def key_drivers(tickets: pd.DataFrame, latest: pd.DataFrame) -> pd.DataFrame:
    """NPS points each ticket topic costs, holding the other topics fixed, with 95% CIs.

    OLS of each respondent's `latest` NPS points on one indicator per topic (robust HC1
    errors), so topics that co-occur are not double-counted. Columns `key`, `driver_impact`
    (points lost), `driver_ci_low`, `driver_ci_high`, `driver_p`.
    """
    import statsmodels.api as sm

    pairs = tickets[["customer_id", "topic"]].dropna()
    topic, topics = pd.factorize(pairs["topic"], sort=True)
    row = pd.Index(latest["customer_id"]).get_indexer(pairs["customer_id"])
    design = np.zeros((len(latest), len(topics)))
    design[row[row >= 0], topic[row >= 0]] = 1.0
    fit = sm.OLS(nps_points(latest["score"]).to_numpy(), sm.add_constant(design)).fit(
        cov_type="HC1"
    )
    ci = fit.conf_int()[1:]
    return pd.DataFrame(
        {
            "key": "ticket:" + pd.Index(topics).astype(str),
            "driver_impact": -fit.params[1:],
            "driver_ci_low": -ci[:, 1],
            "driver_ci_high": -ci[:, 0],
            "driver_p": fit.pvalues[1:],
        }
    )


def rank_pain_points(
    data: CxData,
    efforts: dict[str, float],
    funnel_steps: Sequence[str] = (),
    taxonomy: Taxonomy | None = None,
) -> pd.DataFrame:
    """Every candidate with an impact CI (two or more affected respondents or sessions; see
    the module docstring), best score first, with its components.

    `efforts` maps pain-point keys (`ticket:delivery`) to person-weeks; `default` applies to
    the rest and such rows are flagged `effort_is_default`. `funnel_steps` orders the funnel
    (no funnel candidates without it). Each row's `evidence` holds counts and redacted
    verbatims; ticket topics also carry their key-driver estimate and whether it agrees.
    """
    latest = latest_nps(data)
    points = pd.Series(nps_points(latest["score"]).to_numpy(), index=latest["customer_id"])
    found = [
        ticket_topics(data, latest, points),
        comment_topics(data, points, taxonomy),
        regions(data, points),
        peak_load(data, points),
    ]
    base = max(data.customers["customer_id"].nunique(), 1)
    tables = [f.table.assign(reach_share=f.table["reach"] / base, unit=NPS_UNIT)
              for f in found if not f.table.empty]  # fmt: skip
    tables += [t for t in [funnel_leaks(data.web, funnel_steps)] if not t.empty]
    if not tables:
        return pd.DataFrame()
    ranked = pd.concat(tables, ignore_index=True)
    ranked = ranked.dropna(subset=["impact_ci_low", "impact_ci_high"])  # < 2 affected answered
    if ranked.empty:
        return ranked
    ranked = titled(ranked, labels("en"))
    ranked["confidence"] = confidence(
        ranked["impact"], ranked["impact_ci_high"] - ranked["impact"], ranked["respondents"]
    )
    ranked["effort"] = ranked["key"].map(efforts).fillna(efforts.get("default", 2.0)).astype(float)
    ranked["effort_is_default"] = ~ranked["key"].isin(efforts)
    ranked["score"] = (
        ranked["reach_share"]
        * 100
        * ranked["impact"].clip(lower=0)
        * ranked["confidence"]
        / ranked["effort"]
    )
    ranked = ranked.sort_values(["score", "reach"], ascending=False, ignore_index=True)
    ranked["rank"] = np.arange(1, len(ranked) + 1)
    ranked["evidence"] = _with_verbatims(ranked, found, latest)
    return ranked.drop(columns=["respondents"])


@dataclass(frozen=True)
class Found:
    """Candidates of one kind, their affected customers (`key`, `customer_id`) and, where the
    candidate is itself something customers said, those comments (`key`, `comment`,
    `submitted_at`) to quote instead of the affected detractors' latest ones."""

    table: pd.DataFrame
    members: pd.DataFrame
    said: pd.DataFrame | None = None

    @classmethod
    def none(cls) -> Found:
        return cls(pd.DataFrame(), pd.DataFrame(columns=["key", "customer_id"]))


def ticket_topics(data: CxData, latest: pd.DataFrame, points: pd.Series) -> Found:
    """`ticket:<topic>` candidates; evidence adds the worst segment × channel cells and the
    key-driver estimate."""
    tickets = data.tickets.dropna(subset=["topic"])
    members = pd.DataFrame(
        {"key": "ticket:" + tickets["topic"], "customer_id": tickets["customer_id"]}
    )
    gaps = nps_gaps(points, members)
    if gaps.empty:
        return Found.none()
    topic = gaps["key"].str.removeprefix("ticket:")
    counts = tickets["topic"].value_counts()
    cells = _worst_cells(tickets, data.customers, points)
    drivers = key_drivers(data.tickets, latest).set_index("key")
    evidence = []
    for key, name, row in zip(gaps["key"], topic, gaps.itertuples(), strict=True):
        extra = {"tickets": int(counts[name]), "worst_cells": cells.get(name, [])}
        if key in drivers.index:
            driver = drivers.loc[key].round(2).to_dict()
            driver["driver_p"] = float(f"{drivers.at[key, 'driver_p']:.2g}")
            driver["driver_agrees"] = bool(
                driver["driver_ci_low"] <= row.impact <= driver["driver_ci_high"]
            )
            extra.update(driver)
        evidence.append(_counts(row) | extra)
    table = gaps.assign(kind="ticket_topic", evidence=evidence)
    return Found(table, members)


def comment_topics(data: CxData, points: pd.Series, taxonomy: Taxonomy | None = None) -> Found:
    """`comment:<topic>:<segment>` candidates for comment topics that no ticket topic covers:
    the pains customers only tell the survey about."""
    said = data.responses[(data.responses["kind"] == "nps") & data.responses["comment"].notna()]
    texts = said["comment"].drop_duplicates().reset_index(drop=True)  # tag each text once
    tags = tag_topics(texts, taxonomy)
    tags = tags[~tags["topic"].isin(data.tickets["topic"].dropna().unique())]
    if tags.empty:
        return Found.none()
    tagged = pd.DataFrame({"comment": texts[tags["text_index"]].to_numpy(), "topic": tags["topic"]})
    columns = ["customer_id", "comment", "submitted_at"]
    mentions = said[columns].merge(tagged, on="comment")
    segment = data.customers.set_index("customer_id")["segment"]
    mentions["segment"] = lookup(mentions["customer_id"], segment)
    mentions = mentions.dropna(subset=["segment"])
    mentions["key"] = "comment:" + mentions["topic"] + ":" + mentions["segment"].astype(str)
    respondent_segment = lookup(pd.Series(points.index), segment)
    frames, found = [], []
    for name, group in mentions.groupby("segment"):
        pool = points[(respondent_segment == name).to_numpy()]
        members = group[["key", "customer_id"]]
        gaps = nps_gaps(pool, members)
        frames.append(
            gaps.assign(kind="comment_topic", evidence=[_counts(row) for row in gaps.itertuples()])
        )
        found.append(members)
    if not frames:  # no commenter with a known segment
        return Found.none()
    table, members = pd.concat(frames, ignore_index=True), pd.concat(found, ignore_index=True)
    return Found(table, members, mentions[["key", "comment", "submitted_at"]])


def regions(data: CxData, points: pd.Series) -> Found:
    """`region:<region>` candidates: a region whose customers score lower than the rest."""
    customers = data.customers.dropna(subset=["region"])
    members = pd.DataFrame(
        {"key": "region:" + customers["region"], "customer_id": customers["customer_id"]}
    )
    gaps = nps_gaps(points, members)
    table = gaps.assign(kind="region", evidence=[_counts(row) for row in gaps.itertuples()])
    return Found(table, members)


def peak_hours(tickets: pd.DataFrame, threshold: float = PEAK_LOAD) -> list[int]:
    """Hours of the day whose ticket volume is at least `threshold` × the average hour's."""
    load = tickets["created_at"].dt.hour.value_counts().reindex(range(24), fill_value=0)
    return sorted(load.index[load >= threshold * load.mean()])


def peak_load(data: CxData, points: pd.Series) -> Found:
    """`load:peak_hours`: customers whose tickets arrived in peak hours, against the other
    ticket raisers; evidence compares FRT and SLA breaches in and out of the peak."""
    tickets = data.tickets.dropna(subset=["customer_id"])
    hours = peak_hours(tickets)
    if not hours or len(hours) == 24:
        return Found.none()
    in_peak = tickets["created_at"].dt.hour.isin(hours)
    members = pd.DataFrame(
        {"key": "load:peak_hours", "customer_id": tickets.loc[in_peak, "customer_id"]}
    )
    raisers = points[is_in(pd.Series(points.index), tickets["customer_id"])]
    gaps = nps_gaps(raisers, members)
    frt = tickets.groupby(in_peak)["frt_hours"].median()
    sla = tickets.groupby(in_peak)["sla_breach"].mean()
    extra = {
        "peak_hours": hours,
        "tickets_in_peak": int(in_peak.sum()),
        "frt_median_peak": round(float(frt.get(True, np.nan)), 2),
        "frt_median_off_peak": round(float(frt.get(False, np.nan)), 2),
        "sla_breach_peak": round(float(sla.get(True, np.nan)), 1),
        "sla_breach_off_peak": round(float(sla.get(False, np.nan)), 1),
    }
    table = gaps.assign(
        kind="peak_load", evidence=[_counts(row) | extra for row in gaps.itertuples()]
    )
    return Found(table, members)


def funnel_leaks(web: pd.DataFrame, steps: Sequence[str]) -> pd.DataFrame:
    """`funnel:<step>:<device>`: conversion into a step on one device against the others.

    Reach is the sessions that got to the step before on that device; reach share divides it
    by all sessions entering the funnel. Impact is the other devices' conversion minus this
    device's, in points, with a two-proportion normal CI.
    """
    if len(steps) < 2 or web.empty or web["device"].isna().all():
        return pd.DataFrame()
    table = funnel(web.dropna(subset=["device"]), steps, ["device"])
    table["before"] = table.groupby("device")["sessions"].shift(1)
    table = table.dropna(subset=["before"])
    totals = table.groupby("step")[["sessions", "before"]].transform("sum")
    p_in = table["sessions"] / table["before"]
    n_out = totals["before"] - table["before"]
    p_out = (totals["sessions"] - table["sessions"]) / n_out
    impact = 100 * (p_out - p_in)
    half = 100 * Z95 * np.sqrt(p_in * (1 - p_in) / table["before"] + p_out * (1 - p_out) / n_out)
    entrants = web.loc[web["step"] == steps[0], "value"].sum()
    leaks = pd.DataFrame(
        {
            "key": "funnel:" + table["step"] + ":" + table["device"],
            "kind": "funnel_step",
            "reach": table["before"].astype(int),
            "reach_share": table["before"] / entrants if entrants else np.nan,
            "impact": impact,
            "impact_ci_low": impact - half,
            "impact_ci_high": impact + half,
            "unit": CONVERSION_UNIT,
            "respondents": table["before"].astype(int),
        }
    ).dropna(subset=["impact"])
    leaks["evidence"] = [
        {
            "sessions_before": int(b),
            "sessions_after": int(s),
            "conversion": round(100 * pi, 1),
            "conversion_other_devices": round(100 * po, 1),
        }
        for b, s, pi, po in zip(table["before"], table["sessions"], p_in, p_out, strict=True)
    ]
    return leaks.reset_index(drop=True)


def _counts(row: tuple) -> dict:
    """The comparison behind an NPS-gap candidate, rounded for people."""
    return {
        "respondents_affected": int(row.respondents),
        "respondents_unaffected": int(row.respondents_unaffected),
        "nps_affected": _round(row.nps_affected),
        "nps_unaffected": _round(row.nps_unaffected),
    }


def _round(value: float) -> float | None:
    return None if pd.isna(value) else round(float(value), 1)


def _worst_cells(
    tickets: pd.DataFrame, customers: pd.DataFrame, points: pd.Series, top: int = 3
) -> dict[str, list[dict]]:
    """Per topic, the segment × channel cells whose customers lose the most NPS points in all
    (reach × gap), with at least `MIN_RESPONDENTS` respondents."""
    segment = lookup(tickets["customer_id"], customers.set_index("customer_id")["segment"])
    cell = tickets["topic"] + "|" + segment.fillna("?") + "|" + tickets["channel"].fillna("?")
    gaps = nps_gaps(points, pd.DataFrame({"key": cell, "customer_id": tickets["customer_id"]}))
    gaps = gaps[gaps["respondents"] >= MIN_RESPONDENTS]
    gaps = gaps.assign(weight=gaps["reach"] * gaps["impact"]).sort_values("weight", ascending=False)
    parts = gaps["key"].str.split("|", expand=True)
    out: dict[str, list[dict]] = {}
    for (topic, seg, channel), row in zip(
        parts.itertuples(index=False), gaps.itertuples(), strict=True
    ):
        if len(out.setdefault(topic, [])) < top:
            out[topic].append(
                {
                    "segment": seg,
                    "channel": channel,
                    "customers": int(row.reach),
                    "nps_gap": _round(row.impact),
                }
            )
    return out


def _with_verbatims(ranked: pd.DataFrame, found: list[Found], latest: pd.DataFrame) -> list:
    """Each row's evidence plus, where it has affected customers, up to `VERBATIMS` redacted
    comments, newest first: what was said where the candidate is a comment topic, else the
    affected detractors' latest comments."""
    voices = latest.loc[
        (latest["score"] <= 6) & latest["comment"].notna(),
        ["customer_id", "comment", "submitted_at"],
    ]
    said = [f.said for f in found if f.said is not None]
    affected = [
        f.members.drop_duplicates().merge(voices, on="customer_id") for f in found if f.said is None
    ]
    quotes = (
        pd.concat([*said, *affected], ignore_index=True)
        .sort_values("submitted_at", ascending=False, kind="stable")
        .drop_duplicates(["key", "comment"])
        .groupby("key")
        .head(VERBATIMS)
        .groupby("key")["comment"]
        .agg(list)
    )
    has_members = {key for f in found for key in f.members["key"]}
    return [
        evidence | {"verbatims": [redact_pii(q) for q in quotes.get(key, [])]}
        if key in has_members
        else evidence
        for key, evidence in zip(ranked["key"], ranked["evidence"], strict=True)
    ]


def backlog(ranked: pd.DataFrame, links: pd.DataFrame) -> pd.DataFrame:
    """The improvement roadmap: ranked pain points with the hypotheses addressing them.

    `links` has `key` (pain point), `hypothesis`, `status` and `decision` (latest, or None).
    `state` is `addressed` once a pilot on it was adopted, `piloting` while one is approved
    or running, `learned` when pilots concluded without adoption, `planned` while a hypothesis
    on it is a draft, else `open`. A pain point
    only hypotheses name (`new: true`, not ranked) comes last, with no rank or score.
    """
    merged = ranked[["rank", "key", "title", "score"]].merge(links, on="key", how="outer")
    merged["rank"] = merged["rank"].astype("Int64")
    merged["title"] = merged["title"].fillna(merged["key"])

    def keys_with(mask: pd.Series) -> pd.Series:
        return merged["key"].isin(merged.loc[mask, "key"])

    merged["state"] = np.select(
        [
            keys_with(merged["decision"] == "adopt"),
            keys_with(merged["status"].isin(["approved", "running"])),
            keys_with(merged["status"] == "concluded"),
            keys_with(merged["hypothesis"].notna()),
        ],
        ["addressed", "piloting", "learned", "planned"],
        "open",
    )
    return merged.sort_values(["rank", "hypothesis"], na_position="last", ignore_index=True)
