"""The demo company's planted truth: present in its frames with the recorded sizes (plain
pandas), and what cxloop's own analysis recovers of it from a demo store."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.stats import kendalltau

from connectors.demo import (
    CELL_PAINS,
    DEVICE_SHARE,
    END,
    FUNNEL_PAIN,
    PLAN_SHARE,
    ROUTING,
    TEAMS,
    DemoCompany,
    DemoSource,
    generate,
)
from flows.config import Config
from flows.sync import sync_source
from tasks import store
from tasks.loader import CxData
from tasks.mapping import to_canonical
from tasks.metrics import metric_table
from tasks.pain_points import rank_pain_points
from tasks.standards import evaluate
from tests.conftest import REPO, cx_data

FUNNEL = ["visit", "view_item", "add_to_cart", "begin_checkout", "purchase"]
DIMENSIONS = ["segment", "region", "channel", "language", "device", "plan"]
Z = 4.0  # sampling error allowed, in standard errors: a planted effect off by more is a bug


@pytest.fixture(scope="module")
def big() -> DemoCompany:
    """A company large enough that cell sizes are measured to a few NPS points."""
    return generate(100_000, 11)


def _within(observed: float, expected: float, se: float) -> bool:
    return abs(observed - expected) <= Z * se


def _latest_nps(company: DemoCompany) -> pd.Series:
    """Each respondent's latest relationship NPS answer in points (−100, 0, +100)."""
    r = company.frames["survey_responses"]
    r = (
        r[r["kind"] == "nps"]
        .sort_values("submitted_at")
        .drop_duplicates("customer_id", keep="last")
    )
    points = np.select([r["score"] >= 9, r["score"] <= 6], [100.0, -100.0], 0.0)
    return pd.Series(points, index=r["customer_id"].to_numpy())


def test_device_and_plan_follow_the_planted_mix_and_reach_the_store_as_attributes(big) -> None:
    customers = big.frames["customers"]
    n = len(customers)
    shares = customers["device"].value_counts(normalize=True)
    for device, share in DEVICE_SHARE.items():
        assert _within(shares[device], share, np.sqrt(share * (1 - share) / n)), device
    plans = pd.crosstab(customers["segment"], customers["plan"], normalize="index")
    sizes = customers["segment"].value_counts()
    for segment, mix in PLAN_SHARE.items():
        for plan, share in mix.items():
            se = np.sqrt(share * (1 - share) / sizes[segment])
            assert _within(plans.loc[segment, plan], share, se), (segment, plan)
    # The web funnel's sessions come from the same device mix.
    web = big.frames["web_metrics"]
    visits = web[web["step"] == "visit"].groupby("device")["value"].sum()
    web_share = visits / visits.sum()
    for device, share in shares.items():
        assert web_share[device] == pytest.approx(share, abs=0.005), device
    canonical = to_canonical("customer", customers.head(3), "demo")
    assert list(canonical["attributes"]) == customers[["device", "plan"]].head(3).to_dict("records")
    config = Config(**yaml.safe_load((REPO / "flows" / "cxloop.example.yaml").read_text()))
    assert config.dimensions == ["device", "plan"]


def test_every_post_ticket_answer_links_a_ticket_of_its_own_customer(company) -> None:
    responses = company.frames["survey_responses"]
    tickets = company.frames["tickets"].set_index("source_id")
    post = responses[responses["kind"].isin(["csat", "ces"])]
    assert post["ticket_id"].notna().all()
    assert post["ticket_id"].isin(tickets.index).all()
    linked = tickets.loc[post["ticket_id"]]
    assert (linked["customer_id"].to_numpy() == post["customer_id"].to_numpy()).all()
    assert (post["submitted_at"].to_numpy() > linked["resolved_at"].to_numpy()).all()
    assert responses.loc[responses["kind"] == "nps", "ticket_id"].isna().all()


def test_agents_work_in_teams_routed_by_channel(company) -> None:
    tickets = company.frames["tickets"]
    assert tickets[["agent", "team"]].notna().all().all()
    assert len(TEAMS) == 4 and {len(agents) for agents in TEAMS.values()} == {6}
    assert (tickets.groupby("agent")["team"].nunique() == 1).all()
    for team, agents in TEAMS.items():
        assert set(tickets.loc[tickets["team"] == team, "agent"]) == set(agents), team
    for channel, shares in ROUTING.items():
        assert set(tickets.loc[tickets["channel"] == channel, "team"]) == set(shares), channel
    names = pd.Series([name for agents in TEAMS.values() for name in agents])
    assert names.str.contains("[а-яА-Я]").any() and names.str.contains("^[A-Za-z ]+$").any()


def test_the_slow_team_is_slow_and_rated_lower_in_its_channel_only(big) -> None:
    slow = big.truth.slow_team
    tickets = big.frames["tickets"]
    frt = (tickets["first_response_at"] - tickets["created_at"]).dt.total_seconds() / 3600
    medians = frt.groupby([tickets["team"], tickets["channel"]]).median()
    other = next(t for t in ROUTING[slow.channel] if t != slow.team)
    ratio = medians[(slow.team, slow.channel)] / medians[(other, slow.channel)]
    assert ratio == pytest.approx(slow.frt_factor, rel=0.1)
    elsewhere = [c for c, teams in ROUTING.items() if slow.team in teams and c != slow.channel]
    for channel in elsewhere:
        assert medians[(slow.team, channel)] / medians[(other, channel)] == pytest.approx(
            1, rel=0.1
        )
    r = big.frames["survey_responses"]
    csat = r[r["kind"] == "csat"].merge(
        tickets[["source_id", "team", "channel"]].rename(
            columns={"source_id": "ticket_id", "channel": "ticket_channel"}
        ),
        on="ticket_id",
    )
    top = (csat["score"] >= 4).groupby([csat["team"], csat["ticket_channel"]]).agg(["mean", "size"])
    for channel, drop in [(slow.channel, slow.csat_drop), *[(c, 0.0) for c in elsewhere]]:
        a, b = top.loc[(other, channel)], top.loc[(slow.team, channel)]
        se = np.sqrt(
            a["mean"] * (1 - a["mean"]) / a["size"] + b["mean"] * (1 - b["mean"]) / b["size"]
        )
        assert _within(a["mean"] - b["mean"], drop, se), channel


def test_intersection_pains_cost_their_recorded_interaction_and_keep_topic_marginals(
    big,
) -> None:
    """Per planted cell, from latest relationship NPS: the topic's gap inside the cell minus
    its gap outside (a difference in differences) equals the recorded impact, the reach is
    the recorded share, and the topic's own marginal gap is still what `TOPICS` plants."""
    customers = big.frames["customers"].set_index("source_id")
    tickets = big.frames["tickets"]
    points = _latest_nps(big)
    frt = (tickets["first_response_at"] - tickets["created_at"]).dt.total_seconds() / 3600
    region = tickets["customer_id"].map(customers["region"]).to_numpy()
    piloted = np.zeros(len(tickets), dtype=bool)
    for pilot in big.truth.region_pilots.values():
        piloted |= pilot.touches(region, tickets["topic"].to_numpy(), tickets["created_at"])
    for cell in CELL_PAINS:
        truth = big.truth.cells.loc[cell.key]
        raised = tickets.loc[tickets["topic"] == cell.topic, "customer_id"].unique()
        hit = customers.index.isin(raised)
        inside = (customers[cell.dimension] == cell.value).to_numpy()
        reach = (hit & inside).mean()
        assert _within(reach, truth["reach_share"], np.sqrt(reach / len(customers))), cell.key
        frame = pd.DataFrame({"hit": hit, "inside": inside}, index=customers.index)
        frame = frame.join(points.rename("points"), how="inner")
        q = frame.groupby(["inside", "hit"])["points"].agg(["mean", "var", "size"])
        gap_in = q.loc[(True, False), "mean"] - q.loc[(True, True), "mean"]
        gap_out = q.loc[(False, False), "mean"] - q.loc[(False, True), "mean"]
        se = np.sqrt((q["var"] / q["size"]).sum())
        assert _within(gap_in - gap_out, truth["impact"], se), (cell.key, gap_in - gap_out)
        marginal = frame.groupby("hit")["points"].agg(["mean", "var", "size"])
        gap = marginal.loc[False, "mean"] - marginal.loc[True, "mean"]
        se = np.sqrt((marginal["var"] / marginal["size"]).sum())
        planted = big.truth.pain_points.loc[f"ticket:{cell.topic}", "impact"]
        assert _within(gap, planted, se), (cell.topic, gap)
        # A region pilot's tickets measure that pilot, not the cell: the ratio leaves them out.
        on_topic = (tickets["topic"] == cell.topic) & ~piloted
        ticket_inside = tickets["customer_id"].map(customers[cell.dimension]) == cell.value
        ratio = frt[on_topic & ticket_inside].median() / frt[on_topic & ~ticket_inside].median()
        assert ratio == pytest.approx(truth["frt_factor"], rel=0.1), cell.key


def test_customers_churn_more_after_unresolved_or_reopened_tickets_and_detractor_scores(
    big,
) -> None:
    """Over the twelve months, the churn share per count of bad tickets and detractor scores
    is what `Churn.probability` plants, and churners stop ordering at their churn time,
    mostly within the planted delay after a bad experience."""
    customers = big.frames["customers"].set_index("source_id")
    tickets, orders = big.frames["tickets"], big.frames["orders"]
    r = big.frames["survey_responses"]
    bad = tickets[tickets["reopened"] | tickets["resolved_at"].isna()]
    low = r[(r["kind"] == "nps") & (r["score"] <= 6)]
    flags = pd.DataFrame(
        {
            "bad_tickets": bad["customer_id"].value_counts().reindex(customers.index, fill_value=0),
            "detractors": low["customer_id"].value_counts().reindex(customers.index, fill_value=0),
            "churned": big.truth.churned_at.reindex(customers.index).notna().to_numpy(),
        },
        index=customers.index,
    )
    rates = flags.groupby(["bad_tickets", "detractors"])["churned"].agg(["mean", "size"])
    churn = big.truth.churn
    checked = 0
    for (bad_tickets, detractors), row in rates[rates["size"] >= 200].iterrows():
        expected = churn.probability(np.array(bad_tickets), np.array(detractors))
        se = np.sqrt(expected * (1 - expected) / row["size"])
        assert _within(row["mean"], expected, se), (bad_tickets, detractors)
        checked += 1
    assert checked >= 6
    # Churned customers order nothing after their churn, which mostly follows a bad
    # experience within the planted delay.
    stopped = big.truth.churned_at.dropna()
    after = orders["created_at"].to_numpy() >= orders["customer_id"].map(stopped).to_numpy()
    assert not after.any()
    events = pd.concat(
        [
            pd.DataFrame(
                {"customer_id": bad["customer_id"], "at": bad["created_at"] + pd.Timedelta(days=3)}
            ),
            pd.DataFrame({"customer_id": low["customer_id"], "at": low["submitted_at"]}),
        ]
    ).merge(stopped.rename("stopped"), left_on="customer_id", right_index=True)
    delay = (events["stopped"] - events["at"]).dt.total_seconds() / 86_400
    explained = events.loc[delay.between(0, churn.delay_days), "customer_id"].nunique()
    assert explained > 0.5 * len(stopped)
    # From the orders alone: customers with a bad experience fall silent more often.
    last = orders.groupby("customer_id")["created_at"].max().reindex(customers.index)
    silent = (last.isna() | (last < END - pd.Timedelta(days=60))).to_numpy()
    flagged = (flags["bad_tickets"] + flags["detractors"] > 0).to_numpy()
    assert silent[flagged].mean() > silent[~flagged].mean() + 0.05


def test_the_demo_standards_include_a_met_and_a_missed_one(demo_data: CxData) -> None:
    config = Config(**yaml.safe_load((REPO / "flows" / "cxloop.example.yaml").read_text()))
    results = evaluate(demo_data, config.standards)
    latest = results.sort_values("period").groupby("standard").tail(1).set_index("standard")
    assert latest["status"].to_dict() == {
        "frt_hours[channel=chat]": "missed",
        "nps[segment=premium]": "met",
        "fcr": "missed",
    }


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CxData]:
    """The 20,000-customer demo (seed 7) ingested into a SQLite store and loaded back."""
    url = f"sqlite:///{tmp_path_factory.mktemp('demo') / 'store.db'}"
    engine = store.open_store(url)
    sync_source(engine, DemoSource(customers=20_000, seed=7))
    yield CxData.from_store(engine)
    engine.dispose()


def test_the_store_keeps_dimensions_teams_and_every_survey_link(stored, company) -> None:
    customers = company.frames["customers"].set_index("source_id")
    loaded = stored.customers.set_index("customer_id")
    for dim in ("device", "plan"):
        assert loaded[dim].reindex(customers.index).equals(customers[dim].rename(dim)), dim
    assert stored.unmatched()["responses_unknown_ticket"] == 0
    assert stored.unmatched()["responses_unlinked"] == 0
    assert set(stored.tickets["team"]) == set(TEAMS)


def test_cxloop_metrics_by_team_and_ticket_channel_single_out_the_slow_team(
    stored, company
) -> None:
    slow = company.truth.slow_team
    table = metric_table(stored, ["frt_hours", "csat_top2"], ["team", "ticket_channel"])
    table = table.set_index(["metric", "team", "ticket_channel"])
    chat = table.xs(slow.channel, level="ticket_channel")
    frt = chat.loc["frt_hours", "value"]
    assert frt.idxmax() == slow.team
    other = next(t for t in ROUTING[slow.channel] if t != slow.team)
    assert frt[slow.team] / frt[other] == pytest.approx(slow.frt_factor, rel=0.2)
    csat = chat.loc["csat_top2"]
    assert csat.loc[slow.team, "ci_high"] < csat.loc[other, "ci_low"]
    assert csat["value"].idxmin() == slow.team


def test_cxloop_ranks_every_planted_intersection_pain_as_a_significant_cell(
    stored, company
) -> None:
    dimensions = ["segment", "region", "channel", "language", "device", "plan"]
    ranked = rank_pain_points(stored, {"default": 2.0}, FUNNEL, dimensions=dimensions)
    ranked = ranked.set_index("key")
    assert list(ranked.index[:3]) == company.truth.planted_order[:3]
    for key, truth in company.truth.cells.iterrows():
        row = ranked.loc[key]
        assert row["significant"], key
        assert row["impact_ci_low"] <= truth["impact"] <= row["impact_ci_high"], key
        # Below the top three, but above every marginal it might explain but does not.
        assert 3 < row["rank"] <= 15, (key, row["rank"])
        assert row["reach_share"] == pytest.approx(truth["reach_share"], abs=0.005), key
    siberia = ranked.loc["ticket:delivery@region=Siberia", "evidence"]["mechanism"]
    assert siberia["frt_ratio"] == pytest.approx(
        company.truth.cells.loc["ticket:delivery@region=Siberia", "frt_factor"], rel=0.25
    )


@pytest.mark.parametrize("seed", [7, 21, 99])
def test_every_planted_pain_ranks_under_its_own_key_in_the_planted_order(seed: int) -> None:
    """The three intersection pains, the broken funnel cell and the marginal pains: each
    named by one candidate (the cell, not its halves), the top 3 exact, Kendall's tau ≥ 0.9
    over them all; the marginals a planted cell explains are folded under it. At 40,000
    customers: at 20,000 the smallest pains' confidence is noise and swaps them."""
    company = generate(40_000, seed)
    truth = company.truth
    ranked = rank_pain_points(cx_data(company), {"default": 2.0}, FUNNEL, dimensions=DIMENSIONS)
    ranked = ranked.set_index("key")
    planted = truth.planted_order
    assert list(ranked.index[:3]) == planted[:3]
    assert ranked.loc[planted, "explained_by"].isna().all()
    cells = [key for key in planted if "@" in key]
    assert ranked.loc[cells, "significant"].all()
    scores = pd.concat([truth.pain_points["score"], truth.cells["score"]])[planted]
    assert kendalltau(scores, -ranked.loc[planted, "rank"]).statistic >= 0.9
    folded = truth.pain_points["explained_by"].dropna()
    assert (ranked.loc[folded.index, "explained_by"] == folded).all()
    assert ranked.loc["funnel:purchase:mobile", "explained_by"] == FUNNEL_PAIN.key
