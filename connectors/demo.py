"""Built-in demo company: deterministic per seed, any size, with planted truths to recover.

The company runs from 2025-11-01 to 2026-10-31 (web sessions from 2026-05-01). Ticket topics
hurt NPS by known amounts (the planted pain points), three more hurt only in one cell
(delivery in Siberia, where replies are also slow; payment on mobile; returns for b2b), the
checkout breaks on mobile for new customers only, and one support team is slow in chat with
a lower CSAT there. Customers carry two declared
dimensions, `device` and `plan`; post-ticket surveys carry their ticket's id. Customers order
often, and each unresolved or reopened ticket and each detractor score may make them stop.
Two pilots run in October: auto-routing tickets cuts first response time by 40% and lifts
NPS by 8 points for its pilot arm; a chat greeting script does nothing. Two region pilots run
from 2026-08-03 to 2026-09-27 on delivery tickets: a new courier partner in Siberia cuts
their first response time by 40%; a courier app in Volga does nothing. `generate()` returns
the data and the truth, so tests can check that cxloop recovers it; with `null=True` it
plants nothing (`NULL`). Unlike vendor connectors this one builds frames with numpy: it is
the vendor.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import date
from functools import cached_property

import numpy as np
import pandas as pd

from connectors import demo_comments
from connectors.arms import assign_arms
from connectors.base import BULK_PAGE_ROWS, Page
from connectors.errors import ConfigError

START = pd.Timestamp("2025-11-01")  # twelve months: the churn model needs four horizons of orders
# The six months first generated; the six before them draw from generators of their own, so
# that adding them changed no record of these.
RECENT = pd.Timestamp("2026-05-01")
END = pd.Timestamp("2026-11-01")
MONTH_DAYS = 30.44
MIN_CUSTOMERS = 100  # one customer breaks the generator; a few dozen leave little to rank

SEGMENTS = {"new": 0.30, "loyal": 0.40, "premium": 0.15, "b2b": 0.15}
REGIONS = {
    "Moscow": 0.30,
    "Saint Petersburg": 0.15,
    "Volga": 0.16,
    "South": 0.15,
    "Urals": 0.12,
    "Siberia": 0.12,
}
ACQUISITION = {"organic": 0.35, "paid_search": 0.25, "social": 0.20, "referral": 0.20}
CHANNELS = {"email": 0.35, "chat": 0.30, "phone": 0.20, "messenger": 0.15}
CHANNEL_MEDIAN_FRT_HOURS = {"email": 6.0, "chat": 0.5, "phone": 0.1, "messenger": 1.0}
HOUR_WEIGHTS = np.array(
    [1, 1, 1, 1, 1, 2, 3, 5, 8, 12, 15, 15, 12, 10, 9, 9, 9, 10, 12, 14, 14, 10, 5, 2], float
)

# Planted pain points: monthly ticket rate per customer, NPS shift d (share of respondents
# moved from promoter to detractor, so the NPS gap is 200·d points), CSAT top-2 drop.
TOPICS = {
    "delivery": {"rate": 0.0372, "nps_shift": 0.15, "csat_drop": 0.15, "frt_factor": 1.5},
    "payment": {"rate": 0.0139, "nps_shift": 0.20, "csat_drop": 0.20, "frt_factor": 1.0},
    "login": {"rate": 0.0251, "nps_shift": 0.06, "csat_drop": 0.05, "frt_factor": 0.8},
    "product_quality": {"rate": 0.0103, "nps_shift": 0.03, "csat_drop": 0.10, "frt_factor": 1.2},
    "returns": {"rate": 0.0121, "nps_shift": 0.02, "csat_drop": 0.05, "frt_factor": 1.0},
}
ESCALATION_RATE = {"delivery": 0.06, "payment": 0.15, "login": 0.03, "product_quality": 0.08,
                   "returns": 0.04}  # fmt: skip
NPS_BASE = {  # P(promoter), P(detractor)
    "new": (0.40, 0.22),
    "loyal": (0.55, 0.12),
    "premium": (0.58, 0.10),
    "b2b": (0.45, 0.15),
}
SURGE = ("returns", pd.Timestamp("2026-10-01"))  # returns tickets double in October: an alert
REGION_NPS_SHIFT = {"Siberia": 0.12}  # a planted low-NPS region: 24 points below the rest
NPS_RESPONSE_RATE = {"new": 0.12, "loyal": 0.35, "premium": 0.30, "b2b": 0.18}
TICKET_RATE_FACTOR = {"new": 2.0, "loyal": 1.0, "premium": 1.0, "b2b": 1.0}
# Orders a month: often enough that an active customer rarely goes a churn horizon (90 days)
# without one, so "no order in the horizon" means churn, not a pause.
ORDER_RATE = {"new": 1.2, "loyal": 1.5, "premium": 2.0, "b2b": 2.5}
ORDER_MEDIAN = {"new": 1800.0, "loyal": 2200.0, "premium": 5200.0, "b2b": 15000.0}
FUNNEL = ["visit", "view_item", "add_to_cart", "begin_checkout", "purchase"]
# Devices convert alike up to checkout, and nearly alike into purchase but for `FUNNEL_PAIN`.
STEP_CONVERSION = {"desktop": [0.60, 0.28, 0.52, 0.72], "mobile": [0.60, 0.28, 0.52, 0.72],
                   "tablet": [0.60, 0.28, 0.52, 0.70]}  # fmt: skip
# Each customer's primary device, drawn with the web funnel's shares (its sessions follow them).
DEVICE_SHARE = {"desktop": 0.38, "mobile": 0.54, "tablet": 0.08}
PLAN_SHARE = {  # tariff per segment: the better customers are on the dearer plans
    "new": {"basic": 0.70, "plus": 0.25, "pro": 0.05},
    "loyal": {"basic": 0.45, "plus": 0.40, "pro": 0.15},
    "premium": {"basic": 0.05, "plus": 0.35, "pro": 0.60},
    "b2b": {"basic": 0.20, "plus": 0.40, "pro": 0.40},
}
TEAMS = {
    "Чат-1": ("Анна Смирнова", "Игорь Волков", "Emily Carter", "Мария Кузнецова",
              "David Brooks", "Ольга Морозова"),
    "Чат-2": ("Дмитрий Соколов", "Sarah Mitchell", "Елена Попова", "Алексей Лебедев",
              "Michael Turner", "Наталья Козлова"),
    "Почта": ("Сергей Новиков", "Laura Bennett", "Татьяна Орлова", "Павел Фёдоров",
              "James Walker", "Ирина Васильева"),
    "Phone Care": ("Андрей Михайлов", "Kate Johnson", "Юлия Романова", "Никита Зайцев",
                   "Robert Hughes", "Светлана Павлова"),
}  # fmt: skip
# Chat and messenger go to the two chat teams alike; e-mail and phone to their own team.
ROUTING = {"chat": {"Чат-1": 0.5, "Чат-2": 0.5}, "messenger": {"Чат-1": 0.5, "Чат-2": 0.5},
           "email": {"Почта": 1.0}, "phone": {"Phone Care": 1.0}}  # fmt: skip
UNRESOLVED_RATE = 0.04  # tickets still open at the end: the customer gave up waiting
EXPLAINED_SHARE = 0.5  # the truth's `explained_by`: a cell holding this share of a marginal
BAD_TICKET_DAYS = 3.0  # a reopening or giving up comes this long after the ticket was raised


@dataclass(frozen=True)
class Pilot:
    """A pilot as the demo world runs it; `hypotheses/<id>.yaml` describes the same pilot."""

    salt: str
    pilot_share: float
    segments: tuple[str, ...]
    start: date
    end: date
    frt_factor: float = 1.0
    nps_points: float = 0.0

    def effects(self) -> dict[str, float]:
        """Planted effects: relative for FRT (−0.4 is −40%), NPS points for NPS."""
        return {"frt_hours": self.frt_factor - 1.0, "nps": self.nps_points}


PILOTS = {
    "auto-route-tickets": Pilot(
        "auto-route-2026", 0.5, ("loyal", "premium", "b2b"), date(2026, 10, 1),
        date(2026, 10, 31), frt_factor=0.6, nps_points=8.0,
    ),
    "chat-greeting-script": Pilot(
        "chat-greeting-2026", 0.5, ("new",), date(2026, 10, 1), date(2026, 10, 31)
    ),
}  # fmt: skip


@dataclass(frozen=True)
class RegionPilot:
    """A change made in one whole region (it cannot be split per customer): first replies to
    its `topic` tickets created from `start` to `end` take `frt_factor` times as long.
    `hypotheses/<id>.yaml` describes the same pilot."""

    region: str
    topic: str
    start: date
    end: date
    frt_factor: float = 1.0

    def effects(self) -> dict[str, float]:
        """Planted effects: relative for FRT (−0.4 is −40%), none on NPS."""
        return {"frt_hours": self.frt_factor - 1.0, "nps": 0.0}

    def touches(self, region: np.ndarray, topic: np.ndarray, at: pd.Series) -> np.ndarray:
        """Per ticket (its customer's region, its topic, when raised): whether the pilot ran it."""
        during = (at >= pd.Timestamp(self.start)) & (
            at < pd.Timestamp(self.end) + pd.Timedelta(days=1)
        )
        return (region == self.region) & (topic == self.topic) & during.to_numpy()


# A new courier partner in Siberia answers delivery tickets sooner; Volga's courier app does not.
REGION_PILOTS = {
    "courier-siberia": RegionPilot(
        "Siberia", "delivery", date(2026, 8, 3), date(2026, 9, 27), frt_factor=0.6
    ),
    "courier-volga": RegionPilot("Volga", "delivery", date(2026, 8, 3), date(2026, 9, 27)),
}


@dataclass(frozen=True)
class CellPain:
    """A ticket topic that costs `nps_shift` more (share moved from promoter to detractor,
    so 200·shift NPS points) for customers whose `dimension` is `value`, and whose tickets
    there wait `frt_factor` times longer for a first reply.

    The extra cost is centred on the topic (its customers elsewhere lose a little less), so
    the topic's own marginal gap stays as `TOPICS` plants it: the cell is an interaction.
    """

    topic: str
    dimension: str
    value: str
    nps_shift: float
    frt_factor: float = 1.0

    @property
    def key(self) -> str:
        return f"ticket:{self.topic}@{self.dimension}={self.value}"


CELL_PAINS = (
    CellPain("delivery", "region", "Siberia", 0.15, frt_factor=2.0),
    CellPain("payment", "device", "mobile", 0.12),
    CellPain("returns", "segment", "b2b", 0.2),
)


@dataclass(frozen=True)
class FunnelPain:
    """A funnel step that breaks on one device for one segment only: sessions there convert
    into the funnel's last step at `conversion` instead of the device's own rate."""

    device: str
    segment: str
    conversion: float

    @property
    def key(self) -> str:
        return f"funnel:{FUNNEL[-1]}:{self.device}@segment={self.segment}"


FUNNEL_PAIN = FunnelPain("mobile", "new", 0.55)


@dataclass(frozen=True)
class SlowTeam:
    """A team whose first replies in `channel` take `frt_factor` times longer, and whose
    post-contact CSAT there has `csat_drop` fewer top-2 answers (a share, 0.15 = 15 points)."""

    team: str
    channel: str
    frt_factor: float
    csat_drop: float


SLOW_TEAM = SlowTeam("Чат-2", "chat", frt_factor=2.5, csat_drop=0.15)


@dataclass(frozen=True)
class Churn:
    """How customers stop ordering: each one with chance `base` at a random time of their
    months here, and after each unresolved or reopened ticket (`bad_ticket`) and each
    detractor NPS score (`detractor`) with that chance within `delay_days` of it; the earliest
    of these times is when they stop (it may fall after `END`)."""

    base: float
    bad_ticket: float
    detractor: float
    delay_days: float

    def probability(self, bad_tickets: np.ndarray, detractors: np.ndarray) -> np.ndarray:
        """The chance of churning at all, given how many bad tickets and detractor scores."""
        stay = (1 - self.base) * (1 - self.bad_ticket) ** bad_tickets
        return 1 - stay * (1 - self.detractor) ** detractors


CHURN = Churn(base=0.08, bad_ticket=0.60, detractor=0.30, delay_days=30.0)


@dataclass(frozen=True)
class World:
    """Everything the demo plants, in one value: `PLANTED` is the demo company, `NULL` the same
    company with no pain, pilot effect, slow team or feature-driven churn."""

    topics: dict[str, dict[str, float]]
    cells: tuple[CellPain, ...]
    slow_team: SlowTeam
    pilots: dict[str, Pilot]
    region_pilots: dict[str, RegionPilot]
    region_nps_shift: dict[str, float]
    step_conversion: dict[str, list[float]]
    funnel_pain: FunnelPain | None
    churn: Churn
    surge: tuple[str, pd.Timestamp] | None
    order_rate: dict[str, float]
    themes_follow_scores: bool

    def neutral(self) -> World:
        """This world with every planted effect removed and every volume kept but orders: every
        customer orders at the lowest rate and none churns, so whether one orders in the next
        months is independent of anything known before. Comment themes are shuffled across
        respondents, so what a comment is about says nothing of its score."""
        plain = {"nps_shift": 0.0, "csat_drop": 0.0, "frt_factor": 1.0}
        return World(
            topics={t: {**spec, **plain} for t, spec in self.topics.items()},
            cells=(),
            slow_team=replace(self.slow_team, frt_factor=1.0, csat_drop=0.0),
            pilots={h: replace(p, frt_factor=1.0, nps_points=0.0) for h, p in self.pilots.items()},
            region_pilots={h: replace(p, frt_factor=1.0) for h, p in self.region_pilots.items()},
            region_nps_shift={},
            step_conversion={d: self.step_conversion["desktop"] for d in self.step_conversion},
            funnel_pain=None,
            churn=replace(self.churn, base=0.0, bad_ticket=0.0, detractor=0.0),
            surge=None,
            order_rate=dict.fromkeys(self.order_rate, min(self.order_rate.values())),
            themes_follow_scores=False,
        )


PLANTED = World(TOPICS, CELL_PAINS, SLOW_TEAM, PILOTS, REGION_PILOTS, REGION_NPS_SHIFT,
                STEP_CONVERSION, FUNNEL_PAIN, CHURN, SURGE, ORDER_RATE,
                themes_follow_scores=True)  # fmt: skip
NULL = PLANTED.neutral()


@dataclass(frozen=True)
class Truth:
    """What the generator planted: pain points in order of expected reach × impact, the
    intersection pains (`cells`, same columns, the impact being the interaction), the slow
    team, the churn model with each customer's planted churn time, the pilots' effects (hash
    and region pilots alike) and the region pilots themselves."""

    pain_points: pd.DataFrame
    pilots: dict[str, dict[str, float]]
    cells: pd.DataFrame = field(default_factory=pd.DataFrame)
    churned_at: pd.Series = field(default_factory=lambda: pd.Series(dtype="datetime64[ns]"))
    slow_team: SlowTeam = SLOW_TEAM
    churn: Churn = CHURN
    low_nps_region: str | None = "Siberia"
    complaint_surge: str | None = "returns"
    region_pilots: dict[str, RegionPilot] = field(default_factory=lambda: dict(REGION_PILOTS))

    @property
    def planted_order(self) -> list[str]:
        """Every planted pain a CX lead should see, best first: the pain points and cells,
        without the marginals a cell explains (the cell names them)."""
        own = self.pain_points[self.pain_points["explained_by"].isna()]["score"]
        return list(pd.concat([own, self.cells["score"]]).sort_values(ascending=False).index)


@dataclass(frozen=True)
class DemoCompany:
    """Raw demo records per stream (canonical column names, raw e-mails) and the truth."""

    frames: dict[str, pd.DataFrame]
    truth: Truth


TICKET_TEXT = {
    "delivery": ("Где мой заказ? Курьер не приехал", "Where is my order? The courier never came"),
    "payment": ("Двойное списание по карте", "I was charged twice for one order"),
    "login": ("Не приходит код для входа", "The login code does not arrive"),
    "product_quality": ("Пришёл бракованный товар", "The product arrived broken"),
    "returns": ("Хочу вернуть товар", "I want to return an item"),
}


def generate(customers: int = 20_000, seed: int = 7, null: bool = False) -> DemoCompany:
    """The demo company with `customers` customers, identical for identical arguments; with
    `null`, the same company with nothing planted (`NULL`)."""
    world = NULL if null else PLANTED
    rng = np.random.default_rng(seed)
    # Later additions draw from generators of their own, so the other streams stay as they were.
    people = _with_dimensions(np.random.default_rng([seed, 3]), _customers(rng, customers))
    recent_hits, recent = _tickets(rng, people, np.random.default_rng([seed, 2]), world)
    early = np.random.default_rng([seed, 4])
    early_hits, earlier = _tickets(early, people, early, world, (START, RECENT), len(recent))
    hits = recent_hits | early_hits
    reach = reach_probability(people, world)
    answers = [
        _nps_responses(rng, people, hits, reach, world),
        _ticket_surveys(rng, recent, world),
        _nps_responses(early, people, hits, reach, world, (START, RECENT), first=10**7),
        _ticket_surveys(early, earlier, world),
    ]
    # In time order, so any first rows hold every kind of answer (readers that infer a
    # column's type from its first rows see linked ticket ids and comments alike).
    responses = pd.concat(answers[2:] + answers[:2], ignore_index=True).sort_values(
        "submitted_at", kind="stable", ignore_index=True
    )
    recent["escalated"] = _escalated(np.random.default_rng([seed, 1]), recent)
    earlier["escalated"] = _escalated(early, earlier)
    tickets = pd.concat([earlier, recent], ignore_index=True)
    web = _web(rng, people, world)
    buyers = np.random.default_rng([seed, 5])
    orders, churned_at = _orders(buyers, people, tickets, responses, world)
    frames = {
        "customers": people.drop(columns=["exposure_months", "early_months", "arm"]),
        "tickets": tickets.drop(columns=["segment"]),
        "survey_responses": responses,
        "orders": orders,
        "web_metrics": web,
    }
    return DemoCompany(frames=frames, truth=_truth(people, reach, churned_at, world))


def _escalated(rng: np.random.Generator, tickets: pd.DataFrame) -> np.ndarray:
    """Per ticket, whether it was escalated (chance by topic, `ESCALATION_RATE`)."""
    escalation = pd.Series(tickets["topic"]).map(ESCALATION_RATE).to_numpy()
    return rng.random(len(tickets)) < escalation


def _pick(rng: np.random.Generator, weights: dict[str, float], n: int) -> np.ndarray:
    keys = np.array(list(weights))
    p = np.array(list(weights.values()))
    return keys[rng.choice(len(keys), size=n, p=p / p.sum())]


def _customers(rng: np.random.Generator, n: int) -> pd.DataFrame:
    segment = _pick(rng, SEGMENTS, n)
    window_days = (END - RECENT).days
    established = RECENT - pd.to_timedelta(rng.integers(30, 1200, n), unit="D")
    newcomer = RECENT + pd.to_timedelta(rng.integers(0, window_days, n), unit="D")
    created = np.where(segment == "new", newcomer, established)
    ids = pd.Series([f"C{i:07d}" for i in range(1, n + 1)])
    people = pd.DataFrame(
        {
            "source_id": ids,
            "segment": segment,
            "region": _pick(rng, REGIONS, n),
            "channel": _pick(rng, ACQUISITION, n),
            "language": np.where(rng.random(n) < 0.8, "ru", "en"),
            "created_at": pd.to_datetime(created),
            "email": "customer" + ids.str[1:].str.lstrip("0") + "@example.com",
        }
    )
    people["exposure_months"] = _months(people["created_at"], RECENT, END)
    people["early_months"] = _months(people["created_at"], START, RECENT)
    people["arm"] = None
    for pilot in PILOTS.values():
        eligible = people["segment"].isin(pilot.segments)
        arms = assign_arms(people.loc[eligible, "source_id"], pilot.salt, pilot.pilot_share)
        people.loc[eligible, "arm"] = np.where(arms == "pilot", pilot.salt, None)
    return people


def _months(created: pd.Series, start: pd.Timestamp, end: pd.Timestamp) -> pd.Series:
    """Months each customer (created at `created`) was here between `start` and `end`."""
    return ((end - created.clip(lower=start)).dt.days / MONTH_DAYS).clip(lower=0)


def _with_dimensions(rng: np.random.Generator, people: pd.DataFrame) -> pd.DataFrame:
    """`people` with their declared dimensions: primary `device`, and `plan` by segment."""
    plan = np.empty(len(people), dtype=object)
    for segment, shares in PLAN_SHARE.items():
        mine = (people["segment"] == segment).to_numpy()
        plan[mine] = _pick(rng, shares, int(mine.sum()))
    return people.assign(device=_pick(rng, DEVICE_SHARE, len(people)), plan=plan)


def reach_probability(people: pd.DataFrame, world: World = PLANTED) -> pd.DataFrame:
    """Per customer (rows of `people`) and topic: the chance of at least one ticket on it."""
    factor = people["segment"].map(TICKET_RATE_FACTOR)
    months = people["exposure_months"] + people["early_months"]
    surge = world.surge[0] if world.surge else None
    return pd.DataFrame(
        {
            topic: 1 - np.exp(-spec["rate"] * factor * (months + (topic == surge)))
            for topic, spec in world.topics.items()
        }
    )


def _share_inside(reach: pd.Series, inside: np.ndarray) -> float:
    """The expected share of a topic's customers who are `inside` a cell."""
    return float((reach * inside).sum() / reach.sum())


def _random_times(
    rng: np.random.Generator, lo: pd.Series, hi: pd.Timestamp, n: int, by_hour: bool = False
) -> pd.Series:
    """Uniform days in [lo, hi); with `by_hour`, hours of day follow the support load curve."""
    span_days = ((hi - lo).dt.total_seconds() / 86_400).to_numpy()
    days = np.floor(rng.random(n) * np.maximum(span_days, 1e-9))
    if by_hour:
        hours = rng.choice(24, size=n, p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum()) + rng.random(n)
    else:
        hours = rng.random(n) * 24
    start_of_day = lo.dt.normalize().to_numpy()
    return pd.Series(start_of_day + pd.to_timedelta(days * 24 + hours, unit="h").to_numpy())


def _tickets(
    rng: np.random.Generator,
    people: pd.DataFrame,
    staff: np.random.Generator,
    world: World,
    span: tuple[pd.Timestamp, pd.Timestamp] = (RECENT, END),
    numbered_after: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tickets raised in `span` per customer and topic, plus follow-ups, each with its agent
    and team (drawn from `staff`, as are the tickets left unresolved), numbered after
    `numbered_after`; returns (topic hits matrix, tickets)."""
    n = len(people)
    lo_span, hi_span = span
    months = (people["exposure_months"] if span[0] == RECENT else people["early_months"]).to_numpy()
    factor = people["segment"].map(TICKET_RATE_FACTOR).to_numpy()
    counts = {
        topic: rng.poisson(spec["rate"] * factor * months) for topic, spec in world.topics.items()
    }
    surging = world.surge is not None and lo_span <= world.surge[1] < hi_span
    if surging:
        surge_topic, surge_start = world.surge
        rate = world.topics[surge_topic]["rate"]
        surge = rng.poisson(rate * factor * (people["created_at"] < hi_span))
    hits = pd.DataFrame({topic: c > 0 for topic, c in counts.items()}, index=people.index)
    owner = np.concatenate([np.repeat(np.arange(n), c) for c in counts.values()])
    topic = np.concatenate([np.repeat(t, c.sum()) for t, c in counts.items()])
    lo = people["created_at"].clip(lower=lo_span).iloc[owner].reset_index(drop=True)
    created = _random_times(rng, lo, hi_span, len(owner), by_hour=True)
    if surging:
        hits[surge_topic] |= surge > 0
        surge_owner = np.repeat(np.arange(n), surge)
        surge_lo = people["created_at"].clip(lower=surge_start).iloc[surge_owner]
        owner = np.concatenate([owner, surge_owner])
        topic = np.concatenate([topic, np.repeat(surge_topic, len(surge_owner))])
        surge_at = _random_times(
            rng, surge_lo.reset_index(drop=True), hi_span, len(surge_owner), by_hour=True
        )
        created = pd.concat([created, surge_at], ignore_index=True)
    follow = rng.random(len(owner)) < np.where(topic == "delivery", 0.25, 0.12)
    owner = np.concatenate([owner, owner[follow]])
    topic = np.concatenate([topic, topic[follow]])
    later = pd.to_timedelta(rng.uniform(0.5, 6.0, follow.sum()), unit="D")
    created = pd.concat(
        [created, created[follow].reset_index(drop=True) + later], ignore_index=True
    )
    keep = (created < hi_span).to_numpy()
    owner, topic, created = owner[keep], topic[keep], created[keep].reset_index(drop=True)
    m = len(owner)

    channel = _pick(rng, CHANNELS, m)
    median = pd.Series(channel).map(CHANNEL_MEDIAN_FRT_HOURS).to_numpy()
    median = median * pd.Series(topic).map({t: s["frt_factor"] for t, s in world.topics.items()})
    route = world.pilots["auto-route-tickets"]
    piloted = _in_pilot(people["arm"].to_numpy()[owner], created, route)
    frt_hours = median.to_numpy() * np.exp(rng.normal(0, 0.8, m))
    frt_hours = np.where(piloted, frt_hours * route.frt_factor, frt_hours)
    team, agent = _staff(staff, channel)
    frt_hours = frt_hours * _slowdown(people, owner, topic, channel, team, world)
    # A factor on the draws already made: the region pilots take nothing from the streams.
    region = people["region"].to_numpy()[owner]
    frt_hours = frt_hours * _region_pilot_factor(region, topic, created, world)
    first_response = created + pd.to_timedelta(np.maximum(frt_hours, 10 / 3600), unit="h")
    resolved = first_response + pd.to_timedelta(4 * np.exp(rng.normal(0, 1.0, m)), unit="h")
    unresolved = staff.random(m) < UNRESOLVED_RATE
    language = people["language"].to_numpy()[owner]
    ru_text = pd.Series(topic).map({t: ru for t, (ru, _) in TICKET_TEXT.items()})
    en_text = pd.Series(topic).map({t: en for t, (_, en) in TICKET_TEXT.items()})
    tickets = pd.DataFrame(
        {
            "customer_id": people["source_id"].to_numpy()[owner],
            "segment": people["segment"].to_numpy()[owner],
            "channel": channel,
            "topic": topic,
            "status": np.where(unresolved, "open", "closed"),
            "created_at": created,
            "first_response_at": first_response,
            "resolved_at": resolved.mask(unresolved),
            "reopened": rng.random(m) < 0.08,
            "text": np.where(language == "ru", ru_text, en_text),
            "agent": agent,
            "team": team,
        }
    ).sort_values(["created_at", "customer_id"], kind="stable", ignore_index=True)
    numbers = range(numbered_after + 1, numbered_after + m + 1)
    tickets.insert(0, "source_id", [f"T{i:08d}" for i in numbers])
    return hits, tickets


def _staff(rng: np.random.Generator, channel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each ticket's team (routed by its channel) and an agent of that team, at random."""
    team = np.empty(len(channel), dtype=object)
    for name, shares in ROUTING.items():
        mine = channel == name
        team[mine] = _pick(rng, shares, int(mine.sum()))
    roster = np.array(list(TEAMS.values()), dtype=object)
    row = pd.Index(list(TEAMS)).get_indexer(team)
    return team, roster[row, rng.integers(0, roster.shape[1], len(channel))]


def _region_pilot_factor(
    region: np.ndarray, topic: np.ndarray, at: pd.Series, world: World
) -> np.ndarray:
    """Per ticket, how many times as long its first reply takes under the region pilots."""
    factor = np.ones(len(topic))
    for pilot in world.region_pilots.values():
        factor = np.where(pilot.touches(region, topic, at), factor * pilot.frt_factor, factor)
    return factor


def _slowdown(
    people: pd.DataFrame,
    owner: np.ndarray,
    topic: np.ndarray,
    channel: np.ndarray,
    team: np.ndarray,
    world: World,
) -> np.ndarray:
    """Per ticket, how many times longer its first reply takes: in a slow cell, or with the
    slow team in its slow channel."""
    slow = world.slow_team
    factor = np.where((team == slow.team) & (channel == slow.channel), slow.frt_factor, 1.0)
    for cell in world.cells:
        member = (people[cell.dimension] == cell.value).to_numpy()
        factor = np.where((topic == cell.topic) & member[owner], factor * cell.frt_factor, factor)
    return factor


def _in_pilot(arm: np.ndarray, at: pd.Series, pilot: Pilot) -> np.ndarray:
    during = (at >= pd.Timestamp(pilot.start)) & (
        at < pd.Timestamp(pilot.end) + pd.Timedelta(days=1)
    )
    return (arm == pilot.salt) & during.to_numpy()


def _nps_responses(
    rng: np.random.Generator,
    people: pd.DataFrame,
    hits: pd.DataFrame,
    reach: pd.DataFrame,
    world: World,
    span: tuple[pd.Timestamp, pd.Timestamp] = (RECENT, END),
    first: int = 1,
) -> pd.DataFrame:
    """Monthly relationship NPS over `span`, numbered from `first`: response odds by segment,
    scores shifted by topics, cells (`reach`: `reach_probability`) and pilot."""
    months = pd.date_range(*span, freq="MS")[:-1]
    n = len(people)
    rate = people["segment"].map(NPS_RESPONSE_RATE).to_numpy()
    answered = rng.random((n, len(months))) < rate[:, None]
    answered &= (
        people["created_at"].to_numpy()[:, None] < (months + pd.Timedelta(days=28)).to_numpy()
    )
    who, month = np.nonzero(answered)
    m = len(who)
    month_start = pd.Series(months[month])
    submitted = month_start + pd.to_timedelta(rng.random(m) * 28, unit="D")
    base = people["segment"].map(NPS_BASE)
    shift = sum(hits[t].to_numpy() * spec["nps_shift"] for t, spec in world.topics.items())
    shift = shift + people["region"].map(world.region_nps_shift).fillna(0.0).to_numpy()
    shift = shift + _cell_shift(people, hits, reach, world.cells)
    route = world.pilots["auto-route-tickets"]
    piloted = _in_pilot(people["arm"].to_numpy()[who], submitted, route)
    shift = shift[who] - piloted * route.nps_points / 200
    p_pro = np.clip(base.str[0].to_numpy()[who] - shift, 0.01, 0.95)
    p_det = np.clip(base.str[1].to_numpy()[who] + shift, 0.01, 0.99 - p_pro)
    u = rng.random(m)
    detractor_scores = rng.choice(7, size=m, p=[0.04, 0.03, 0.05, 0.08, 0.12, 0.28, 0.40])
    score = np.select(
        [u < p_pro, u < p_pro + p_det],
        [9 + (rng.random(m) < 0.5), detractor_scores],
        7 + (rng.random(m) < 0.5),
    )
    kind = np.select([score >= 9, score <= 6], ["promoter", "detractor"], "passive")
    worst_topic = hits.iloc[who].idxmax(axis=1).where(hits.iloc[who].any(axis=1)).to_numpy()
    language = people["language"].to_numpy()[who]
    theme = np.where((kind == "detractor") & pd.notna(worst_topic), worst_topic, kind)
    if not world.themes_follow_scores:  # what a comment is about says nothing of its score
        theme = rng.permutation(theme)
    comment = demo_comments.comments(rng, theme, language)
    comment = np.where(rng.random(m) < 0.4, comment, None)
    return pd.DataFrame(
        {
            "source_id": [f"N{i:08d}" for i in range(first, first + m)],
            "customer_id": people["source_id"].to_numpy()[who],
            "survey": "relationship_nps",
            "kind": "nps",
            "score": score.astype(float),
            "comment": comment,
            "submitted_at": submitted,
            "channel": "email",
            "ticket_id": None,
        }
    )


def _cell_shift(
    people: pd.DataFrame, hits: pd.DataFrame, reach: pd.DataFrame, cells: tuple[CellPain, ...]
) -> np.ndarray:
    """Per customer, the NPS shift of the intersection pains: `CellPain.nps_shift` inside the
    cell less the topic's expected share inside it, so the topic's marginal keeps its size."""
    shift = np.zeros(len(people))
    for cell in cells:
        inside = (people[cell.dimension] == cell.value).to_numpy()
        centre = _share_inside(reach[cell.topic], inside)
        shift += hits[cell.topic].to_numpy() * cell.nps_shift * (inside - centre)
    return shift


def _ticket_surveys(rng: np.random.Generator, tickets: pd.DataFrame, world: World) -> pd.DataFrame:
    """CSAT (1–5) and CES (1–7, 7 = very easy) after resolved tickets, each linked to its
    ticket (`ticket_id`); the slow team's CSAT in its slow channel is lower."""
    drop = tickets["topic"].map({t: s["csat_drop"] for t, s in world.topics.items()}).to_numpy()
    team = world.slow_team
    slow = (tickets["team"] == team.team) & (tickets["channel"] == team.channel)
    resolved = tickets["resolved_at"].notna().to_numpy()
    csat_rate = np.where(tickets["segment"] == "new", 0.5, 0.45)
    frames = []
    for kind, rate, top_base, team_drop in (
        ("csat", csat_rate, 0.78, team.csat_drop),
        ("ces", 0.2, 0.70, 0.0),
    ):
        asked = rng.random(len(tickets)) < rate
        t = tickets[asked]
        m = len(t)
        top = rng.random(m) < top_base - drop[asked] - team_drop * slow.to_numpy()[asked]
        if kind == "csat":
            score = np.where(
                top, 4 + (rng.random(m) < 0.6), rng.choice([1, 2, 3], m, p=[0.3, 0.3, 0.4])
            )
        else:
            score = np.where(top, rng.choice([5, 6, 7], m), rng.choice([1, 2, 3, 4], m))
        frames.append(
            pd.DataFrame(
                {
                    "source_id": kind.upper() + t["source_id"].str[1:],
                    "customer_id": t["customer_id"].to_numpy(),
                    "survey": f"post_ticket_{kind}",
                    "kind": kind,
                    "score": score.astype(float),
                    "comment": None,
                    "submitted_at": t["resolved_at"].to_numpy() + pd.Timedelta(hours=1),
                    "channel": t["channel"].to_numpy(),
                    "ticket_id": t["source_id"].to_numpy(),
                }
            )[resolved[asked]]  # drawn for every ticket, so one left open changes no other's
        )
    return pd.concat(frames, ignore_index=True)


def _orders(
    rng: np.random.Generator,
    people: pd.DataFrame,
    tickets: pd.DataFrame,
    responses: pd.DataFrame,
    world: World,
) -> tuple[pd.DataFrame, pd.Series]:
    """Purchases until each customer's churn, and the planted churn times (NaT: stays).

    Customers churn as `World.churn` says, and order at `World.order_rate` until they do.
    """
    churn, n = world.churn, len(people)
    start = people["created_at"].clip(lower=START)
    anytime = start + (END - start) * rng.random(n)
    base = anytime.where(rng.random(n) < churn.base)
    events = bad_experiences(tickets, responses)
    chance = np.where(events["kind"] == "bad_ticket", churn.bad_ticket, churn.detractor)
    fired = events[rng.random(len(events)) < chance]
    after = fired["at"] + pd.to_timedelta(rng.random(len(fired)) * churn.delay_days, unit="D")
    row = pd.Index(people["source_id"]).get_indexer(fired["customer_id"])
    triggered = after.groupby(row).min().reindex(range(n)).set_axis(people.index)
    churned_at = pd.concat([base, triggered], axis=1).min(axis=1)
    active_until = churned_at.where(churned_at < END, END)
    active = (active_until - start).clip(lower=pd.Timedelta(0))
    rate = people["segment"].map(world.order_rate).to_numpy()
    counts = rng.poisson(rate * (active / pd.Timedelta(days=MONTH_DAYS)).to_numpy())
    owner = np.repeat(np.arange(n), counts)
    created = start.iloc[owner].to_numpy() + active.iloc[owner].to_numpy() * rng.random(len(owner))
    median = people["segment"].map(ORDER_MEDIAN).to_numpy()[owner]
    orders = pd.DataFrame(
        {
            "source_id": [f"O{i:08d}" for i in range(1, len(owner) + 1)],
            "customer_id": people["source_id"].to_numpy()[owner],
            "amount": np.round(median * np.exp(rng.normal(0, 0.5, len(owner))), 2),
            "created_at": pd.Series(created).dt.floor("s"),
            "status": "paid",
        }
    ).sort_values(["created_at", "source_id"], kind="stable", ignore_index=True)
    return orders, churned_at.set_axis(people["source_id"]).rename("churned_at")


def bad_experiences(tickets: pd.DataFrame, responses: pd.DataFrame) -> pd.DataFrame:
    """Every bad experience (`customer_id`, `at`, `kind`): an unresolved or reopened ticket
    (`bad_ticket`, `BAD_TICKET_DAYS` after it was raised) and a detractor NPS score
    (`detractor`, when it was given)."""
    bad = tickets[tickets["reopened"].to_numpy() | tickets["resolved_at"].isna().to_numpy()]
    low = responses[(responses["kind"] == "nps") & (responses["score"] <= 6)]
    return pd.concat(
        [
            pd.DataFrame(
                {
                    "customer_id": bad["customer_id"],
                    "at": bad["created_at"] + pd.Timedelta(days=BAD_TICKET_DAYS),
                    "kind": "bad_ticket",
                }
            ),
            pd.DataFrame(
                {"customer_id": low["customer_id"], "at": low["submitted_at"], "kind": "detractor"}
            ),
        ],
        ignore_index=True,
    )


def _web(rng: np.random.Generator, people: pd.DataFrame, world: World) -> pd.DataFrame:
    """Daily funnel sessions from `RECENT` per segment × device × step; the last step breaks
    where `World.funnel_pain` says."""
    days = pd.date_range(RECENT, END, freq="D")[:-1]
    segments = people["segment"].value_counts()
    grid = pd.MultiIndex.from_product(
        [days, segments.index, list(DEVICE_SHARE)], names=["date", "segment", "device"]
    ).to_frame(index=False)
    # Sessions come from the customers' own primary devices, so both device mixes agree.
    mix = people.groupby(["segment", "device"]).size()
    cell = pd.MultiIndex.from_frame(grid[["segment", "device"]])
    visits = mix.reindex(cell, fill_value=0).to_numpy() * 0.05
    counts = [rng.poisson(visits)]
    rates = np.array([world.step_conversion[d] for d in grid["device"]])
    pain = world.funnel_pain
    if pain is not None:
        broken = (grid["device"] == pain.device) & (grid["segment"] == pain.segment)
        rates[broken.to_numpy(), -1] = pain.conversion
    for step in range(len(FUNNEL) - 1):
        counts.append(rng.binomial(counts[-1], rates[:, step]))
    web = pd.concat(
        [
            grid.assign(step=step, value=c.astype(float))
            for step, c in zip(FUNNEL, counts, strict=True)
        ],
        ignore_index=True,
    )
    web["date"] = web["date"].dt.date
    web["metric"] = "sessions"
    web["traffic_source"] = None
    web["source_id"] = (
        web["date"].astype(str) + "|" + web["segment"] + "|" + web["device"] + "|" + web["step"]
    )
    return web


def _truth(people: pd.DataFrame, reach: pd.DataFrame, churned_at: pd.Series, world: World) -> Truth:
    """Expected reach share × impact of every planted pain point and intersection pain.

    Ticket topics: share of customers with ≥1 ticket on the topic, NPS gap. The low-NPS region:
    its share of customers, NPS gap (its own shift plus its part of the cells cut by region).
    The broken funnel step: its cell's sessions reaching checkout over all entering the funnel,
    the interaction in conversion points. Cells (ticket topics in `cells`): share of customers
    in the cell with ≥1 ticket on its topic, the interaction in NPS points, the FRT factor
    there. A marginal of which a cell holds at least `EXPLAINED_SHARE` of the points at stake
    (reach × impact) is `explained_by` it (returns hurt b2b customers almost only).
    """
    rows = {
        f"ticket:{topic}": {
            "reach_share": float(reach[topic].mean()),
            "impact": 200 * spec["nps_shift"],
        }
        for topic, spec in world.topics.items()
    }
    for region, shift in world.region_nps_shift.items():
        inside = (people["region"] == region).to_numpy()
        rows[f"region:{region}"] = {
            "reach_share": REGIONS[region],
            "impact": 200 * (shift + _cells_gap(people, reach, "region", inside, world.cells)),
        }
    if world.funnel_pain is not None:
        rows[world.funnel_pain.key] = _funnel_pain(people, world)
    table = pd.DataFrame.from_dict(rows, orient="index")
    table["score"] = table["reach_share"] * 100 * table["impact"]
    cells = pd.DataFrame.from_dict(
        {
            cell.key: {
                "topic": cell.topic,
                "dimension": cell.dimension,
                "value": cell.value,
                "reach_share": float(
                    (reach[cell.topic] * (people[cell.dimension] == cell.value)).mean()
                ),
                "impact": 200 * cell.nps_shift,
                "frt_factor": cell.frt_factor,
            }
            for cell in world.cells
        },
        orient="index",
        columns=["topic", "dimension", "value", "reach_share", "impact", "frt_factor"],
    )
    cells["score"] = cells["reach_share"] * 100 * cells["impact"]
    table["explained_by"] = _explained_by(table, cells)
    return Truth(
        pain_points=table,
        pilots={h: p.effects() for h, p in {**world.pilots, **world.region_pilots}.items()},
        cells=cells,
        churned_at=churned_at,
        slow_team=world.slow_team,
        churn=world.churn,
        low_nps_region=next(iter(world.region_nps_shift), None),
        complaint_surge=world.surge[0] if world.surge else None,
        region_pilots=dict(world.region_pilots),
    )


def _funnel_pain(people: pd.DataFrame, world: World) -> dict[str, float]:
    """The broken step's cell: its sessions reaching the step before over all entrants, and
    its interaction, (device elsewhere + segment on other devices) − (cell + neither), in
    conversion points; sessions follow the customers' own segment × device mix."""
    pain = world.funnel_pain
    mix = people.groupby(["segment", "device"]).size() / len(people)
    ahead = mix * [np.prod(world.step_conversion[d][:-1]) for _, d in mix.index]
    rate = pd.Series([world.step_conversion[d][-1] for _, d in mix.index], index=mix.index)
    segment = ahead.index.get_level_values("segment") == pain.segment
    device = ahead.index.get_level_values("device") == pain.device
    rate[segment & device] = pain.conversion

    def mean(where: np.ndarray) -> float:
        return float((ahead[where] * rate[where]).sum() / ahead[where].sum())

    interaction = mean(device & ~segment) + mean(segment & ~device)
    interaction -= pain.conversion + mean(~segment & ~device)
    return {"reach_share": float(ahead[segment & device].sum()), "impact": 100 * interaction}


def _explained_by(table: pd.DataFrame, cells: pd.DataFrame) -> pd.Series:
    """Per marginal, the cell holding at least `EXPLAINED_SHARE` of its points at stake (None
    if none does); a cell's halves are its topic and, cut by region, its region."""
    explained = pd.Series(None, index=table.index, dtype=object)
    for key, cell in cells.iterrows():
        stake = cell["reach_share"] * cell["impact"]
        for half in (f"ticket:{cell['topic']}", f"{cell['dimension']}:{cell['value']}"):
            if half in table.index:
                points = table.loc[half, "reach_share"] * table.loc[half, "impact"]
                if points > 0 and stake >= EXPLAINED_SHARE * points:
                    explained[half] = key
    return explained


def _cells_gap(
    people: pd.DataFrame,
    reach: pd.DataFrame,
    dimension: str,
    inside: np.ndarray,
    cells: tuple[CellPain, ...],
) -> float:
    """The expected NPS shift that the `cells` cut by `dimension` add to the customers
    `inside` a value of it, beyond the rest (a share; ×200 for points)."""
    gap = 0.0
    for cell in cells:
        if cell.dimension != dimension:
            continue
        in_cell = (people[dimension] == cell.value).to_numpy()
        shift = (
            reach[cell.topic]
            * cell.nps_shift
            * (in_cell - _share_inside(reach[cell.topic], in_cell))
        )
        gap += float(shift[inside].mean() - shift[~inside].mean())
    return gap


STREAM_TABLES = {
    "customers": "customer",
    "tickets": "ticket",
    "survey_responses": "survey_response",
    "orders": "orders",
    "web_metrics": "web_metric",
}


@dataclass
class DemoStream:
    """One stream of the demo company, paged by row offset so a crash resumes exactly.

    The cursor remembers which company (`customers:seed`) it belongs to; another one starts over.
    """

    company: DemoCompany
    name: str
    dataset: str

    @property
    def table(self) -> str:
        return STREAM_TABLES[self.name]

    def read(self, cursor: dict) -> Iterator[Page]:
        frame = self.company.frames[self.name]
        first = cursor.get("offset", 0) if cursor.get("dataset") == self.dataset else 0
        for number, start in enumerate(range(first, len(frame), BULK_PAGE_ROWS), 1):
            stop = min(start + BULK_PAGE_ROWS, len(frame))
            yield Page(frame.iloc[start:stop], {"dataset": self.dataset, "offset": stop}, number)


@dataclass
class DemoSource:
    """The demo company as a source: `customers` and `seed` fix every record; `null` makes
    it the company with nothing planted."""

    name: str = "demo"
    customers: int = 20_000
    seed: int = 7
    null: bool = False
    kind: str = field(default="demo", init=False)

    def __post_init__(self) -> None:
        for option, least in (("customers", MIN_CUSTOMERS), ("seed", 0)):
            value = getattr(self, option)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(
                    f"sources.{self.name}.options.{option}: got {value!r}; write a whole "
                    f"number of at least {least:,}, e.g. {option}: {getattr(DemoSource, option)}."
                )
        if not isinstance(self.null, bool):
            raise ConfigError(
                f"sources.{self.name}.options.null: got {self.null!r}; write true or false."
            )

    @cached_property
    def company(self) -> DemoCompany:
        return generate(self.customers, self.seed, self.null)

    def streams(self) -> list[DemoStream]:
        dataset = f"{self.customers}:{self.seed}" + (":null" if self.null else "")
        return [DemoStream(self.company, name, dataset) for name in STREAM_TABLES]
