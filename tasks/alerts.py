"""Alerts: significant changes between the last two periods, each with the evidence behind it.

Every test one run computes (each watched metric in every cut, each ticket topic, month-one
churn, each new channel) is one family: Benjamini–Hochberg at `Q_FDR` over all their p-values
decides which are real, so adding cuts or topics does not add false alarms. A test decided
real raises an alert only when its change is also large enough (the minimum-size rules).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from tasks.cells import Q_FDR, q_values
from tasks.labels import alert_text, labels
from tasks.loader import CxData
from tasks.metrics import csat_top2, metric_table

MIN_GROWTH = 1.3  # complaint volume must grow by at least 30% (per day) to alert
# one row per test: what it would raise, its p-value (NaN: nothing testable), whether the
# change is large enough to alert, and the alert's evidence
TESTS = ["kind", "key", "period", "p_value", "large", "evidence"]


@dataclass(frozen=True)
class Alert:
    """One alert: what moved, where, by how much, and how sure we are.

    `message` says it in English (logs, events, the store); reports word it again in their
    language from `kind`, `period` and `evidence` (`tasks.labels.alert_text`).
    """

    kind: str
    key: str
    period: str
    evidence: dict
    message: str = ""

    def __post_init__(self) -> None:
        if not self.message:
            text = alert_text(self.kind, self.period, self.evidence, labels("en"))
            object.__setattr__(self, "message", text)


# metric → (alert kind, which direction is worse, smallest change worth an alert)
WATCHED = {
    "nps": ("nps_drop", -1, 5.0),
    "ces": ("ces_drop", -1, 0.2),
    "csat_top2": ("csat_drop", -1, 5.0),
    "sla_breach": ("sla_spike", 1, 2.0),
}


def last_complete_month(data: CxData) -> pd.Period | None:
    """The latest month the data covers to its end: the month before the one holding the day
    after the newest ticket or survey answer; None without either."""
    newest = data.newest()
    return None if pd.isna(newest) else (newest + pd.Timedelta(days=1)).to_period("M") - 1


def _tests(
    kind: str | pd.Series,
    key: pd.Series,
    period: str,
    p: pd.Series,
    large: pd.Series,
    evidence: pd.DataFrame,
) -> pd.DataFrame:
    """`TESTS` rows, one per row of `evidence` (its columns become each alert's evidence)."""
    return pd.DataFrame(
        {
            "kind": kind,
            "key": key.to_numpy(object),
            "period": period,
            "p_value": p.to_numpy(float),
            "large": large.to_numpy(bool),
            "evidence": evidence.to_dict("records"),
        },
        index=evidence.index,
        columns=TESTS,
    ).reset_index(drop=True)


def _no_tests() -> pd.DataFrame:
    return pd.DataFrame({column: [] for column in TESTS}).astype({"p_value": float, "large": bool})


def metric_shifts(table: pd.DataFrame, by: str | None) -> pd.DataFrame:
    """The test of every watched metric in every group of `by` (overall without one) for a
    change from the table's period before last to its last (`TESTS` rows).

    `table` comes from `metric_table` with a period; the test is a two-sided z-test on the
    cell means with their standard errors (`se`; a share's Wilson CI is not symmetric). A
    group missing from either period, or with no spread (`se` 0 or NaN), tests nothing.
    """
    table = table[table["metric"].isin(list(WATCHED))]
    periods = sorted(table["period"].unique())
    if len(periods) < 2:
        return _no_tests()
    before, last = periods[-2:]
    cells = ["metric", by] if by else ["metric"]
    table = table.dropna(subset=cells)
    old, new = table[table["period"] == before], table[table["period"] == last]
    pair = old.merge(new, on=cells, suffixes=("_before", "_after"))
    if by:  # a cut with one group is everyone again: its test would count twice in the family
        pair = pair[pair.groupby("metric")[by].transform("size") > 1].reset_index(drop=True)
    kind, worse, minimum = (
        pair["metric"].map({m: w[i] for m, w in WATCHED.items()}) for i in range(3)
    )
    change = pair["value_after"] - pair["value_before"]
    se = np.hypot(pair["se_before"], pair["se_after"])
    with np.errstate(divide="ignore", invalid="ignore"):
        p = pd.Series(2 * stats.norm.sf(change.abs() / se), index=pair.index).where(se > 0)
    group = pair[by] if by else pd.Series(None, index=pair.index, dtype=object)
    where = f"{by}=" + group.astype(str) if by else "all customers"
    evidence = pd.DataFrame(
        {
            "metric": pair["metric"],
            "cut": by,
            "group": group,
            "period_before": before,
            "before": pair["value_before"],
            "after": pair["value_after"],
            "change": change,
            "n_before": pair["n_before"],
            "n_after": pair["n_after"],
            "p_value": p,
        }
    )
    return _tests(kind, kind + ":" + where, last, p, change * worse >= minimum, evidence)


def complaint_growth(
    tickets: pd.DataFrame, last: pd.Period, min_growth: float = MIN_GROWTH
) -> pd.DataFrame:
    """The test of every ticket topic seen in both months for growing faster in the last month
    than the other topics' tickets (`TESTS` rows); large when its daily volume grew by
    `min_growth` times or more.

    Conditional binomial test: given the topic's total over both months, its last month's
    share should match the other topics' last-month share if it grew as they did. A customer
    base that grows lifts every topic alike; testing against the calendar alone would flag
    each topic of a growing company in turn. With one topic only, the calendar is the
    reference (the share of days). A customer writing again about the same problem moves
    tickets together, so the counts are divided by the topic's design effect (tickets per
    customer, weighted by tickets: Σc²/Σc) before the test.
    """
    before = last - 1
    months = tickets["created_at"].dt.to_period("M")
    counts = pd.crosstab(tickets["topic"], months).reindex(columns=[before, last], fill_value=0)
    others = counts.sum() - counts
    counts = counts[(counts[before] > 0) & (counts[last] > 0)]
    old, new = counts[before], counts[last]
    growth = (new / last.days_in_month) / (old / before.days_in_month)
    days = last.days_in_month / (last.days_in_month + before.days_in_month)
    rest = others.loc[counts.index].sum(axis=1)
    share = (others.loc[counts.index, last] / rest).where(rest > 0, days)
    deff = _design_effect(tickets[months.isin([before, last])]).reindex(counts.index)
    # P(X >= new) for X ~ Binomial(old + new, share), as `binomtest(alternative="greater")`,
    # in its beta form, which takes the effective (non-integer) counts
    p = pd.Series(stats.beta.cdf(share, new / deff, old / deff + 1), index=counts.index)
    topic = counts.index.to_series()
    evidence = pd.DataFrame(
        {
            "topic": topic,
            "period_before": str(before),
            "before": old,
            "after": new,
            "growth": growth - 1,
            "p_value": p,
        }
    )
    key = "complaint_growth:topic=" + topic.astype(str)
    return _tests("complaint_growth", key, str(last), p, growth >= min_growth, evidence)


def _design_effect(tickets: pd.DataFrame) -> pd.Series:
    """Per topic, Σc²/Σc over customers' ticket counts c (1 when no one wrote twice); a
    ticket with no known customer counts as its own."""
    per = tickets.groupby(["topic", "customer_id"]).size()  # NaN customers left out here
    alone = tickets["customer_id"].isna().groupby(tickets["topic"]).sum()
    squares = (per**2).groupby(level="topic").sum().add(alone, fill_value=0)
    return squares / per.groupby(level="topic").sum().add(alone, fill_value=0)


def month_one_churn(
    customers: pd.DataFrame, orders: pd.DataFrame, last: pd.Period, min_excess: float = 3.0
) -> pd.DataFrame:
    """The test (one `TESTS` row, or none) for month `last` of whether customers drop off
    right after their first month more than later on; orders after `last` are not counted.

    For each customer who joined inside the order history with at least three 30-day months
    of tenure in it, A_k says whether they ordered in tenure month k. Without month-one churn
    the share of active customers falls about as much from month 1 to 2 as from 2 to 3
    (steady buying, or churn spread over time). The excess `(A1 − A2) − (A2 − A3)` is tested
    per customer (paired, one-sided), in percentage points; large from `min_excess` points.
    """
    orders = orders[orders["created_at"] < (last + 1).start_time]
    if orders.empty:
        return _no_tests()
    month = pd.Timedelta(days=30)
    first, newest = orders["created_at"].min(), orders["created_at"].max()
    cohort = customers[
        (customers["created_at"] >= first) & (customers["created_at"] <= newest - 3 * month)
    ]
    joined = cohort.set_index("customer_id")["created_at"]
    # Fewer than two such customers (e.g. a CRM whose contacts all predate the orders) test
    # nothing.
    if len(joined) < 2:
        return _no_tests()
    who = joined.index.get_indexer(orders["customer_id"])
    placed = who >= 0
    who, at = who[placed], orders["created_at"].to_numpy()[placed]
    tenure = (at - joined.to_numpy()[who]) // month.to_timedelta64()
    early = (tenure >= 0) & (tenure <= 2)
    active = np.zeros((len(joined), 3))
    active[who[early], tenure[early]] = 1.0  # ordered in tenure month k
    a1, a2, a3 = active.T
    excess = 100 * ((a1 - a2) - (a2 - a3))
    mean, se = excess.mean(), excess.std(ddof=1) / np.sqrt(len(excess))
    p = float(stats.norm.sf(mean / se)) if se > 0 else np.nan
    evidence = pd.DataFrame(
        {
            "cohort": [len(excess)],
            "active_share_by_month": [[round(100 * a.mean(), 1) for a in (a1, a2, a3)]],
            "excess_points": [round(float(mean), 2)],
            "p_value": [p],
        }
    )
    key = pd.Series(["month_one_churn:all customers"])
    return _tests(
        "month_one_churn", key, str(last), pd.Series([p]), pd.Series([mean >= min_excess]), evidence
    )


def new_channel_csat(
    responses: pd.DataFrame,
    last: pd.Period,
    csat_scale: int = 5,
    new_months: int = 3,
    min_drop: float = 5.0,
) -> pd.DataFrame:
    """The test of every channel first seen in the last `new_months` months, with two or more
    CSAT answers both in the last month and before it, for its CSAT top-2 share falling in
    the last month against the months before (one-sided z-test; `TESTS` rows); large from a
    fall of `min_drop` points."""
    answers = responses[
        (responses["kind"] == "csat") & responses["channel"].notna() & responses["score"].notna()
    ]
    months = answers["submitted_at"].dt.to_period("M")
    answers, months = answers[months <= last], months[months <= last]
    if answers.empty:  # mapping onto an empty table of Periods would fail
        return _no_tests()
    born = months.groupby(answers["channel"]).min()
    fresh = answers["channel"].map(born) > last - new_months
    top = csat_top2(answers["score"], csat_scale)[fresh]
    split = top.groupby([answers["channel"][fresh], (months[fresh] == last).rename("last")])
    both = pd.MultiIndex.from_product(
        [["mean", "std", "count"], [False, True]], names=[None, "last"]
    )
    cells = split.agg(["mean", "std", "count"]).unstack("last").reindex(columns=both)
    cells = cells[(cells["count"] >= 2).all(axis=1)]  # a channel born last month has no before
    if cells.empty:
        return _no_tests()
    old, new = cells.xs(False, axis=1, level="last"), cells.xs(True, axis=1, level="last")
    change = new["mean"] - old["mean"]
    se = np.hypot(new["std"] / np.sqrt(new["count"]), old["std"] / np.sqrt(old["count"]))
    with np.errstate(divide="ignore", invalid="ignore"):
        p = pd.Series(stats.norm.cdf(change / se), index=cells.index).where(se > 0)
    channel = cells.index.to_series()
    evidence = pd.DataFrame(
        {
            "channel": channel,
            "since": born.reindex(cells.index).astype(str),
            "before": old["mean"],
            "after": new["mean"],
            "n_before": old["count"].astype(int),
            "n_after": new["count"].astype(int),
            "p_value": p,
        }
    )
    key = "new_channel_csat:channel=" + channel.astype(str)
    return _tests("new_channel_csat", key, str(last), p, -change >= min_drop, evidence)


def alert_tests(data: CxData, csat_scale: int = 5, min_growth: float = MIN_GROWTH) -> pd.DataFrame:
    """Every alert test of the last complete month against the month before, overall and by
    cut (`TESTS` rows): the family `decide` controls together; none without data."""
    last = last_complete_month(data)
    if last is None:
        return _no_tests()
    tests = [
        complaint_growth(data.tickets, last, min_growth),
        month_one_churn(data.customers, data.orders, last),
        new_channel_csat(data.responses, last, csat_scale),
    ]
    for by in (None, "segment", "region", "channel"):
        table = metric_table(data, list(WATCHED), [by] if by else [], "month", csat_scale)
        tests.append(metric_shifts(table[table["period"] <= str(last)], by))
    return pd.concat([t for t in tests if len(t)] or [_no_tests()], ignore_index=True)


def decide(tests: pd.DataFrame, q: float = Q_FDR) -> list[Alert]:
    """The alerts of a family of `TESTS` rows: Benjamini–Hochberg at `q` over all their
    p-values (NaN not counted), then only the large changes; each alert's evidence gains
    its `q_value` (the BH-adjusted p-value)."""
    tests = tests.assign(q_value=q_values(tests["p_value"]))
    raised = tests[(tests["q_value"] <= q) & tests["large"]]
    return [
        Alert(t.kind, t.key, t.period, {**t.evidence, "q_value": float(t.q_value)})
        for t in raised.itertuples()
    ]


def detect_alerts(
    data: CxData, csat_scale: int = 5, q: float = Q_FDR, min_growth: float = MIN_GROWTH
) -> list[Alert]:
    """Every alert for the last complete month against the month before, overall and by cut,
    with the false discovery rate across all of the run's tests held at `q`."""
    return decide(alert_tests(data, csat_scale, min_growth), q)
