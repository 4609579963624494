"""Hypotheses as CX leads write them in `hypotheses/*.yaml`, validated into pydantic models."""

from __future__ import annotations

import difflib
import json
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from tasks.errors import HypothesisError, StoreError
from tasks.validation import YamlDocument, read_yaml

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
    name: MetricName
    direction: Literal["increase", "decrease"]
    expected_effect: Annotated[
        Effect, BeforeValidator(_parse_effect, json_schema_input_type=str | float)
    ]
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

    metric: MetricName
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
    analysis: Literal["did", "cuped"] | None = Field(
        default=None,
        description="did: difference-in-differences; cuped: pilot period adjusted by baseline. "
        "Default: cuped for a hash split, did for a segment split.",
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
    new: bool = Field(
        default=False,
        description="The pain point is not in the ranking (yet): one seen outside the data.",
    )
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
    return hypothesis, document


@dataclass(frozen=True)
class Ranking:
    """The pain-point keys a store has ranked: in its latest period, and in any period."""

    period: str
    latest: frozenset[str]
    ever: frozenset[str]

    def problem(self, hypothesis: Hypothesis, document: YamlDocument) -> str | None:
        """Why `hypothesis.pain_point` names no ranked pain point, or None if it does.

        Drafts and approved pilots must target the latest ranking; a running or concluded one
        may name any ranked key, since a working pilot can push its pain point out of it.
        """
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
    return Ranking(period, latest, frozenset(row.key for row in rows))


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
