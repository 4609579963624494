"""Broken hypothesis files get errors naming file, line, field and fix."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from tasks.errors import HypothesisError
from tasks.hypotheses import (
    load_hypotheses,
    load_hypothesis,
    read_hypotheses,
    scaffold,
    schema_json,
)
from tests.conftest import REPO

GOOD = (REPO / "hypotheses" / "auto-route-tickets.yaml").read_text(encoding="utf-8")


def _write(tmp_path: Path, text: str, name: str = "auto-route-tickets.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _error(path: Path) -> str:
    with pytest.raises(HypothesisError) as caught:
        load_hypothesis(path)
    return str(caught.value)


def test_shipped_hypotheses_are_valid() -> None:
    found = load_hypotheses(REPO / "hypotheses")
    assert {h.id for h in found} == {"auto-route-tickets", "chat-greeting-script"}
    effect = next(h for h in found if h.id == "auto-route-tickets").metric.expected_effect
    assert (effect.value, effect.relative) == (-0.4, True)


def test_unknown_key_names_line_and_suggests_the_right_one(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.replace("guardrails:", "guardrials:"))
    message = _error(path)
    line = GOOD.splitlines().index("guardrails:") + 1
    assert f"{path}:{line}" in message
    assert "unknown key `guardrials`" in message and "did you mean `guardrails`" in message


def test_unknown_nested_key_suggests_within_its_section(tmp_path: Path) -> None:
    message = _error(_write(tmp_path, GOOD.replace("pilot_share: 0.5", "pilot_shar: 0.5")))
    assert "assignment.pilot_shar" in message and "did you mean `pilot_share`" in message


@pytest.mark.parametrize(
    ("old", "new", "field", "hint"),
    [
        ("pilot_share: 0.5", "pilot_share: 1.5", "assignment.pilot_share", "less than 1"),
        ("name: frt_hours", "name: frt_minutes", "metric.name", "frt_hours"),
        ("pilot: {start: 2026-10-01", "pilot: {start: 2026-09-15", "schedule", "move the pilot"),
        ("expected_effect: -40%", "expected_effect: +40%", "metric", "flip one"),
        ("expected_effect: -40%", "expected_effect: forty", "metric.expected_effect", "-40%"),
        ("expected_effect: +8}", "expected_effect: +10%}", "secondary_metrics.0", "in points"),
    ],
)
def test_invalid_values_name_the_field_and_the_fix(tmp_path, old, new, field, hint) -> None:
    message = _error(_write(tmp_path, GOOD.replace(old, new)))
    assert f"`{field}`" in message and hint in message
    assert str(tmp_path / "auto-route-tickets.yaml") in message


def test_missing_field_and_broken_yaml_are_reported_with_the_file(tmp_path: Path) -> None:
    no_owner = "\n".join(line for line in GOOD.splitlines() if not line.startswith("owner:"))
    assert "`owner` is required; add it" in _error(_write(tmp_path, no_owner))
    message = _error(_write(tmp_path, GOOD + "\nmetric: [unclosed\n"))
    assert "not valid YAML" in message and "auto-route-tickets.yaml:" in message


def test_id_must_match_the_file_name(tmp_path: Path) -> None:
    assert "rename the file" in _error(_write(tmp_path, GOOD, "other-name.yaml"))


def test_all_broken_files_are_reported_together(tmp_path: Path) -> None:
    _write(tmp_path, GOOD.replace("owner:", "ownr:"))
    _write(tmp_path, GOOD.replace("auto-route-tickets", "second"), "second.yaml")
    _write(tmp_path, "id: third\n", "third.yaml")
    with pytest.raises(HypothesisError) as caught:
        load_hypotheses(tmp_path)
    assert "auto-route-tickets.yaml" in str(caught.value) and "third.yaml" in str(caught.value)
    assert "second.yaml" not in str(caught.value)


def test_schema_json_is_in_sync_with_the_model() -> None:
    shipped = (REPO / "hypotheses" / "schema.json").read_text(encoding="utf-8")
    assert shipped == schema_json(), "regenerate with `cxloop hypotheses schema`"


def test_overlapping_pilots_on_one_metric_are_rejected_unless_declared(tmp_path: Path) -> None:
    _write(tmp_path, GOOD)
    twin = GOOD.replace("auto-route-tickets", "second-routing").replace(
        "segment: [loyal, premium, b2b]", "segment: [premium]"
    )
    _write(tmp_path, twin, "second-routing.yaml")
    with pytest.raises(HypothesisError, match=r"second-routing\.yaml: `metric\.name` frt_hours"):
        load_hypotheses(tmp_path)
    _write(
        tmp_path,
        twin.replace("salt: auto-route-2026", "salt: s2, overlap: true"),
        "second-routing.yaml",
    )
    assert len(load_hypotheses(tmp_path)) == 2
    _write(tmp_path, twin.replace("[premium]", "[new]"), "second-routing.yaml")
    assert len(load_hypotheses(tmp_path)) == 2


def test_scaffold_from_a_pain_point_is_a_valid_draft(tmp_path: Path) -> None:
    text = scaffold(
        "faster-refunds", "ticket:payment", "Tickets about payment", 40.0, date(2026, 12, 1)
    )
    h = load_hypothesis(_write(tmp_path, text, "faster-refunds.yaml"))
    assert (h.status, h.pain_point, h.metric.expected_effect.value) == (
        "draft",
        "ticket:payment",
        20,
    )
    assert h.schedule.baseline.end == date(2026, 11, 30) and h.schedule.pilot.start == date(
        2026, 12, 1
    )


def test_scheduled_runs_keep_the_valid_hypotheses_and_report_the_broken(tmp_path: Path) -> None:
    _write(tmp_path, GOOD)
    _write(
        tmp_path, GOOD.replace("auto-route-tickets", "typo").replace("owner:", "ownr:"), "typo.yaml"
    )
    valid, problems = read_hypotheses(tmp_path)
    assert [h.id for h in valid] == ["auto-route-tickets"]
    assert len(problems) == 1 and "typo.yaml" in problems[0]
