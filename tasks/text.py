"""Customer text: PII redaction, language, lemmas, topics, sentiment, themes and verbatims.

Lexicons, stop words and the default topic taxonomy live in `tasks/lexicons/`. Russian words
are lemmatised with pymorphy3, Latin-script words with a few English suffix rules; a corpus
is tokenised once and each distinct token lemmatised once, so 100k texts take seconds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from itertools import chain, combinations
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pymorphy3
import yaml

from connectors.errors import ConfigError

LEXICONS = Path(__file__).with_name("lexicons")
LANGUAGES = ("ru", "en")
T = TypeVar("T")

# Bidirectional embeddings, overrides, isolates and marks: customer text carrying them could
# reorder what a reader sees around it.
_BIDI_CONTROLS = dict.fromkeys(
    map(ord, "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
)
_EMAIL = re.compile(r"[\w.%+-]+@[\w-]+(?:\.[\w-]+)*\.(?:xn--[\w-]+|[^\W\d_]{2,})")
# Between the digit groups of a phone number people and word processors put up to three spaces
# (also no-break, thin, figure) and hyphens or dashes (also non-breaking hyphen, figure and en
# dash, minus), or one dot: never a dot and a space, which ends a sentence.
_SPACE_DASH = r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000\-\u2010-\u2015\u2212]"
_SEP = rf"(?:{_SPACE_DASH}{{0,3}}|\.)"
_GAP = rf"(?:{_SPACE_DASH}{{1,3}}|\.)"
_DASH = r"[\-\u2010-\u2015\u2212]"
# A phone is: +7 or 007, 8 (before 3xx, 4xx, 8xx, 9xx) or 7 (before 9xx), then a Russian
# ten-digit number; ten digits starting with 9, a Russian mobile (so a ten-digit INN of regions
# 90-99 is redacted too; other INNs stay); a North American number with separators or +1; any
# +/00 number of 9 to 15 digits; a bracketed area code of 3 to 5 digits, after +7 or 8 or
# alone; 3 and 3 digits before -xx-xx.
# It is not: part of a word, of a longer number or of an id (after #, №, a letter and hyphen),
# the decimals of an amount, a number followed by a currency or %.
_PHONE = re.compile(
    r"(?<![\w+])(?<!\w[-/\u2010-\u2015])(?<![#№])(?<![#№]\s)(?<!\d[.,])(?:"
    rf"(?:\+|00){_SEP}7{_SEP}\(?\d{{3}}\)?{_SEP}\d{{3}}{_SEP}\d{{2}}{_SEP}\d{{2}}"
    rf"|(?:8{_SEP}\(?[3489]|7{_SEP}\(?9)\d{{2}}\)?{_SEP}\d{{3}}{_SEP}\d{{2}}{_SEP}\d{{2}}"
    rf"|(?:(?:\+|00){_SEP}1{_SEP}|1{_GAP})?(?:\([2-9]\d{{2}}\){_SEP}|[2-9]\d{{2}}{_GAP})"
    rf"[2-9]\d{{2}}{_GAP}\d{{4}}"
    rf"|(?:\+|00){_SEP}\(?[1-9](?:\)?{_SEP}\(?\d){{8,14}}"
    rf"|\(?9\d{{2}}\)?{_SEP}\d{{3}}{_SEP}\d{{2}}{_SEP}\d{{2}}"
    rf"|(?:(?:(?:\+|00){_SEP}7|8){_SEP})?\(\d{{3,5}}\){_SEP}\d{{1,3}}{_SEP}\d{{2}}{_SEP}\d{{2}}"
    rf"|\d{{3}}{_GAP}\d{{3}}{_DASH}\d{{2}}{_DASH}\d{{2}}"
    r")(?!\w|[-.,/\u2010-\u2015]\d|\s?(?i:[%₽$€£]|руб|rub|usd|eur))"
)
_TOKEN = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)*|[.,;:!?()]")
_KEYWORD = re.compile(r"[^\W\d_]+(?:[\s-]+[^\W\d_]+)*")
_PUNCTUATION = frozenset(".,;:!?()")
_NOT = re.compile(r"n['’]t\b")
_CYRILLIC = re.compile(r"[а-яё]")
SHARED_TRANSLATIONS = 2  # keywords a Russian and an English theme share to be one topic

_EN_IRREGULAR = {
    "am": "be", "is": "be", "are": "be", "was": "be", "were": "be", "been": "be",
    "has": "have", "had": "have", "does": "do", "did": "do", "done": "do",
    "goes": "go", "went": "go", "gone": "go", "ca": "can", "wo": "will",
    "paid": "pay", "bought": "buy", "sent": "send", "got": "get", "gotten": "get",
    "came": "come", "took": "take", "taken": "take", "made": "make", "said": "say",
    "told": "tell", "gave": "give", "given": "give", "found": "find", "kept": "keep",
    "felt": "feel", "spent": "spend", "thought": "think", "lost": "lose", "broke": "break",
    "broken": "break", "tore": "tear", "torn": "tear", "stole": "steal", "stolen": "steal",
    "froze": "freeze", "added": "add", "shoes": "shoe", "children": "child",
    "men": "man", "women": "woman",
}  # fmt: skip
# British spelling doubles a final l after an unstressed vowel: cancelled, travelling.
_EN_DOUBLED_L = re.compile(r"[aeiouy][^aeiouy]+ell$")
_EN_UNCHANGED = frozenset(
    {"always", "news", "nothing", "something", "anything", "everything", "morning", "evening"}
    | {"during", "ceiling"}
)
# Stems that lost a final "e" to -ed/-ing: short consonant-vowel-consonant stems (make, use,
# rate) and endings English words rarely have without "e" (arrive, update, damage, close...).
_EN_NEEDS_E = re.compile(
    r"(?:^[^aeiouy]*[aeiouy][^aeiouwxy]|v|[^aeiou]at|iz|[bcdgkptv]l|ag|[rd]g|chang|rrang"
    r"|(?:[aeiou]|[^y]n)c|[aeiouy]s|[^aeiouy]ut|[sc]ur|quir|[^aeiou]in)$"
)


def neutralise_bidi(value: T) -> T:
    """`value` without bidirectional controls (U+202A–U+202E, U+2066–U+2069, U+200E, U+200F,
    U+061C) if it is text, a `Markup` staying `Markup`; anything else as it is.

    Letters keep their own direction; only what embeds, overrides, isolates or marks one goes.
    """
    return value.translate(_BIDI_CONTROLS) if isinstance(value, str) else value


def redact_pii(text: str | None) -> str | None:
    """`text` with e-mail addresses replaced by "[email]" and phone numbers by "[phone]".

    Bidirectional controls are removed first: one inside a number would hide it from the
    patterns, and the number would show whole once reports drop the control.
    """
    if text is None:
        return None
    return _PHONE.sub("[phone]", _EMAIL.sub("[email]", neutralise_bidi(text)))


def redact_pii_series(s: pd.Series) -> pd.Series:
    """`s` with e-mail addresses and phone numbers redacted as in `redact_pii`; NA stays NA."""
    text = s.str.translate(_BIDI_CONTROLS)
    return text.str.replace(_EMAIL, "[email]", regex=True).str.replace(
        _PHONE, "[phone]", regex=True
    )


def detect_language(s: pd.Series) -> pd.Series:
    """Language per text: "ru" if it has more Cyrillic (а–я, ё, either case) than Latin
    (A–Z, a–z) letters, else "en" (also NA).

    Counted on the UTF-8 bytes of all texts at once: a Latin letter is one ASCII byte, a
    Russian letter a lead byte D0 or D1 with a second byte in its range.
    """
    text = pa.array(s.astype(object), type=pa.large_string(), from_pandas=True).fill_null("")
    offsets = np.frombuffer(text.buffers()[1], dtype=np.int64)[text.offset :][: len(text) + 1]
    data = np.frombuffer(text.buffers()[2] or b"", dtype=np.uint8)[: offsets[-1]]
    lower = data | 0x20  # ASCII letters in lower case; a UTF-8 continuation byte stays ≥ 0xA0
    latin = (lower >= ord("a")) & (lower <= ord("z"))
    lead, second = data[:-1], data[1:]
    russian = ((lead == 0xD0) & ((second == 0x81) | ((second >= 0x90) & (second <= 0xBF)))) | (
        (lead == 0xD1) & ((second == 0x91) | ((second >= 0x80) & (second <= 0x8F)))
    )
    # Per text: letters before its end minus before its start (a pair never spans two texts:
    # a text's last byte is never a lead byte).
    counts = [np.concatenate([[0], np.cumsum(flags, dtype=np.int64)]) for flags in (latin, russian)]
    latin_n, russian_n = (np.diff(c[np.minimum(offsets, len(c) - 1)]) for c in counts)
    return pd.Series(np.where(russian_n > latin_n, "ru", "en"), index=s.index, dtype="string")


def lemmas(text: str, language: str) -> list[str]:
    """Lower-case lemmas of the words in `text`, "ё" spelled "е".

    With `language` "ru", Cyrillic words go through pymorphy3; Latin-script words always get
    the English suffix rules; anything else is kept as written.
    """
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {LANGUAGES}, got {language!r}")
    words = _TOKEN.findall(_NOT.sub(" not", text.lower()))
    return [_lemma(word, language) for word in words if word not in _PUNCTUATION]


@dataclass(frozen=True)
class Taxonomy:
    """Topics and the keywords that signal them: topic → language → keywords.

    A keyword is a word or a phrase; it is lemmatised, so "опоздал" and "опоздать" are the
    same keyword, and a phrase matches its lemmas in a row. A text is matched against the
    keywords of every language.
    """

    keywords: dict[str, dict[str, list[str]]]

    @classmethod
    def from_dict(cls, raw: Mapping[str, Mapping[str, list[str]]]) -> Taxonomy:
        """Validated taxonomy from `{topic: {language: [keyword, ...]}}`."""
        if not isinstance(raw, Mapping) or not raw:
            raise ConfigError("topic taxonomy must map topic names to {language: [keywords]}")
        keywords: dict[str, dict[str, list[str]]] = {}
        for topic, by_language in raw.items():
            if not isinstance(by_language, Mapping) or not by_language:
                raise ConfigError(f"topic {topic!r}: give keywords per language, e.g. en: [...]")
            for language, words in by_language.items():
                if language not in LANGUAGES:
                    raise ConfigError(
                        f"topic {topic!r}: language {language!r} is not one of {LANGUAGES}"
                    )
                if not isinstance(words, list) or not all(
                    isinstance(w, str) and _KEYWORD.fullmatch(w.strip()) for w in words
                ):
                    raise ConfigError(
                        f"topic {topic!r}, language {language!r}: keywords must be a list of "
                        "words or phrases made of letters (digits and punctuation never match)"
                    )
            keywords[str(topic)] = {lang: list(words) for lang, words in by_language.items()}
        return cls(keywords)

    @classmethod
    def default(cls, extra: Mapping[str, Mapping[str, list[str]]] | None = None) -> Taxonomy:
        """The taxonomy shipped in `tasks/lexicons/topics.yaml`, plus `extra` topics (a topic
        named like a shipped one replaces its keywords)."""
        return cls.from_dict({**_read_yaml("topics.yaml"), **(extra or {})})

    def phrases(self) -> dict[str, tuple[str, ...]]:
        """Lemmatised keyword (lemmas joined by single spaces) → topics it signals."""
        found: dict[str, set[str]] = {}
        for topic, by_language in self.keywords.items():
            for language, words in by_language.items():
                for word in words:
                    found.setdefault(" ".join(lemmas(word, language)), set()).add(topic)
        found.pop("", None)
        return {phrase: tuple(sorted(topics)) for phrase, topics in found.items()}


def tag_topics(texts: pd.Series, taxonomy: Taxonomy | None = None) -> pd.DataFrame:
    """One row per (text, topic) hit: `text_index` (the text's label in `texts`) and `topic`.

    A text can have several topics or none; texts without a hit have no row. `texts` should
    have a unique index. Uses `Taxonomy.default()` when no taxonomy is given.
    """
    taxonomy = taxonomy or Taxonomy.default()
    tokens = _tokens(texts)
    code = tokens["lemma"].cat.codes.to_numpy().astype(np.int64)
    vocabulary = {lemma: i for i, lemma in enumerate(tokens["lemma"].cat.categories)}
    row = tokens["row"].to_numpy()
    by_length: dict[int, dict[tuple[int, ...], tuple[str, ...]]] = {}
    for phrase, topics in taxonomy.phrases().items():
        words = phrase.split(" ")
        if all(w in vocabulary for w in words):  # else no text has it
            key = tuple(vocabulary[w] for w in words)
            by_length.setdefault(len(key), {})[key] = topics
    hits = []
    for length, table in by_length.items():
        start = np.arange(max(len(code) - length + 1, 0))
        start = start[row[start + length - 1] == row[start]]
        # Matched word by word: `state` numbers the phrase prefix each start has matched.
        state = np.zeros(len(start), dtype=np.int64)
        ids: dict[tuple[int, ...], int] = {(): 0}
        for offset in range(length):
            level = sorted({key[: offset + 1] for key in table})
            steps = pd.Index([ids[p[:-1]] * len(vocabulary) + p[-1] for p in level])
            at = steps.get_indexer(state * len(vocabulary) + code[start + offset])
            start, state = start[at >= 0], at[at >= 0]
            ids = {p: i for i, p in enumerate(level)}
        topics = np.empty(len(ids), dtype=object)
        for phrase, i in ids.items():
            topics[i] = table[phrase]
        hits.append(pd.Series(topics[state], index=row[start], dtype=object).explode())
    found = pd.concat(hits) if hits else pd.Series(dtype=object)
    pairs = (
        pd.DataFrame({"row": found.index.to_numpy(dtype=int), "topic": found.to_numpy()})
        .drop_duplicates()
        .sort_values(["row", "topic"], ignore_index=True)
    )
    return pd.DataFrame(
        {"text_index": texts.index[pairs["row"].to_numpy()], "topic": pairs["topic"].astype(str)}
    )


def sentiment(texts: pd.Series) -> pd.DataFrame:
    """`score` in [-1, 1] and `label` ("negative", "neutral", "positive") per text, same index.

    The score is the sum s of the lexicon polarities of a text's words, squashed as
    s / sqrt(s² + 4). A negator flips the sentiment words among the next three words of its
    clause (punctuation and "but"/"но" end a clause); a negated negative word flips at half
    strength, so "not bad" is mildly positive while "не понравилось" is plainly negative. An
    intensifier ("очень", "very") makes the sentiment words among the next two 1.5× stronger.
    |score| < 0.05 is neutral; empty or NA text scores 0.
    """
    lexicon = _lexicon()
    tokens = _tokens(texts).astype({"lemma": object})
    lemma = tokens["lemma"]
    row = tokens["row"].to_numpy()
    starts_text = np.r_[True, row[1:] != row[:-1]] if len(row) else np.zeros(0, dtype=bool)
    breaks = lemma.isin(lexicon.clause_breaks | _PUNCTUATION).to_numpy()
    clause = np.cumsum(starts_text | breaks)
    polarity = lemma.map(lexicon.polarity).fillna(0.0).to_numpy(dtype=float)
    negated = _follows(lemma.isin(lexicon.negators).to_numpy(), clause, 3)
    polarity = np.where(negated, np.where(polarity > 0, -polarity, -0.5 * polarity), polarity)
    intensified = _follows(lemma.isin(lexicon.intensifiers).to_numpy(), clause, 2)
    polarity = np.where(intensified, 1.5 * polarity, polarity)
    total = np.bincount(row, weights=polarity, minlength=len(texts))
    score = total / np.sqrt(total**2 + 4)
    label = np.select([score >= 0.05, score <= -0.05], ["positive", "negative"], "neutral")
    return pd.DataFrame({"score": score, "label": label}, index=texts.index)


def discover_themes(texts: pd.Series, tagged: pd.DataFrame, n_themes: int = 5) -> pd.DataFrame:
    """Themes among texts `tagged` gave no topic, most texts first.

    One row per theme: `theme` (its top three lemmas joined by " / "), `keywords` (up to eight
    top lemmas), `n_texts` (texts whose strongest theme it is) and `examples` (up to three
    redacted texts that weigh most on it). TF-IDF on lemmas, without stop words and lemmas
    found in fewer than two texts, factorised by NMF into at most `n_themes` themes. Empty
    when fewer than two untagged texts share a word.
    """
    # scikit-learn takes about a second to import and only theme discovery needs it.
    from sklearn.decomposition import NMF
    from sklearn.feature_extraction.text import TfidfVectorizer

    columns = ["theme", "keywords", "n_texts", "examples"]
    untagged = texts[~texts.index.isin(tagged["text_index"])].dropna()
    tokens = _tokens(untagged).astype({"lemma": object})
    lexicon = _lexicon()
    words = tokens[
        (tokens["lemma"].str.len() > 1)
        & tokens["lemma"].str.isalpha()
        & ~tokens["lemma"].isin(lexicon.stopwords)
    ]
    spread = words.drop_duplicates(["row", "lemma"])["lemma"].value_counts()
    vocabulary = sorted(spread.index[spread >= 2])
    documents = words.groupby("row")["lemma"].agg(" ".join)
    if len(documents) < 2 or not vocabulary:
        return pd.DataFrame(columns=columns)
    vectorizer = TfidfVectorizer(vocabulary=vocabulary, token_pattern=r"\S+", lowercase=False)
    matrix = vectorizer.fit_transform(documents)
    # nndsvda starts from a randomised SVD: a fixed seed gives the same themes on every run.
    model = NMF(
        n_components=min(n_themes, *matrix.shape), init="nndsvda", max_iter=1000, random_state=0
    )
    weights = model.fit_transform(matrix)
    # A component no text loads on spreads evenly over all lemmas and would join every theme.
    used = (weights.max(axis=0) > 0) & (model.components_.max(axis=1) > 0)
    if not used.any():
        return pd.DataFrame(columns=columns)
    weights = weights[:, used]
    scale = np.linalg.norm(model.components_[used], axis=1)
    components = model.components_[used] / scale[:, None]
    membership = np.eye(len(scale))[_theme_groups(components)]
    membership = membership[:, membership.any(axis=0)]
    weights = (weights * scale) @ membership
    components = membership.T @ components
    terms = vectorizer.get_feature_names_out()
    strongest = np.where(weights.max(axis=1) > 0, weights.argmax(axis=1), -1)
    originals = redact_pii_series(untagged.iloc[documents.index.to_numpy()].astype("string"))
    themes = []
    for theme, loadings in enumerate(components):
        members = np.flatnonzero(strongest == theme)
        if not len(members):
            continue
        top = [terms[i] for i in np.argsort(-loadings)[:8] if loadings[i] > 0]
        best = members[np.argsort(-weights[members, theme], kind="stable")]
        themes.append(
            {
                "theme": " / ".join(top[:3]),
                "keywords": top,
                "n_texts": len(members),
                "examples": originals.iloc[best].drop_duplicates().head(3).tolist(),
            }
        )
    if not themes:
        return pd.DataFrame(columns=columns)
    return pd.DataFrame(themes).sort_values("n_texts", ascending=False, ignore_index=True)


def proposed_topics(themes: pd.DataFrame) -> dict[str, dict[str, list[str]]]:
    """`discover_themes` rows as taxonomy entries to paste under `topics:`, named after each
    theme's top lemma, keywords split by language.

    A Russian theme and an English one sharing at least `SHARED_TRANSLATIONS` keywords by
    `lexicons/translations.yaml` are one topic in two languages, named after the English one.
    """
    split = [_by_language(keywords) for keywords in themes["keywords"]]
    russian_of = _translated_partners(split)
    proposed = {}
    for i, (keywords, languages) in enumerate(zip(themes["keywords"], split, strict=True)):
        if i in russian_of.values():
            continue
        if i in russian_of:
            languages = {"ru": split[russian_of[i]]["ru"], **languages}
        proposed[keywords[0]] = languages
    return proposed


def _by_language(keywords: list[str]) -> dict[str, list[str]]:
    by_language = {"ru": [w for w in keywords if _CYRILLIC.search(w)]}
    by_language["en"] = [w for w in keywords if w not in by_language["ru"]]
    return {lang: words for lang, words in by_language.items() if words}


def _translated_partners(split: list[dict[str, list[str]]]) -> dict[int, int]:
    """English-only theme → the Russian-only theme whose translated keywords it shares most
    (at least `SHARED_TRANSLATIONS`), each theme in one pair at most."""
    translations = _translations()
    english = [i for i, languages in enumerate(split) if list(languages) == ["en"]]
    pairs: dict[int, int] = {}
    for i, languages in enumerate(split):
        if list(languages) != ["ru"]:
            continue
        said = set().union(*(translations.get(word, frozenset()) for word in languages["ru"]))
        shared = {j: len(said & set(split[j]["en"])) for j in english if j not in pairs}
        best = max(shared, key=shared.__getitem__, default=None)
        if best is not None and shared[best] >= SHARED_TRANSLATIONS:
            pairs[best] = i
    return pairs


@cache
def _translations() -> dict[str, frozenset[str]]:
    """Russian lemma → its English lemmas, from `lexicons/translations.yaml`."""
    return {
        _lemma(ru, "ru"): frozenset(_lemma(en, "en") for en in english)
        for ru, english in _read_yaml("translations.yaml").items()
    }


def verbatims(
    texts: pd.DataFrame, by: str, n: int = 3, text: str = "text", first: str | None = None
) -> pd.DataFrame:
    """Up to `n` representative rows of `texts` per value of `by`, `text` redacted.

    Adds a `sentiment` column (the score from `sentiment`). Within a group, rows whose boolean
    column `first` is true come first; then texts of typical length (word count within the
    group's interquartile range), then the most negative, then the closest to the group's
    median length: a pain point is best shown by an ordinary complaint, not a one-word rant or
    an essay. Rows without `by` or `text` and repeated texts are skipped; groups come out in
    sorted order.
    """
    present = texts[texts[by].notna() & texts[text].notna()]
    rows = present.assign(**{text: redact_pii_series(present[text].astype("string"))})
    rows = rows[rows[text].str.strip().str.len() > 0].drop_duplicates([by, text])
    rows = rows.assign(sentiment=sentiment(rows[text])["score"])
    words = rows[text].str.split().str.len()
    groups = words.groupby(rows[by])
    typical = words.between(groups.transform("quantile", 0.25), groups.transform("quantile", 0.75))
    distance = (words - groups.transform("median")).abs()
    group_code = pd.factorize(rows[by], sort=True)[0]
    preferred = rows[first].to_numpy(bool) if first else np.zeros(len(rows), bool)
    order = np.lexsort((distance, rows["sentiment"], ~typical, ~preferred, group_code))
    ranked = rows.iloc[order]
    return ranked[ranked.groupby(by).cumcount() < n]


@dataclass(frozen=True)
class _Lexicon:
    polarity: dict[str, float]
    negators: frozenset[str]
    intensifiers: frozenset[str]
    clause_breaks: frozenset[str]
    stopwords: frozenset[str]


@cache
def _lexicon() -> _Lexicon:
    """Lexicons from `tasks/lexicons`, every entry lemmatised like the texts it is matched to."""
    polarity: dict[str, float] = {}
    for language in LANGUAGES:
        lines = (LEXICONS / f"sentiment_{language}.tsv").read_text(encoding="utf-8").splitlines()
        for line in lines:
            if line.strip() and not line.startswith("#"):
                word, value = line.split("\t")
                polarity[_lemma(word, language)] = float(value)
    modifiers = _read_yaml("modifiers.yaml")

    def lemmatised(by_language: Mapping[str, list[str]]) -> frozenset[str]:
        return frozenset(_lemma(w, lang) for lang, words in by_language.items() for w in words)

    negators = lemmatised(modifiers["negators"])
    breaks = lemmatised(modifiers["clause_breaks"])
    return _Lexicon(
        polarity=polarity,
        negators=negators,
        intensifiers=lemmatised(modifiers["intensifiers"]),
        clause_breaks=breaks,
        stopwords=lemmatised(_read_yaml("stopwords.yaml")) | negators | breaks,
    )


def _read_yaml(name: str) -> dict:
    return yaml.safe_load((LEXICONS / name).read_text(encoding="utf-8"))


def _tokens(texts: pd.Series) -> pd.DataFrame:
    """One row per token in text order: `row` (position of its text in `texts`) and `lemma`
    (categorical).

    Tokens are words and clause punctuation; "n't" becomes "not". Each distinct word is
    lemmatised once per language, by the language of its text.
    """
    lowered = texts.astype("string").str.lower().fillna("").to_numpy(dtype=object)
    per_text = [_TOKEN.findall(_NOT.sub(" not", text)) for text in lowered]
    counts = np.fromiter(map(len, per_text), dtype=int, count=len(per_text))
    row = np.repeat(np.arange(len(per_text)), counts)
    codes, distinct = pd.factorize(np.fromiter(chain.from_iterable(per_text), dtype=object))
    language = detect_language(texts).to_numpy()[row]
    # Lemmas as codes into one vocabulary: matching phrases on integers, not on strings.
    tables, lemmas = {}, []
    for lang in LANGUAGES:
        needed = pd.unique(codes[language == lang])
        tables[lang] = needed
        lemmas += [_lemma(word, lang) for word in distinct[needed]]
    lemma_code, vocabulary = pd.factorize(np.array(lemmas, dtype=object))
    code = np.empty(len(row), dtype=np.int64)
    offset = 0
    for lang, needed in tables.items():
        table = np.full(len(distinct), -1, dtype=np.int64)
        table[needed] = lemma_code[offset : offset + len(needed)]
        offset += len(needed)
        code[language == lang] = table[codes[language == lang]]
    lemma = pd.Categorical.from_codes(code, categories=pd.Index(vocabulary, dtype=object))
    return pd.DataFrame({"row": row, "lemma": lemma})


@lru_cache(maxsize=1_000_000)
def _lemma(word: str, language: str) -> str:
    if language == "ru" and _CYRILLIC.search(word):
        return _morph().parse(word)[0].normal_form.replace("ё", "е")
    if word.isascii() and word.isalpha():
        return _english_lemma(word)
    return word.replace("ё", "е")


@cache
def _morph() -> pymorphy3.MorphAnalyzer:
    return pymorphy3.MorphAnalyzer(lang="ru")


def _english_lemma(word: str) -> str:
    """Base form by suffix rules: plural -s/-es/-ies, -ed, -ing, and a few irregular forms."""
    if word in _EN_IRREGULAR:
        return _EN_IRREGULAR[word]
    if len(word) <= 3 or word in _EN_UNCHANGED:
        return word
    if word.endswith(("ies", "ied")) and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "ches", "shes", "xes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    for suffix in ("ing", "ed"):
        stem = word[: -len(suffix)]
        if word.endswith(suffix) and not word.endswith("eed") and re.search("[aeiouy]", stem):
            if len(stem) > 2 and stem[-1] == stem[-2] and stem[-1] not in "lszaeiou":
                return stem[:-1]
            if _EN_DOUBLED_L.search(stem):
                return stem[:-1]
            return stem + "e" if _EN_NEEDS_E.search(stem) else stem
    return word


def _theme_groups(components: np.ndarray, top: int = 5, shared: int = 2) -> np.ndarray:
    """Theme number per NMF component: components sharing `shared` of their `top` lemmas join.

    Asked for more themes than the texts hold, NMF splits one theme into near-copies (one per
    frequent phrasing); joining them keeps its texts together.
    """
    tops = [{i for i in np.argsort(-row)[:top] if row[i] > 0} for row in components]
    group = np.arange(len(tops))
    for i, j in combinations(range(len(tops)), 2):
        if len(tops[i] & tops[j]) >= shared:
            group[group == group[j]] = group[i]
    return group


def _follows(flag: np.ndarray, clause: np.ndarray, window: int) -> np.ndarray:
    """True where a flagged token is among the `window` tokens before, in the same clause."""
    out = np.zeros(len(flag), dtype=bool)
    for k in range(1, window + 1):
        out[k:] |= flag[:-k] & (clause[k:] == clause[:-k])
    return out
