"""Pain points ranked by reach × impact × confidence / effort, every component visible.

A candidate is a group of affected customers (or sessions) found in a cell of the data:

- `ticket:<topic>`: customers with a ticket on the topic; impact against comparable customers
  (same segment and region, contacted support anyway: `tasks.comparable`), or from the
  post-contact answers about those tickets against answers about other tickets when enough
  are linked; the raw gap against everyone else stays beside it (`raw_impact`);
- `comment:<topic>:<segment>`: respondents of a segment whose comments name a topic no ticket
  topic covers, against the segment's other respondents;
- `region:<region>`: the region's customers, against everyone else;
- `load:peak_hours`: customers whose tickets came in the busiest hours, against the other
  ticket raisers;
- `funnel:<step>:<device>`: sessions that reached the step before on the device, against the
  conversion into the step on the other devices;
- two-way cells `<one of the above>@<dimension>=<value>` (`tasks.cells`): a ticket topic × a
  customer dimension (among customers who contacted support) or × a ticket's channel, agent
  or team (post-contact answers), a region × segment, a funnel step × device × segment. A
  cell is kept only when it is worse than its halves explain; Benjamini–Hochberg at
  `Q_FDR` over the whole family (every candidate's p-value) decides, and every row says
  whether it is `significant`. A marginal the cell explains (the cell holds at least
  `EXPLAINED_SHARE` of its points at stake) is marked `explained_by` and ranked after the
  unexplained ones.

Impacts are points of an outcome share: NPS points (promoters minus detractors, in %) or
conversion points (%). Reach share × impact is then the points at stake for the whole base (or
all funnel entrants), so candidates of every kind rank on one scale. Confidence shrinks the score
when the impact's 95% CI is wide; effort comes from `efforts:` in the config. Revenue at stake
(`tasks.money`) prices the same loss, through the churn model's probabilities when one is
published; `ranking="revenue"` ranks by it.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from tasks.cells import Q_FDR, CellGrid, funnel_cells, peeled, q_values
from tasks.comparable import adjusted_impacts, independent_columns, robust_ols
from tasks.funnels import funnel, funnel_rows
from tasks.identity import THREADS, is_in, lookup
from tasks.labels import labels, titled
from tasks.loader import CxData, ticket_ids
from tasks.metrics import dimension_columns, nps_points
from tasks.moments import Z95, Moments
from tasks.money import (
    CHURN_FORMULA,
    PointValue,
    churn_at_risk,
    formulas,
    require_orders,
    revenue_at_stake,
)
from tasks.text import Taxonomy, redact_pii, tag_topics

MIN_RESPONDENTS = 30
VERBATIMS = 3
PEAK_LOAD = 1.5  # an hour is a peak when its ticket volume is 1.5× the average hour's
NPS_UNIT = "NPS points"
CONVERSION_UNIT = "conversion points"
# A customer dimension with more values than this is no cell dimension (an id, a free text).
MAX_DIMENSION_VALUES = 50
TICKET_DIMENSIONS = {"ticket_channel": "channel", "agent": "agent", "team": "team"}
EXPLAINED_SHARE = 0.5  # a marginal is explained by a cell holding this share of its points
NAMES_TOPIC = "names the topic"
ABOUT_TICKET = "survey about the ticket"
AFFECTED_DETRACTOR = "affected detractor"
CELL_METHOD = "interaction: the gap in the cell beyond the topic's gap elsewhere"
NO_VERBATIMS = "no comment names this topic and no survey answer is linked to these tickets"
# How a ticket topic's impact was estimated, by the reason code the key-driver check gives
# when the two disagree (see `_driver`).
IMPACT_METHODS = {
    "post_contact": "post-contact answers about these tickets vs about other tickets",
    "adjusted": "regression on topics, contact and segment, region",
}
RAW_METHOD = "raw gap (too few respondents to adjust)"


def cell_dimensions(customers: pd.DataFrame) -> list[str]:
    """The customer dimensions cells cut by unless told: every dimension column the customers
    have (`tasks.metrics.dimension_columns`: segment, region, channel, language, declared
    ones) with at most `MAX_DIMENSION_VALUES` distinct values; a column with more (an id or
    free text mapped as a dimension) would make thousands of cells of a few customers each,
    so it is skipped."""
    columns = dimension_columns(customers)
    distinct = customers[columns].nunique()
    return [c for c in columns if distinct[c] <= MAX_DIMENSION_VALUES]


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
    # On integer codes: the (key, customer) pairs number millions, the keys a few hundred.
    key, keys = pd.factorize(members["key"], sort=True)
    who, ids = pd.factorize(members["customer_id"])
    width = np.int64(len(ids) + 1)  # customer code + 1, so an unknown customer is 0
    pairs = pd.unique(key[key >= 0].astype(np.int64) * width + who[key >= 0] + 1)
    pair_key, pair_who = pairs // width, pairs % width - 1
    named = pair_who >= 0
    reach = np.bincount(pair_key[named], minlength=len(keys))
    at = pd.Index(points.index).get_indexer(ids)[pair_who[named]]
    values = points.to_numpy(dtype=float)[at[at >= 0]]
    hit = pair_key[named][at >= 0]
    inside = Moments(*(np.bincount(hit, w, len(keys)) for w in (None, values, values**2)))
    outside = Moments.of(points) - inside
    impact = outside.mean - inside.mean
    half = Z95 * np.hypot(inside.se, outside.se)
    answered = inside.n > 0
    return pd.DataFrame(
        {
            "key": np.asarray(keys, dtype=object),
            "respondents": inside.n,
            "respondents_unaffected": outside.n,
            "nps_affected": inside.mean,
            "nps_unaffected": np.where(answered, outside.mean, np.nan),
            "impact": impact,
            "impact_ci_low": impact - half,
            "impact_ci_high": impact + half,
            "reach": reach,
        }
    )


def key_drivers(tickets: pd.DataFrame, latest: pd.DataFrame) -> pd.DataFrame:
    """NPS points each ticket topic costs, holding the other topics fixed, with 95% CIs.

    OLS of each respondent's `latest` NPS points on one indicator per topic (robust HC1
    errors), so topics that co-occur are not double-counted; a topic the others already
    span (every respondent has exactly one) gets no row. Columns `key`, `driver_impact`
    (points lost), `driver_ci_low`, `driver_ci_high`, `driver_p`.
    """
    pairs = tickets[["customer_id", "topic"]].dropna()
    topic, topics = pd.factorize(pairs["topic"], sort=True)
    row = pd.Index(latest["customer_id"]).get_indexer(pairs["customer_id"])
    design = np.zeros((len(latest), len(topics)))
    design[row[row >= 0], topic[row >= 0]] = 1.0
    frame = pd.DataFrame(design, columns=pd.Index(topics).astype(str)).assign(const=1.0)
    frame = frame[independent_columns(frame[["const", *frame.columns[:-1]]])]
    params, se = robust_ols(nps_points(latest["score"]).to_numpy(dtype=float), frame.to_numpy())
    impact, se = -params[1:], se[1:]
    return pd.DataFrame(
        {
            "key": "ticket:" + frame.columns[1:],
            "driver_impact": impact,
            "driver_ci_low": impact - Z95 * se,
            "driver_ci_high": impact + Z95 * se,
            "driver_p": 2 * stats.norm.sf(np.abs(impact / se)),
        }
    )


def rank_pain_points(
    data: CxData,
    efforts: dict[str, float],
    funnel_steps: Sequence[str] = (),
    taxonomy: Taxonomy | None = None,
    dimensions: Sequence[str] | None = None,
    ranking: str = "nps",
    value_per_point: float | None = None,
    funnel_source: str | None = None,
    churn: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Every candidate with an impact CI (two or more affected respondents or sessions; see
    the module docstring), best first, with its components.

    `efforts` maps pain-point keys (`ticket:delivery`) to person-weeks; `default` applies to
    the rest and such rows are flagged `effort_is_default`. `funnel_steps` orders the funnel
    (no funnel candidates without it); its sessions come from the web source
    `funnel_source`, else from `tasks.funnels.main_source`. `dimensions` are the customer
    columns cells cut by (default: `cell_dimensions`). `ranking` is `nps` (by `score`) or
    `revenue` (by `revenue_score`, needs orders); `value_per_point` overrides the revenue
    per customer per NPS point that orders give; `churn` (`customer_id`, `probability`,
    `value`: a published churn model's scores, `tasks.money.published_scores`) prices the
    NPS-scale candidates by their affected customers' churn against comparable ones instead
    (`tasks.money.churn_at_risk`). Explained marginals rank after the rest.
    Each row's `evidence` holds counts, labelled redacted verbatims, and for ticket topics
    the key-driver estimate and whether it agrees.
    """
    if ranking not in ("nps", "revenue"):
        raise ValueError(f"ranking: {ranking!r} is not one of nps, revenue")
    if ranking == "revenue" and (churn is None or churn.empty):  # churn scores carry value
        require_orders(data.orders)
    numbered = data.numbered()
    if churn is not None:
        number = pd.Series(numbered.customers["customer_id"].to_numpy(),
                           index=data.customers["customer_id"])  # fmt: skip
        churn = churn.assign(customer_id=lookup(churn["customer_id"], number))
    data = numbered
    latest = latest_nps(data)
    points = pd.Series(nps_points(latest["score"]).to_numpy(), index=latest["customer_id"])
    dims = [d for d in (cell_dimensions(data.customers) if dimensions is None else dimensions)
            if d in data.customers.columns]  # fmt: skip
    web = funnel_rows(data.web, funnel_steps, funnel_source)
    # The kinds are independent and mostly in numpy and Arrow (which release the GIL): the
    # pool finds the rest while this thread tags comments and ranks the topics they name.
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        others = [
            pool.submit(kind, *args)
            for kind, *args in [
                (ticket_topics, data, latest, points),
                (topic_cells, data, points, dims),
                (regions, data, points),
                (post_contact_cells, data),
                (region_cells, data, points),
                (peak_load, data, points),
                (funnel_leaks, web, funnel_steps),
                (funnel_step_cells, web, funnel_steps),
            ]
        ]
        mentions = topic_mentions(data.responses, taxonomy)
        commented = comment_topics(data, points, mentions)
        tickets, cells_in, regional, post_contact, regions_in, peak, leaks, steps = (
            f.result() for f in others
        )
    found = [quoted(tickets, mentions, data.responses), commented, regional, peak]
    cells = [cells_in, post_contact, regions_in]
    base = max(data.customers["customer_id"].nunique(), 1)
    tables = [f.table.assign(reach_share=f.table["reach"] / base, unit=NPS_UNIT)
              for f in [*found, *cells] if not f.table.empty]  # fmt: skip
    tables += [t for t in [leaks, steps] if not t.empty]
    if not tables:
        return pd.DataFrame()
    ranked = pd.concat(tables, ignore_index=True)
    ranked = ranked.dropna(subset=["impact_ci_low", "impact_ci_high"])  # < 2 affected answered
    if ranked.empty:
        return ranked
    raw = ranked.reindex(columns=RAW_COLUMNS)
    for column, fallback in zip(
        RAW_COLUMNS, ["impact", "impact_ci_low", "impact_ci_high"], strict=True
    ):
        ranked[column] = raw[column].fillna(ranked[fallback])
    ranked = _decided(ranked)
    found += [c.found(set(ranked["key"]), mentions, data.responses) for c in cells]
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
    ranked = _priced(ranked, data, latest, value_per_point, found, churn)
    ranked["revenue_score"] = (
        ranked["revenue_at_stake"] * ranked["revenue_confidence"] / ranked["effort"]
    )
    ranked = _folded(ranked)
    by = "score" if ranking == "nps" else "revenue_score"
    ranked = ranked.assign(_explained=ranked["explained_by"].notna()).sort_values(
        ["_explained", by, "reach"], ascending=[True, False, False], ignore_index=True
    )
    ranked["rank"] = np.arange(1, len(ranked) + 1)
    ranked["evidence"] = _explained(ranked, _with_verbatims(ranked, found, latest))
    return ranked.drop(
        columns=["respondents", "_explained", "revenue_formula", "churn_scored", *CELL_ONLY],
        errors="ignore",
    )


RAW_COLUMNS = ["raw_impact", "raw_ci_low", "raw_ci_high"]
MARGINAL_COLUMNS = ["row_marginal", "col_marginal"]
CELL_ONLY = ["cell", "row", "dimension", "value", *MARGINAL_COLUMNS]  # kept in `evidence`


def _decided(ranked: pd.DataFrame) -> pd.DataFrame:
    """Candidates with their family-wide BH `q_value` and `significant`; cells that are not
    significant are dropped (they are only candidates when worse than their halves)."""
    se = (ranked["impact_ci_high"] - ranked["impact"]) / Z95
    with np.errstate(divide="ignore", invalid="ignore"):
        own_p = pd.Series(stats.norm.sf(ranked["impact"] / se), index=ranked.index)
    if "cell" not in ranked:
        ranked = ranked.assign(cell=False)
    ranked["cell"] = ranked["cell"].fillna(False).astype(bool)
    given = ranked["p_value"] if "p_value" in ranked else pd.Series(np.nan, index=ranked.index)
    ranked["p_value"] = given.where(ranked["cell"], own_p)
    ranked["q_value"] = q_values(ranked["p_value"])
    ranked["significant"] = ranked["q_value"].le(Q_FDR)
    for column in MARGINAL_COLUMNS:
        if column not in ranked:
            ranked[column] = np.nan
    return ranked[~ranked["cell"] | ranked["significant"]].reset_index(drop=True)


def _folded(ranked: pd.DataFrame) -> pd.DataFrame:
    """`explained_by`: for a marginal that a significant cell explains, that cell's key (the
    best-scoring one if several do); else None.

    A cell explains a marginal when its own points at stake (reach × interaction) are at
    least `EXPLAINED_SHARE` of the marginal's (reach × impact): a topic that hurts a little
    everywhere and a lot in one region is that region's problem first.
    """
    cells = ranked[ranked["cell"]].sort_values("score", ascending=False)
    points = (ranked["reach"] * ranked["impact"]).set_axis(ranked["key"])
    stake = (cells["reach"] * cells["impact"]).to_numpy()
    claims = pd.concat(
        [
            pd.DataFrame(
                {
                    "marginal": cells[side].to_numpy(),
                    "cell_key": cells["key"].to_numpy(),
                    "stake": stake,
                }
            )
            for side in ("row_marginal", "col_marginal")
        ]
    ).dropna(subset=["marginal"])
    total = claims["marginal"].map(points)
    claims = claims[claims["stake"] >= EXPLAINED_SHARE * total.where(total > 0)]
    by_marginal = claims.drop_duplicates("marginal").set_index("marginal")["cell_key"]
    explained = ranked["key"].map(by_marginal).where(~ranked["cell"])
    return ranked.assign(explained_by=explained.astype(object).where(explained.notna(), None))


def _priced(
    ranked: pd.DataFrame,
    data: CxData,
    latest: pd.DataFrame,
    value_per_point: float | None,
    found: list[Found],
    churn: pd.DataFrame | None,
) -> pd.DataFrame:
    """`ranked` with its money scale: `revenue_at_stake` with a 95% CI (`revenue_ci_low`,
    `revenue_ci_high`), `revenue_confidence` (from that CI), `revenue_formula`, and, when
    `churn` scores customers, `churn_uplift` and `churn_scored` (`tasks.money`).

    Without churn scores an NPS loss is priced through the orders (its CI from the impact's);
    with them every NPS-scale candidate is priced by its affected customers' churn, so one
    ranking never mixes the two. Funnel leaks stay priced in lost orders.
    """
    customers = data.customers.drop_duplicates("customer_id").set_index("customer_id")
    value = PointValue.from_orders(data.orders, latest, value_per_point, customers["segment"])
    reach, unit = ranked["reach"], ranked["unit"]
    priced = ranked.assign(
        revenue_at_stake=revenue_at_stake(reach, ranked["impact"], unit, value),
        revenue_ci_low=revenue_at_stake(reach, ranked["impact_ci_low"], unit, value),
        revenue_ci_high=revenue_at_stake(reach, ranked["impact_ci_high"], unit, value),
        revenue_confidence=ranked["confidence"],
        revenue_formula=formulas(unit, value),
    )
    if churn is None or churn.empty:
        return priced
    members = pd.concat([f.members for f in found], ignore_index=True)
    # A region's customers have no comparable customers in their own region.
    regional = members["key"].str.startswith("region:")
    risk = pd.concat(
        [
            churn_at_risk(members[~regional], churn, comparable_strata(data)),
            churn_at_risk(members[regional], churn, comparable_strata(data, ("segment",))),
        ]
    ).reindex(priced["key"])
    risk = risk.fillna({"scored": 0, "revenue_at_risk": 0.0, "revenue_ci_low": 0.0,
                        "revenue_ci_high": 0.0}).set_axis(priced.index)  # fmt: skip
    nps = unit == NPS_UNIT
    at_risk = risk["revenue_at_risk"]
    churned = {
        "revenue_at_stake": at_risk.clip(lower=0),
        "revenue_ci_low": risk["revenue_ci_low"],
        "revenue_ci_high": risk["revenue_ci_high"],
        "revenue_confidence": confidence(
            at_risk, risk["revenue_ci_high"] - at_risk, risk["scored"]
        ),
        "revenue_formula": pd.Series(CHURN_FORMULA, index=priced.index),
    }
    for column, values in churned.items():
        priced[column] = values.where(nps, priced[column])
    priced["churn_uplift"] = risk["churn_uplift"].where(nps)
    priced["churn_scored"] = risk["scored"].where(nps)
    return priced


def comparable_strata(data: CxData, by: Sequence[str] = ("segment", "region")) -> pd.Series:
    """Each customer's stratum for comparisons of churn: the columns `by` and whether they
    contacted support at all (`tasks.comparable` adjusts NPS for the same)."""
    customers = data.customers.drop_duplicates("customer_id").set_index("customer_id")
    contacted = customers.index.isin(data.tickets["customer_id"].dropna())
    parts = [customers[c].astype(object).fillna("?").astype(str) for c in by if c in customers]
    label = pd.Series(np.where(contacted, "contacted", "no contact"), index=customers.index)
    for part in parts:
        label = part + "|" + label
    return label


def _explained(ranked: pd.DataFrame, evidence: list) -> list:
    """Each row's evidence plus how its ranking reads: raw against adjusted impact, the
    FDR decision, what explains it, and the revenue at stake with its CI and formula."""
    columns = ["raw_impact", "p_value", "q_value", "significant", "explained_by",
               "revenue_at_stake", "revenue_ci_low", "revenue_ci_high", "revenue_formula",
               "churn_uplift", "churn_scored"]  # fmt: skip
    rows = ranked.reindex(columns=columns)
    out = []
    for ev, row in zip(evidence, rows.itertuples(index=False), strict=True):
        extra = {
            "raw_impact": _round(row.raw_impact),
            "p_value": float(f"{row.p_value:.2g}") if pd.notna(row.p_value) else None,
            "q_value": float(f"{row.q_value:.2g}") if pd.notna(row.q_value) else None,
            "significant": bool(row.significant),
            "explained_by": row.explained_by,
            "revenue_at_stake": _money(row.revenue_at_stake),
            "revenue_ci": [_money(row.revenue_ci_low), _money(row.revenue_ci_high)],
            "revenue_formula": row.revenue_formula,
        }
        if pd.notna(row.churn_scored):
            extra["churn_uplift"] = _round(row.churn_uplift)
            extra["churn_scored"] = int(row.churn_scored)
        out.append(ev | extra)
    return out


def _money(value: float) -> float | None:
    return None if pd.isna(value) else round(float(value), 2)


@dataclass(frozen=True)
class Found:
    """Candidates of one kind, their affected customers (`key`, `customer_id`) and, where the
    candidate is about a topic, the on-topic comments (`key`, `comment`, `submitted_at`,
    `source`) to quote instead of the affected detractors' latest ones."""

    table: pd.DataFrame
    members: pd.DataFrame
    said: pd.DataFrame | None = None

    @classmethod
    def none(cls) -> Found:
        return cls(pd.DataFrame(), pd.DataFrame(columns=["key", "customer_id"]))


@dataclass(frozen=True)
class Cells:
    """Two-way cell candidates of one kind before the family's FDR decides which stay, and
    how to list the affected customers of those that do: `pairs` (`unit`, `row`,
    `customer_id`) with `dims` (index `unit`) as the cells were cut. `topical` cells are
    about a ticket topic and quote on-topic comments; `tickets` says units are tickets (so
    answers linked to them are quoted too)."""

    table: pd.DataFrame
    pairs: pd.DataFrame
    dims: pd.DataFrame
    topical: bool = False
    tickets: bool = False

    @classmethod
    def none(cls) -> Cells:
        return cls(pd.DataFrame(), pd.DataFrame(columns=["unit", "row", "customer_id"]),
                   pd.DataFrame())  # fmt: skip

    def found(self, keys: set[str], mentions: pd.DataFrame, responses: pd.DataFrame) -> Found:
        """The affected customers of the cells in `keys` (one mask per kept cell: the few
        the FDR kept, never a loop over rows) and their quotes."""
        kept = self.table[self.table["key"].isin(keys)] if len(self.table) else self.table
        if kept.empty:
            return Found.none()
        frames = []
        units = self.pairs["unit"]
        by_dim = {dim: self.dims[dim].reindex(units).to_numpy() for dim in set(kept["dimension"])}
        rows = self.pairs["row"].to_numpy()
        for key, row, dim, value in zip(
            kept["key"], kept["row"], kept["dimension"], kept["value"], strict=True
        ):
            hit = (rows == row) & (by_dim[dim] == value)
            frames.append(self.pairs.loc[hit].assign(key=key, topic=row))
        members = pd.concat(frames, ignore_index=True)
        if not self.topical:
            return Found(pd.DataFrame(), members[["key", "customer_id"]])
        if self.tickets:
            members["ticket"] = members["unit"].astype(str)
        return quoted(Found(pd.DataFrame(), members), mentions, responses)


def topic_cells(data: CxData, points: pd.Series, dims: Sequence[str]) -> Cells:
    """`ticket:<topic>@<dimension>=<value>` cells over customer `dims`, among respondents who
    contacted support (so contacting at all is the same on both sides)."""
    kept = (data.tickets["topic"].notna() & data.tickets["customer_id"].notna()).to_numpy()
    tickets = data.tickets[kept]
    if tickets.empty or not dims:
        return Cells.none()
    pairs = pd.DataFrame(
        {
            "unit": tickets["customer_id"],
            "row": tickets["topic"],
            "customer_id": tickets["customer_id"],
        }
    ).drop_duplicates()
    customers = data.customers.drop_duplicates("customer_id").set_index("customer_id")
    frame = customers[list(dims)]
    contacted = points[is_in(pd.Series(points.index), pairs["unit"])]
    cells = _cut(contacted, pairs, frame)
    values = {d: data.customer_column("tickets", d)[kept] for d in dims}
    table = _cell_table(cells, "ticket:", "ticket_topic", _reach(pairs, frame),
                        _mechanism(tickets, values))  # fmt: skip
    return Cells(table, pairs, frame, topical=True)


def _cut(y: pd.Series, pairs: pd.DataFrame, dims: pd.DataFrame) -> pd.DataFrame:
    """The cells of outcomes `y` found by peeling (`tasks.cells.peeled`)."""
    return peeled(CellGrid.of(y.index, pairs, dims), y.to_numpy(dtype=float))


def post_contact_cells(data: CxData) -> Cells:
    """`ticket:<topic>@<ticket_channel|agent|team>=<value>` cells of the post-contact NPS
    answers linked to tickets: the unit is the answered ticket."""
    linked = linked_answers(data)
    present = {name: column for name, column in TICKET_DIMENSIONS.items() if column in linked}
    if linked.empty or not present:
        return Cells.none()
    y = pd.Series(linked["points"].to_numpy(), index=linked["ticket"].to_numpy())
    y = y[~y.index.duplicated()]
    units = linked.drop_duplicates("ticket").set_index("ticket")
    frame = pd.DataFrame({name: units[column] for name, column in present.items()})
    cells = _cut(y, pd.DataFrame({"unit": units.index, "row": units["topic"]}), frame)
    tickets = data.tickets.dropna(subset=["topic"]).assign(unit=_ids_or_none(data.tickets))
    pairs = tickets[["unit", "row", "customer_id"]] if "row" in tickets else tickets.assign(
        row=tickets["topic"])[["unit", "row", "customer_id"]]  # fmt: skip
    every = tickets.drop_duplicates("unit").set_index("unit")
    all_dims = pd.DataFrame({name: every[column] for name, column in present.items()})
    values = {name: tickets[column] for name, column in present.items()}
    reach = _reach(pairs, all_dims, by_customer=True)
    table = _cell_table(cells, "ticket:", "ticket_topic", reach, _mechanism(tickets, values))
    return Cells(table, pairs, all_dims, topical=True, tickets=True)


def region_cells(data: CxData, points: pd.Series) -> Cells:
    """`region:<region>@segment=<segment>` cells over all respondents."""
    customers = data.customers.dropna(subset=["region"]).drop_duplicates("customer_id")
    if customers.empty or "segment" not in customers:
        return Cells.none()
    pairs = pd.DataFrame(
        {"unit": customers["customer_id"], "row": customers["region"],
         "customer_id": customers["customer_id"]}
    )  # fmt: skip
    frame = customers.set_index("customer_id")[["segment"]]
    cells = _cut(points, pairs, frame)
    return Cells(_cell_table(cells, "region:", "region", _reach(pairs, frame)), pairs, frame)


def funnel_step_cells(web: pd.DataFrame, steps: Sequence[str]) -> pd.DataFrame:
    """`funnel:<step>:<device>@segment=<segment>` cells: conversion into a step on one
    device for one segment, worse than the device's and the segment's own leaks explain."""
    cells = funnel_cells(web, steps)
    if cells.empty:
        return pd.DataFrame()
    entrants = web.loc[web["step"] == steps[0], "value"].sum()
    reach = cells.set_index(["row", "dimension", "value"])["n_cell"].rename("reach")
    table = _cell_table(cells, "funnel:", "funnel_step", reach)
    return table.assign(
        reach_share=table["reach"] / entrants if entrants else np.nan, unit=CONVERSION_UNIT
    )


def _reach(pairs: pd.DataFrame, dims: pd.DataFrame, by_customer: bool = False) -> pd.Series:
    """Distinct affected units (customers with `by_customer`) per (row, dimension, value)."""
    row_code, rows = pd.factorize(pairs["row"])
    # (unit, row) pairs are distinct already: counting units needs no distinct count
    who = pd.factorize(pairs["customer_id"])[0] if by_customer else None
    parts = []
    for dim in dims.columns:
        known, flat, cols = _flat_cells(row_code, dims[dim].reindex(pairs["unit"]))
        if who is not None:
            width = who.max() + 1
            seen = who[known] >= 0
            flat = pd.unique(flat[seen] * width + who[known][seen]) // width
        count = np.bincount(flat, minlength=len(rows) * len(cols))
        present = np.flatnonzero(count)
        index = _cell_index(rows, cols, present // len(cols), present % len(cols), dim)
        parts.append(pd.Series(count[present], index=index))
    return pd.concat(parts).rename("reach") if parts else pd.Series(dtype=float, name="reach")


def _flat_cells(row_code: np.ndarray, value: pd.Series) -> tuple[np.ndarray, np.ndarray, pd.Index]:
    """The units with a row and a value (`known`), their cell's number (row code × values +
    value code) and the values, for `np.bincount` per cell."""
    col_code, cols = pd.factorize(value)
    known = (row_code >= 0) & (col_code >= 0)
    return known, row_code[known].astype(np.int64) * len(cols) + col_code[known], cols


def _cell_index(
    rows: pd.Index, cols: pd.Index, r: np.ndarray, c: np.ndarray, dim: str
) -> pd.MultiIndex:
    """The (row, dimension, value) index of the cells at row codes `r` and value codes `c`."""
    return pd.MultiIndex.from_arrays(
        [np.asarray(rows)[r], np.full(len(r), dim), np.asarray(cols)[c]],
        names=["row", "dimension", "value"],
    )


# Ticket measures a pain point's mechanism compares (shares in %, FRT in hours).
MECHANISM = {"frt_hours": "frt", "sla_breach": "sla_breach", "escalation": "escalation",
             "reopen_rate": "reopen"}  # fmt: skip


def _mechanism(tickets: pd.DataFrame, values: dict[str, pd.Series]) -> pd.DataFrame:
    """Per (row, dimension, value): mean ticket measures of the topic inside the cell and
    of the same topic outside it (`frt_in`, `frt_out`, …), from sums by subtraction."""
    measures = [m for m in MECHANISM if m in tickets]
    numbers = tickets[measures].to_numpy(dtype=float)
    seen = ~np.isnan(numbers)
    numbers = np.where(seen, numbers, 0.0)
    row_code, rows = pd.factorize(tickets["topic"])
    names = [f"{MECHANISM[m]}_{side}" for side in ("in", "out") for m in measures]
    parts = []
    for dim, value in values.items():
        known, flat, cols = _flat_cells(row_code, value)
        shape = (len(rows), len(cols))

        def summed(weights: np.ndarray, flat: np.ndarray = flat, shape: tuple = shape):
            return np.bincount(flat, weights, shape[0] * shape[1]).reshape(shape)

        sums = [summed(numbers[known, j]) for j in range(len(measures))]
        counts = [summed(seen[known, j].astype(float)) for j in range(len(measures))]
        r, c = np.nonzero(summed(np.ones(len(flat))))
        with np.errstate(divide="ignore", invalid="ignore"):
            inside = [(s / n)[r, c] for s, n in zip(sums, counts, strict=True)]
            outside = [
                ((s.sum(axis=1, keepdims=True) - s) / (n.sum(axis=1, keepdims=True) - n))[r, c]
                for s, n in zip(sums, counts, strict=True)
            ]
        columns = dict(zip(names, inside + outside, strict=True))
        parts.append(pd.DataFrame(columns, index=_cell_index(rows, cols, r, c, dim)))
    if not parts:
        return pd.DataFrame()
    return pd.concat(parts)


def _cell_table(
    cells: pd.DataFrame,
    prefix: str,
    kind: str,
    reach: pd.Series,
    mechanism: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Cells (`tasks.cells` columns) as candidates, with the keys of the marginals they may
    explain (`row_marginal`, and `col_marginal` for regions).

    The impact is the interaction: the cell's gap against the column's other units beyond
    the row's gap elsewhere, so a cell scores what is specific to it and never re-counts
    its topic's marginal; the plain gap is the cell's `raw_impact`.
    """
    if cells.empty:
        return pd.DataFrame()
    where = cells["dimension"] + "=" + cells["value"].astype(str)
    index = pd.MultiIndex.from_frame(cells[["row", "dimension", "value"]])
    table = pd.DataFrame(
        {
            "key": prefix + cells["row"] + "@" + where,
            "kind": kind,
            "cell": True,
            "row": cells["row"],
            "dimension": cells["dimension"],
            "value": cells["value"],
            "reach": reach.reindex(index).fillna(cells["n_cell"]).to_numpy(),
            "respondents": cells["n_cell"].astype(int),
            "respondents_unaffected": cells["n_col_rest"].astype(int),
            "nps_affected": cells["mean_cell"],
            "nps_unaffected": cells["mean_col_rest"],
            "impact": cells["interaction"],
            "impact_ci_low": cells["interaction"] - Z95 * cells["interaction_se"],
            "impact_ci_high": cells["interaction"] + Z95 * cells["interaction_se"],
            "raw_impact": cells["gap"],
            "raw_ci_low": cells["gap_ci_low"],
            "raw_ci_high": cells["gap_ci_high"],
            "p_value": cells["interaction_p"],
            "row_marginal": prefix + cells["row"],
            "col_marginal": ("region:" + cells["value"].astype(str)).where(
                cells["dimension"] == "region"
            ),
        }
    )
    ways = mechanism.reindex(index) if mechanism is not None and len(mechanism) else None
    evidence = []
    for i, row in enumerate(cells.itertuples(index=False)):
        item = {
            "cell": {row.dimension: row.value},
            "impact_method": CELL_METHOD,
            "respondents_affected": int(row.n_cell),
            "respondents_unaffected": int(row.n_col_rest),
            "nps_affected": _round(row.mean_cell),
            "nps_unaffected": _round(row.mean_col_rest),
            "interaction": _round(row.interaction),
            "loss_outside_cell": _round(row.row_outside),
            "loss_of_value_without_row": _round(row.col_outside),
        }
        if ways is not None:
            item["mechanism"] = _mechanism_text(ways.iloc[i])
        evidence.append(item)
    return table.assign(evidence=evidence)


def _mechanism_text(measures: pd.Series) -> dict:
    """Inside against outside the cell, rounded, with the FRT ratio (`frt_ratio`)."""
    out = {name: _round(value) for name, value in measures.items()}
    frt_in, frt_out = measures.get("frt_in", np.nan), measures.get("frt_out", np.nan)
    if pd.notna(frt_in) and pd.notna(frt_out) and frt_out > 0:
        out["frt_ratio"] = round(float(frt_in / frt_out), 2)
    return out


def topic_mentions(responses: pd.DataFrame, taxonomy: Taxonomy | None = None) -> pd.DataFrame:
    """One row per (answer with a comment, topic its comment names): `customer_id`, `kind`,
    `comment`, `submitted_at`, `topic`, and `ticket_id` where answers carry it. Each distinct
    text is tagged once."""
    said = responses[responses["comment"].notna()]
    text, texts = pd.factorize(said["comment"])
    tags = tag_topics(pd.Series(texts, dtype=object), taxonomy)
    # Joined on the texts' numbers: comparing a million comments as strings costs seconds.
    hits = pd.DataFrame({"text": text, "row": np.arange(len(said))}).merge(
        pd.DataFrame({"text": tags["text_index"].to_numpy(), "topic": tags["topic"].to_numpy()})
    )
    columns = [c for c in ("customer_id", "ticket_id", "kind", "comment", "submitted_at")
               if c in said.columns]  # fmt: skip
    rows = said[columns].iloc[hits["row"].to_numpy()].reset_index(drop=True)
    return rows.assign(topic=hits["topic"].to_numpy())


def linked_answers(data: CxData) -> pd.DataFrame:
    """Post-contact NPS answers joined to the ticket they are about: `ticket`, `customer_id`,
    `topic`, the ticket's dimensions, `points`, `comment`, `submitted_at`."""
    ids = ticket_ids(data.tickets)
    responses = data.responses
    if ids is None or "ticket_id" not in responses.columns:
        return pd.DataFrame(columns=["ticket", "topic", "points"])
    answers = responses[(responses["kind"] == "nps") & responses["ticket_id"].notna()]
    answers = answers.dropna(subset=["score"])
    tickets = data.tickets.assign(ticket=ids.astype(str)).dropna(subset=["topic"])
    columns = ["ticket", "topic", *[c for c in TICKET_DIMENSIONS.values() if c in tickets]]
    linked = answers[["ticket_id", "score", "comment", "submitted_at"]].merge(
        tickets[[*dict.fromkeys([*columns, "customer_id"])]],
        left_on=answers["ticket_id"].astype(str),
        right_on="ticket",
    )
    return linked.assign(points=nps_points(linked["score"])).drop(
        columns=["key_0"], errors="ignore"
    )


def ticket_topics(data: CxData, latest: pd.DataFrame, points: pd.Series) -> Found:
    """`ticket:<topic>` candidates; evidence adds the worst segment × channel cells and the
    key-driver estimate. Members carry each ticket's `topic` and id (`ticket`) for `quoted`.

    The impact is against comparable customers (`tasks.comparable.adjusted_impacts`), or,
    for a topic with `MIN_RESPONDENTS` linked post-contact answers, the answers about other
    tickets minus those about this topic's; `impact_method` says which.
    """
    tickets = data.tickets.dropna(subset=["topic"])
    members = pd.DataFrame(
        {"key": "ticket:" + tickets["topic"], "customer_id": tickets["customer_id"]}
    )
    gaps = nps_gaps(points, members)
    if gaps.empty:
        return Found.none()
    gaps = gaps.rename(
        columns={
            "impact": "raw_impact",
            "impact_ci_low": "raw_ci_low",
            "impact_ci_high": "raw_ci_high",
        }
    )
    adjusted = _adjusted(data, points).set_index("key")
    post = _post_contact(data)
    gaps = gaps.join(adjusted, on="key")
    use_post = gaps["key"].isin(post.index)
    for column in ["impact", "impact_ci_low", "impact_ci_high"]:
        gaps[column] = gaps["key"].map(post[column]).where(use_post, gaps[column])
    raw = {"impact": "raw_impact", "impact_ci_low": "raw_ci_low", "impact_ci_high": "raw_ci_high"}
    for column, fallback in raw.items():
        gaps[column] = gaps[column].fillna(gaps[fallback])
    known = [use_post, gaps["contact_adjusted"].notna()]
    method = np.select(known, list(IMPACT_METHODS.values()), RAW_METHOD)
    reason = np.select(known, list(IMPACT_METHODS), "raw")
    topic = gaps["key"].str.removeprefix("ticket:")
    counts = tickets["topic"].value_counts()
    cells = _worst_cells(tickets, data.customers, points)
    drivers = key_drivers(data.tickets, latest).set_index("key")
    ways = _against_rest(tickets, tickets["topic"])
    evidence = []
    rows = zip(gaps["key"], topic, method, reason, gaps.itertuples(), strict=True)
    for key, name, how, why, row in rows:
        extra = {"tickets": int(counts[name]), "worst_cells": cells.get(name, []),
                 "impact_method": str(how), "raw_impact": _round(row.raw_impact)}  # fmt: skip
        if pd.notna(row.contact_adjusted):
            extra["contact_adjusted"] = bool(row.contact_adjusted)
        if name in ways.index:
            extra["mechanism"] = _mechanism_text(ways.loc[name])
        if key in drivers.index:
            extra.update(_driver(drivers.loc[key], row.impact, str(why)))
        evidence.append(_counts(row) | extra)
    table = gaps.drop(columns=["contact_adjusted", "impact_p"]).assign(
        kind="ticket_topic", evidence=evidence
    )
    members = members.assign(topic=tickets["topic"], ticket=_ids_or_none(tickets))
    return Found(table, members)


def quoted(found: Found, mentions: pd.DataFrame, responses: pd.DataFrame) -> Found:
    """`found` with the comments to quote (`on_topic`): its members (`key`, `customer_id`,
    `topic`, and `ticket` where they are tickets) keep only `key` and `customer_id`."""
    members = found.members
    if "topic" not in members:  # `Found.none()`
        return found
    linked = members[["key", "ticket"]] if "ticket" in members else None
    said = on_topic(members[["key", "customer_id", "topic"]], linked, mentions, responses)
    return Found(found.table, members[["key", "customer_id"]], said)


def _driver(driver: pd.Series, impact: float, reason: str) -> dict:
    """The key-driver estimate of a topic beside its ranking impact: `driver_agrees` when the
    impact lies in the driver's CI, else `driver_reason` says which estimate differs how:
    `post_contact` (the ranking reads the answers about the topic's tickets, the driver each
    customer's latest relationship NPS), `adjusted` (the ranking also holds contacting
    support, segment and region fixed, the driver only the other topics) or `raw`."""
    out = driver.round(2).to_dict()
    out["driver_p"] = float(f"{driver['driver_p']:.2g}")
    out["driver_agrees"] = bool(out["driver_ci_low"] <= impact <= out["driver_ci_high"])
    if not out["driver_agrees"]:
        out["driver_reason"] = reason
    return out


def _against_rest(tickets: pd.DataFrame, groups: pd.Series) -> pd.DataFrame:
    """Per value of `groups` (one per ticket): mean ticket measures of its tickets against
    all other tickets' (`frt_in`, `frt_out`, …; see `_mechanism`), index the value."""
    table = _mechanism(tickets.assign(topic="all"), {"group": groups})
    return table.droplevel(["row", "dimension"]) if len(table) else table


def _ids_or_none(tickets: pd.DataFrame) -> pd.Series:
    ids = ticket_ids(tickets)
    return ids.astype(str) if ids is not None else pd.Series(None, index=tickets.index)


def _adjusted(data: CxData, points: pd.Series) -> pd.DataFrame:
    """`tasks.comparable.adjusted_impacts` keyed `ticket:<topic>`."""
    pairs = data.tickets[["customer_id", "topic"]].dropna(subset=["customer_id"])
    customers = data.customers.drop_duplicates("customer_id").set_index("customer_id")
    if points.empty or pairs.empty:
        return pd.DataFrame(columns=["key", "impact", "impact_ci_low", "impact_ci_high",
                                     "impact_p", "contact_adjusted"])  # fmt: skip
    table = adjusted_impacts(points, pairs, customers)
    return table.assign(key="ticket:" + table["topic"].astype(str)).drop(columns="topic")


def _post_contact(data: CxData) -> pd.DataFrame:
    """Per `ticket:<topic>` with `MIN_RESPONDENTS` linked answers: other tickets' answers
    minus this topic's, in NPS points, with its CI (index `key`)."""
    linked = linked_answers(data)
    if linked.empty:
        return pd.DataFrame(columns=["impact", "impact_ci_low", "impact_ci_high"])
    answers = pd.Series(linked["points"].to_numpy(), index=np.arange(len(linked)))
    members = pd.DataFrame({"key": "ticket:" + linked["topic"], "customer_id": answers.index})
    gaps = nps_gaps(answers, members)
    gaps = gaps[gaps["respondents"] >= MIN_RESPONDENTS]
    return gaps.set_index("key")[["impact", "impact_ci_low", "impact_ci_high"]]


def on_topic(
    members: pd.DataFrame,
    linked: pd.DataFrame | None,
    mentions: pd.DataFrame,
    responses: pd.DataFrame,
) -> pd.DataFrame:
    """Comments to quote per key, each with its `source`: the affected customers' comments
    that name the key's topic (`members`: `key`, `customer_id`, `topic`), and comments of
    answers linked to the key's tickets (`linked`: `key`, `ticket`)."""
    # Only the few members with a comment can match: drop the rest before comparing texts.
    members = members[is_in(members["customer_id"], mentions["customer_id"])]
    named = members.drop_duplicates().merge(mentions, on=["customer_id", "topic"])
    frames = [named[["key", "comment", "submitted_at"]].assign(source=NAMES_TOPIC)]
    if linked is not None and "ticket_id" in responses.columns:
        about = responses.loc[responses["ticket_id"].notna() & responses["comment"].notna()]
        about = about.assign(ticket=about["ticket_id"].astype(str))
        linked = linked[is_in(linked["ticket"], about["ticket"])]
        hit = linked.dropna().drop_duplicates().merge(about, on="ticket")
        frames.insert(0, hit[["key", "comment", "submitted_at"]].assign(source=ABOUT_TICKET))
    return pd.concat(frames, ignore_index=True)


def comment_topics(data: CxData, points: pd.Series, mentions: pd.DataFrame) -> Found:
    """`comment:<topic>:<segment>` candidates for comment topics that no ticket topic covers:
    the pains customers only tell the survey about (`mentions`: see `topic_mentions`)."""
    said = mentions[mentions["kind"] == "nps"]
    said = said[~is_in(said["topic"], pd.Index(data.tickets["topic"].dropna().unique()))]
    if said.empty:
        return Found.none()
    mentions = said[["customer_id", "comment", "submitted_at", "topic"]].copy()
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
    said = mentions[["key", "comment", "submitted_at"]].assign(source=NAMES_TOPIC)
    return Found(table, members, said)


def regions(data: CxData, points: pd.Series) -> Found:
    """`region:<region>` candidates: a region whose customers score lower than the rest;
    evidence adds its tickets' measures against other regions' (`mechanism`)."""
    customers = data.customers.dropna(subset=["region"])
    members = pd.DataFrame(
        {"key": "region:" + customers["region"], "customer_id": customers["customer_id"]}
    )
    gaps = nps_gaps(points, members)
    region = customers.drop_duplicates("customer_id").set_index("customer_id")["region"]
    ways = _against_rest(data.tickets, lookup(data.tickets["customer_id"], region))
    evidence = []
    for key, row in zip(gaps["key"], gaps.itertuples(), strict=True):
        name = key.removeprefix("region:")
        extra = {"mechanism": _mechanism_text(ways.loc[name])} if name in ways.index else {}
        evidence.append(_counts(row) | extra)
    return Found(gaps.assign(kind="region", evidence=evidence), members)


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
    # A cell is numbered from its parts' codes: no string per ticket.
    codes, names = zip(
        *(pd.factorize(part.fillna("?"), sort=True)
          for part in (tickets["topic"], segment, tickets["channel"])),
        strict=True,
    )  # fmt: skip
    sizes = [len(n) for n in names]
    cell = (codes[0].astype(np.int64) * sizes[1] + codes[1]) * sizes[2] + codes[2]
    gaps = nps_gaps(points, pd.DataFrame({"key": cell, "customer_id": tickets["customer_id"]}))
    gaps = gaps[gaps["respondents"] >= MIN_RESPONDENTS]
    gaps = gaps.assign(weight=gaps["reach"] * gaps["impact"]).sort_values("weight", ascending=False)
    key = gaps["key"].to_numpy(dtype=np.int64)
    parts = zip(
        np.asarray(names[0])[key // (sizes[1] * sizes[2])],
        np.asarray(names[1])[key // sizes[2] % sizes[1]],
        np.asarray(names[2])[key % sizes[2]],
        strict=True,
    )
    out: dict[str, list[dict]] = {}
    for (topic, seg, channel), row in zip(parts, gaps.itertuples(), strict=True):
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
    comments, newest first, and where each came from (`verbatim_sources`).

    A candidate about a topic quotes only on-topic comments (`Found.said`: comments naming
    the topic, answers about its tickets) and says so in `verbatims_note` when there are
    none; a region or peak-hours candidate quotes its affected detractors' latest comments.
    """
    voices = latest.loc[
        (latest["score"] <= 6) & latest["comment"].notna(),
        ["customer_id", "comment", "submitted_at"],
    ]
    said = [f.said for f in found if f.said is not None]
    affected = [
        f.members.drop_duplicates()
        .merge(voices, on="customer_id")
        .assign(source=AFFECTED_DETRACTOR)
        for f in found
        if f.said is None and len(f.members)
    ]
    chosen = (
        pd.concat([*said, *affected], ignore_index=True)
        .sort_values("submitted_at", ascending=False, kind="stable")
        .drop_duplicates(["key", "comment"])
        .groupby("key")
        .head(VERBATIMS)
        .groupby("key")[["comment", "source"]]
        .agg(list)
    )
    has_members = {key for f in found for key in f.members["key"].unique()}
    topical = {key for f in found if f.said is not None for key in f.members["key"].unique()}
    out = []
    for key, evidence in zip(ranked["key"], ranked["evidence"], strict=True):
        if key not in has_members:
            out.append(evidence)
            continue
        quotes = chosen.loc[key] if key in chosen.index else {"comment": [], "source": []}
        extra = {
            "verbatims": [redact_pii(q) for q in quotes["comment"]],
            "verbatim_sources": list(quotes["source"]),
        }
        if key in topical and not extra["verbatims"]:
            extra["verbatims_note"] = NO_VERBATIMS
        out.append(evidence | extra)
    return out


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
