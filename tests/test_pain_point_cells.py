"""Two-way cells: planted intersection pains come out on top in order, noise does not, and
the quotes under a cell are about its topic."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tasks.cells import unit_cells
from tasks.loader import CxData
from tasks.metrics import with_ticket_measures
from tasks.pain_points import NAMES_TOPIC, NO_VERBATIMS, rank_pain_points
from tasks.text import tag_topics

DIMENSIONS = ["segment", "region", "channel", "device"]
TOPICS = {"delivery": 0.3, "payment": 0.25, "login": 0.25, "returns": 0.2}
MARGINAL_SHIFT = 0.015  # every topic moves 1.5% of its customers to detractor: 3 NPS points
# (cell key, column, value, topic, share moved from promoter to detractor inside the cell)
PLANTED = [
    ("ticket:delivery@region=Siberia", "region", "Siberia", "delivery", 0.30),
    ("ticket:payment@device=mobile", "device", "mobile", "payment", 0.125),
    ("ticket:login@segment=new", "segment", "new", "login", 0.075),
]
ON_TOPIC = {
    "delivery": ["The courier was two days late", "Delivery took forever, parcel lost twice"],
    "login": ["Cannot log in, the password reset never works", "My account is locked out again"],
}
OFF_TOPIC = ["Prices are too expensive", "The courier was late again", "Nice staff overall"]
DAY = pd.Timestamp("2026-10-01")


def _pick(rng: np.random.Generator, shares: dict[str, float], n: int) -> np.ndarray:
    return rng.choice(list(shares), n, p=np.array(list(shares.values())) / sum(shares.values()))


def synthetic_company(
    seed: int, n: int = 80_000, planted: bool = True, cells: Sequence[tuple] = PLANTED
) -> CxData:
    """A seeded company: customers with segment, region, channel, device; tickets (some
    customers two); relationship NPS; comments on- and off-topic. With `planted`, the
    `cells` (of `PLANTED`) lose NPS (delivery tickets in Siberia also wait 4× longer for a
    reply) and every planted topic costs a small `MARGINAL_SHIFT`; without, nothing differs."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"c{i}" for i in range(n)])
    customers = pd.DataFrame(
        {
            "customer_id": ids,
            "segment": _pick(rng, {"new": 0.4, "loyal": 0.4, "premium": 0.2}, n),
            "region": _pick(rng, {"Moscow": 0.35, "Siberia": 0.25, "Volga": 0.2, "South": 0.2}, n),
            "channel": _pick(rng, {"web": 0.6, "app": 0.4}, n),
            "device": _pick(rng, {"desktop": 0.45, "mobile": 0.45, "tablet": 0.1}, n),
        }
    )
    first = np.flatnonzero(rng.random(n) < 0.4)
    owner = np.concatenate([first, first[rng.random(len(first)) < 0.15]])
    topic = _pick(rng, TOPICS, len(owner))
    created = DAY + pd.to_timedelta(rng.uniform(0, 30 * 24, len(owner)), unit="h")
    slow = (topic == "delivery") & (customers["region"].to_numpy()[owner] == "Siberia")
    frt = np.exp(rng.normal(0, 0.5, len(owner))) * np.where(slow & planted, 4.0, 1.0)
    tickets = pd.DataFrame(
        {
            "source_id": [f"t{i}" for i in range(len(owner))],
            "customer_id": ids[owner],
            "topic": topic,
            "channel": "chat",
            "created_at": created,
            "first_response_at": created + pd.to_timedelta(frt, unit="h"),
            "resolved_at": created + pd.to_timedelta(frt + 2, unit="h"),
            "reopened": False,
            "escalated": False,
        }
    )
    hit = pd.crosstab(tickets["customer_id"], tickets["topic"]).reindex(ids, fill_value=0) > 0
    shift = np.zeros(n)
    in_cell = {name: np.zeros(n, dtype=bool) for name in TOPICS}
    for _, _, _, name, _ in PLANTED:  # the planted topics cost a little everywhere
        shift += planted * hit[name].to_numpy() * MARGINAL_SHIFT
    for _, column, value, name, moved in cells:
        in_cell[name] = hit[name].to_numpy() & (customers[column].to_numpy() == value)
        shift += planted * in_cell[name] * moved
    answered = rng.random(n) < 0.7
    u = rng.random(n)
    score = np.where(u < 0.5 - shift, 10.0, np.where(u < 0.8 - shift, 8.0, 3.0))
    comment = rng.choice(OFF_TOPIC, n).astype(object)
    for name, texts in ON_TOPIC.items():
        speaks = in_cell[name] & (score <= 6) & (rng.random(n) < 0.7)
        comment[speaks] = rng.choice(texts, int(speaks.sum()))
    comment[rng.random(n) < 0.5] = None
    responses = pd.DataFrame(
        {
            "customer_id": ids,
            "kind": "nps",
            "score": score,
            "comment": comment,
            "submitted_at": DAY + pd.Timedelta(days=31),
        }
    )[answered]
    web = pd.DataFrame(columns=["step", "device", "segment", "value"])
    orders = pd.DataFrame(columns=["customer_id", "amount", "created_at"])
    return CxData(customers, with_ticket_measures(tickets), responses, orders, web)


@pytest.fixture(scope="module", params=[3, 11, 29])
def planted_ranking(request: pytest.FixtureRequest) -> pd.DataFrame:
    return rank_pain_points(
        synthetic_company(request.param), {"default": 2.0}, (), None, DIMENSIONS
    )


def test_planted_intersection_pains_rank_top_three_in_planted_order(planted_ranking) -> None:
    keys = [key for key, *_ in PLANTED]
    assert list(planted_ranking["key"][:3]) == keys
    rank = planted_ranking.set_index("key").loc[keys, "rank"]
    tau = stats.kendalltau(np.arange(len(keys)), rank.to_numpy()).statistic
    assert tau >= 0.9  # the threshold over all planted pains
    assert planted_ranking.set_index("key").loc[keys, "significant"].all()


def test_marginals_a_cell_explains_are_folded_under_it(planted_ranking) -> None:
    ranked = planted_ranking.set_index("key")
    for key, _, _, topic, _ in PLANTED:
        assert ranked.loc[f"ticket:{topic}", "explained_by"] == key
        assert ranked.loc[f"ticket:{topic}", "rank"] > ranked.loc[key, "rank"]
    assert ranked.loc["region:Siberia", "explained_by"] == PLANTED[0][0]


def test_the_cell_shows_its_mechanism_and_its_impact_beside_the_raw_gap(planted_ranking) -> None:
    row = planted_ranking.set_index("key").loc[PLANTED[0][0]]
    assert row["evidence"]["mechanism"]["frt_ratio"] > 3
    assert row["impact_ci_low"] <= 200 * PLANTED[0][4] <= row["impact_ci_high"]
    assert row["evidence"]["raw_impact"] == pytest.approx(row["raw_impact"], abs=0.1)
    assert row["evidence"]["q_value"] <= 0.05


def test_verbatims_under_a_cell_name_its_topic_or_say_there_are_none(planted_ranking) -> None:
    ranked = planted_ranking.set_index("key")
    for key, _, _, topic, _ in PLANTED:
        evidence = ranked.loc[key, "evidence"]
        quotes = pd.Series(evidence["verbatims"], dtype=object)
        if topic not in ON_TOPIC:  # its customers only wrote about couriers and prices
            assert quotes.empty and evidence["verbatims_note"] == NO_VERBATIMS
            continue
        assert len(quotes) and set(evidence["verbatim_sources"]) == {NAMES_TOPIC}
        tags = tag_topics(quotes)
        named = tags[tags["topic"] == topic]["text_index"]
        assert set(named) == set(quotes.index), (key, list(quotes))


def test_a_company_with_no_planted_pain_flags_no_cell_in_19_of_20_seeds() -> None:
    flagged = 0
    for seed in range(20):
        ranked = rank_pain_points(
            synthetic_company(100 + seed, 10_000, planted=False), {}, (), None, DIMENSIONS
        )
        flagged += bool(ranked["significant"].any())
    assert flagged <= 1


def test_marginals_one_planted_cell_explains_never_rank_above_it_over_20_seeds() -> None:
    key, _, value, topic, _ = PLANTED[0]
    halves = [f"ticket:{topic}", f"region:{value}"]
    for seed in range(20):
        company = synthetic_company(200 + seed, 10_000, cells=PLANTED[:1])
        ranked = rank_pain_points(company, {}, (), None, DIMENSIONS).set_index("key")
        cell = ranked.loc[key]
        assert cell["significant"] and cell["rank"] == 1, (seed, ranked.index[:3].tolist())
        explained = ranked[ranked["explained_by"] == key]
        assert set(halves) <= set(explained.index), (seed, explained.index.tolist())
        assert (explained["rank"] > cell["rank"]).all(), seed


def test_interaction_is_the_difference_in_differences_of_the_four_quadrants() -> None:
    rng = np.random.default_rng(5)
    units = pd.Index([f"u{i}" for i in range(4_000)])
    y = pd.Series(rng.normal(0, 10, len(units)), index=units)
    rows = pd.DataFrame({"unit": units[::2], "row": "t"})
    dims = pd.DataFrame({"region": np.where(np.arange(len(units)) % 3 == 0, "R", "S")}, index=units)
    cell = unit_cells(y, rows, dims).set_index("value").loc["R"]
    has_row = units.isin(rows["unit"])
    in_r = (dims["region"] == "R").to_numpy()
    mean = {(r, c): y[(has_row == r) & (in_r == c)].mean() for r in (0, 1) for c in (0, 1)}
    expected = mean[1, 0] + mean[0, 1] - mean[1, 1] - mean[0, 0]
    assert cell["interaction"] == pytest.approx(expected)
    var = sum(y[(has_row == r) & (in_r == c)].var() / ((has_row == r) & (in_r == c)).sum()
              for r in (0, 1) for c in (0, 1))  # fmt: skip
    assert cell["interaction_se"] == pytest.approx(np.sqrt(var))
    assert cell["interaction_p"] == pytest.approx(stats.norm.sf(expected / np.sqrt(var)))
