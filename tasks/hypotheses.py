"""Hypotheses as CX leads write them in `hypotheses/*.yaml`, validated into pydantic models."""

from __future__ import annotations

import json
import re
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from tasks.errors import HypothesisError
from tasks.validation import load_yaml_model

MetricName = Literal["nps", "csat", "ces", "frt_hours", "art_hours", "fcr", "repeat"]
# A relative effect is estimated on the log scale: only metrics whose every value is positive.
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
    name: MetricName
    direction: Literal["increase", "decrease"]
    expected_effect: Annotated[
        Effect, BeforeValidator(_parse_effect, json_schema_input_type=str | float)
    ]

    @model_validator(mode="after")
    def _effect_matches_direction(self) -> MetricTarget:
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


class Guardrail(Strict):
    metric: MetricName
    max_drop: float | None = Field(default=None, gt=0)
    max_increase: float | None = Field(default=None, gt=0)

    def breached(self, value: float, ci_low: float, ci_high: float) -> bool:
        """Whether an estimated change crosses the limit and is significantly the wrong way."""
        if self.max_drop is not None:
            return value < -self.max_drop and ci_high < 0
        return self.max_increase is not None and value > self.max_increase and ci_low > 0

    @model_validator(mode="after")
    def _one_limit(self) -> Guardrail:
        if (self.max_drop is None) == (self.max_increase is None):
            raise ValueError("give exactly one of max_drop or max_increase")
        return self


def _as_list(raw: object) -> object:
    return [raw] if isinstance(raw, str) else raw


Values = Annotated[
    list[str] | None, BeforeValidator(_as_list, json_schema_input_type=str | list[str] | None)
]


class Population(Strict):
    """Customer attributes a customer must match to take part (all given keys must match)."""

    segment: Values = None
    region: Values = None
    channel: Values = None

    def filters(self) -> dict[str, list[str]]:
        return {key: values for key, values in self.model_dump().items() if values}


class Assignment(Strict):
    """Who gets the change: a hash split of the population, or one group against another."""

    method: Literal["hash", "segment"] = "hash"
    pilot_share: float | None = Field(default=None, gt=0, lt=1, description="hash: pilot share.")
    salt: str | None = Field(default=None, min_length=1, description="hash: salt of the split.")
    pilot: Population | None = Field(default=None, description="segment: the pilot group.")
    control: Population | None = Field(default=None, description="segment: the control group.")
    overlap: bool = Field(
        default=False, description="May share customers with other running pilots."
    )

    @model_validator(mode="after")
    def _complete(self) -> Assignment:
        if self.method == "hash" and (self.pilot_share is None or self.salt is None):
            raise ValueError("method hash needs pilot_share (between 0 and 1) and salt")
        if self.method == "segment" and not (
            self.pilot and self.pilot.filters() and self.control and self.control.filters()
        ):
            raise ValueError(
                "method segment needs pilot and control filters, e.g. "
                "pilot: {region: Siberia}, control: {region: Urals}"
            )
        return self

    def __str__(self) -> str:
        if self.method == "hash":
            return f"{self.pilot_share:.0%} by hash"
        return f"{self.pilot.filters()} vs {self.control.filters()}"


class Period(Strict):
    start: date
    end: date

    @model_validator(mode="after")
    def _ordered(self) -> Period:
        if self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        return self


class Schedule(Strict):
    baseline: Period
    pilot: Period

    @model_validator(mode="after")
    def _baseline_first(self) -> Schedule:
        if self.pilot.start <= self.baseline.end:
            raise ValueError(
                f"pilot starts {self.pilot.start}, not after the baseline ends "
                f"{self.baseline.end}; move the pilot after the baseline"
            )
        return self


class Decision(Strict):
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    min_per_arm: int = Field(default=200, ge=1)
    analysis: Literal["did", "cuped"] = Field(
        default="did",
        description="did: difference-in-differences; cuped: pilot period adjusted by baseline.",
    )
    sequential: bool = True
    adjust_for: list[Literal["channel", "topic", "survey"]] = Field(
        default=[], description="Unit attributes to adjust for as fixed effects."
    )


class Hypothesis(Strict):
    """One hypothesis file: the claim, its metric, who takes part, when, and how to decide."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    title: str
    owner: str
    pain_point: str
    change: str
    metric: MetricTarget
    secondary_metrics: list[MetricTarget] = []
    guardrails: list[Guardrail] = []
    population: Population = Population()
    assignment: Assignment
    schedule: Schedule
    decision: Decision = Decision()
    status: Literal["draft", "approved", "running", "concluded"] = "draft"
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
decision: {{alpha: 0.05, min_per_arm: 200, analysis: did}}
status: draft
"""


def load_hypothesis(path: Path) -> Hypothesis:
    """One hypothesis file, validated; `HypothesisError` names file, line, field and fix."""
    hypothesis = load_yaml_model(path, Hypothesis, HypothesisError)
    if hypothesis.id != path.stem:
        raise HypothesisError(
            f"{path}:1: `id` is {hypothesis.id!r} but the file is {path.name}; "
            f"rename the file to {hypothesis.id}.yaml or change the id."
        )
    return hypothesis


def read_hypotheses(directory: Path) -> tuple[list[Hypothesis], list[str]]:
    """The valid hypotheses under `directory`, sorted by file, and a problem per broken one.

    Both hypotheses of a clashing pair (see `clashes`) count as broken: neither runs.
    """
    found, problems = [], []
    for path in sorted(directory.glob("*.yaml")):
        try:
            found.append(load_hypothesis(path))
        except HypothesisError as exc:
            problems.append(str(exc))
    pairs = clashes(found)
    for a, b in pairs:
        problems.append(
            f"{directory / (b.id + '.yaml')}: `metric.name` {b.metric.name} is also the "
            f"primary metric of {a.id} for the same customers and days; give them "
            "disjoint populations or pilot periods, or set `assignment.overlap: true`."
        )
    broken = {h.id for pair in pairs for h in pair}
    return [h for h in found if h.id not in broken], problems


def load_hypotheses(directory: Path) -> list[Hypothesis]:
    """Every `*.yaml` under `directory`, sorted by file; one error listing all problems."""
    valid, problems = read_hypotheses(directory)
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
