"""The long-term holdout: a stable share of customers no pilot assigns, and the cumulative
effect of all adopted changes against it, checked against statsmodels and by simulation."""

from __future__ import annotations

import json
import shutil
import textwrap
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.proportion import confint_proportions_2indep
from statsmodels.stats.weightstats import CompareMeans
from typer.testing import CliRunner

from connectors.demo import DemoSource
from connectors.errors import ConfigError
from flows.cli import app
from flows.config import load_config
from flows.sync import sync_source
from tasks import store
from tasks.experiments import assignments, rollout_watch
from tasks.holdout import Holdout, cumulative_effects
from tasks.hypotheses import Population, load_hypothesis
from tasks.loader import CxData
from tasks.metrics import with_ticket_measures
from tests.conftest import REPO
from tests.test_pilots_from_operations import company, routing

SINCE = date(2026, 1, 1)
UNTIL = pd.Timestamp("2026-10-01")
CHANGES = (6.0, 4.0)  # NPS points two adopted changes add for everyone but the holdout


def held_company(seed: int, customers: int = 20_000, holdout: Holdout | None = None) -> CxData:
    """Customers answering NPS twice in the window; everyone but `holdout`'s gets the adopted
    changes' `CHANGES` (so a customer's expected points rise by their sum). Orders: a year
    before the window, and in its last quarter with 70% odds, 80% for everyone else."""
    rng = np.random.default_rng(seed)
    holdout = holdout or Holdout(0.05, f"s{seed}", SINCE)
    ids = pd.Series([f"C{i}" for i in range(customers)])
    held = holdout.members(ids)
    gain = np.where(held, 0.0, sum(CHANGES)) / 100  # promoters up, detractors down by half each
    who = np.repeat(np.arange(customers), 2)
    draw = rng.random(len(who))
    promoter, detractor = 0.35 + gain[who] / 2, 0.25 - gain[who] / 2
    score = np.select([draw < promoter, draw < promoter + detractor], [10.0, 2.0], 8.0)
    at = pd.Timestamp("2026-02-01") + pd.to_timedelta(rng.uniform(0, 200, len(who)), unit="D")
    responses = pd.DataFrame(
        {"customer_id": ids[who].to_numpy(), "kind": "nps", "score": score, "submitted_at": at}
    )
    stays = rng.random(customers) < np.where(held, 0.70, 0.80)
    orders = pd.concat(
        [
            pd.DataFrame({"customer_id": ids, "amount": 100.0,
                          "created_at": pd.Timestamp("2025-06-01")}),
            pd.DataFrame({"customer_id": ids[stays], "amount": rng.gamma(2, 50, stays.sum()),
                          "created_at": pd.Timestamp("2026-08-15")}),
        ],
        ignore_index=True,
    )  # fmt: skip
    customers_frame = pd.DataFrame({"customer_id": ids, "created_at": pd.Timestamp("2025-01-01")})
    return CxData(customers_frame, pd.DataFrame(), responses, orders, pd.DataFrame())


def test_membership_is_stable_near_its_share_and_apart_from_pilot_splits() -> None:
    ids = pd.Series([f"C{i}" for i in range(100_000)])
    held = Holdout(0.05, "2026", SINCE).members(ids)
    assert 0.048 < held.mean() < 0.052
    assert (Holdout(0.05, "2026", date(2027, 1, 1)).members(ids) == held).all()
    assert (held == Holdout(0.05, "other", SINCE).members(ids)).mean() < 0.95


def test_no_pilot_assigns_a_held_out_customer(tmp_path: Path) -> None:
    data = company(seed=3, customers=2_000)
    holdout = Holdout(0.2, "h", SINCE)
    held = set(data.customers["customer_id"][holdout.members(data.customers["customer_id"])])
    for method in ("attribute", "hash"):
        plan = (
            "{method: hash, pilot_share: 0.5, salt: x}"
            if method == "hash"
            else "{method: attribute, attribute: ab_autorouting, pilot: pilot, control: control}"
        )
        hypothesis = routing(tmp_path, **{
            "{method: attribute, attribute: ab_autorouting, pilot: pilot, control: control}": plan
        })  # fmt: skip
        arms = assignments(hypothesis, data.customers, holdout=holdout)
        assert len(arms) > 500 and not held & set(arms["customer_id"])
        assert len(assignments(hypothesis, data.customers)) > len(arms)


def test_effects_equal_statsmodels_on_the_same_customers() -> None:
    holdout = Holdout(0.05, "ref", SINCE)
    data = held_company(seed=1, customers=8_000, holdout=holdout)
    nps, churn, revenue = cumulative_effects(data, holdout, UNTIL)
    held = pd.Series(holdout.members(data.customers["customer_id"]),
                     index=data.customers["customer_id"])  # fmt: skip
    points = (
        data.responses.assign(p=np.select([data.responses["score"] >= 9,
                                           data.responses["score"] <= 6], [100.0, -100.0], 0.0))
        .groupby("customer_id")["p"].mean()
    )  # fmt: skip
    compare = CompareMeans.from_data(points[~held[points.index]], points[held[points.index]])
    low, high = compare.zconfint_diff(usevar="unequal")
    assert (nps.ci_low, nps.ci_high) == pytest.approx((low, high), abs=1e-9)
    assert nps.n_holdout == int(held[points.index].sum())

    recent = data.orders["created_at"] >= UNTIL - pd.Timedelta(days=90)
    stayed = held.index.isin(data.orders.loc[recent, "customer_id"])
    churned = pd.Series(~stayed, index=held.index)
    counts = [int(churned[~held].sum()), int((~held).sum()), int(churned[held].sum()),
              int(held.sum())]  # fmt: skip
    low, high = confint_proportions_2indep(*counts, method="newcomb", compare="diff")
    assert (churn.ci_low, churn.ci_high) == pytest.approx((100 * low, 100 * high), abs=1e-9)

    spent = data.orders[data.orders["created_at"] >= pd.Timestamp(SINCE)]
    per = spent.groupby("customer_id")["amount"].sum().reindex(held.index, fill_value=0.0)
    low, high = CompareMeans.from_data(per[~held], per[held]).zconfint_diff(usevar="unequal")
    assert (revenue.ci_low, revenue.ci_high) == pytest.approx((low, high), rel=1e-9)


def test_the_cumulative_nps_effect_covers_the_sum_of_the_adopted_changes() -> None:
    covered, churn_covered = 0, 0
    for seed in range(20):
        nps, churn, _ = cumulative_effects(held_company(seed), Holdout(0.05, f"s{seed}", SINCE),
                                           UNTIL)  # fmt: skip
        covered += nps.ci_low <= sum(CHANGES) <= nps.ci_high
        churn_covered += churn.ci_low <= -10.0 <= churn.ci_high
    assert covered >= 17 and churn_covered >= 17  # 95% intervals: 19 of 20 expected


@pytest.mark.parametrize("share", ["0", "0.6", "-0.1"])
def test_a_holdout_share_outside_zero_to_a_half_is_refused_at_its_line(
    tmp_path: Path, share: str
) -> None:
    path = tmp_path / "cxloop.yaml"
    path.write_text(textwrap.dedent(f"""\
        sources: [{{name: demo, kind: demo}}]
        holdout:
          share: {share}
          since: 2026-01-01
        """), encoding="utf-8")  # fmt: skip
    with pytest.raises(ConfigError, match=r"cxloop.yaml:3: .*share"):
        load_config(path)


def test_cli_exports_the_held_out_customers_and_reports_the_cumulative_effect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CXLOOP_DATABASE_URL", raising=False)
    (tmp_path / "hypotheses").mkdir()
    config = textwrap.dedent(f"""\
        database_url: sqlite:///{tmp_path / "store.db"}
        sources: [{{name: demo, kind: demo, options: {{customers: 600, seed: 3}}}}]
        holdout: {{share: 0.1, salt: ops-2026, since: 2026-01-01}}
        """)
    (tmp_path / "cxloop.yaml").write_text(config, encoding="utf-8")
    sync_source(store.open_store(f"sqlite:///{tmp_path / 'store.db'}"),
                DemoSource(customers=600, seed=3))  # fmt: skip

    exported = CliRunner().invoke(app, ["holdout", "export", "--out", "held.csv"])
    assert exported.exit_code == 0, exported.output
    listed = pd.read_csv(tmp_path / "held.csv", dtype=str)["customer_id"]
    stored = store.read_frame(store.open_store(f"sqlite:///{tmp_path / 'store.db'}"),
                              store.Customer, ["source_id"])["source_id"]  # fmt: skip
    expected = stored[Holdout(0.1, "ops-2026", SINCE).members(stored)]
    assert sorted(listed) == sorted(expected) and 30 < len(listed) < 90

    shutil.copy(REPO / "hypotheses" / "auto-route-tickets.yaml", tmp_path / "hypotheses")
    assigned = CliRunner().invoke(app, ["hypotheses", "assign", "auto-route-tickets"])
    assert assigned.exit_code == 0, assigned.output
    arms = pd.read_csv(tmp_path / "assignment.csv", dtype=str)
    assert len(arms) > 300 and not set(listed) & set(arms["customer_id"])

    reported = CliRunner().invoke(app, ["holdout", "report", "--json"])
    assert reported.exit_code == 0, reported.output
    rows = json.loads(reported.stdout)
    assert [r["metric"] for r in rows] == ["nps", "churn", "revenue"]
    measured = [r for r in rows if r["metric"] != "churn"]  # the demo has no orders before 2026
    assert all(r["n_holdout"] > 0 and r["ci_low"] <= r["effect"] <= r["ci_high"] for r in measured)

    (tmp_path / "cxloop.yaml").write_text(config.splitlines()[0] + "\n" + config.splitlines()[1])
    refused = CliRunner().invoke(app, ["holdout", "report"])
    assert refused.exit_code == 2 and "no `holdout:`" in refused.output


def test_the_rollout_watch_measures_the_kept_gain_against_the_holdout() -> None:
    """A pilot cut FRT from 6 h to 3.6 h; after the rollout everyone waits 2 h longer (a busy
    season). Against the pilot's control level the gain looks lost; against the holdout,
    which waits 8 h, most of it is kept."""
    rng = np.random.default_rng(4)
    ids = pd.Series([f"C{i}" for i in range(3_000)])
    holdout = Holdout(0.1, "watch", SINCE)
    held = holdout.members(ids)
    hypothesis = load_hypothesis(REPO / "hypotheses" / "auto-route-tickets.yaml").model_copy(
        update={"population": Population(), "rollout": date(2026, 11, 1)}
    )
    arms = assignments(hypothesis, pd.DataFrame({"customer_id": ids}), holdout=holdout)
    pilot = ids.isin(arms.loc[arms["arm"] == "pilot", "customer_id"]).to_numpy()
    during = np.where(pilot, 3.6, 6.0)
    after = np.where(held, 8.0, 5.6)
    created = np.repeat(pd.to_datetime(["2026-10-16", "2026-11-15"]), len(ids))
    hours = np.concatenate([during, after]) * np.exp(rng.normal(0, 0.3, 2 * len(ids)))
    tickets = pd.DataFrame(
        {
            "customer_id": np.tile(ids, 2),
            "created_at": created,
            "first_response_at": created + pd.to_timedelta(hours, unit="h"),
            "resolved_at": created + pd.to_timedelta(hours + 1, unit="h"),
            "reopened": False,
            "channel": "email",
            "topic": "delivery",
        }
    )
    empty = pd.DataFrame()
    data = CxData(pd.DataFrame({"customer_id": ids}), with_ticket_measures(tickets), empty,
                  empty, empty)  # fmt: skip
    against_control = rollout_watch(hypothesis, data, arms)
    against_holdout = rollout_watch(hypothesis, data, arms, holdout)
    assert against_control.fading and against_control.holdout_level is None
    kept = np.log(5.6 / 8.0) / np.log(3.6 / 6.0)
    assert not against_holdout.fading
    assert against_holdout.retained == pytest.approx(kept, abs=0.05)
    assert against_holdout.holdout_level == pytest.approx(8.0, rel=0.05)
