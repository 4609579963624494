"""The HTML index: autoescaped customer text, the numbers a reader needs, no network fetches."""

from __future__ import annotations

import re

import pandas as pd

from tasks import store
from tasks.reporting import effect, write_index


def test_effect_formats_relative_and_absolute_values() -> None:
    assert effect(-0.4, True) == "-40.0%"
    assert effect(8, False) == "+8.00"
    assert effect(float("nan"), False) == "n/a"


def test_index_escapes_customer_text_and_shows_scores(tmp_path) -> None:
    engine = store.open_store(f"sqlite:///{tmp_path / 'store.db'}")
    pain = pd.DataFrame(
        [
            {
                "period": "2026-05..2026-10", "key": "ticket:delivery", "kind": "ticket_topic",
                "title": "Tickets about delivery", "rank": 1, "reach": 4000, "reach_share": 0.2,
                "impact": 30.0, "impact_ci_low": 27.0, "impact_ci_high": 33.0, "confidence": 0.9,
                "effort": 2.0, "effort_is_default": True, "score": 270.0,
                "evidence": {"tickets": 5000, "nps_affected": 5.0, "nps_unaffected": 35.0,
                             "verbatims": ["<script>alert('x')</script> late again"]},
                "computed_at": store.now_utc(),
            }
        ]
    )  # fmt: skip
    store.save_rows(engine, store.PainPoint, pain, ("period", "key"))
    html = write_index(engine, tmp_path / "out", []).read_text(encoding="utf-8")
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; late again" in html
    assert "270.0" in html and "Tickets about delivery" in html
    assert not re.search(r"(src|href)=\"https?://", html)
    assert store.row_counts(engine)["report"] == 1
