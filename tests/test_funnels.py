"""Funnels are per web source: two sources with the same step names (GA4 sessions, Metrica goal
visits) give each its own conversions, equal to a plain pandas recomputation and never their
sum; a journey stage uses the source it names; pain-point funnel cells use one source; the
store keeps each web row's source through to the analysis frames."""

from __future__ import annotations

import logging
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
from pytest_httpserver import HTTPServer

from connectors.ga4 import GA4Source
from connectors.yandex_metrica import YandexMetricaSource
from flows.config import Stage
from flows.sync import sync_source
from tasks import store
from tasks.cells import funnel_cells
from tasks.funnels import funnel
from tasks.journey import journey_map
from tasks.loader import CxData
from tasks.pain_points import rank_pain_points
from tests.fakes.ga4 import EVENTS, FakeGA4
from tests.fakes.yandex_metrica import FakeMetrica

STEPS = ["view_item", "add_to_cart", "purchase"]
DEVICES = ("desktop", "mobile")
SEGMENTS = ("new", "returning")
# Per source: sessions entering the funnel per cell, step conversion rates per device. GA4 is
# the bigger source; Metrica converts better, so a sum would match neither.
SOURCES = {
    "ga4": (4_000, {"desktop": (0.5, 0.4), "mobile": (0.45, 0.2)}, "sessions"),
    "metrica": (1_500, {"desktop": (0.7, 0.6), "mobile": (0.65, 0.55)}, "goal_visits"),
}
FAST = {"backoff_base": 0.01, "max_wait": 5.0, "timeout": 2.0, "rate_limit": [1000, 1]}


def two_sources(seed: int = 5) -> pd.DataFrame:
    """Daily step sessions of two web sources over the same steps, devices and segments, with
    Metrica's goal reaches (events, more than its visits) alongside."""
    rng = np.random.default_rng(seed)
    rows = []
    for source, (entering, rates, metric) in SOURCES.items():
        for day in pd.date_range("2026-03-01", periods=5):
            for device in DEVICES:
                for segment in SEGMENTS:
                    counts = [int(rng.poisson(entering))]
                    for rate in rates[device]:
                        counts.append(int(rng.binomial(counts[-1], rate)))
                    cell = {"source": source, "date": day, "device": device, "segment": segment}
                    for step, count in zip(STEPS, counts, strict=True):
                        rows.append(cell | {"step": step, "metric": metric, "value": count})
                        if source == "metrica":
                            reaches = count + int(rng.poisson(count / 3))
                            rows.append(cell | {"step": step, "metric": "goal_reaches",
                                                "value": reaches})  # fmt: skip
    return pd.DataFrame(rows).assign(value=lambda t: t["value"].astype(float))


def recomputed(web: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Sessions and step conversion (%) per `by` and step, by plain pandas: session rows only."""
    sessions = web[web["metric"] != "goal_reaches"].groupby([*by, "step"])["value"].sum()
    wide = sessions.unstack("step")[STEPS]
    conversion = 100 * wide.iloc[:, 1:].to_numpy() / wide.iloc[:, :-1].to_numpy()
    rates = pd.DataFrame(conversion, index=wide.index, columns=STEPS[1:])
    return pd.concat({"sessions": wide.stack(), "conversion": rates.stack()}, axis=1).sort_index()


def stages(**named: str | None) -> dict[str, Stage]:
    return {
        "browse": Stage(funnel_steps=["view_item", "add_to_cart"], source=named.get("browse")),
        "buy": Stage(funnel_steps=["purchase"], source=named.get("buy")),
    }


def test_each_source_converts_as_recomputed_and_never_as_the_sum() -> None:
    web = two_sources()

    table = funnel(web, STEPS, ["device"]).set_index(["source", "device", "step"]).sort_index()

    expected = recomputed(web, ["source", "device"])
    assert sorted(table.index.get_level_values("source").unique()) == ["ga4", "metrica"]
    pd.testing.assert_series_equal(table["sessions"], expected["sessions"], check_names=False)
    pd.testing.assert_series_equal(
        table["conversion"].dropna(), expected["conversion"].dropna(), check_names=False
    )
    summed = recomputed(web, ["device"])["conversion"].dropna()
    for source in SOURCES:
        mine = table.xs(source, level="source")["conversion"].dropna()
        assert (mine - summed).abs().min() > 1.0  # points: each source is far from the sum


def test_source_keeps_one_funnel_with_its_own_conversion() -> None:
    web = two_sources()

    metrica = funnel(web, STEPS, ["device"], source="metrica")

    assert "source" not in metrica.columns
    expected = recomputed(web[web["source"] == "metrica"], ["device"])
    got = metrica.set_index(["device", "step"]).sort_index()
    pd.testing.assert_series_equal(got["sessions"], expected["sessions"], check_names=False)
    pd.testing.assert_series_equal(
        got["conversion"].dropna(), expected["conversion"].dropna(), check_names=False
    )


def test_a_journey_stage_uses_the_source_it_names(
    demo_data: CxData, caplog: pytest.LogCaptureFixture
) -> None:
    web = two_sources()
    data = CxData(demo_data.customers, demo_data.tickets, demo_data.responses,
                  demo_data.orders, web)  # fmt: skip
    by_source = {
        source: web[(web["source"] == source) & (web["metric"] != "goal_reaches")]
        .groupby("step")["value"]
        .sum()
        for source in SOURCES
    }

    with caplog.at_level(logging.WARNING, logger="tasks.funnels"):
        mapped = journey_map(data, pd.DataFrame(), stages(browse="metrica"), STEPS)
    mapped = mapped.set_index("stage")

    metrica, ga4 = by_source["metrica"], by_source["ga4"]
    assert mapped.loc["browse", "source"] == "metrica"
    assert mapped.loc["browse", "conversion"] == pytest.approx(
        100 * metrica["purchase"] / metrica["view_item"]
    )
    # The stage naming none takes the source with the most funnel entrants, and says so.
    assert mapped.loc["buy", "source"] == "ga4"
    assert mapped.loc["buy", "conversion"] == pytest.approx(100.0)
    assert "web sources ga4, metrica all hold funnel steps" in caplog.text
    assert mapped.loc["browse", "conversion_by_source"] == pytest.approx(
        {s: 100 * p["purchase"] / p["view_item"] for s, p in by_source.items()}
    )
    assert ga4["view_item"] > metrica["view_item"]


def test_pain_point_funnel_cells_use_one_source(
    demo_data: CxData, caplog: pytest.LogCaptureFixture
) -> None:
    web = two_sources()
    ga4 = web[web["source"] == "ga4"]

    with caplog.at_level(logging.WARNING, logger="tasks.funnels"):
        cells = funnel_cells(web, STEPS)
    assert "uses ga4, the source with the most sessions at view_item" in caplog.text
    pd.testing.assert_frame_equal(cells, funnel_cells(ga4, STEPS))
    summed = funnel_cells(web.drop(columns="source"), STEPS)
    assert not np.allclose(cells["n_cell"], summed["n_cell"])

    data = CxData(demo_data.customers, demo_data.tickets, demo_data.responses,
                  demo_data.orders, web)  # fmt: skip
    ranked = rank_pain_points(data, {"default": 2.0}, STEPS)
    leaks = ranked[ranked["key"].str.startswith("funnel:") & ~ranked["key"].str.contains("@")]
    assert len(leaks)
    before = ga4[ga4["metric"] == "sessions"].groupby(["step", "device"])["value"].sum()
    previous = dict(zip(STEPS[1:], STEPS[:-1], strict=True))
    for key, reach in zip(leaks["key"], leaks["reach"], strict=True):
        step, device = key.removeprefix("funnel:").split(":")
        assert reach == before[(previous[step], device)]


def test_the_store_keeps_each_web_rows_source_and_funnels_stay_apart(
    store_url: str, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = date.today() - timedelta(days=2)
    monkeypatch.setenv("GA4_TOKEN", "ya29.fake")
    monkeypatch.setenv("YANDEX_METRICA_TOKEN", "y0_fake")
    for variable in ("GA4_CLIENT_ID", "GA4_CLIENT_SECRET", "GA4_REFRESH_TOKEN"):
        monkeypatch.delenv(variable, raising=False)
    ga4 = FakeGA4("ya29.fake", "123")
    ga4.seed(first, 3)
    engine = store.open_store(store_url)
    with HTTPServer() as other:
        metrica = FakeMetrica("y0_fake", "44147844", "7").serve(other)
        metrica.seed(first, 3)
        options = {"counter": "44147844", "goals": {"7": "purchase"}, "base_url": metrica.url}
        options |= FAST
        sync_source(engine, YandexMetricaSource(name="metrica", start_date=str(first), **options))
    ga4.serve(httpserver)
    options = {"property_id": "123", "base_url": ga4.url, **FAST}
    sync_source(engine, GA4Source(name="ga4", start_date=str(first), **options))

    web = CxData.from_store(engine).web

    assert set(web["source"]) == {"ga4", "metrica"}
    purchases = funnel(web, list(EVENTS)).query("step == 'purchase'").set_index("source")
    served_ga4 = sum(cell["events"]["purchase"] for cell in ga4.cells.values())
    served_metrica = sum(cell["ym:s:goal7visits"] for cell in metrica.cells.values())
    assert purchases["sessions"].to_dict() == {"ga4": served_ga4, "metrica": served_metrica}
