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

from connectors.errors import ConfigError
from tasks.validation import read_yaml

TEMPLATES = Path(__file__).resolve().parents[1] / "reports" / "templates"


@cache
def _shipped() -> dict[str, dict[str, Any]]:
    return read_yaml(TEMPLATES / "labels.yaml", ConfigError).data


def labels(language: str, template_dir: Path | None = None) -> dict[str, Any]:
    """Words in `language`; a user's `labels.yaml` in `template_dir` overrides single entries,
    also inside groups such as `topic_names`."""
    words = dict(_shipped()[language])
    own = template_dir / "labels.yaml" if template_dir else None
    if own and own.exists():
        mine = (read_yaml(own, ConfigError).data or {}).get(language, {})
        for key, value in mine.items():
            group = isinstance(value, dict) and isinstance(words.get(key), dict)
            words[key] = {**words[key], **value} if group else value
    return words


def topic_name(topic: str, t: Mapping[str, Any]) -> str:
    """A ticket or comment topic as readers call it; a configured topic by its own name."""
    return t["topic_names"].get(topic, topic.replace("_", " "))


def pain_title(kind: str, key: str, evidence: Mapping[str, Any], t: Mapping[str, Any]) -> str:
    """The name of the pain point `key` of `kind` (see `tasks.pain_points`) in `t`'s language.
    Names in the key may hold colons themselves (a region, a funnel step, a segment)."""
    fields: dict[str, Any] = {}
    if kind == "ticket_topic":
        fields = {"topic": topic_name(key.partition(":")[2], t)}
    elif kind == "comment_topic":
        _, topic, segment = key.split(":", 2)
        fields = {"topic": topic_name(topic, t), "segment": segment}
    elif kind == "region":
        fields = {"region": key.partition(":")[2]}
    elif kind == "peak_load":
        fields = {"hours": ", ".join(f"{hour}:00" for hour in evidence["peak_hours"])}
    elif kind == "funnel_step":
        step, _, device = key.removeprefix("funnel:").rpartition(":")
        fields = {"step": step.replace("_", " "), "device": device}
    return _sentence(worded(t, "pain_titles", kind, fields))


def alert_text(kind: str, period: str, evidence: Mapping[str, Any], t: Mapping[str, Any]) -> str:
    """What the alert of `kind` raised for `period` says, from its evidence, in `t`'s language.

    Raises `ConfigError` when the wording needs a field the evidence lacks.
    """
    fields = {"period": period, **evidence}
    if "metric" in evidence:
        metric = evidence["metric"]
        fields["metric"] = t["alert_metrics"].get(metric, t.get(metric, metric))
    if "cut" in evidence:
        where = {"group": evidence["group"]}
        fields["where"] = worded(t, "alert_where", evidence["cut"] or "all", where)
    if "topic" in evidence:
        fields["topic"] = topic_name(evidence["topic"], t)
    if "active_share_by_month" in evidence:
        fields["month_1"], fields["month_2"], fields["month_3"] = evidence["active_share_by_month"]
    wording = kind if kind in t["alert_texts"] else "metric_shift"  # the metric drops share one
    return _sentence(worded(t, "alert_texts", wording, fields))


def reason_text(why: Mapping[str, Any], t: Mapping[str, Any]) -> str:
    """Why a pilot got its decision (`tasks.experiments.decide`'s `why`) in `t`'s language."""
    fields = dict(why)
    if "metric" in why:
        fields["metric"] = t[why["metric"]]
    if "metrics" in why:
        fields["metrics"] = ", ".join(t[metric] for metric in why["metrics"])
    fields["sequential"] = t["always_valid"] if why.get("sequential") else ""
    return worded(t, "reasons", why["rule"], fields)


def worded(t: Mapping[str, Any], group: str, name: str, fields: Mapping[str, Any]) -> str:
    """The wording `t[group][name]` filled in with `fields`; `ConfigError` naming the entry and
    the fields it may use when it does not fit them (a user's labels.yaml, or a stored row
    from an older cxloop)."""
    wording = t[group][name]
    try:
        return wording.format(**fields)
    except (KeyError, IndexError, ValueError) as exc:
        usable = ", ".join("{" + field + "}" for field in sorted(fields))
        raise ConfigError(
            f"labels.yaml: {t['lang']}.{group}.{name} ({wording!r}) does not fit its fields "
            f"({type(exc).__name__}: {exc}); it may use {usable}."
        ) from None


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def titled(pain: pd.DataFrame, t: Mapping[str, Any]) -> pd.DataFrame:
    """Pain points (`kind`, `key`, `evidence`) with their `title` in `t`'s language."""
    columns = zip(pain["kind"], pain["key"], pain["evidence"], strict=True)
    return pain.assign(
        title=[pain_title(kind, key, evidence, t) for kind, key, evidence in columns]
    )
