"""Both reports as a person sees them: rendered in headless Chromium over the DevTools protocol.

Chromium (Debian's package) loads each report from disk with all networking switched off;
the test reads the visible text, measures every chart, collects console errors and network
requests, and writes a full-page screenshot next to the report.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from websockets.sync.client import connect

from connectors.demo import generate
from tasks.alerts import detect_alerts
from tasks.digest import Month, build_digest, within
from tasks.experiments import evaluate
from tasks.hypotheses import load_hypotheses
from tasks.labels import labels
from tasks.loader import CxData
from tasks.metrics import customer_value, kpis_by, post_stratified_nps
from tasks.outputs import CHROMIUM_FLAGS, write_report
from tasks.pain_points import rank_pain_points
from tasks.pilot_report import build_experiment
from tasks.pilot_store import result_rows
from tasks.render import Rendered, effect
from tasks.text import tag_topics
from tests.conftest import REPO, cx_data

SCRIPT_COMMENT = "<script>alert('xss')</script> the courier was late again"
PII_COMMENT = "Call me on +7 912 345-67-89 or write to ivan.petrov@example.org, delivery failed"
LOW_REGION = "Urals"
DIGEST_MONTH = Month.containing(pd.Timestamp("2026-10-15"))


@dataclass(frozen=True)
class Demo:
    """A small demo company, evaluated and ranked, with planted text and a low-NPS region."""

    data: CxData
    pain: pd.DataFrame
    results: pd.DataFrame
    arms: dict[str, pd.DataFrame]
    hypotheses: list


def demo_company(customers: int = 20_000) -> Demo:
    """The demo company with a `<script>` and a PII comment from auto-route pilot customers in
    the pilot period (the only comments there), and NPS in one region pushed to detractors."""
    data = cx_data(generate(customers, 7))
    hypotheses = load_hypotheses(REPO / "hypotheses")
    evaluations = [evaluate(h, data) for h in hypotheses]
    auto = next(e for e in evaluations if e.hypothesis.id == "auto-route-tickets")
    responses = data.responses.copy()
    in_pilot = responses["submitted_at"] >= pd.Timestamp("2026-10-01")
    responses.loc[in_pilot, "comment"] = None
    pilot_ids = auto.arms.loc[auto.arms["arm"] == "pilot", "customer_id"]
    mine = responses.index[in_pilot & responses["customer_id"].isin(pilot_ids)][:2]
    responses.loc[mine, "comment"] = [SCRIPT_COMMENT, PII_COMMENT]
    region = data.customers.set_index("customer_id")["region"]
    low = (responses["customer_id"].map(region) == LOW_REGION) & (responses["kind"] == "nps")
    responses.loc[low & in_pilot, "score"] = 3.0
    data = CxData(data.customers, data.tickets, responses, data.orders, data.web)
    as_of = pd.Timestamp("2026-10-31")
    results = pd.concat([result_rows(e, as_of) for e in evaluations], ignore_index=True)
    return Demo(
        data=data,
        pain=rank_pain_points(data, {"default": 2.0}),
        results=results,
        arms={e.hypothesis.id: e.arms for e in evaluations},
        hypotheses=hypotheses,
    )


def render_both(demo: Demo, language: str = "en", template_dir: Path | None = None) -> dict:
    """The October digest and the auto-route report, rendered."""
    auto = next(h for h in demo.hypotheses if h.id == "auto-route-tickets")
    results = demo.results[demo.results["hypothesis_id"] == auto.id]
    return {
        "digest": build_digest(
            demo.data,
            demo.pain,
            demo.results,
            demo.hypotheses,
            detect_alerts(demo.data),
            language,
            template_dir=template_dir,
            month=DIGEST_MONTH,
        ),
        "experiment": build_experiment(
            auto, results, demo.arms[auto.id], demo.data, demo.pain, language, template_dir
        ),
    }


@pytest.fixture(scope="module")
def demo() -> Demo:
    return demo_company()


@pytest.fixture(scope="module")
def reports(
    demo: Demo, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Rendered, Path]]:
    out = tmp_path_factory.mktemp("reports")
    return {kind: (r, write_report(r, out)) for kind, r in render_both(demo).items()}


class Browser:
    """Headless Chromium driven over the DevTools protocol (one page, flat session)."""

    def __init__(self) -> None:
        chromium = shutil.which("chromium")
        if chromium is None:
            pytest.fail("chromium not found: run tests/run.sh, which installs Debian's package")
        self.profile = Path(tempfile.mkdtemp(prefix="cxloop-chromium-"))
        self.process = subprocess.Popen(
            [
                chromium,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={self.profile}",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and len(port_file.read_text().split()) == 2):
            if time.monotonic() > deadline:
                self.close()
                pytest.fail("Chromium did not open its DevTools port within 30 s")
            time.sleep(0.05)
        port, path = port_file.read_text().split()
        self.socket = connect(f"ws://127.0.0.1:{port}{path}", max_size=None, open_timeout=10)
        self.ids = itertools.count(1)
        self.events: list[dict] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=True)

    def call(self, method: str, session: bool = False, **params: object) -> dict:
        message_id = next(self.ids)
        message = {"id": message_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        self.socket.send(json.dumps(message))
        while True:
            reply = json.loads(self.socket.recv(timeout=60))
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == method for e in self.events):
            self.events.append(json.loads(self.socket.recv(timeout=deadline - time.monotonic())))

    def open(self, page: Path) -> None:
        self.events.clear()
        self.call("Page.navigate", session=True, url=page.resolve().as_uri())
        self.wait_for("Page.loadEventFired")

    def open_at(self, page: Path, width: int) -> None:
        """Open `page` in a viewport `width` CSS pixels wide, as a phone (< 600) or laptop."""
        self.call(
            "Emulation.setDeviceMetricsOverride",
            session=True,
            width=width,
            height=844,
            deviceScaleFactor=1,
            mobile=width < 600,
        )
        self.open(page)

    def evaluate(self, expression: str) -> object:
        result = self.call(
            "Runtime.evaluate", session=True, expression=expression, returnByValue=True
        )
        return result["result"]["value"]

    def screenshot(self, path: Path, width: int = 1200) -> None:
        height = int(self.evaluate("document.documentElement.scrollHeight"))
        self.call(
            "Emulation.setDeviceMetricsOverride",
            session=True,
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        shot = self.call("Page.captureScreenshot", session=True, format="png")
        path.write_bytes(base64.b64decode(shot["data"]))

    def errors(self) -> list[str]:
        found = []
        for e in self.events:
            params = e.get("params", {})
            if e.get("method") == "Runtime.exceptionThrown":
                found.append(params["exceptionDetails"].get("text", "exception"))
            elif e.get("method") == "Runtime.consoleAPICalled" and params["type"] == "error":
                found.append(str(params["args"]))
            elif e.get("method") == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(params["entry"]["text"])
        return found

    def requests(self) -> list[str]:
        """URLs the page asked for, apart from inline `data:` images (the heatmap's pixels)."""
        return [
            e["params"]["request"]["url"]
            for e in self.events
            if e.get("method") == "Network.requestWillBeSent"
            and not e["params"]["request"]["url"].startswith("data:")
        ]

    def close(self) -> None:
        if hasattr(self, "socket"):
            self.socket.close()
        self.process.terminate()
        self.process.wait(timeout=10)
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser() -> Browser:
    started = Browser()
    yield started
    started.close()


PAGE = """({
  text: document.body.innerText,
  charts: [...document.querySelectorAll('svg.chart')].map(s => {
    const box = s.getBoundingClientRect();
    return {title: s.getAttribute('aria-label'), width: box.width, height: box.height};
  }),
  scripts: document.querySelectorAll('script').length,
  quotes: [...document.querySelectorAll('blockquote')].map(b => b.textContent),
  low: [...document.querySelectorAll('#by-region tr.low td:first-child')].map(td => td.innerText),
  first: document.querySelector('#by-region tr:nth-child(2) td')?.innerText,
})"""


def seen(browser: Browser, page: Path, shot: Path) -> dict:
    browser.open(page)
    view = browser.evaluate(PAGE)
    browser.screenshot(shot)
    assert browser.errors() == []
    assert browser.requests() == [page.resolve().as_uri()], "the report fetched something"
    assert view["scripts"] == 0
    return view


def test_experiment_report_shows_estimate_decision_and_escaped_verbatims(
    reports, demo, browser, tmp_path
) -> None:
    rendered, page = reports["experiment"]
    shot = page.with_suffix(".png")
    view = seen(browser, page, shot)
    primary = demo.results[
        (demo.results["hypothesis_id"] == "auto-route-tickets")
        & (demo.results["role"] == "primary")
    ].iloc[0]
    text = view["text"]
    assert "Auto-routing tickets by topic cuts first response time" in text
    for value in (primary["estimate"], primary["ci_low"], primary["ci_high"]):
        assert effect(value, True) in text
    assert f"p = {primary['p_value']:.2g}" in text
    assert f"Decision: {primary['decision']}" in text
    assert primary["reason"] in text
    assert "Baseline starts\t2026-09-01" in text and "Pilot starts\t2026-10-01" in text
    cells = pd.DataFrame(primary["cells"]["rows"])
    for n in cells["n"]:
        assert f"{n:,}" in text
    assert "Guardrails" in text and ("holds" in text or "breached" in text)
    assert "no mismatch" in text or "sample ratio mismatch" in text
    assert [c["title"] for c in view["charts"]] == [c.title for c in rendered.charts]
    assert [c.name for c in rendered.charts] == ["target", "effects", "cumulative"]
    assert all(c["width"] > 300 and c["height"] > 150 for c in view["charts"])
    assert SCRIPT_COMMENT in view["quotes"]
    # The pilot targets delivery tickets: the verbatims are what customers said about delivery.
    quotes = pd.Series(view["quotes"])
    tags = tag_topics(quotes)
    assert len(quotes) > 6 and set(tags.loc[tags["topic"] == "delivery", "text_index"]) == set(
        range(len(quotes))
    )
    assert "[phone]" in text and "[email]" in text
    assert "345-67-89" not in text and "ivan.petrov" not in page.read_text(encoding="utf-8")
    assert shot.stat().st_size > 50_000


def test_digest_shows_kpis_breakdowns_load_pain_points_and_flags_the_low_region(
    reports, demo, browser
) -> None:
    rendered, page = reports["digest"]
    shot = page.with_suffix(".png")
    view = seen(browser, page, shot)
    text = view["text"]
    overall = kpis_by(within(demo.data, DIGEST_MONTH), "segment")
    overall = overall[overall["segment"] == "all"].set_index("metric")["value"]
    assert f"{overall['nps']:.1f}" in text and f"{overall['csat']:.1f}" in text
    for label in ("NPS", "CSAT", "CES", "First response time", "First contact resolution", "Churn"):
        assert label in text
    # The pushed region first, then Siberia, whose NPS the demo plants 24 points lower.
    assert [row.split("\n")[0] for row in view["low"]] == [LOW_REGION, "Siberia"]
    assert view["low"][0] == view["first"]
    assert view["first"].startswith(f"{LOW_REGION}\n▼ NPS significantly below overall")
    tickets = within(demo.data, DIGEST_MONTH).tickets["created_at"]
    busiest = tickets.groupby([tickets.dt.day_of_week, tickets.dt.hour]).size()
    day, hour = busiest.idxmax()
    weekday = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"][day]
    assert f"Peak: {weekday} {hour:02d}:00–{hour + 1:02d}:00, {busiest.max():,} tickets" in text
    top = demo.pain.iloc[0]
    assert top["title"] in text and f"{top['score']:.1f}" in text
    alerts = detect_alerts(demo.data)
    kinds = labels("en")["alert_kinds"]
    assert alerts and all(f"{a.message} {kinds[a.kind]}" in text for a in alerts), text
    weighting = post_stratified_nps(within(demo.data, DIGEST_MONTH))
    assert f"NPS (post-stratified): {weighting['weighted']:.1f}" in text
    assert "KPI tiles are unweighted" in text and "Response rate" in text
    value = customer_value(demo.data.orders, demo.data.customers, "segment")
    premium = value.set_index("segment").loc["premium"]
    # The key figure (LTV) leads, so it stays in view on a phone.
    row = f"premium\t{premium['ltv']:,.0f}\t{int(premium['customers']):,}\t{premium['aov']:,.0f}"
    assert row in text and "Customer value by segment" in text
    assert len(view["charts"]) == len(rendered.charts) == 10  # 3 breakdowns, 5 trends, load, pain
    assert all(c["width"] > 300 and c["height"] > 100 for c in view["charts"])
    assert shot.stat().st_size > 50_000


def test_russian_labels_and_user_templates_override_the_defaults(demo, tmp_path) -> None:
    russian = render_both(demo, "ru")
    digest = russian["digest"].html
    assert "Ключевые метрики" in digest and "До и после" in russian["experiment"].html
    # Pain points and alerts are named in Russian too, not only the labels around them.
    assert "Обращения: доставка" in digest and "Обращения: доставка" in russian["experiment"].html
    assert "Обращений по теме «возвраты» в день стало больше" in digest and "рост жалоб" in digest
    assert all(english not in digest for english in ("ickets about", "Customers in", " grew "))
    experiment = russian["experiment"].html
    assert "как и ожидалось (95% ДИ " in experiment and "ограничители соблюдены" in experiment
    # The data runs past the pilot's end and it is still `running`: it awaits a decision.
    assert "Статус: завершён, ждёт решения" in experiment and "(снижение)" in experiment
    assert "as expected" not in experiment and "95% CI" not in experiment
    ticks = re.findall(r">(\d{1,2}) (\w+)</text>", experiment)  # Mondays on the date axis
    assert {month for _, month in ticks} == {"сен", "окт"} and "Oct" not in experiment
    own = tmp_path / "templates"
    own.mkdir()
    words = "en: {kpis: Headline numbers, topic_names: {login: sign-in}}\n"
    (own / "labels.yaml").write_text(words, encoding="utf-8")
    (own / "experiment.md.j2").write_text("Custom {{ h.id }}", encoding="utf-8")
    mine = render_both(demo, "en", own)
    assert "Headline numbers" in mine["digest"].html and "Key metrics" not in mine["digest"].html
    assert "Tickets about sign-in" in mine["digest"].html
    assert mine["experiment"].markdown == "Custom auto-route-tickets"


def test_russian_digest_writes_decimal_commas_and_di_as_a_reader_sees_it(
    demo, browser, tmp_path
) -> None:
    digest = render_both(demo, "ru")["digest"]
    page = write_report(digest, tmp_path)
    browser.open(page)
    text = browser.evaluate("document.body.innerText")
    assert browser.errors() == []
    tiles = {row["metric"]: row for row in digest.tables["kpis"]}
    nps = f"{tiles['nps']['value']:.1f}".replace(".", ",")
    assert re.search(rf"(?m)^{re.escape(nps)}$", text), nps
    assert "; ДИ " in text
    assert not re.search(r"\bCI\b", text)
    tickets = int(within(demo.data, DIGEST_MONTH).tickets.shape[0])
    assert f"Σ {tickets:,}".replace(",", "\xa0") in text
    # Tiles and tables; alert sentences and p-values are worded outside the templates.
    figures = browser.evaluate(
        "[...document.querySelectorAll('.tiles, #weighting, #response-rates, #customer-value,"
        " [id^=by-]')].map(e => e.innerText).join('\\n')"
    )
    assert nps in figures and re.findall(r".{12}\d\.\d.{6}", figures) == []
    labels_drawn = browser.evaluate(
        "[...document.querySelectorAll('svg.chart text')].map(t => t.textContent)"
    )
    assert any(re.fullmatch(r"-?\d+,\d", label) for label in labels_drawn)
    assert [label for label in labels_drawn if re.search(r"\d\.\d", label)] == []
