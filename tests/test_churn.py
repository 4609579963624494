"""The churn model on generated companies: planted churn is found, calibrated and ranked;
churn independent of every feature is not published; bad input gets a clear message."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import yaml

from connectors.demo import DemoSource
from flows.config import ChurnConfig, Config
from flows.rank import save_churn_risk
from flows.sync import sync_source
from tasks import store
from tasks.churn import ChurnError, ChurnRun, digest_context, run_churn, save_churn
from tasks.experiments import assignments
from tasks.hypotheses import Hypothesis
from tasks.loader import CxData
from tasks.metrics import metric_table
from tests.conftest import REPO

HORIZON = 60
SHIPPED = REPO / "hypotheses" / "auto-route-tickets.yaml"
START = pd.Timestamp("2025-01-01")
WINDOWS = 5
TOPICS = np.array(["delivery", "payment", "login"])


def company(n: int, seed: int, planted: bool, windows: int = WINDOWS) -> CxData:
    """Customers who order every `HORIZON` days until they churn; with `planted`, an
    unresolved delivery ticket so far and a low latest CES raise the chance of churning."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"c{i}" for i in range(n)])
    customers = pd.DataFrame(
        {
            "customer_id": ids,
            "segment": rng.choice(["new", "loyal", "premium"], n),
            "region": rng.choice(["north", "south"], n),
            "channel": rng.choice(["web", "app"], n),
            "created_at": START - pd.to_timedelta(rng.integers(0, 700, n), unit="D"),
        }
    )
    alive = np.ones(n, bool)
    unresolved_delivery = np.zeros(n, bool)
    ces = np.full(n, 4.0)
    orders, tickets, responses = [], [], []
    for w in range(windows):
        at = START + pd.Timedelta(days=HORIZON * w)
        who = np.flatnonzero(alive)
        k = 1 + rng.poisson(1.0, len(who))
        rows = np.repeat(who, k)
        orders.append(
            pd.DataFrame(
                {
                    "customer_id": ids[rows],
                    "amount": rng.gamma(2.0, 40.0, len(rows)),
                    "created_at": at + pd.to_timedelta(rng.uniform(0, HORIZON, len(rows)), "D"),
                }
            )
        )
        raised = who[rng.random(len(who)) < 0.4]
        topic = rng.choice(TOPICS, len(raised))
        created = at + pd.to_timedelta(rng.uniform(0, HORIZON - 5, len(raised)), "D")
        solved = rng.random(len(raised)) < 0.6
        tickets.append(
            pd.DataFrame(
                {
                    "customer_id": ids[raised],
                    "topic": topic,
                    "created_at": created,
                    "first_response_at": created + pd.Timedelta(hours=2),
                    "frt_hours": 2.0,
                    "resolved_at": created.where(solved) + pd.Timedelta(days=1),
                    "reopened": rng.random(len(raised)) < 0.1,
                }
            )
        )
        unresolved_delivery[raised[(topic == "delivery") & ~solved]] = True
        asked = who[rng.random(len(who)) < 0.8]
        score = rng.integers(1, 8, len(asked)).astype(float)
        ces[asked] = score
        responses.append(
            pd.DataFrame(
                {
                    "customer_id": ids[asked],
                    "kind": "ces",
                    "score": score,
                    "submitted_at": at + pd.to_timedelta(rng.uniform(0, HORIZON, len(asked)), "D"),
                }
            )
        )
        logit = -2.0 + 2.0 * unresolved_delivery + 0.7 * (4 - ces) if planted else -1.4
        churned = rng.random(n) < 1 / (1 + np.exp(-logit))
        alive &= ~churned
    return CxData(
        customers=customers,
        tickets=pd.concat(tickets, ignore_index=True),
        responses=pd.concat(responses, ignore_index=True),
        orders=pd.concat(orders, ignore_index=True),
        web=pd.DataFrame(),
    )


SETTINGS = ChurnConfig(enabled=True, horizon_days=HORIZON)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_planted_churn_is_found_calibrated_and_ranked(seed: int) -> None:
    run = run_churn(company(30_000, seed, planted=True), SETTINGS)
    assert run.auc >= 0.75 and run.published
    assert run.ece <= 0.05
    assert run.top_decile_lift >= 2
    largest = sorted(run.coefficients, key=lambda name: -abs(run.coefficients[name]))[:2]
    assert set(largest) == {"unresolved_delivery", "latest_ces"}
    assert run.coefficients["unresolved_delivery"] > 0 > run.coefficients["latest_ces"]
    scores = run.scores
    assert set(scores["churn_risk"]) <= {"high", "medium", "low"}
    high = scores["churn_risk"] == "high"
    assert (scores.loc[high, "probability"] >= SETTINGS.high).all()
    assert run.expected_revenue_lost == pytest.approx(
        (scores.loc[high, "probability"] * scores.loc[high, "value"]).sum()
    )
    assert digest_context(run)["expected_revenue_lost"] == run.expected_revenue_lost > 0


def test_churn_independent_of_features_is_not_published() -> None:
    run = run_churn(company(30_000, 4, planted=False), SETTINGS)
    assert abs(run.auc - 0.5) <= 0.05
    assert not run.published and "below 0.6" in run.reason
    context = digest_context(run)
    assert not context["published"] and context["expected_revenue_lost"] is None


def test_too_little_history_is_a_clear_error() -> None:
    with pytest.raises(ChurnError, match=r"needs 240.*lower `churn\.horizon_days`"):
        run_churn(company(2_000, 5, planted=True, windows=3), SETTINGS)


def test_too_few_customers_is_a_clear_error() -> None:
    with pytest.raises(ChurnError, match=r"only .* active customers"):
        run_churn(company(50, 5, planted=True), SETTINGS)


def test_a_run_without_orders_skips_the_model() -> None:
    data = company(500, 6, planted=True)
    run = run_churn(replace(data, orders=data.orders.iloc[:0]), SETTINGS)
    assert not run.published and "no orders" in run.reason and run.scores.empty


def test_cut_offs_and_model_are_validated() -> None:
    with pytest.raises(ValueError, match=r"medium cut-off 0\.6 is not below the high one 0\.5"):
        ChurnConfig(medium=0.6)
    with pytest.raises(ValueError, match="logistic"):
        ChurnConfig(model="forest")
    assert isinstance(Config(sources=[{"name": "d", "kind": "demo"}]).churn, ChurnConfig)


def test_runs_are_stored_and_only_a_published_model_leaves_scores(tmp_path) -> None:
    engine = store.open_store(f"sqlite:///{tmp_path}/cx.db")
    published = run_churn(company(30_000, 1, planted=True), SETTINGS)
    save_churn(engine, published)
    dimension = store.read_churn_risk(engine)
    assert len(dimension) == len(published.scores)
    assert dimension.set_index("customer_id")["churn_risk"].to_dict() == (
        published.scores.set_index("customer_id")["churn_risk"].to_dict()
    )
    save_churn(engine, run_churn(company(30_000, 4, planted=False), SETTINGS))
    assert store.read_churn_risk(engine).empty
    runs = store.read_frame(engine, store.ChurnModelRun)
    assert runs["published"].tolist() == [True, False]
    assert len(runs["calibration"].iloc[0]) >= 5 and "latest_ces" in runs["coefficients"].iloc[0]


def test_the_rank_step_reports_what_became_of_the_model(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/cx.db"
    config = Config(sources=[{"name": "d", "kind": "demo"}], churn=SETTINGS)
    short = save_churn_risk.fn(url, company(2_000, 5, planted=True, windows=3), config)
    assert "needs 240" in short
    assert "AUC 0.8" in save_churn_risk.fn(url, company(30_000, 2, planted=True), config)
    assert len(store.read_churn_risk(store.open_store(url))) > 1_000


def test_gradient_boosting_is_validated_the_same_way() -> None:
    settings = ChurnConfig(horizon_days=HORIZON, model="boosting")
    run = run_churn(company(10_000, 7, planted=True), settings)
    assert run.model == "boosting" and run.coefficients == {}
    assert run.auc >= 0.75 and run.ece <= 0.05 and run.published


def test_published_risk_is_a_dimension_of_metrics_and_populations_until_unpublished(
    tmp_path,
) -> None:
    engine = store.open_store(f"sqlite:///{tmp_path}/cx.db")
    sync_source(engine, DemoSource(customers=1_500, seed=5))
    assert "churn_risk" not in CxData.latest(engine).customers.columns
    ids = store.read_frame(engine, store.Customer, ["source_id"])["source_id"]
    band = np.random.default_rng(5).choice(["high", "medium", "low"], len(ids))
    scores = pd.DataFrame({"customer_id": ids[: len(ids) - 100], "churn_risk": band[:-100]})
    scores = scores.assign(probability=0.5, value=100.0, expected_loss=50.0)
    save_churn(engine, ChurnRun("logistic", HORIZON, True, "AUC 0.8", scores=scores))

    data = CxData.latest(engine)  # a stored model run makes the cached load stale
    risk = data.customers.set_index("customer_id")["churn_risk"]
    assert risk.reindex(scores["customer_id"]).tolist() == scores["churn_risk"].tolist()
    assert risk.isna().sum() == 100  # not scored: not active in the last horizon
    table = metric_table(data, ["nps"], ["churn_risk"]).set_index("churn_risk")
    answers = data.responses[data.responses["kind"] == "nps"].merge(
        data.customers[["customer_id", "churn_risk"]], on="customer_id"
    )
    for value, group in answers.dropna(subset=["score"]).groupby("churn_risk"):
        assert table.loc[value, "n"] == len(group)

    hypothesis = Hypothesis.model_validate(
        yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
        | {"population": {"churn_risk": "high", "segment": None}}
    )
    arms = assignments(hypothesis, data.customers)
    high = scores.loc[scores["churn_risk"] == "high", "customer_id"]
    assert set(arms["customer_id"]) == set(high)

    save_churn(engine, ChurnRun("logistic", HORIZON, False, "AUC 0.52 below 0.6"))
    assert "churn_risk" not in CxData.latest(engine).customers.columns
