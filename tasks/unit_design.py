"""The design check of a unit pilot before launch (`cxloop hypotheses validate`): its units
per arm, the baseline weeks they all have data in, what the unit-level analysis will be
able to identify, the detectable effect, and the regression-to-the-mean warning."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from connectors.errors import HypothesisError
from tasks.experiments import (
    analysis_of,
    assignments,
    attribute_values,
    in_period,
    pilot_observations,
    unit_column,
)
from tasks.hypotheses import Hypothesis
from tasks.loader import CxData
from tasks.unit_pilots import MIN_DONORS, MIN_PRE, MIN_SC_PRE, design_check, unit_panel


@dataclass(frozen=True)
class UnitDesign:
    """A unit pilot's design: the `unit` dimension, `treated` and `donors` units, baseline
    weeks with data in every unit, planned pilot weeks, the detectable effect (`mde`, the
    metric's units, None when it cannot be computed), `problems` that leave the unit-level
    analysis unidentified (the verdict then falls back to customers) and `warnings`."""

    id: str
    unit: str
    treated: list[str]
    donors: list[str]
    baseline_periods: int
    pilot_periods: int
    mde: float | None = None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def unit_design(
    hypothesis: Hypothesis, data: CxData, others: Sequence[Hypothesis] = ()
) -> UnitDesign | None:
    """The design of `hypothesis` on the data so far; None for pilots judged per customer."""
    if analysis_of(hypothesis) != "auto":
        return None
    schedule = hypothesis.schedule
    weeks = math.ceil(((schedule.pilot.end - schedule.pilot.start).days + 1) / 7)
    try:
        column = unit_column(hypothesis)
        arms = assignments(hypothesis, data.customers, others)
        obs = pilot_observations(hypothesis.metric.name, data, hypothesis)
    except HypothesisError as error:
        return UnitDesign(hypothesis.id, "", [], [], 0, weeks, problems=[str(error)])
    units = attribute_values(data.customers, column)
    unit_of = pd.Series(units.to_numpy(), index=data.customers["customer_id"]).dropna().astype(str)
    arm_of = arms.set_index("customer_id")["arm"]
    treated = sorted(set(unit_of.reindex(arm_of.index[arm_of == "pilot"]).dropna()))
    donors = sorted(set(unit_of.reindex(arm_of.index[arm_of == "control"]).dropna()) - set(treated))
    obs = obs[in_period(obs["at"], schedule.baseline) & obs["customer_id"].isin(arm_of.index)]
    obs = obs.assign(unit=obs["customer_id"].map(unit_of)).dropna(subset=["unit"])
    panel = unit_panel(obs[["unit", "at", "value"]])
    counts = panel.groupby("period")["unit"].nunique()
    complete = counts.index[counts.to_numpy() == len(treated) + len(donors)]
    design = UnitDesign(hypothesis.id, column, treated, donors, len(complete), weeks)
    _identification(design, hypothesis)
    if design.problems:
        return design
    higher = hypothesis.metric.direction == "increase"
    try:
        check = design_check(panel[panel["period"].isin(complete)], treated, weeks,
                             hypothesis.decision.alpha, higher)  # fmt: skip
    except HypothesisError as error:
        design.warnings.append(f"the detectable effect cannot be computed: {error}")
        return design
    if not check.regression_to_mean.passed:
        design.warnings.append(check.regression_to_mean.reason)
    return UnitDesign(**{**vars(design), "mde": check.mde})


def _identification(design: UnitDesign, hypothesis: Hypothesis) -> None:
    """Add to `design` what keeps the DiD or the synthetic control from being identified."""
    where = f"hypotheses/{hypothesis.id}.yaml"
    metric, n_donors, n_pre = hypothesis.metric.name, len(design.donors), design.baseline_periods
    if not design.treated:
        design.problems.append(f"{where}: no {design.unit} holds a pilot customer")
    if n_donors < 2:
        design.problems.append(
            f"{where}: {n_donors} comparison {design.unit}(s); the unit-level DiD needs at "
            "least 2 to be identified: widen `assignment.control`"
        )
    if n_pre == 0:
        design.problems.append(
            f"{where}: no baseline week has {metric} data in every {design.unit}; the "
            "unit-level analysis has no pre-period to compare with"
        )
    elif n_pre < MIN_PRE:
        design.problems.append(
            f"{where}: {n_pre} baseline week(s) with {metric} data in every {design.unit}; "
            f"the pre-trend checks need at least {MIN_PRE}: start the baseline earlier"
        )
    if not design.problems and (n_donors < MIN_DONORS or n_pre < MIN_SC_PRE):
        design.warnings.append(
            f"{n_donors} comparison {design.unit}(s) and {n_pre} baseline week(s): a "
            f"synthetic control needs at least {MIN_DONORS} and {MIN_SC_PRE}, so the "
            "analysis will be the unit-level DiD"
        )
