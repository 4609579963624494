"""Words in English and Russian (`reports/templates/labels.yaml`), and the names of pain
points and the texts of alerts written with them.

Pain points and alerts are stored with their English name; reports name them again in their
own language from the kind and the structured key or evidence stored alongside.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

TEMPLATES = Path(__file__).resolve().parents[1] / "reports" / "templates"


@cache
def _shipped() -> dict[str, dict[str, Any]]:
    return yaml.safe_load((TEMPLATES / "labels.yaml").read_text(encoding="utf-8"))


def labels(language: str, template_dir: Path | None = None) -> dict[str, Any]:
    """Words in `language`; a user's `labels.yaml` in `template_dir` overrides single entries,
    also inside groups such as `topic_names`."""
    words = dict(_shipped()[language])
    own = template_dir / "labels.yaml" if template_dir else None
    if own and own.exists():
        mine = (yaml.safe_load(own.read_text(encoding="utf-8")) or {}).get(language, {})
        for key, value in mine.items():
            group = isinstance(value, dict) and isinstance(words.get(key), dict)
            words[key] = {**words[key], **value} if group else value
    return words


def topic_name(topic: str, t: Mapping[str, Any]) -> str:
    """A ticket or comment topic as readers call it; a configured topic by its own name."""
    return t["topic_names"].get(topic, topic.replace("_", " "))


def pain_title(kind: str, key: str, evidence: Mapping[str, Any], t: Mapping[str, Any]) -> str:
    """The name of the pain point `key` of `kind` (see `tasks.pain_points`) in `t`'s language."""
    parts = key.split(":")
    fields: dict[str, Any] = {}
    if kind == "ticket_topic":
        fields = {"topic": topic_name(parts[1], t)}
    elif kind == "comment_topic":
        fields = {"topic": topic_name(parts[1], t), "segment": parts[2]}
    elif kind == "region":
        fields = {"region": parts[1]}
    elif kind == "peak_load":
        fields = {"hours": ", ".join(f"{hour}:00" for hour in evidence["peak_hours"])}
    elif kind == "funnel_step":
        fields = {"step": parts[1].replace("_", " "), "device": parts[2]}
    return _sentence(t["pain_titles"][kind].format(**fields))


def alert_text(kind: str, period: str, evidence: Mapping[str, Any], t: Mapping[str, Any]) -> str:
    """What the alert of `kind` raised for `period` says, from its evidence, in `t`'s language.

    Raises `KeyError` when the evidence lacks a field the wording needs.
    """
    fields = {"period": period, **evidence}
    if "metric" in evidence:
        metric = evidence["metric"]
        fields["metric"] = t["alert_metrics"].get(metric, t.get(metric, metric))
    if "cut" in evidence:
        where = t["alert_where"][evidence["cut"] or "all"]
        fields["where"] = where.format(group=evidence["group"])
    if "topic" in evidence:
        fields["topic"] = topic_name(evidence["topic"], t)
    if "active_share_by_month" in evidence:
        fields["month_1"], fields["month_2"], fields["month_3"] = evidence["active_share_by_month"]
    wording = t["alert_texts"]
    return _sentence(wording.get(kind, wording["metric_shift"]).format(**fields))


def reason_text(why: Mapping[str, Any], t: Mapping[str, Any]) -> str:
    """Why a pilot got its decision (`tasks.experiments.decide`'s `why`) in `t`'s language."""
    fields = dict(why)
    if "metric" in why:
        fields["metric"] = t[why["metric"]]
    if "metrics" in why:
        fields["metrics"] = ", ".join(t[metric] for metric in why["metrics"])
    fields["sequential"] = t["always_valid"] if why.get("sequential") else ""
    return t["reasons"][why["rule"]].format(**fields)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def titled(pain: pd.DataFrame, t: Mapping[str, Any]) -> pd.DataFrame:
    """Pain points (`kind`, `key`, `evidence`) with their `title` in `t`'s language."""
    columns = zip(pain["kind"], pain["key"], pain["evidence"], strict=True)
    return pain.assign(
        title=[pain_title(kind, key, evidence, t) for kind, key, evidence in columns]
    )
