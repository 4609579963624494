"""Hypotheses as CX leads write them in `hypotheses/*.yaml`, validated into pydantic models."""

from __future__ import annotations

import difflib
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from connectors.errors import HypothesisError, StoreError
from tasks.validation import YamlDocument, read_yaml

if TYPE_CHECKING:
    import pandas as pd

MetricName = Literal["nps", "csat", "ces", "frt_hours", "art_hours", "fcr", "repeat"]
# A relative effect (a ratio of means) is asked only of metrics whose values are all positive:
# of a share or an NPS that can be 0 or negative, a percentage change means little.
RELATIVE_METRICS = ("csat", "ces", "frt_hours", "art_hours")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Effect(Strict):
    """An expected effect: relative (`-40%` → −0.40) or absolute in the metric's units (`+8`)."""

    value: float
    relative: bool

    def __str__(self) -> str:
        return f"{self.value:+.0%}" if self.relative else f"{self.value:+g}"


def _parse_effect(raw: object) -> object:
    if isinstance(raw, str):
        match = re.fullmatch(r"\s*([+-]?\d+(?:\.\d+)?)\s*(%?)\s*", raw)
        if not match:
            raise ValueError("write an effect like -40% (relative) or +8 (in the metric's units)")
        number, percent = match.groups()
        return {"value": float(number) / (100 if percent else 1), "relative": bool(percent)}
    if isinstance(raw, int | float):
        return {"value": float(raw), "relative": False}
    return raw


class MetricTarget(Strict):
    name: MetricName = Field(description="The metric the change should move.")
    direction: Literal["increase", "decrease"] = Field(
        description="Whether the change should raise or lower the metric."
    )
    expected_effect: Annotated[
        Effect, BeforeValidator(_parse_effect, json_schema_input_type=str | float)
    ] = Field(
        description="The effect the pilot is sized for: relative (-40%, for csat, ces, "
        "frt_hours, art_hours) or absolute in the metric's units (+8 NPS points)."
    )
    log_scale: bool = Field(
        default=False,
        description="Estimate a relative effect as a ratio of geometric means (log scale) "
        "instead of a ratio of means; every value must then be positive.",
    )

    @model_validator(mode="after")
    def _effect_matches_direction(self) -> MetricTarget:
        if self.log_scale and not self.expected_effect.relative:
            raise ValueError("log_scale applies to a relative expected_effect (e.g. -40%)")
        if self.expected_effect.relative and self.name not in RELATIVE_METRICS:
            raise ValueError(
                f"expected_effect {self.expected_effect} is relative, but {self.name} is a "
                "share or score that can be 0 or negative; write it in points, e.g. +8"
            )
        sign = 1 if self.direction == "increase" else -1
        if self.expected_effect.value * sign <= 0:
            raise ValueError(
                f"expected_effect {self.expected_effect} contradicts direction {self.direction}; "
                "flip one of them"
            )
        return self


# Guardrail metrics where a rise is the harm; for the others a drop is.
HARM_IS_INCREASE = ("frt_hours", "art_hours", "repeat")


class Guardrail(Strict):
    """A metric the pilot may worsen by at most a margin, in the metric's units
    (non-inferiority): it holds only when the worse end of the metric's CI is within it."""

    metric: MetricName = Field(description="The metric the pilot must not worsen.")
    margin: float | None = Field(
        default=None,
        gt=0,
        description="Largest tolerated harm in the metric's units; harm is a rise for "
        "frt_hours, art_hours and repeat, a drop for the others.",
    )
    max_drop: float | None = Field(
        default=None, gt=0, description="The margin, with a drop as the harm."
    )
    max_increase: float | None = Field(
        default=None, gt=0, description="The margin, with a rise as the harm."
    )

    @property
    def limit(self) -> float:
        """The margin, whichever key gave it."""
        return next(v for v in (self.margin, self.max_drop, self.max_increase) if v is not None)

    @property
    def harm(self) -> int:
        """+1 when a rise of the metric is the harm, −1 when a drop is."""
        if self.margin is not None:
            return 1 if self.metric in HARM_IS_INCREASE else -1
        return 1 if self.max_increase is not None else -1

    def breached(self, value: float, ci_low: float, ci_high: float) -> bool:
        """Whether an estimated change is harm beyond the margin and significantly harmful."""
        if self.harm > 0:
            return value > self.limit and ci_low > 0
        return value < -self.limit and ci_high < 0

    @model_validator(mode="after")
    def _one_limit(self) -> Guardrail:
        given = [v for v in (self.margin, self.max_drop, self.max_increase) if v is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of margin, max_drop or max_increase")
        return self


def _as_list(raw: object) -> object:
    return [raw] if isinstance(raw, str) else raw


Values = Annotated[
    list[str] | None, BeforeValidator(_as_list, json_schema_input_type=str | list[str] | None)
]


def _as_text(raw: object) -> object:
    """YAML scalars as the text CRM properties and CSV ids are compared as."""
    if isinstance(raw, bool):
        return str(raw).lower()
    if isinstance(raw, int | float):
        return str(raw)
    if isinstance(raw, list):
        return [_as_text(v) for v in raw]
    return raw


class Group(BaseModel):
    """Filters of one arm on any customer column or CRM attribute (all given keys must match):
    `{region: Siberia}`, `{ab_autorouting: pilot, plan: [pro, team]}`."""

    model_config = ConfigDict(extra="allow", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _lists_of_text(cls, raw: object) -> object:
        if isinstance(raw, BaseModel):
            raw = raw.model_dump()
        if not isinstance(raw, dict):
            return raw
        return {key: _as_list(_as_text(value)) for key, value in raw.items() if value is not None}

    def filters(self) -> dict[str, list[str]]:
        return {key: values for key, values in (self.model_extra or {}).items() if values}


class Population(Group):
    """Who may take part: customers matching every filter, on segment, region, channel, any
    declared dimension, `churn_risk` or CRM attribute: `{segment: [loyal], churn_risk: high}`."""

    segment: Values = Field(default=None, description="customer.segment value(s) taking part.")
    region: Values = Field(default=None, description="customer.region value(s) taking part.")
    channel: Values = Field(default=None, description="customer.channel value(s) taking part.")

    def filters(self) -> dict[str, list[str]]:
        fixed = {key: getattr(self, key) for key in ("segment", "region", "channel")}
        return {key: values for key, values in fixed.items() if values} | super().filters()


ArmValues = Annotated[
    list[str] | str | None, BeforeValidator(_as_text, json_schema_input_type=str | float | list)
]
ARM_METHODS = ("segment", "attribute", "list")


class Assignment(Strict):
    """Who gets the change: a hash split of the population, or arms operations fixed (a
    segment, a CRM attribute, a list of customer ids)."""

    method: Literal["hash", "segment", "attribute", "list"] = Field(
        default="hash",
        description="hash: a seeded split of the population; segment, attribute, list: arms "
        "fixed by operations.",
    )
    pilot_share: float | None = Field(default=None, gt=0, lt=1, description="hash: pilot share.")
    salt: str | None = Field(default=None, min_length=1, description="hash: salt of the split.")
    attribute: str | None = Field(
        default=None,
        min_length=1,
        description="attribute: the customer column or CRM property holding the arm.",
    )
    pilot: Group | ArmValues = Field(
        default=None,
        description="segment: filters of the pilot group; attribute: the value(s) marking "
        "pilot customers; list: a CSV with a customer_id column, relative to this file.",
    )
    control: Group | ArmValues = Field(
        default=None,
        description="As pilot, for the control group; list: a CSV, or `rest` for the rest of "
        "the population.",
    )
    planned_share: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="segment, attribute, list: the planned pilot share of customers; turns on "
        "the sample-ratio check.",
    )
    overlap: bool = Field(
        default=False, description="May share customers with other running pilots."
    )

    @model_validator(mode="after")
    def _complete(self) -> Assignment:
        if self.method == "hash" and (self.pilot_share is None or self.salt is None):
            raise ValueError("method hash needs pilot_share (between 0 and 1) and salt")
        if self.method == "segment":
            self._check_segment()
        if self.method == "attribute":
            self._check_attribute()
        if self.method == "list" and not (
            isinstance(self.pilot, str) and isinstance(self.control, str)
        ):
            raise ValueError(
                "method list needs pilot and control files, e.g. pilot: ops/pilot.csv, "
                "control: ops/control.csv (or control: rest)"
            )
        return self

    def _check_segment(self) -> None:
        groups = (self.pilot, self.control)
        if not all(isinstance(g, Group) and g.filters() for g in groups):
            raise ValueError(
                "method segment needs pilot and control filters, e.g. "
                "pilot: {region: Siberia}, control: {region: Urals}"
            )
        pilot, control = (g.filters() for g in groups)
        if all(set(pilot[k]) & set(control[k]) for k in pilot.keys() & control.keys()):
            raise ValueError(
                f"the arms overlap: a customer can match both pilot {pilot} and control "
                f"{control}; give both a key with values the other excludes"
            )

    def _check_attribute(self) -> None:
        values = [self.pilot, self.control]
        if not self.attribute or any(v is None or isinstance(v, Group) for v in values):
            raise ValueError(
                "method attribute needs attribute, pilot and control values, e.g. "
                "attribute: ab_autorouting, pilot: pilot, control: control"
            )
        common = set(_as_list(self.pilot)) & set(_as_list(self.control))
        if common:
            raise ValueError(
                f"the arms overlap: {sorted(common)} mark both pilot and control; "
                "give each arm its own values"
            )

    def reads(self) -> list[tuple[tuple[str, ...], str]]:
        """(field, customer attribute) of every customer attribute the arms are read from."""
        if self.method == "attribute":
            return [(("assignment", "attribute"), self.attribute)]
        if self.method == "segment":
            return [(("assignment", arm), key) for arm in ("pilot", "control")
                    for key in getattr(self, arm).filters()]  # fmt: skip
        return []

    @property
    def split(self) -> float | None:
        """The planned pilot share, whatever the method; None when nobody planned one."""
        return self.pilot_share if self.method == "hash" else self.planned_share

    def __str__(self) -> str:
        if self.method == "hash":
            return f"{self.pilot_share:.0%} by hash"
        if self.method == "segment":
            return f"{self.pilot.filters()} vs {self.control.filters()}"
        if self.method == "attribute":
            return f"{self.attribute}: {self.pilot} vs {self.control}"
        return f"list {Path(self.pilot).name} vs {Path(self.control).name}"


class TicketScope(Strict):
    """Ticket attributes a contact must match for the pilot's metrics (all given keys)."""

    topic: Values = Field(default=None, description="ticket.topic value(s) in scope.")
    channel: Values = Field(default=None, description="ticket.channel value(s) in scope.")
    agent: Values = Field(default=None, description="ticket.agent value(s) in scope.")
    team: Values = Field(default=None, description="ticket.team value(s) in scope.")

    def filters(self) -> dict[str, list[str]]:
        return {key: values for key, values in self.model_dump().items() if values}


class Scope(Strict):
    """The contacts the change touches: ticket metrics from the tickets matching `tickets`,
    CSAT, CES and post-contact NPS from the surveys linked to them."""

    tickets: TicketScope = Field(
        default=TicketScope(), description="The tickets whose metrics count for the pilot."
    )
    surveys: Literal["population", "linked"] = Field(
        default="population",
        description="population: relationship NPS (no ticket) stays on the population's "
        "customers; linked: only surveys linked to a scoped ticket count.",
    )

    def __str__(self) -> str:
        shown = "; ".join(f"{k}: {', '.join(v)}" for k, v in self.tickets.filters().items())
        return f"tickets with {shown}" + (
            ", linked surveys only" if self.surveys == "linked" else ""
        )


class Period(Strict):
    start: date = Field(description="First day (YYYY-MM-DD), in the company's time zone.")
    end: date = Field(description="Last day (YYYY-MM-DD), included.")

    @model_validator(mode="after")
    def _ordered(self) -> Period:
        if self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        return self


class Schedule(Strict):
    baseline: Period = Field(
        description="Days before the change, to adjust for (CUPED) or difference out (DiD)."
    )
    pilot: Period = Field(description="Days the change runs for the pilot arm; after baseline.")

    @model_validator(mode="after")
    def _baseline_first(self) -> Schedule:
        if self.pilot.start <= self.baseline.end:
            raise ValueError(
                f"pilot starts {self.pilot.start}, not after the baseline ends "
                f"{self.baseline.end}; move the pilot after the baseline"
            )
        return self


class Decision(Strict):
    alpha: float = Field(
        default=0.05, gt=0, lt=0.5, description="Significance level of the primary metric's test."
    )
    min_per_arm: int = Field(
        default=200,
        ge=1,
        description="Customers each arm needs in the pilot period before a decision is made.",
    )
    analysis: Literal["did", "cuped", "auto"] | None = Field(
        default=None,
        description="did: customer-level difference-in-differences; cuped: pilot period "
        "adjusted by baseline; auto: unit-level (region, branch, team) DiD or synthetic "
        "control with identification checks. Default: cuped for a hash split, auto for a "
        "segment or attribute split, did for a list.",
    )
    sequential: bool = Field(
        default=True,
        description="Judge on an always-valid (mixture SPRT) interval, so daily looks are safe; "
        "false: a fixed-horizon test, read once at the pilot's end.",
    )
    adjust_for: list[Literal["channel", "topic", "survey"]] = Field(
        default=[], description="Unit attributes to adjust for as fixed effects."
    )


class Hypothesis(Strict):
    """One hypothesis file: the claim, its metric, who takes part, when, and how to decide."""

    id: str = Field(
        pattern=r"^[a-z0-9][a-z0-9-]*$",
        description="Lower-case letters, digits and dashes; the file's name without .yaml.",
    )
    title: str = Field(description="The hypothesis in one line, as the reports title it.")
    owner: str = Field(description="Who runs the pilot and decides (e-mail or name).")
    pain_point: str = Field(
        description="Key of a ranked pain point this addresses, e.g. ticket:delivery "
        "(`cxloop backlog` lists them)."
    )
    new: bool = Field(
        default=False,
        description="The pain point is not in the ranking (yet): one seen outside the data.",
    )
    change: str = Field(description="What the pilot arm gets that the control does not.")
    metric: MetricTarget = Field(description="The primary metric, which decides the pilot.")
    secondary_metrics: list[MetricTarget] = Field(
        default=[], description="Also estimated and reported (Holm-adjusted); they do not decide."
    )
    guardrails: list[Guardrail] = Field(
        default=[], description="Metrics the pilot may worsen by at most a margin."
    )
    population: Population = Field(
        default=Population(), description="Who may take part; everyone when empty."
    )
    assignment: Assignment = Field(
        description="How the population is split into pilot and control."
    )
    scope: Scope | None = Field(
        default=None, description="Restrict the metrics to the contacts the change touches."
    )
    schedule: Schedule = Field(description="The baseline and pilot periods.")
    decision: Decision = Field(default=Decision(), description="How the pilot is judged.")
    status: Literal["draft", "approved", "running", "concluded"] = Field(
        default="draft",
        description="draft → approved (ready to start) → running (evaluated daily) → concluded.",
    )
    rollout: date | None = Field(
        default=None, description="When an adopted change went live for everyone (watched)."
    )


def schema_json() -> str:
    """The JSON Schema of a hypothesis file, as kept in `hypotheses/schema.json` for editors."""
    schema = Hypothesis.model_json_schema(mode="validation")
    schema["title"] = "cxloop hypothesis"
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def scaffold(hypothesis_id: str, pain_point: str, title: str, nps_gap: float, start: date) -> str:
    """A draft hypothesis file for a ranked pain point, commented where a CX lead must decide.

    The target is half the NPS gap the pain point costs; the pilot runs four weeks after a
    four-week baseline ending the day before `start`.
    """
    baseline_start, pilot_end = start - timedelta(days=28), start + timedelta(days=27)
    return f"""# yaml-language-server: $schema=schema.json
# Draft for pain point {pain_point} ({title}). Fill in the change, check the numbers,
# then set status: approved. `cxloop hypotheses validate` checks this file.
id: {hypothesis_id}
title: {json.dumps(f"Fixing {title.lower()} lifts NPS")}
owner: cx-lead@example.com                      # who decides
pain_point: {pain_point}
change: Describe the change the pilot arm gets   # what operations will do differently
metric: {{name: nps, direction: increase, expected_effect: +{max(nps_gap / 2, 1):.0f}}}
guardrails:
  - {{metric: csat, max_drop: 0.2}}
population: {{}}                                  # e.g. {{segment: [premium], region: Siberia}}
assignment: {{method: hash, pilot_share: 0.5, salt: {hypothesis_id}}}
schedule:
  baseline: {{start: {baseline_start}, end: {start - timedelta(days=1)}}}
  pilot: {{start: {start}, end: {pilot_end}}}
decision: {{alpha: 0.05, min_per_arm: 200}}
status: draft
"""


def load_hypothesis(path: Path) -> Hypothesis:
    """One hypothesis file, validated; `HypothesisError` names file, line, field and fix."""
    return _load(path)[0]


def _load(path: Path) -> tuple[Hypothesis, YamlDocument]:
    document = read_yaml(path, HypothesisError)
    hypothesis = document.validate(Hypothesis, HypothesisError)
    if hypothesis.id != path.stem:
        raise HypothesisError(
            f"{path}:1: `id` is {hypothesis.id!r} but the file is {path.name}; "
            f"rename the file to {hypothesis.id}.yaml or change the id."
        )
    if hypothesis.assignment.method == "list":
        hypothesis = _with_lists(hypothesis, document, path)
    return hypothesis, document


ID_COLUMN = "customer_id"
REST = "rest"


def listed_ids(path: Path) -> pd.Series:
    """The customer ids of an arm's CSV file (its `customer_id` column), as text."""
    import pandas as pd

    return pd.read_csv(path, usecols=[ID_COLUMN], dtype=str)[ID_COLUMN].dropna().str.strip()


def _with_lists(hypothesis: Hypothesis, document: YamlDocument, path: Path) -> Hypothesis:
    """`hypothesis` with its list files as absolute paths, each checked to exist, have a
    `customer_id` column and share no id with the other arm's."""
    import pandas as pd

    plan, found, ids = hypothesis.assignment, {}, {}
    for arm in ("pilot", "control"):
        where = document.where(("assignment", arm))
        if arm == "control" and plan.control == REST:
            continue
        file = (path.parent / getattr(plan, arm)).resolve()
        if not file.is_file():
            raise HypothesisError(
                f"{where}: `assignment.{arm}` {getattr(plan, arm)!r}: no such file {file}; "
                "give a CSV path relative to the hypothesis file"
                + (", or `rest` for the rest of the population." if arm == "control" else ".")
            )
        try:
            ids[arm] = listed_ids(file)
        except (ValueError, pd.errors.ParserError):
            raise HypothesisError(
                f"{where}: `assignment.{arm}` {file} has no `{ID_COLUMN}` column; add a header "
                f"line with {ID_COLUMN} and one customer id a line."
            ) from None
        found[arm] = str(file)
    if len(ids) == 2:
        both = sorted(set(ids["pilot"]) & set(ids["control"]))
        if both:
            raise HypothesisError(
                f"{document.where(('assignment', 'control'))}: the arms overlap: "
                f"{len(both):,} ids are in both lists (e.g. {', '.join(both[:3])}); "
                "remove them from one of the files."
            )
    return hypothesis.model_copy(update={"assignment": plan.model_copy(update=found)})


@dataclass(frozen=True)
class Ranking:
    """The pain-point keys a store has ranked: in its latest period, and in any period."""

    period: str
    latest: frozenset[str]
    ever: frozenset[str]
    attributes: frozenset[str] | None = None  # customer columns and CRM properties stored
    ticket_values: dict[str, frozenset[str]] | None = None  # stored topics, channels, ...
    url: str | None = field(default=None, compare=False)  # to read those two when asked

    @cached_property
    def _stored(
        self,
    ) -> tuple[frozenset[str] | None, dict[str, frozenset[str]] | None] | None:
        """The store's attributes and ticket values, read once, only if a hypothesis needs
        them: reading every customer's CRM properties costs seconds on a large store."""
        if self.url is None:
            return None
        from sqlalchemy import create_engine

        engine = create_engine(self.url)
        try:
            with engine.connect() as connection:
                return stored_attributes(connection), stored_ticket_values(connection)
        finally:
            engine.dispose()

    def known_attributes(self) -> frozenset[str] | None:
        """`attributes`, else the store's; None when neither is known."""
        return self.attributes if self.attributes is not None else (self._stored or (None,))[0]

    def known_ticket_values(self) -> dict[str, frozenset[str]] | None:
        """`ticket_values`, else the store's; None when neither is known."""
        if self.ticket_values is not None:
            return self.ticket_values
        return (self._stored or (None, None))[1]

    def problem(self, hypothesis: Hypothesis, document: YamlDocument) -> str | None:
        """Why `hypothesis.pain_point` names no ranked pain point, or None if it does.

        Drafts and approved pilots must target the latest ranking; a running or concluded one
        may name any ranked key, since a working pilot can push its pain point out of it.
        """
        unknown = self.unknown_attribute(hypothesis, document) or self.unseen_scope(
            hypothesis, document
        )
        if unknown:
            return unknown
        started = hypothesis.status in ("running", "concluded")
        if hypothesis.new or hypothesis.pain_point in (self.ever if started else self.latest):
            return None
        ranking = "any ranking in the store" if started else f"the latest ranking ({self.period})"
        close = difflib.get_close_matches(hypothesis.pain_point, sorted(self.latest), n=1)
        hint = f"did you mean `{close[0]}`? " if close else ""
        return (
            f"{document.where(('pain_point',))}: `pain_point` {hypothesis.pain_point!r} is not "
            f"a pain point of {ranking}; {hint}`cxloop backlog` lists the ranked ones. For a "
            "pain point the ranking does not show, add `new: true`."
        )

    def unknown_attribute(self, hypothesis: Hypothesis, document: YamlDocument) -> str | None:
        """Why an attribute the assignment reads is no customer column or CRM property of
        the store, or None if all are."""
        reads = hypothesis.assignment.reads() + [
            (("population", key), key) for key in hypothesis.population.filters()
        ]
        known = self.known_attributes() if reads else None
        if known is None:
            return None
        for where, name in reads:
            if name not in known:
                close = difflib.get_close_matches(name, sorted(known), n=1)
                hint = f"did you mean `{close[0]}`? " if close else ""
                return (
                    f"{document.where(where)}: `{'.'.join(where)}` reads {name!r}, which no "
                    f"customer in the store has; {hint}known: {', '.join(sorted(known))}."
                )
        return None

    def unseen_scope(self, hypothesis: Hypothesis, document: YamlDocument) -> str | None:
        """Why a `scope.tickets` value is one no stored ticket has, or None if all are seen."""
        filters = hypothesis.scope.tickets.filters() if hypothesis.scope else {}
        stored = self.known_ticket_values() if filters else None
        if stored is None:
            return None
        for key, values in filters.items():
            seen = stored.get(key, frozenset())
            for value in values:
                if value not in seen:
                    close = difflib.get_close_matches(value, sorted(seen), n=1)
                    hint = f"did you mean `{close[0]}`? " if close else ""
                    return (
                        f"{document.where(('scope', 'tickets', key))}: `scope.tickets.{key}` "
                        f"{value!r} is on no ticket in the store; {hint}seen: "
                        f"{', '.join(sorted(seen)[:20]) or 'none'}."
                    )
        return None


def stored_ticket_values(connection: Any) -> dict[str, frozenset[str]] | None:
    """The distinct values of each ticket attribute a scope filters on, as stored; None
    while the store holds no ticket (a scope is checked once there is something to see)."""
    from sqlalchemy import select

    from tasks.store import Ticket

    if connection.execute(select(Ticket.id).limit(1)).first() is None:
        return None
    return {
        key: frozenset(v for (v,) in connection.execute(select(column).distinct()) if v is not None)
        for key in TicketScope.model_fields
        for column in [getattr(Ticket, key)]
    }


def stored_attributes(connection: Any) -> frozenset[str] | None:
    """The customer columns, `churn_risk` while a published churn model scores customers,
    and every CRM property key (`Customer.attributes`) stored; None while the store holds no
    customer (attributes are checked once there is something to see)."""
    from sqlalchemy import func, inspect, select

    from tasks.store import Customer, CustomerChurnRisk

    if connection.execute(select(Customer.id).limit(1)).first() is None:
        return None
    columns = {"segment", "region", "channel", "language"}
    if inspect(connection).has_table(CustomerChurnRisk.__tablename__):
        scored = select(func.count()).select_from(CustomerChurnRisk)
        columns |= {"churn_risk"} if connection.execute(scored).scalar_one() else set()
    keys = {
        key
        for (found,) in connection.execute(select(Customer.attributes))
        if isinstance(found, dict)
        for key in found
    }
    return frozenset(columns | keys)


def stored_ranking(url: str) -> Ranking | None:
    """The pain points the store at `url` has ranked; None before its first ranking.

    Reads without creating anything: a SQLite file that does not exist stays absent.
    """
    from sqlalchemy import create_engine, inspect, select
    from sqlalchemy.exc import OperationalError

    from tasks.store import PainPoint, redact_url

    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        return None
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            if not inspect(connection).has_table(PainPoint.__tablename__):
                return None
            rows = connection.execute(select(PainPoint.period, PainPoint.key)).all()
    except OperationalError as exc:
        raise StoreError(
            f"cannot read the ranking from the store at {redact_url(url)} "
            f"({str(exc.orig or exc).strip().splitlines()[0]}); check CXLOOP_DATABASE_URL "
            "(or database_url in cxloop.yaml) and that the server runs."
        ) from None
    finally:
        engine.dispose()
    if not rows:
        return None
    period = max(row.period for row in rows)
    latest = frozenset(row.key for row in rows if row.period == period)
    return Ranking(period, latest, frozenset(row.key for row in rows), url=url)


def read_hypotheses(
    directory: Path, ranking: Ranking | None = None
) -> tuple[list[Hypothesis], list[str]]:
    """The valid hypotheses under `directory` (`*.yaml` and `*.yml`), sorted by file, and a
    problem per broken one.

    With a `ranking`, a hypothesis whose `pain_point` is not ranked is broken (see
    `Ranking.problem`). Both hypotheses of a clashing pair (see `clashes`) or of one id in
    two files count as broken: neither runs.
    """
    if not directory.is_dir():
        return [], [
            f"{directory}: no such directory of hypotheses; create it (`cxloop hypotheses new` "
            "writes a first one), or point `hypotheses_dir` in cxloop.yaml (or "
            "CXLOOP_HYPOTHESES_DIR) at yours."
        ]
    loaded, problems = [], []
    for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        try:
            hypothesis, document = _load(path)
        except HypothesisError as exc:
            problems.append(str(exc))
            continue
        unranked = ranking.problem(hypothesis, document) if ranking else None
        if unranked:
            problems.append(unranked)
        else:
            loaded.append((hypothesis, path))
    files: dict[str, list[Path]] = defaultdict(list)
    for hypothesis, path in loaded:
        files[hypothesis.id].append(path)
    twins = {id_ for id_, paths in files.items() if len(paths) > 1}
    problems.extend(
        f"{files[id_][1]}: id {id_} is also the id of {files[id_][0]}; keep one of the two files."
        for id_ in sorted(twins)
    )
    found = [h for h, _ in loaded if h.id not in twins]
    pairs = clashes(found)
    for a, b in pairs:
        problems.append(
            f"{files[b.id][0]}: `metric.name` {b.metric.name} is also the primary metric of "
            f"{a.id} for the same customers and days; give them disjoint populations or pilot "
            "periods, or set `assignment.overlap: true`."
        )
    broken = {h.id for pair in pairs for h in pair}
    return [h for h in found if h.id not in broken], problems


def load_hypotheses(directory: Path, ranking: Ranking | None = None) -> list[Hypothesis]:
    """Every hypothesis under `directory`, sorted by file; one error listing all problems.

    With a `ranking`, each `pain_point` must be ranked (or the hypothesis `new`)."""
    valid, problems = read_hypotheses(directory, ranking)
    if problems:
        raise HypothesisError("\n".join(problems))
    return valid


ACTIVE = ("approved", "running")
# The pilots `cxloop demo` evaluates, shipped with cxloop (the checkout's `hypotheses/`).
DEMO_HYPOTHESES = Path(__file__).resolve().parents[1] / "hypotheses"


def _may_share_customers(a: Population, b: Population) -> bool:
    """False only when some attribute both filter on has disjoint allowed values."""
    fa, fb = a.filters(), b.filters()
    return all(set(fa[key]) & set(fb[key]) for key in fa.keys() & fb.keys())


def clashes(hypotheses: list[Hypothesis]) -> list[tuple[Hypothesis, Hypothesis]]:
    """Pairs of active pilots on the same primary metric, customers and pilot days."""
    active = [h for h in hypotheses if h.status in ACTIVE and not h.assignment.overlap]
    pairs = []
    for i, a in enumerate(active):
        for b in active[i + 1 :]:
            same_days = a.schedule.pilot.start <= b.schedule.pilot.end and (
                b.schedule.pilot.start <= a.schedule.pilot.end
            )
            if (
                a.metric.name == b.metric.name
                and same_days
                and _may_share_customers(a.population, b.population)
            ):
                pairs.append((a, b))
    return pairs
