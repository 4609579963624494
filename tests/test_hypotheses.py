"""Broken hypothesis files get errors naming file, line, field and fix."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from connectors.errors import HypothesisError
from tasks.hypotheses import (
    Ranking,
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
    assert {h.id for h in found} == {
        "auto-route-tickets",
        "chat-greeting-script",
        "courier-siberia",
        "courier-volga",
    }
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
        (
            "expected_effect: +8}",
            "expected_effect: +8, log_scale: true}",
            "secondary_metrics.0",
            "relative",
        ),
    ],
)
def test_invalid_values_name_the_field_and_the_fix(tmp_path, old, new, field, hint) -> None:
    message = _error(_write(tmp_path, GOOD.replace(old, new)))
    assert f"`{field}`" in message and hint in message
    assert str(tmp_path / "auto-route-tickets.yaml") in message


def test_a_relative_effect_is_a_ratio_of_means_unless_the_file_asks_for_the_log_scale(
    tmp_path: Path,
) -> None:
    from tasks.experiments import estimand_of

    assert estimand_of(load_hypothesis(_write(tmp_path, GOOD)).metric) == "ratio"
    logged = GOOD.replace("expected_effect: -40%}", "expected_effect: -40%, log_scale: true}")
    assert estimand_of(load_hypothesis(_write(tmp_path, logged)).metric) == "log_ratio"
    assert estimand_of(load_hypothesis(_write(tmp_path, GOOD)).secondary_metrics[0]) == (
        "difference"
    )


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


def _line(text: str, start: str) -> int:
    return next(i for i, row in enumerate(text.splitlines(), 1) if row.startswith(start))


def test_a_key_given_twice_names_both_lines(tmp_path: Path) -> None:
    text = GOOD.replace("owner: cx-lead@example.com", "status: draft\nowner: cx-lead@example.com")
    message = _error(_write(tmp_path, text))
    first, second = _line(text, "status: draft"), _line(text, "status: running")
    assert f"auto-route-tickets.yaml:{second}: `status` is given twice" in message
    assert f"on lines {first} and {second}; keep one of them" in message


def test_a_key_given_twice_within_a_flow_mapping_is_found_too(tmp_path: Path) -> None:
    text = GOOD.replace("pilot_share: 0.5,", "pilot_share: 0.5, pilot_share: 0.9,")
    message = _error(_write(tmp_path, text))
    assert "`assignment.pilot_share` is given twice, on line" in message


def test_a_date_that_does_not_exist_names_line_and_field(tmp_path: Path) -> None:
    text = GOOD.replace("end: 2026-09-30", "end: 2026-09-31")
    message = _error(_write(tmp_path, text))
    line = _line(text, "  baseline:")
    assert (
        f"auto-route-tickets.yaml:{line}: `schedule.baseline.end`: 2026-09-31 is not a" in message
    )
    assert "YYYY-MM-DD" in message


def test_yml_files_are_read_besides_yaml(tmp_path: Path) -> None:
    _write(tmp_path, GOOD, "auto-route-tickets.yml")
    assert [h.id for h in load_hypotheses(tmp_path)] == ["auto-route-tickets"]


def test_one_id_in_a_yaml_and_a_yml_file_is_refused_naming_both(tmp_path: Path) -> None:
    yaml_file, yml_file = _write(tmp_path, GOOD), _write(tmp_path, GOOD, "auto-route-tickets.yml")
    valid, problems = read_hypotheses(tmp_path)
    assert valid == [] and len(problems) == 1
    assert str(yml_file) in problems[0] and str(yaml_file) in problems[0]


def test_a_missing_directory_says_so_and_how_to_fix_it(tmp_path: Path) -> None:
    with pytest.raises(HypothesisError, match=r"no such directory of hypotheses.*hypotheses_dir"):
        load_hypotheses(tmp_path / "nowhere")


RANKING = Ranking(
    "2026-10",
    latest=frozenset({"ticket:delivery", "ticket:payment"}),
    ever=frozenset({"ticket:delivery", "ticket:payment", "ticket:returns"}),
)


@pytest.mark.parametrize(
    ("status", "pain_point", "extra", "valid"),
    [
        ("draft", "ticket:delivery", "", True),
        ("draft", "ticket:delivery", "new: true\n", True),
        ("draft", "ticket:delivry", "", False),
        ("draft", "ticket:delivry", "new: true\n", True),
        ("approved", "ticket:returns", "", False),  # ranked once, not any more: plan anew
        ("running", "ticket:returns", "", True),  # a working pilot may push it out
        ("concluded", "ticket:returns", "", True),
        ("running", "ticket:refunds", "", False),
    ],
)
def test_pain_point_must_be_ranked_or_declared_new(
    tmp_path: Path, status: str, pain_point: str, extra: str, valid: bool
) -> None:
    text = GOOD.replace("status: running", f"status: {status}\n{extra}").replace(
        "pain_point: ticket:delivery", f"pain_point: {pain_point}"
    )
    _write(tmp_path, text)
    found, problems = read_hypotheses(tmp_path, RANKING)
    assert (len(found), len(problems)) == ((1, 0) if valid else (0, 1))
    if not valid:
        where = f"auto-route-tickets.yaml:{_line(text, 'pain_point:')}: `pain_point`"
        assert where in problems[0] and "new: true" in problems[0]


def test_an_unranked_pain_point_suggests_the_closest_ranked_one(tmp_path: Path) -> None:
    text = GOOD.replace("pain_point: ticket:delivery", "pain_point: ticket:delivry")
    _write(tmp_path, text.replace("status: running", "status: draft"))
    (problem,) = read_hypotheses(tmp_path, RANKING)[1]
    assert "did you mean `ticket:delivery`?" in problem and "latest ranking (2026-10)" in problem


ATTRIBUTE = (
    "assignment: {method: attribute, attribute: ab_autorouting, pilot: pilot, control: control}"
)
HASH = "assignment: {method: hash, pilot_share: 0.5, salt: auto-route-2026}"


def test_arms_from_a_crm_property_a_list_or_any_segment_dimension_load(tmp_path: Path) -> None:
    (tmp_path / "ops").mkdir()
    (tmp_path / "ops" / "pilot.csv").write_text("customer_id\nC1\nC2\n", encoding="utf-8")
    listed = "assignment: {method: list, pilot: ops/pilot.csv, control: rest, planned_share: 0.2}"
    segment = "assignment: {method: segment, pilot: {plan: [pro, 7]}, control: {plan: basic}}"
    for line in (ATTRIBUTE, listed, segment):
        h = load_hypothesis(_write(tmp_path, GOOD.replace(HASH, line)))
    assert h.assignment.pilot.filters() == {"plan": ["pro", "7"]} and h.assignment.split is None
    h = load_hypothesis(_write(tmp_path, GOOD.replace(HASH, listed)))
    assert h.assignment.pilot == str(tmp_path / "ops" / "pilot.csv")  # relative to the file
    assert (h.assignment.control, h.assignment.split) == ("rest", 0.2)


@pytest.mark.parametrize(
    ("assignment", "files", "expected"),
    [
        ("{method: list, pilot: ops/pilot.csv, control: ops/missing.csv}",
         {"ops/pilot.csv": "customer_id\nC1\n"},
         "`assignment.control` 'ops/missing.csv': no such file"),
        ("{method: list, pilot: ops/pilot.csv, control: rest}",
         {"ops/pilot.csv": "id,name\nC1,x\n"}, "has no `customer_id` column"),
        ("{method: list, pilot: ops/pilot.csv, control: ops/control.csv}",
         {"ops/pilot.csv": "customer_id\nC1\nC2\n", "ops/control.csv": "customer_id\nC2\nC3\n"},
         "the arms overlap: 1 ids are in both lists"),
        ("{method: attribute, attribute: ab, pilot: [a, b], control: b}", {}, "the arms overlap"),
        ("{method: segment, pilot: {region: [A, B]}, control: {region: B}}", {}, "arms overlap"),
        ("{method: segment, pilot: {region: A}, control: {segment: x}}", {}, "the arms overlap"),
        ("{method: attribute, pilot: a, control: b}", {}, "method attribute needs attribute"),
        ("{method: list, pilot: ops/pilot.csv}", {}, "method list needs pilot and control"),
    ],
)  # fmt: skip
def test_bad_arms_name_file_line_field_and_fix(
    tmp_path: Path, assignment: str, files: dict[str, str], expected: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    text = GOOD.replace(HASH, f"assignment: {assignment}")
    message = _error(_write(tmp_path, text))
    assert f"auto-route-tickets.yaml:{_line(text, 'assignment:')}" in message
    assert expected in message


def test_an_unknown_attribute_is_refused_against_the_stores_customers(tmp_path: Path) -> None:
    known = frozenset({"segment", "region", "channel", "ab_autorouting"})
    ranking = Ranking(RANKING.period, RANKING.latest, RANKING.ever, known)
    _write(tmp_path, GOOD.replace(HASH, ATTRIBUTE.replace("ab_autorouting", "ab_autoruting")))
    found, (problem,) = read_hypotheses(tmp_path, ranking)
    assert not found
    assert f":{_line(GOOD, 'assignment:')}: `assignment.attribute` reads 'ab_autoruting'" in problem
    assert "did you mean `ab_autorouting`?" in problem
    _write(tmp_path, GOOD.replace(HASH, ATTRIBUTE))
    assert read_hypotheses(tmp_path, ranking) == (read_hypotheses(tmp_path)[0], [])


def test_a_ticket_scope_loads_and_says_what_it_keeps(tmp_path: Path) -> None:
    text = GOOD.replace(HASH, f"{HASH}\nscope: {{tickets: {{topic: delivery, channel: [chat]}}}}")
    h = load_hypothesis(_write(tmp_path, text))
    assert h.scope.tickets.filters() == {"topic": ["delivery"], "channel": ["chat"]}
    assert str(h.scope) == "tickets with topic: delivery; channel: chat"
    bad = text.replace("topic: delivery", "topik: delivery")
    assert "did you mean `topic`" in _error(_write(tmp_path, bad))


def test_validating_with_a_store_refuses_unseen_attributes_and_scope_values(
    store_url: str, tmp_path: Path
) -> None:
    from datetime import datetime

    from sqlmodel import Session

    from tasks import store
    from tasks.hypotheses import stored_ranking

    url = store.database_url(store_url)
    with Session(store.open_store(url)) as session:
        session.add(store.Customer(source="crm", source_id="C1",
                                   attributes={"ab_autorouting": "pilot"}))  # fmt: skip
        session.add(store.Ticket(source="desk", source_id="T1", created_at=datetime(2026, 9, 1),
                                 topic="delivery", channel="chat"))  # fmt: skip
        session.add(store.PainPoint(
            period="2026-10", key="ticket:delivery", kind="ticket", title="t", rank=1,
            reach=100, reach_share=0.1, impact=5.0, impact_ci_low=2.0, impact_ci_high=8.0,
            confidence=0.5, effort=2.0, effort_is_default=True, score=1.0,
            computed_at=datetime(2026, 11, 1),
        ))  # fmt: skip
        session.commit()
    ranking = stored_ranking(url)
    assert ranking.attributes is None  # read only when a hypothesis needs them
    assert "ab_autorouting" in ranking.known_attributes()
    assert ranking.known_ticket_values()["topic"] == {"delivery"}
    scoped = GOOD.replace(HASH, f"{ATTRIBUTE}\nscope: {{tickets: {{topic: [delivery]}}}}")
    _write(tmp_path, scoped)
    assert read_hypotheses(tmp_path, ranking)[1] == []
    _write(tmp_path, scoped.replace("topic: [delivery]", "topic: [delivry]"))
    (problem,) = read_hypotheses(tmp_path, ranking)[1]
    assert f":{_line(scoped, 'scope:')}: `scope.tickets.topic` 'delivry' is on no ticket" in problem
    assert "did you mean `delivery`?" in problem
    _write(tmp_path, scoped.replace("attribute: ab_autorouting", "attribute: ab_routing"))
    (problem,) = read_hypotheses(tmp_path, ranking)[1]
    assert "`assignment.attribute` reads 'ab_routing'" in problem
