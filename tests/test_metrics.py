"""Metric formulas on textbook examples and against a direct computation on the demo data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.duration.survfunc import SurvfuncRight
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_confint

from tasks.funnels import funnel
from tasks.hours import BusinessHours
from tasks.identity import identify
from tasks.loader import CxData
from tasks.metrics import (
    SHARE_METRICS,
    churn,
    csi,
    customer_value,
    difference_ci,
    km_median_by,
    kpis_by,
    lifetime_value,
    mean_ci_by,
    metric_table,
    nps_points,
    post_stratified_nps,
    response_rates,
    retention,
    wilson_interval,
    with_ticket_measures,
)
from tasks.moments import Z95


def test_nps_textbook_example_60_percent_promoters_minus_20_percent_detractors_is_40() -> None:
    scores = pd.Series([10] * 30 + [9] * 30 + [8] * 10 + [7] * 10 + [6] * 10 + [0] * 10)
    assert nps_points(scores).mean() == pytest.approx(40.0)


def test_mean_ci_matches_scipy_normal_interval() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"g": "a", "value": rng.normal(3, 2, 500)})
    row = mean_ci_by(frame, ["g"]).iloc[0]
    low, high = stats.norm.interval(
        0.95, loc=frame["value"].mean(), scale=stats.sem(frame["value"])
    )
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high))
    assert row["n"] == 500


def test_repeat_contact_and_fcr_follow_their_definitions() -> None:
    t = pd.Timestamp("2026-10-01 09:00")
    created = pd.Series([t, t + pd.Timedelta(days=3), t + pd.Timedelta(days=20), t, t])
    tickets = pd.DataFrame(
        {
            "customer_id": ["A", "A", "A", "B", "C"],
            "created_at": created,
            "first_response_at": created + pd.Timedelta(hours=2),
            "resolved_at": (created + pd.Timedelta(hours=5)).where(created.index < 4),
            "reopened": [False, False, False, True, False],
        }
    )
    measured = with_ticket_measures(tickets)
    # The clock is A's last resolution (day 20, 14:00): that ticket's follow-up is still open.
    nan = np.nan
    np.testing.assert_array_equal(measured["repeat"], [100.0, 0.0, nan, 0.0, 0.0])
    np.testing.assert_array_equal(measured["fcr"], [0.0, 100.0, nan, 0.0, 0.0])
    assert measured["frt_hours"].tolist() == [2.0] * 5


def test_kpis_by_segment_equal_a_direct_computation(demo_data: CxData) -> None:
    kpis = kpis_by(demo_data, "segment").set_index(["segment", "metric"])
    segment_of = demo_data.customers.set_index("customer_id")["segment"]
    r = demo_data.responses.assign(segment=demo_data.responses["customer_id"].map(segment_of))
    t = demo_data.tickets.assign(segment=demo_data.tickets["customer_id"].map(segment_of))
    for segment in ["new", "loyal", "premium", "b2b"]:
        nps = r[(r["kind"] == "nps") & (r["segment"] == segment)]["score"]
        direct = 100 * ((nps >= 9).mean() - (nps <= 6).mean())
        assert kpis.loc[(segment, "nps"), "value"] == pytest.approx(direct)
        assert kpis.loc[(segment, "nps"), "n"] == len(nps)
        csat = r[(r["kind"] == "csat") & (r["segment"] == segment)]["score"]
        assert kpis.loc[(segment, "csat"), "value"] == pytest.approx(100 * (csat >= 4).mean())
        seg_tickets = t[t["segment"] == segment]
        frt = (
            seg_tickets["first_response_at"] - seg_tickets["created_at"]
        ).dt.total_seconds() / 3600
        assert kpis.loc[(segment, "frt_hours"), "value"] == pytest.approx(frt.median())
    assert kpis.loc[("all", "nps"), "n"] == (r["kind"] == "nps").sum()


def test_nps_ci_covers_the_truth_in_95_percent_of_simulated_surveys() -> None:
    rng = np.random.default_rng(42)
    p = np.array([0.2, 0.3, 0.5])  # detractor, passive, promoter → true NPS 30
    draws = rng.choice([0, 8, 10], size=(1000, 400), p=p)
    frame = pd.DataFrame({"run": np.repeat(np.arange(1000), 400), "score": draws.ravel()})
    frame["value"] = nps_points(frame["score"])
    ci = mean_ci_by(frame, ["run"])
    coverage = ((ci["ci_low"] <= 30) & (ci["ci_high"] >= 30)).mean()
    assert coverage >= 0.93


def test_metric_table_cuts_by_any_dimension_and_period(demo_data: CxData) -> None:
    table = metric_table(demo_data, ["nps", "frt_hours", "sla_breach"], ["region"], "month")
    nps = table[table["metric"] == "nps"].set_index(["region", "period"])
    r = demo_data.responses[demo_data.responses["kind"] == "nps"]
    region = r["customer_id"].map(demo_data.customers.set_index("customer_id")["region"])
    cell = r[(region == "Siberia") & (r["submitted_at"].dt.strftime("%Y-%m") == "2026-08")]
    assert nps.loc[("Siberia", "2026-08"), "value"] == pytest.approx(
        100 * ((cell["score"] >= 9).mean() - (cell["score"] <= 6).mean())
    )
    assert nps.loc[("Siberia", "2026-08"), "n"] == len(cell)
    frt = table[table["metric"] == "frt_hours"]
    assert (frt["ci_low"] <= frt["value"]).all() and (frt["value"] <= frt["ci_high"]).all()
    assert (frt["mean"] > frt["value"]).all()  # right-skewed
    breach = table[table["metric"] == "sla_breach"]
    assert breach["value"].between(0, 100).all()


def test_metric_table_by_hour_shows_the_peak_and_rejects_unknown_cuts(demo_data: CxData) -> None:
    load = metric_table(demo_data, ["frt_hours"], ["hour"]).set_index("hour")["n"]
    assert load.idxmax() in (10, 11) and load.max() > 5 * load.min()
    with pytest.raises(KeyError, match="unknown dimension"):
        metric_table(demo_data, ["nps"], ["planet"])


def test_the_planted_low_nps_region_stands_out(company, demo_data: CxData) -> None:
    nps = metric_table(demo_data, ["nps"], ["region"]).set_index("region")
    worst = nps["value"].idxmin()
    assert worst == company.truth.low_nps_region
    others = nps.drop(worst)
    assert (nps.loc[worst, "ci_high"] < others["value"]).all()


def test_retention_textbook_400_of_1000_active_customers_is_40_percent() -> None:
    start, end = pd.Timestamp("2026-07-01"), pd.Timestamp("2026-10-01")
    ids = [f"C{i}" for i in range(1000)]
    early = pd.DataFrame({"customer_id": ids, "created_at": start - pd.Timedelta(days=10)})
    late = pd.DataFrame({"customer_id": ids[:400], "created_at": end - pd.Timedelta(days=10)})
    newcomers = pd.DataFrame(
        {"customer_id": ["N1", "N2"], "created_at": end - pd.Timedelta(days=5)}
    )
    active, kept = retention(pd.concat([early, late, newcomers]), start, end)
    assert (active, kept, kept / active) == (1000, 400, 0.4)


def test_ltv_textbook_2000_per_order_12_orders_a_year_is_24000_a_year() -> None:
    assert lifetime_value(2_000, 12, 1) == 24_000
    assert lifetime_value(2_000, 12, 2.5) == 60_000


def test_customer_value_by_segment_is_ordered_as_planted(demo_data: CxData) -> None:
    value = customer_value(demo_data.orders, demo_data.customers, "segment").set_index("segment")
    assert value["aov"].idxmax() == "b2b" and value["purchases_per_year"].idxmax() == "b2b"
    assert value["annual_churn"].between(0, 1).all()


def test_funnel_conversion_and_drop_off_and_the_leaky_mobile_checkout(demo_data: CxData) -> None:
    steps = ["visit", "view_item", "add_to_cart", "begin_checkout", "purchase"]
    table = funnel(demo_data.web, steps, ["device"]).set_index(["device", "step"])
    web = demo_data.web
    checkout = web[(web["device"] == "mobile") & (web["step"] == "begin_checkout")]["value"].sum()
    bought = web[(web["device"] == "mobile") & (web["step"] == "purchase")]["value"].sum()
    assert table.loc[("mobile", "purchase"), "conversion"] == pytest.approx(100 * bought / checkout)
    purchase = table.xs("purchase", level="step")["drop_off"]
    assert purchase.idxmax() == "mobile"


def test_churn_counts_customers_active_at_start_and_gone_by_the_end() -> None:
    orders = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "c", "d"],
            "created_at": pd.to_datetime(
                ["2026-08-01", "2026-09-20", "2026-07-15", "2026-10-10", "2026-10-05"]
            ),
        }
    )
    # Active on 1 Oct (an order in the 90 days before): a, b, c. By 1 Nov a has lapsed.
    row = churn(orders, pd.Timestamp("2026-10-01"), pd.Timestamp("2026-11-01")).iloc[0]
    assert row["n"] == 3 and row["value"] == pytest.approx(100 / 3)


def test_response_rates_show_the_quiet_segment(demo_data: CxData) -> None:
    rates = response_rates(demo_data).set_index("segment")["response_rate"]
    assert rates.idxmin() == "new" and rates["loyal"] > 2 * rates["new"]


def test_post_stratification_recovers_the_base_nps_from_a_biased_sample() -> None:
    rng = np.random.default_rng(5)
    customers = pd.DataFrame(
        {"customer_id": [f"C{i}" for i in range(20_000)], "segment": ["a", "b"] * 10_000}
    )
    happy = customers["segment"] == "a"
    scores = np.where(
        happy, rng.choice([10, 3], 20_000, p=[0.8, 0.2]), rng.choice([10, 3], 20_000, p=[0.2, 0.8])
    )
    answered = rng.random(20_000) < np.where(happy, 0.6, 0.1)  # the happy half answers 6× more
    responses = pd.DataFrame(
        {
            "customer_id": customers["customer_id"][answered],
            "kind": "nps",
            "score": scores[answered].astype(float),
            "submitted_at": pd.Timestamp("2026-10-01"),
        }
    )
    empty = pd.DataFrame()
    result = post_stratified_nps(CxData(customers, empty, responses, empty, empty))
    truth = 100 * ((scores >= 9).mean() - (scores <= 6).mean())  # the whole base
    assert result["ci_low"] <= truth <= result["ci_high"]
    assert result["raw"] > truth + 20  # unweighted, the happy respondents dominate


def test_sentiment_share_of_comments_reads_both_languages(demo_data: CxData) -> None:
    shares = metric_table(demo_data, ["negative_comments", "positive_comments"], ["segment"])
    negative = shares[shares["metric"] == "negative_comments"].set_index("segment")["value"]
    assert negative.idxmax() == "new" and negative.idxmin() == "premium"
    positive = shares[shares["metric"] == "positive_comments"]["value"]
    assert ((negative.to_numpy() + positive.to_numpy()) <= 100).all()


def test_responses_join_customers_by_crm_id_or_email_hash_and_the_rest_are_counted() -> None:
    customers = pd.DataFrame(
        {"customer_id": ["C1", "C2"], "email_hash": ["h1", "h2"], "segment": ["new", "b2b"]}
    )
    responses = pd.DataFrame(
        {"customer_id": ["C1", None, None], "email_hash": [None, "h2", "h9"], "kind": "nps"}
    )
    joined = identify(responses, customers)
    assert joined["customer_id"].tolist()[:2] == ["C1", "C2"] and pd.isna(joined["customer_id"][2])
    empty = pd.DataFrame({"customer_id": pd.Series([], dtype=object)})
    data = CxData(customers, empty, joined, empty, empty)
    assert data.unmatched() == {
        "tickets": 0, "responses": 1, "responses_unlinked": 0, "responses_unknown_ticket": 0
    }  # fmt: skip


def test_business_hours_frt_counts_only_working_time() -> None:
    hours = BusinessHours(start=9, end=18, holidays=("2026-11-04",))
    created = pd.Series(
        pd.to_datetime(["2026-11-06 17:00", "2026-11-03 20:00", "2026-11-02 10:00"])
    )
    answered = pd.Series(pd.to_datetime(["2026-11-09 10:30", "2026-11-05 09:15", pd.NaT]))
    # Fri 17:00 → Mon 10:30: 1 h Friday + 1.5 h Monday. Tue 20:00 → Thu 09:15 over the
    # Wednesday holiday: 0.25 h. No answer yet: unknown.
    elapsed = hours.elapsed(created, answered)
    assert elapsed[:2].tolist() == pytest.approx([2.5, 0.25])
    assert np.isnan(elapsed[2])


def test_business_hours_match_a_minute_by_minute_count() -> None:
    rng = np.random.default_rng(5)
    days = pd.to_timedelta(rng.uniform(0, 40, 200), unit="D")
    start = (pd.Timestamp("2026-10-01") + days).floor("min")
    end = (start + pd.to_timedelta(rng.uniform(0, 9, 200), unit="D")).floor("min")
    minutes = [
        pd.date_range(a, b, freq="1min", inclusive="left") for a, b in zip(start, end, strict=True)
    ]
    direct = [((m.day_of_week < 5) & (m.hour >= 9) & (m.hour < 18)).sum() / 60 for m in minutes]
    elapsed = BusinessHours().elapsed(pd.Series(start), pd.Series(end))
    assert elapsed.tolist() == pytest.approx(direct, abs=1e-6)


def test_escalation_rate_is_the_share_of_escalated_tickets_with_unknown_left_out() -> None:
    tickets = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d"],
            "channel": "chat",
            "topic": "payment",
            "created_at": pd.to_datetime(["2026-10-01"] * 4),
            "first_response_at": pd.to_datetime(["2026-10-01 01:00"] * 4),
            "resolved_at": pd.to_datetime(["2026-10-02"] * 4),
            "reopened": False,
            "escalated": [True, False, False, None],
        }
    )
    data = CxData(
        pd.DataFrame(
            {"customer_id": list("abcd"), "segment": "new", "region": "x", "channel": "web"}
        ),
        with_ticket_measures(tickets),
        pd.DataFrame(columns=["customer_id", "kind", "score", "submitted_at"]),
        pd.DataFrame(),
        pd.DataFrame(),
    )
    row = metric_table(data, ["escalation"]).iloc[0]
    assert row["value"] == pytest.approx(100 / 3) and row["n"] == 3


def test_demo_escalation_rate_by_topic_recovers_the_planted_rates(demo_data: CxData) -> None:
    from connectors.demo import ESCALATION_RATE

    table = metric_table(demo_data, ["escalation"], ["topic"]).set_index("topic")
    for topic, rate in ESCALATION_RATE.items():
        assert table.loc[topic, "ci_low"] <= 100 * rate <= table.loc[topic, "ci_high"], topic


def test_csi_is_the_weighted_mean_of_rescaled_components_with_an_independent_ci() -> None:
    table = pd.DataFrame(
        {
            "segment": ["a", "a", "a", "b"],
            "period": "all",
            "metric": ["nps", "csat_top2", "ces", "nps"],
            "value": [40.0, 80.0, 5.5, 10.0],
            "n": [400, 300, 200, 100],
            "se": np.array([10.0, 5.0, 0.2, 10.0]) / Z95,
            "ci_low": [30.0, 75.0, 5.3, 0.0],
            "ci_high": [50.0, 85.0, 5.7, 20.0],
        }
    )
    index = csi(table, {"nps": 0.5, "csat_top2": 0.25, "ces": 0.25}, ces_scale=7).iloc[0]
    # NPS 40 → 70, CSAT 80 → 80, CES 5.5 on 1–7 → 75: 0.5·70 + 0.25·80 + 0.25·75 = 73.75.
    assert index["value"] == pytest.approx(73.75)
    assert index["n"] == 200
    assert len(csi(table, {"nps": 0.4, "csat_top2": 0.3, "ces": 0.3})) == 1  # b lacks CSAT, CES
    se = np.sqrt((0.5 * 5 / Z95) ** 2 + (0.25 * 5 / Z95) ** 2 + (0.25 * 0.2 / 6 * 100 / Z95) ** 2)
    assert index["ci_high"] - index["value"] == pytest.approx(Z95 * se)


def test_id_lookups_through_arrow_match_pandas_map_and_isin() -> None:
    from tasks.identity import is_in, lookup

    keys = pd.Series(["C2", None, "C9", "C1", "C2"], index=[5, 6, 7, 8, 9])
    segment = pd.Series(["b2b", "new"], index=["C1", "C2"], name="segment")
    pd.testing.assert_series_equal(lookup(keys, segment), keys.map(segment))
    assert is_in(keys, segment.index).tolist() == keys.isin(segment.index).tolist()
    assert is_in(keys, pd.Series(["C1", None])).tolist() == [False, False, False, True, False]


def test_millions_of_ids_looked_up_in_slices_on_all_cores_find_each_position() -> None:
    from tasks.identity import PARALLEL_ROWS, rows_in

    known = pd.Index([f"C{i:07d}" for i in range(50_000)])
    picks = np.random.default_rng(3).integers(-5_000, len(known), PARALLEL_ROWS + 7)
    keys = pd.Series(np.where(picks >= 0, known.take(np.maximum(picks, 0)), "X"), dtype="str")
    keys[::97] = None
    expected = known.get_indexer(keys)  # missing and unknown keys: -1
    assert np.array_equal(rows_in(keys, known), expected)
    assert np.array_equal(rows_in(keys[:1000], known), expected[:1000])  # one slice


def test_cuts_by_customer_attribute_join_each_row_to_its_customer(demo_data: CxData) -> None:
    attributes = demo_data.customers.set_index("customer_id")
    for table in ("tickets", "responses"):
        rows = getattr(demo_data, table)
        for column in ("segment", "region", "channel"):
            joined = rows["customer_id"].map(attributes[column])
            found = demo_data.customer_column(table, column)
            pd.testing.assert_series_equal(found, joined, check_names=False)


def test_period_labels_read_like_pandas_periods() -> None:
    from tasks.metrics import period_labels

    times = ["2026-12-31 23:59", "2026-05-01 00:00", None, "2026-05-03 12:00"]
    at = pd.Series(pd.to_datetime(times))
    for freq in ("D", "W", "M", "Q"):
        expected = at.dt.to_period(freq).astype(str)
        pd.testing.assert_series_equal(period_labels(at, freq), expected)


def test_metrics_by_journey_stage_follow_the_topics_and_surveys_of_each_stage(
    demo_data: CxData,
) -> None:
    stages = {"delivery": "delivery", "returns": "delivery", "login": "support",
              "post_ticket_csat": "support", "relationship_nps": "loyalty"}  # fmt: skip
    table = metric_table(demo_data, ["frt_hours", "csat_top2", "nps"], ["stage"], stages=stages)
    cells = table.set_index(["metric", "stage"])
    tickets = demo_data.tickets[demo_data.tickets["topic"].isin(["delivery", "returns"])]
    assert cells.loc[("frt_hours", "delivery"), "value"] == pytest.approx(
        tickets["frt_hours"].median()
    )
    assert cells.loc[("frt_hours", "delivery"), "n"] == len(tickets)
    assert set(table.loc[table["metric"] == "frt_hours", "stage"]) == {"delivery", "support"}
    csat = demo_data.responses[demo_data.responses["kind"] == "csat"]
    assert cells.loc[("csat_top2", "support"), "n"] == len(csat)
    assert cells.loc[("nps", "loyalty"), "n"] == (demo_data.responses["kind"] == "nps").sum()


def test_csi_rescales_mean_csat_on_the_configured_scale() -> None:
    table = pd.DataFrame(
        {"period": "all", "metric": ["nps", "csat"], "value": [20.0, 8.0], "n": [100, 100],
         "se": [5.0, 0.25], "ci_low": [10.0, 7.5], "ci_high": [30.0, 8.5]}
    )  # fmt: skip
    index = csi(table, {"nps": 0.5, "csat": 0.5}, csat_scale=10).iloc[0]
    # NPS 20 → 60, CSAT 8 on 1–10 → 77.8: the index stays on 0–100.
    assert index["value"] == pytest.approx(0.5 * 60 + 0.5 * 700 / 9)


def test_unanswered_tickets_breach_the_sla_once_it_has_passed_and_wait_until_then() -> None:
    created = pd.to_datetime(["2026-10-01 00:00", "2026-10-01 00:00", "2026-10-02 12:00"])
    tickets = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c"],
            "created_at": created,
            "first_response_at": pd.to_datetime(["2026-10-01 01:00", None, None]),
            "resolved_at": pd.to_datetime([None, None, "2026-10-02 20:00"]),
            "reopened": False,
        }
    )
    measured = with_ticket_measures(tickets)
    # As of the newest event (Oct 2, 20:00): b has waited 44 h, c 8 h with no reply.
    assert measured["sla_breach"].tolist()[:2] == [0.0, 100.0]
    assert np.isnan(measured["sla_breach"].iloc[2])


def test_a_one_respondent_stratum_leaves_the_weighted_nps_ci_unknown() -> None:
    customers = pd.DataFrame({"customer_id": [f"c{i}" for i in range(400)],
                              "segment": ["a", "b"] * 200})  # fmt: skip
    answered = [f"c{i}" for i in range(0, 400, 2)] + ["c1"]  # all of a, one of b
    responses = pd.DataFrame(
        {"customer_id": answered, "kind": "nps", "score": [10.0, 3.0] * 100 + [10.0],
         "submitted_at": pd.Timestamp("2026-10-01")}
    )  # fmt: skip
    empty = pd.DataFrame()
    result = post_stratified_nps(CxData(customers, empty, responses, empty, empty))
    assert result["weighted"] == pytest.approx(0.5 * 0 + 0.5 * 100)
    assert np.isnan(result["ci_low"]) and np.isnan(result["ci_high"])


def test_times_are_read_on_the_company_clock_for_hours_days_and_working_time(
    sqlite_url: str,
) -> None:
    from tasks import store

    engine = store.open_store(sqlite_url)
    # 06:00–07:00 UTC on Monday Oct 5 is 09:00–10:00 in Moscow; 21:30 UTC Oct 31 is Nov 1.
    tickets = pd.DataFrame(
        {
            "source_id": ["T1", "T2"],
            "created_at": pd.to_datetime(["2026-10-05 06:00", "2026-10-31 21:30"]),
            "first_response_at": pd.to_datetime(["2026-10-05 07:00", "2026-10-31 22:30"]),
        }
    )
    store.load_page(engine, store.Ticket, tickets, "crm", "tickets", {})
    utc = CxData.from_store(engine).tickets
    moscow = CxData.from_store(engine, timezone="Europe/Moscow").tickets
    assert utc["frt_business_hours"].tolist() == [0.0, 0.0]
    assert moscow["frt_business_hours"].tolist() == [1.0, 0.0]
    assert moscow["created_at"].dt.hour.tolist() == [9, 0]
    assert moscow["created_at"].dt.to_period("M").astype(str).tolist() == ["2026-10", "2026-11"]
    assert moscow["frt_hours"].tolist() == utc["frt_hours"].tolist() == [1.0, 1.0]


def test_tickets_keep_the_id_their_post_contact_answers_name(sqlite_url: str) -> None:
    from tasks import store

    engine = store.open_store(sqlite_url)
    tickets = pd.DataFrame(
        {"source_id": ["T1", "T2"], "created_at": pd.to_datetime(["2026-10-05", "2026-10-06"])}
    )
    store.load_page(engine, store.Ticket, tickets, "desk", "tickets", {})
    answers = pd.DataFrame(
        {
            "source_id": ["A1", "A2"],
            "ticket_id": ["T2", None],
            "survey": "post_ticket_csat",
            "kind": "csat",
            "score": [2.0, 5.0],
            "submitted_at": pd.to_datetime(["2026-10-07", "2026-10-07"]),
        }
    )
    store.load_page(engine, store.SurveyResponse, answers, "forms", "csat", {})
    data = CxData.from_store(engine)
    linked = data.responses.merge(data.tickets, on="ticket_id")
    assert sorted(data.tickets["ticket_id"]) == ["T1", "T2"]
    assert linked["score"].tolist() == [2.0] and linked["created_at"].dt.day.tolist() == [6]


def _tickets(created: list[str], answered: list[str | None], resolved: list[str | None]) -> CxData:
    """A one-customer-per-ticket `CxData` of these tickets, measured, with no surveys."""
    ids = [f"c{i}" for i in range(len(created))]
    tickets = pd.DataFrame(
        {
            "customer_id": ids,
            "channel": "chat",
            "topic": "payment",
            "created_at": pd.to_datetime(created, format="ISO8601"),
            "first_response_at": pd.to_datetime(answered, format="ISO8601"),
            "resolved_at": pd.to_datetime(resolved, format="ISO8601"),
            "reopened": False,
        }
    )
    customers = pd.DataFrame(
        {"customer_id": ids, "segment": "new", "region": "x", "channel": "web"}
    )
    empty = pd.DataFrame(columns=["customer_id", "kind", "score", "submitted_at"])
    return CxData(customers, with_ticket_measures(tickets), empty, pd.DataFrame(), pd.DataFrame())


def test_fcr_and_repeat_count_only_tickets_whose_follow_up_window_has_closed() -> None:
    # The clock is the newest event, 20 Oct 12:00. The first two tickets are resolved well
    # before it; the third, opened on 1 Oct, was resolved an hour before the clock and may
    # still be reopened; the fourth, opened two days before, may still be followed by another.
    data = _tickets(
        ["2026-10-01", "2026-10-02", "2026-10-01", "2026-10-18"],
        ["2026-10-01 01:00", "2026-10-02 01:00", "2026-10-01 01:00", "2026-10-18 01:00"],
        ["2026-10-01 05:00", "2026-10-02 05:00", "2026-10-20 11:00", "2026-10-20 12:00"],
    )
    table = metric_table(data, ["fcr", "repeat"]).set_index("metric")
    assert table.loc["fcr", ["value", "n", "pending"]].tolist() == [100.0, 2, 2]
    assert table.loc["repeat", ["value", "n", "pending"]].tolist() == [0.0, 3, 1]


def test_an_unanswered_ticket_is_censored_in_the_frt_median_at_the_clock() -> None:
    # Answers after 1, 2, 3 and 4 h; a fifth ticket has waited 2.5 h by the clock (04:00).
    # Kaplan–Meier by hand: S(1) = 4/5, S(2) = 4/5 · 3/4 = 0.6, censored at 2.5,
    # S(3) = 0.6 · 1/2 = 0.3, so the median is 3 h, not the 2.5 h of the answered four.
    day = "2026-10-01"
    data = _tickets(
        [day, day, day, day, f"{day} 01:30"],
        [f"{day} 01:00", f"{day} 02:00", f"{day} 03:00", f"{day} 04:00", None],
        [None] * 5,
    )
    row = metric_table(data, ["frt_hours"]).iloc[0]
    assert row["value"] == pytest.approx(3.0)
    assert (row["n"], row["pending"], row["mean"]) == (5, 1, pytest.approx(2.5))


def test_km_median_is_the_ordinary_median_without_censoring_and_nan_past_half_censored() -> None:
    times = [5.0, 1.0, 4.0, 2.0, 3.0, 6.0, 2.0, 7.0, 9.0]
    spells = pd.DataFrame({"g": ["even"] * 4 + ["odd"] * 5, "time": times, "observed": True})
    expected = spells.groupby("g")["time"].median()
    medians = km_median_by(spells, ["g"])["value"]
    pd.testing.assert_series_equal(medians, expected, check_names=False)
    # Three of five still waiting: survival never reaches 1/2, so no median yet.
    waiting = pd.DataFrame({"g": "a", "time": [1.0, 2.0, 3.0, 3.0, 3.0],
                            "observed": [True, True, False, False, False]})  # fmt: skip
    assert np.isnan(km_median_by(waiting, ["g"])["value"].iloc[0])


def test_km_median_equals_statsmodels_survfunc_right() -> None:
    rng = np.random.default_rng(11)
    groups = np.repeat([f"g{i}" for i in range(60)], rng.integers(3, 80, 60))
    event = rng.exponential(2.0, len(groups)).round(1)  # rounded: ties, some with censorings
    censor = rng.exponential(4.0, len(groups)).round(1)
    spells = pd.DataFrame(
        {"g": groups, "time": np.minimum(event, censor), "observed": event <= censor}
    )
    ours = km_median_by(spells, ["g"])["value"]
    compared = 0
    for group, cell in spells.groupby("g"):
        fit = SurvfuncRight(cell["time"].to_numpy(), cell["observed"].to_numpy(int))
        if np.isclose(fit.surv_prob, 0.5, atol=1e-9).any():
            continue  # resting at exactly 1/2: ours takes the midpoint, statsmodels the end
        compared += 1
        expected = fit.quantile(0.5)
        if np.isnan(expected):
            assert np.isnan(ours[group]), group
        else:
            assert ours[group] == pytest.approx(expected, abs=1e-9), group
    assert compared >= 50 and ours.notna().sum() >= 40


def test_nan_scores_are_left_out_of_n_not_counted_as_passives_or_low_scores() -> None:
    customers = pd.DataFrame({"customer_id": ["a", "b"], "segment": ["new", "b2b"],
                              "region": "x", "channel": "web"})  # fmt: skip
    responses = pd.DataFrame(
        {
            "customer_id": ["a", "b", "a", "b", "a", "b"],
            "kind": ["nps", "nps", "nps", "csat", "csat", "csat"],
            "score": [10.0, np.nan, 9.0, 5.0, np.nan, 2.0],
            "survey": "s",
            "channel": "email",
            "submitted_at": pd.to_datetime(["2026-10-01", "2026-10-02", "2026-10-03"] * 2),
        }
    )
    empty = pd.DataFrame()
    data = CxData(customers, empty, responses, empty, empty)
    table = metric_table(data, ["nps", "csat_top2", "csat"]).set_index("metric")
    assert table.loc["nps", ["value", "n"]].tolist() == [100.0, 2]
    assert table.loc["csat_top2", ["value", "n"]].tolist() == [50.0, 2]
    assert table.loc["csat", ["value", "n"]].tolist() == [3.5, 2]
    # b's latest NPS answer has no score: the weighted NPS hears only from a.
    assert post_stratified_nps(data)["n"] == 1
    assert nps_points(pd.Series([np.nan, 7.0])).iloc[0] != 0.0


def test_wilson_intervals_equal_statsmodels_and_stay_inside_0_to_1() -> None:
    n = np.repeat([1, 2, 5, 24, 100, 2_000], 7)
    k = np.round(n * np.tile([0, 0.01, 0.1, 0.5, 0.9, 0.99, 1.0], 6))
    low, high = wilson_interval(k / n, n)
    expected = proportion_confint(k, n, alpha=0.05, method="wilson")
    np.testing.assert_allclose(low, expected[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(high, expected[1], rtol=0, atol=1e-12)
    assert (low >= 0).all() and (high <= 1).all() and (low < high).all()
    assert np.isnan(wilson_interval([0.5], [0])).all()


def test_every_share_metric_has_the_statsmodels_wilson_interval_inside_0_100(
    demo_data: CxData,
) -> None:
    table = metric_table(demo_data, list(SHARE_METRICS), ["region"], "month")
    assert set(table["metric"]) == set(SHARE_METRICS)
    successes = np.round(table["value"] * table["n"] / 100)
    low, high = proportion_confint(successes, table["n"], alpha=0.05, method="wilson")
    np.testing.assert_allclose(table["ci_low"], 100 * low, rtol=0, atol=1e-10)
    np.testing.assert_allclose(table["ci_high"], 100 * high, rtol=0, atol=1e-10)
    assert (table["ci_low"] >= 0).all() and (table["ci_high"] <= 100).all()
    lost = churn(demo_data.orders, pd.Timestamp("2026-09-01"), pd.Timestamp("2026-10-01"))
    row = lost.iloc[0]
    gone = round(row["value"] * row["n"] / 100)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(
        tuple(100 * b for b in proportion_confint(gone, row["n"], method="wilson")), abs=1e-10
    )


def test_a_full_score_at_small_n_gets_an_interval_below_100_not_100_to_100() -> None:
    day = pd.Timestamp("2026-10-01")
    created = [str(day + pd.Timedelta(hours=i)) for i in range(24)]
    answered = [str(day + pd.Timedelta(hours=i, minutes=30)) for i in range(24)]
    data = _tickets([*created, "2026-11-30"], [*answered, None], [*answered, None])
    row = metric_table(data, ["fcr"]).iloc[0]
    low, high = proportion_confint(24, 24, method="wilson")
    assert (row["value"], row["n"]) == (100.0, 24)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((100 * low, 100 * high), abs=1e-12)
    assert row["ci_low"] < 90


def test_funnel_conversion_has_the_wilson_interval_of_its_step(demo_data: CxData) -> None:
    steps = ["visit", "view_item", "add_to_cart", "begin_checkout", "purchase"]
    table = funnel(demo_data.web, steps, ["device"]).dropna(subset=["conversion"])
    previous = table["sessions"] / (table["conversion"] / 100)
    low, high = proportion_confint(table["sessions"], previous, method="wilson")
    np.testing.assert_allclose(table["conversion_ci_low"], 100 * low, rtol=0, atol=1e-9)
    np.testing.assert_allclose(table["conversion_ci_high"], 100 * high, rtol=0, atol=1e-9)


def test_change_ci_is_newcombes_for_wilson_shares_and_normal_for_means() -> None:
    k1, n1 = np.array([24, 30, 5, 0]), np.array([24, 200, 40, 30])
    k2, n2 = np.full(4, 180), np.full(4, 200)
    sides = []
    for k, n in ((k1, n1), (k2, n2)):
        low, high = wilson_interval(k / n, n)
        sides.append(pd.DataFrame({"value": k / n, "ci_low": low, "ci_high": high}))
    low, high = difference_ci(*sides)
    expected = confint_proportions_2indep(k1, n1, k2, n2, method="newcomb", compare="diff")
    np.testing.assert_allclose(low, expected[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(high, expected[1], rtol=0, atol=1e-12)
    a = pd.DataFrame({"value": [10.0], "ci_low": [10 - Z95 * 3], "ci_high": [10 + Z95 * 3]})
    b = pd.DataFrame({"value": [4.0], "ci_low": [4 - Z95 * 4], "ci_high": [4 + Z95 * 4]})
    assert [x.iloc[0] for x in difference_ci(a, b)] == pytest.approx([6 - Z95 * 5, 6 + Z95 * 5])


def test_kpi_tiles_take_the_change_ci_from_the_metric_cis_and_show_pending(
    demo_data: CxData,
) -> None:
    from tasks.digest import Month, kpi_tiles, within

    october = Month.containing(pd.Timestamp("2026-10-15"))
    tiles = kpi_tiles(demo_data, october, 5).set_index("metric")
    now = kpis_by(within(demo_data, october), "segment").query("segment == 'all'")
    before = kpis_by(within(demo_data, october.previous()), "segment").query("segment == 'all'")
    now, before = now.set_index("metric"), before.set_index("metric")
    fcr = tiles.loc["fcr"]
    # Tickets of the last week of October are still inside their follow-up window.
    assert fcr["pending"] == now.loc["fcr", "pending"] > 0
    k = [round(t.loc["fcr", "value"] * t.loc["fcr", "n"] / 100) for t in (now, before)]
    low, high = confint_proportions_2indep(
        k[0], now.loc["fcr", "n"], k[1], before.loc["fcr", "n"], method="newcomb"
    )
    assert (fcr["change_low"], fcr["change_high"]) == pytest.approx((100 * low, 100 * high))
    nps = tiles.loc["nps"]
    half = np.hypot(*(t.loc["nps", "ci_high"] - t.loc["nps", "value"] for t in (now, before)))
    assert nps["change_high"] - nps["change"] == pytest.approx(half)


def test_support_channel_kpis_use_the_metric_definitions(demo_data: CxData) -> None:
    from tasks.digest import kpis_by_contact_channel

    responses = demo_data.responses.copy()
    responses.loc[responses.index[responses["kind"] == "csat"][:50], "score"] = np.nan
    data = CxData(
        demo_data.customers, demo_data.tickets, responses, demo_data.orders, demo_data.web
    )
    channels = kpis_by_contact_channel(data, 5).set_index(["channel", "metric"])
    scored = responses[(responses["kind"] == "csat") & responses["score"].notna()]
    assert channels.loc[("all", "csat"), "n"] == len(scored)
    assert channels.loc[("all", "csat"), "value"] == pytest.approx(
        100 * (scored["score"] >= 4).mean()
    )
    direct = metric_table(data, ["frt_hours", "fcr"], ["channel"]).set_index(["channel", "metric"])
    for key, row in direct.iterrows():
        assert channels.loc[key, ["value", "n", "pending"]].tolist() == pytest.approx(
            row[["value", "n", "pending"]].tolist(), nan_ok=True
        )
