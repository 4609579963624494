"""Demo survey comments: variety, the topics the shipped taxonomy finds in them, the planted
packaging theme and the PII/XSS probes."""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import FrameType

import numpy as np
import pandas as pd
import pytest

from connectors import demo_comments
from connectors.demo_comments import (
    OFF_TOPIC_SHARE,
    PACKAGING_SHARE,
    PROBE_SHARE,
    TOPIC_THEMES,
    comments,
    compose,
)
from tasks.text import (
    Taxonomy,
    detect_language,
    discover_themes,
    proposed_topics,
    redact_pii_series,
    tag_topics,
)

# Comments per (theme, language) among the 11,173 of the demo company at seed 7.
DEMO_MIX = {
    ("promoter", "ru"): 4252,
    ("passive", "ru"): 2999,
    ("promoter", "en"): 1023,
    ("passive", "en"): 754,
    ("detractor", "ru"): 628,
    ("delivery", "ru"): 562,
    ("payment", "ru"): 203,
    ("login", "ru"): 195,
    ("delivery", "en"): 148,
    ("detractor", "en"): 146,
    ("returns", "ru"): 77,
    ("product_quality", "ru"): 66,
    ("login", "en"): 48,
    ("payment", "en"): 36,
    ("product_quality", "en"): 23,
    ("returns", "en"): 13,
}
PER_CELL = 600
PACKAGING = r"(?i)упаков|коробк|packag|\bbox"
PHONE = r"(?:\+7|8) \(?912\)? \d"
PROBE = rf"<script>|@example\.com|{PHONE}"


def demo_like(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` rows of theme and language drawn with the demo company's shares."""
    keys = list(DEMO_MIX)
    weights = np.array(list(DEMO_MIX.values()), dtype=float)
    cell = np.random.default_rng(seed).choice(len(keys), size=n, p=weights / weights.sum())
    theme = np.array([k[0] for k in keys], dtype=object)[cell]
    language = np.array([k[1] for k in keys], dtype=object)[cell]
    return theme, language


@pytest.fixture(scope="module")
def cells() -> pd.DataFrame:
    """`PER_CELL` comments per (theme, language) with their flags and the topics tagged."""
    theme = np.repeat(np.array([k[0] for k in DEMO_MIX], dtype=object), PER_CELL)
    language = np.repeat(np.array([k[1] for k in DEMO_MIX], dtype=object), PER_CELL)
    made = compose(np.random.default_rng(3), theme, language)
    frame = pd.DataFrame(
        {"theme": theme, "language": language, "text": made.text, "on_topic": made.on_topic}
    )
    hits = tag_topics(frame["text"], Taxonomy.default())
    topics = hits.groupby("text_index")["topic"].agg(frozenset)
    frame["topics"] = topics.reindex(frame.index).apply(
        lambda t: t if isinstance(t, frozenset) else frozenset()
    )
    return frame


def test_each_language_has_over_200_distinct_wordings_in_20k_comments() -> None:
    theme, language = demo_like(20_000, seed=1)
    text = pd.Series(comments(np.random.default_rng(2), theme, language))
    wording = text.str.replace(r"\d+", "#", regex=True)  # order numbers alone do not count
    distinct = wording.groupby(language).nunique()
    assert distinct["ru"] >= 200 and distinct["en"] >= 200, distinct.to_dict()
    per_theme = wording.groupby(theme).nunique()
    assert (per_theme[list(TOPIC_THEMES)] >= 30).all(), per_theme.to_dict()


def test_every_topic_theme_has_30_distinct_wordings_in_each_language(cells: pd.DataFrame) -> None:
    topical = cells[cells["theme"].isin(TOPIC_THEMES)]
    wording = topical["text"].str.replace(r"\d+", "#", regex=True)
    distinct = wording.groupby([topical["theme"], topical["language"]]).nunique()
    assert len(distinct) == 2 * len(TOPIC_THEMES) and (distinct >= 30).all(), distinct.to_dict()


@pytest.mark.parametrize("theme", TOPIC_THEMES)
def test_on_topic_comments_are_tagged_with_their_topic_alone(
    cells: pd.DataFrame, theme: str
) -> None:
    on = cells[(cells["theme"] == theme) & cells["on_topic"]]
    assert len(on) > 0.7 * 2 * PER_CELL
    tagged = on["topics"].apply(lambda t: theme in t)
    others = on["topics"].apply(lambda t: bool(t & (set(TOPIC_THEMES) - {theme})))
    assert tagged.mean() >= 0.9, on.loc[~tagged, "text"].head().tolist()
    assert others.mean() <= 0.05, on.loc[others, "text"].head().tolist()


@pytest.mark.parametrize("theme", TOPIC_THEMES)
def test_off_topic_comments_name_no_ticket_topic(cells: pd.DataFrame, theme: str) -> None:
    off = cells[(cells["theme"] == theme) & ~cells["on_topic"]]
    assert len(off) > 0.1 * 2 * PER_CELL
    named = off["topics"].apply(lambda t: bool(t & set(TOPIC_THEMES)))
    assert not named.any(), off.loc[named, "text"].head().tolist()


def test_off_topic_share_is_the_stated_share(cells: pd.DataFrame) -> None:
    topical = cells[cells["theme"].isin(TOPIC_THEMES)]
    share = 1 - topical["on_topic"].mean()
    se = np.sqrt(OFF_TOPIC_SHARE * (1 - OFF_TOPIC_SHARE) / len(topical))
    assert abs(share - OFF_TOPIC_SHARE) < 4 * se, share
    assert not cells.loc[~cells["theme"].isin(TOPIC_THEMES), "on_topic"].any()


def test_promoters_name_no_topic_and_passives_no_ticket_topic(cells: pd.DataFrame) -> None:
    promoters = cells[cells["theme"] == "promoter"]
    assert not promoters["topics"].apply(bool).any(), promoters["text"].head().tolist()
    passives = cells[cells["theme"] == "passive"]
    named = passives["topics"].apply(lambda t: bool(t & set(TOPIC_THEMES)))
    assert not named.any(), passives.loc[named, "text"].head().tolist()
    packaging = passives["text"].str.contains(PACKAGING)
    assert not passives.loc[packaging, "topics"].apply(bool).any()
    for language, group in packaging.groupby(passives["language"]):
        assert abs(group.mean() - PACKAGING_SHARE) < 0.1, (language, group.mean())
    assert not cells.loc[cells["theme"] != "passive", "text"].str.contains(PACKAGING).any()


@pytest.mark.parametrize("seed", [2, 3])
def test_theme_discovery_proposes_packaging_in_both_languages(seed: int) -> None:
    # What `cxloop themes --count 3` does on the demo company's ~11k comments.
    theme, language = demo_like(11_000, seed=seed + 100)
    text = pd.Series(comments(np.random.default_rng(seed), theme, language))
    texts = text.drop_duplicates().reset_index(drop=True)
    proposed = proposed_topics(discover_themes(texts, tag_topics(texts), 3))
    assert any("упаковка" in t.get("ru", []) for t in proposed.values()), proposed
    assert any("box" in t.get("en", []) for t in proposed.values()), proposed


def test_some_complaints_carry_a_phone_an_email_or_a_script_tag_that_redaction_removes(
    cells: pd.DataFrame,
) -> None:
    negative = cells["theme"].isin([*TOPIC_THEMES, "detractor"])
    probed = cells["text"].str.contains(PROBE)
    share = probed[negative].mean()
    se = np.sqrt(PROBE_SHARE * (1 - PROBE_SHARE) / negative.sum())
    assert abs(share - PROBE_SHARE) < 4 * se, share
    assert not probed[~negative].any()
    text = cells.loc[probed, "text"]
    assert text.str.contains(r"\+7 \(912\) \d{3}[- ]\d{2}[- ]\d{2}").any()
    assert (
        text.str.contains("8 \\(912\\)").any() and text.str.contains("+7 912 ", regex=False).any()
    )
    assert text.str.contains("@example.com", regex=False).any()
    assert text.str.contains("<script>alert('xss')</script>", regex=False).any()
    redacted = redact_pii_series(text.astype("string"))
    left = redacted.str.contains(rf"@example\.com|{PHONE}")
    assert not left.any(), redacted[left].head().tolist()


def test_some_comments_are_informal(cells: pd.DataFrame) -> None:
    text = cells["text"]
    russian = cells["language"] == "ru"
    unprobed = ~text.str.contains(PROBE)
    assert text.str.contains("[😡👎🤬😤🤷😐👍🙂🔥]").mean() > 0.02
    assert (text.str.match(r"[а-яa-z]") & (text == text.str.lower())).mean() > 0.05
    assert (~text.str.contains(r"[.!]$")).mean() > 0.1
    mixed = text[russian & unprobed].str.contains("[A-Za-z]")
    assert 0.005 < mixed.mean() < 0.1, mixed.mean()


def test_each_comment_reads_as_its_language(cells: pd.DataFrame) -> None:
    detected = detect_language(cells["text"]).to_numpy()
    assert (detected == cells["language"].to_numpy()).mean() > 0.98


def test_same_seed_gives_the_same_comments_and_another_seed_others() -> None:
    theme, language = demo_like(5_000, seed=4)
    first = comments(np.random.default_rng(11), theme, language)
    again = comments(np.random.default_rng(11), theme, language)
    other = comments(np.random.default_rng(12), theme, language)
    assert first.dtype == object and len(first) == len(theme)
    assert (first == again).all()
    assert (first != other).mean() > 0.5
    same = compose(np.random.default_rng(11), theme, language)
    assert (same.text == first).all()


def test_a_theme_or_language_without_templates_gets_no_comment() -> None:
    theme = np.array(["delivery", "unknown", "promoter", "delivery"], dtype=object)
    language = np.array(["ru", "ru", "de", "en"], dtype=object)
    text = comments(np.random.default_rng(0), theme, language)
    assert text[1] is None and text[2] is None
    assert isinstance(text[0], str) and isinstance(text[3], str)


def test_the_lines_run_do_not_grow_with_the_number_of_comments() -> None:
    # A Python loop over rows would run its lines once per row; loops over templates run as
    # often for any number of rows once every template is in use.
    source = demo_comments.__file__

    def lines_run(per_cell: int) -> int:
        theme = np.repeat(np.array([k[0] for k in DEMO_MIX], dtype=object), per_cell)
        language = np.repeat(np.array([k[1] for k in DEMO_MIX], dtype=object), per_cell)
        count = 0

        def trace(frame: FrameType, event: str, arg: object) -> Callable | None:
            nonlocal count
            if frame.f_code.co_filename != source:
                return None
            count += event == "line"
            return trace

        sys.settrace(trace)
        try:
            comments(np.random.default_rng(0), theme, language)
        finally:
            sys.settrace(None)
        return count

    lines_run(500)  # the first run also fills the caches
    small, large = lines_run(500), lines_run(2_500)
    assert small > 100 and large <= small + 10, (small, large)
