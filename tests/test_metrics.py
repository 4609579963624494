"""Metric formulas on textbook examples and against a direct computation on the demo data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tasks.metrics import (
    Z95,
    BusinessHours,
    CxData,
    churn,
    csi,
    customer_value,
    funnel,
    identify,
    kpis_by,
    lifetime_value,
    mean_ci_by,
    metric_table,
    nps_points,
    post_stratified_nps,
    response_rates,
    retention,
    with_ticket_measures,
)


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
    assert measured["repeat"].tolist() == [True, False, False, False, False]
    assert measured["fcr"].tolist() == [False, True, True, False, False]
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
    assert frt["ci_low"].isna().all() and (frt["mean"] > frt["value"]).all()  # right-skewed
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
    assert data.unmatched() == {"tickets": 0, "responses": 1}


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
    from tasks.metrics import is_in, lookup

    keys = pd.Series(["C2", None, "C9", "C1", "C2"], index=[5, 6, 7, 8, 9])
    segment = pd.Series(["b2b", "new"], index=["C1", "C2"], name="segment")
    pd.testing.assert_series_equal(lookup(keys, segment), keys.map(segment))
    assert is_in(keys, segment.index).tolist() == keys.isin(segment.index).tolist()
    assert is_in(keys, pd.Series(["C1", None])).tolist() == [False, False, False, True, False]


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
         "ci_low": [10.0, 7.5], "ci_high": [30.0, 8.5]}
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
