"""Simulated pilots with a known truth (benchmarks/experiment_simulation.py): the always-valid
test under daily looks, power at the reported MDE, coverage, guardrails as non-inferiority."""

from __future__ import annotations

from benchmarks.experiment_simulation import (
    aa_false_adopts,
    baseline_free_coverage,
    cuped_power,
    did_power,
    frt_coverage,
    guardrail_adoptions,
    nps_coverage,
)


def test_aa_pilots_looked_at_daily_are_adopted_at_most_5_percent_of_runs() -> None:
    sequential, fixed = aa_false_adopts(runs=2000)
    assert sequential.share <= 0.05 and sequential.wilson[1] <= 0.06, sequential
    assert fixed.share > 0.10, fixed  # the same looks at fixed-horizon p-values inflate


def test_power_at_the_reported_mde_is_80_percent_for_cuped_and_the_sequential_test() -> None:
    for rate in (cuped_power(runs=2000), cuped_power(runs=2000, sequential=True)):
        assert 0.75 <= rate.share <= 0.85, rate


def test_power_at_the_reported_mde_is_80_percent_for_did() -> None:
    rate = did_power(runs=500)
    assert 0.75 <= rate.share <= 0.85, rate


def test_planted_frt_nps_and_baseline_free_effects_are_covered_95_percent() -> None:
    for rates in (frt_coverage(runs=4000), nps_coverage(runs=4000),
                  baseline_free_coverage(runs=4000)):  # fmt: skip
        for rate in rates:
            assert rate.share >= 0.94, rate


def test_a_guardrail_truly_at_twice_its_margin_is_adopted_at_most_5_percent() -> None:
    harmed, unharmed = guardrail_adoptions(runs=2000), guardrail_adoptions(runs=2000, harm=0.0)
    assert harmed.share <= 0.05, harmed
    assert unharmed.share >= 0.8, unharmed  # the margin is one the pilot can show it keeps
