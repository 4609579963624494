"""Customer text: redaction, language, lemmas, topics, sentiment, themes and verbatims."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest

from connectors.demo import generate
from connectors.errors import ConfigError
from tasks.text import (
    Taxonomy,
    detect_language,
    discover_themes,
    lemmas,
    proposed_topics,
    redact_pii,
    redact_pii_series,
    sentiment,
    tag_topics,
    verbatims,
)

PII = [
    ("Перезвоните мне: +7 (912) 345-67-89", "Перезвоните мне: [phone]"),
    ("мой номер 8 912 345 67 89, жду", "мой номер [phone], жду"),
    ("тел 89123456789.", "тел [phone]."),
    ("горячая линия 8 (800) 555-35-35", "горячая линия [phone]"),
    ("UK office: +44 20 7946 0958", "UK office: [phone]"),
    ("call 912 345-67-89 please", "call [phone] please"),
    ("пишите на ivan.petrov@mail.ru или +79123456789", "пишите на [email] или [phone]"),
    ("Contact: jane_doe+cx@example.co.uk", "Contact: [email]"),
    ("мобильный 9123456789, жду", "мобильный [phone], жду"),
    ("from abroad: 0044 20 7946 0958", "from abroad: [phone]"),
    ("US cell 415-555-2671.", "US cell [phone]."),
    ("тел. 8\u2011912\u2011345\u201167\u201189", "тел. [phone]"),
    ("ПОЧТА@ПРИМЕР.РФ или +7\u00a0912\u00a0345\u00a067\u00a089", "[email] или [phone]"),
]
NOT_PII = [
    "order 12345 still not here",
    "заказ №123456789 от 2026-10-01",
    "I'd rate it 9/10",
    "оценка 10 из 10, цена 1 299 руб, приеду в 18:30",
    "ticket #20261001 opened on 01.10.2026",
    "накладная 8912345678901234 в пути",
]


@pytest.mark.parametrize(("text", "expected"), PII)
def test_redact_pii_replaces_emails_and_phones(text: str, expected: str) -> None:
    assert redact_pii(text) == expected


@pytest.mark.parametrize("text", NOT_PII)
def test_redact_pii_leaves_order_numbers_dates_and_scores(text: str) -> None:
    assert redact_pii(text) == text


def test_a_bare_ten_digit_number_is_a_phone_only_when_it_starts_with_9() -> None:
    # Nothing else tells a Russian mobile from a ten-digit INN: INNs of regions 90-99 go too.
    assert redact_pii("ИНН 9102012345") == "ИНН [phone]"
    assert redact_pii("ИНН 7707083893, id 1234567890") == "ИНН 7707083893, id 1234567890"


def test_redact_pii_series_matches_scalar_and_keeps_missing() -> None:
    values = [t for t, _ in PII] + NOT_PII + [None]
    texts = pd.Series(values, index=range(10, 10 + len(values)))
    redacted = redact_pii_series(texts)
    assert redacted.index.equals(texts.index)
    assert redacted.iloc[:-1].tolist() == [e for _, e in PII] + NOT_PII
    assert pd.isna(redacted.iloc[-1])
    assert redact_pii(None) is None


def test_detect_language_by_majority_script() -> None:
    texts = pd.Series(
        [
            "Привет, курьер опять опоздал",
            "The courier was late",
            "Заказ order 12 не пришёл",
            "Ordered at shop Ромашка, never arrived",
            None,
        ]
    )
    assert detect_language(texts).tolist() == ["ru", "en", "ru", "en", "en"]


def test_detect_language_counts_letters_as_the_regular_expressions_do() -> None:
    rng = np.random.default_rng(5)
    alphabet = list("абвёЁяЯюАzZaAqЀѐҐђΩé1 ,-😀ﬀ")
    texts = pd.Series(["".join(rng.choice(alphabet, rng.integers(0, 9))) for _ in range(3000)])
    texts[::50] = None
    text = texts.astype("string").fillna("")
    russian = text.str.count(r"[а-яёА-ЯЁ]") > text.str.count(r"[A-Za-z]")
    expected = np.where(russian, "ru", "en").tolist()
    assert detect_language(texts).tolist() == expected
    assert detect_language(texts.iloc[7:]).tolist() == expected[7:]  # a slice's offsets


def test_lemmas_in_both_languages() -> None:
    assert lemmas("Курьеры опоздали с доставкой!", "ru") == ["курьер", "опоздать", "с", "доставка"]
    assert lemmas("Deliveries arrived damaged; I can't log in", "en") == [
        "delivery",
        "arrive",
        "damage",
        "i",
        "can",
        "not",
        "log",
        "in",
    ]
    assert lemmas("приложение app crashes", "ru") == ["приложение", "app", "crash"]


def test_lemmas_rejects_unknown_language() -> None:
    with pytest.raises(ValueError, match="language"):
        lemmas("hola", "es")


@pytest.mark.parametrize(
    ("text", "topic"),
    [
        ("Курьер опоздал на два дня, доставка ужасная", "delivery"),
        ("Не могу войти в личный кабинет", "login"),
        ("The courier was late again", "delivery"),
        ("Refund still not processed", "returns"),
        ("I can't log in to the site", "login"),
        ("Списали деньги с карты дважды", "payment"),
        ("Оператор поддержки нахамил и бросил трубку", "support"),
        ("Цены опять подняли, очень дорого", "price"),
        ("Приложение вылетает после обновления", "app_website"),
        ("Товар пришёл бракованный, качество ужасное", "product_quality"),
    ],
)
def test_tag_topics_finds_the_topic(text: str, topic: str) -> None:
    tagged = tag_topics(pd.Series([text]))
    assert topic in tagged["topic"].tolist()


def test_tag_topics_gives_several_topics_per_text_and_keeps_labels() -> None:
    texts = pd.Series(
        ["Курьер опоздал, а поддержка не отвечает", "Хороший магазин", "Refund and delivery"],
        index=["r1", "r2", "r3"],
    )
    tagged = tag_topics(texts)
    assert list(tagged.columns) == ["text_index", "topic"]
    assert set(map(tuple, tagged.to_numpy())) == {
        ("r1", "delivery"),
        ("r1", "support"),
        ("r3", "delivery"),
        ("r3", "returns"),
    }


def test_tag_topics_with_custom_taxonomy_matches_phrases_in_order() -> None:
    taxonomy = Taxonomy.from_dict({"packaging": {"en": ["torn box"], "ru": ["порванная упаковка"]}})
    texts = pd.Series(
        ["A torn box again", "box torn", "Снова порванные упаковки", "упаковка", "all torn", "box"]
    )
    assert tag_topics(texts, taxonomy)["text_index"].tolist() == [0, 2]


@pytest.mark.parametrize(
    "raw",
    [
        {},
        {"delivery": ["courier"]},
        {"delivery": {"de": ["Kurier"]}},
        {"delivery": {"en": "courier"}},
        {"delivery": {"en": ["courier", ""]}},
        {"login": {"en": ["2fa"]}},
    ],
)
def test_taxonomy_rejects_malformed_config(raw: dict) -> None:
    with pytest.raises(ConfigError):
        Taxonomy.from_dict(raw)


def test_default_taxonomy_covers_the_core_topics() -> None:
    topics = set(Taxonomy.default().keywords)
    assert {
        "delivery",
        "payment",
        "returns",
        "login",
        "product_quality",
        "support",
        "price",
        "app_website",
    } <= topics


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("не понравилась доставка", "negative"),
        ("всё отлично, спасибо", "positive"),
        ("всё отлично", "positive"),
        ("очень плохо", "negative"),
        ("неплохо", "positive"),
        ("terrible support, never again", "negative"),
        ("Great service, thank you!", "positive"),
        ("Приложение не работает", "negative"),
        ("It doesn't work", "negative"),
        ("Курьер не опоздал, всё без проблем", "positive"),
        ("Не очень хорошо", "negative"),
        ("Доставка быстрая, но курьер нахамил", "negative"),
        ("Заказ номер 12345", "neutral"),
        ("", "neutral"),
    ],
)
def test_sentiment_labels_with_negation(text: str, label: str) -> None:
    assert sentiment(pd.Series([text]))["label"].iloc[0] == label


def test_not_bad_at_all_is_not_negative() -> None:
    assert sentiment(pd.Series(["not bad at all"]))["score"].iloc[0] > 0


def test_negation_does_not_cross_a_clause() -> None:
    scores = sentiment(pd.Series(["не знаю, отлично", "не отлично"]))["score"]
    assert scores.iloc[0] > 0 > scores.iloc[1]


def test_intensifier_strengthens() -> None:
    scores = sentiment(pd.Series(["плохо", "очень плохо"]))["score"]
    assert scores.iloc[1] < scores.iloc[0] < 0


def test_sentiment_is_bounded_and_aligned() -> None:
    texts = pd.Series(
        ["ужасно ужасно ужасно кошмар отвратительно", "отлично " * 20, None], index=[7, 3, 5]
    )
    result = sentiment(texts)
    assert result.index.tolist() == [7, 3, 5]
    assert result["score"].between(-1, 1).all()
    assert result["label"].tolist() == ["negative", "positive", "neutral"]


TAGGED_RU = [
    "Курьер опоздал на три часа",
    "Не могу войти в приложение",
    "Верните деньги за возврат",
    "Оператор поддержки грубый",
    "Цена выросла вдвое",
]
TAGGED_EN = [
    "The courier was late",
    "Cannot log in to my account",
    "Refund never arrived",
    "Support agent was rude",
    "Prices are too high",
]
NOISE_RU = [
    "погода",
    "город",
    "друг",
    "семья",
    "отпуск",
    "музыка",
    "фильм",
    "книга",
    "спорт",
    "машина",
    "дача",
    "соседи",
    "кот",
    "собака",
    "праздник",
    "подарок",
    "зима",
    "лето",
    "море",
    "горы",
    "работа",
    "учёба",
    "школа",
    "театр",
    "концерт",
    "рыбалка",
    "сад",
    "огород",
]
NOISE_EN = [
    "weather",
    "city",
    "friend",
    "family",
    "holiday",
    "music",
    "film",
    "book",
    "sport",
    "car",
    "garden",
    "neighbour",
    "cat",
    "dog",
    "party",
    "gift",
    "winter",
    "summer",
    "sea",
    "mountain",
    "job",
    "study",
    "school",
    "theatre",
    "concert",
    "fishing",
    "park",
    "lake",
]
PLANTED = {
    "ru": (
        "упаковка",
        [
            "Упаковка порвана, коробка мятая",
            "Пришло в порванной упаковке",
            "упаковка была порвана и грязная",
            "Коробка и упаковка порваны",
            "Опять порванная упаковка, всё помято",
            "Упаковка порвана, товар чуть не выпал",
        ],
    ),
    "en": (
        "package",
        [
            "The packaging was torn",
            "Packaging torn and the box crushed",
            "Torn packaging again",
            "Box came with torn packaging",
            "packaging was ripped and torn open",
            "The packaging is always torn",
        ],
    ),
}


@pytest.mark.parametrize("language", ["ru", "en"])
def test_discover_themes_surfaces_a_planted_untagged_theme(language: str) -> None:
    rng = random.Random(42)
    key, planted = PLANTED[language]
    tagged_texts, noise = (TAGGED_RU, NOISE_RU) if language == "ru" else (TAGGED_EN, NOISE_EN)
    texts = pd.Series(
        [rng.choice(planted) for _ in range(30)]
        + [rng.choice(tagged_texts) for _ in range(60)]
        + [" ".join(rng.sample(noise, 5)) for _ in range(60)]
    ).sample(frac=1, random_state=1, ignore_index=True)
    tagged = tag_topics(texts)
    themes = discover_themes(texts, tagged, n_themes=5)

    assert list(themes.columns) == ["theme", "keywords", "n_texts", "examples"]
    assert 1 <= len(themes) <= 5
    found = themes[themes["keywords"].map(lambda words: key in words[:3])]
    assert len(found) == 1
    theme = found.iloc[0]
    assert key in theme["theme"]
    assert 25 <= theme["n_texts"] <= 40
    assert 1 <= len(theme["examples"]) <= 3
    assert all(example in planted for example in theme["examples"])
    tagged_originals = set(texts[texts.index.isin(tagged["text_index"])])
    assert not tagged_originals & {e for examples in themes["examples"] for e in examples}


@pytest.mark.parametrize("language", ["ru", "en"])
def test_a_proposed_topic_added_to_the_taxonomy_tags_its_theme(language: str) -> None:
    key, planted = PLANTED[language]
    noise = NOISE_RU if language == "ru" else NOISE_EN
    rng = random.Random(7)
    texts = pd.Series(planted * 4 + [" ".join(rng.sample(noise, 5)) for _ in range(40)])
    themes = discover_themes(texts, tag_topics(texts))
    proposed = proposed_topics(themes[themes["keywords"].map(lambda words: key in words[:3])])
    ((name, keywords),) = proposed.items()
    assert list(keywords) == [language] and key in keywords[language]
    tagged = tag_topics(texts, Taxonomy.default(proposed))
    assert set(tagged.loc[tagged["topic"] == name, "text_index"]) >= set(range(len(planted) * 4))


@pytest.mark.parametrize("n_themes", [2, 3, 4, 5, 8])
def test_themes_in_two_languages_stay_apart_and_repeat_whatever_the_theme_count(
    n_themes: int,
) -> None:
    # Two themes sharing no lemma: components NMF has no use for must not join them.
    texts = pd.Series(PLANTED["ru"][1][:2] + PLANTED["en"][1][:2])
    first = discover_themes(texts, tag_topics(texts), n_themes)
    again = discover_themes(texts, tag_topics(texts), n_themes)

    assert sorted(first["n_texts"]) == [2, 2]
    keys = [PLANTED[language][0] for language in ("ru", "en")]
    assert all(sum(key in words for words in first["keywords"]) == 1 for key in keys)
    pd.testing.assert_frame_equal(first, again)


def test_discover_themes_redacts_examples_and_is_empty_without_shared_words() -> None:
    texts = pd.Series(
        [f"Упаковка порвана, звоните 8912345{6700 + i}" for i in range(3)]
        + ["Упаковка порвана, пишите a.b@mail.ru"]
    )
    themes = discover_themes(texts, tag_topics(texts))
    examples = [e for examples in themes["examples"] for e in examples]
    assert examples
    assert all("[phone]" in e or "[email]" in e for e in examples)
    assert discover_themes(pd.Series(["погода", "курьер"]), tag_topics(pd.Series([]))).empty


def test_verbatims_pick_typical_negative_texts_per_group_redacted() -> None:
    frame = pd.DataFrame(
        {
            "topic": ["delivery"] * 6 + ["login"] * 2 + [None],
            "text": [
                "Ужасно, кошмар!",
                "Курьер опоздал на два часа, это ужасно, звоните +7 912 345 67 89",
                "Курьер опоздал на час, в целом нормально, но неприятно",
                "Курьер приехал вовремя, всё отлично и быстро спасибо",
                "Курьер опоздал на полчаса, плохо, верните деньги пожалуйста",
                "Очень длинный отзыв " + "про ужасную доставку и курьера и коробку " * 10,
                "Не могу войти, пишите на ivan@mail.ru",
                "Не могу войти, пишите на ivan@mail.ru",
                "без темы, ужасно ужасно",
            ],
        }
    )
    picked = verbatims(frame, "topic", n=2)
    assert picked["topic"].tolist() == ["delivery", "delivery", "login"]
    assert picked["text"].tolist() == [
        "Курьер опоздал на два часа, это ужасно, звоните [phone]",
        "Курьер опоздал на полчаса, плохо, верните деньги пожалуйста",
        "Не могу войти, пишите на [email]",
    ]
    assert picked["sentiment"].iloc[0] <= picked["sentiment"].iloc[1] < 0


def test_tag_topics_handles_fifty_thousand_texts() -> None:
    rng = random.Random(0)
    templates = [
        ("Курьер опоздал на {n} дня, доставка ужасная", {"delivery"}),
        ("Не могу войти в личный кабинет уже {n} раз", {"login"}),
        ("The courier was late again, {n} hours", {"delivery"}),
        ("Refund still not processed after {n} days", {"returns"}),
        ("Погода хорошая, настроение {n} из 10", set()),
    ]
    # A long tail of 5,000 vowel-less made-up words (names, typos) that are never a keyword;
    # out-of-dictionary words are the slow case for pymorphy3.
    tail = ["".join(rng.choices("бвгджзклмнпрстфхцчшщ", k=6)) for _ in range(5_000)]
    picks = [rng.randrange(len(templates)) for _ in range(50_000)]
    texts = pd.Series(
        [templates[p][0].format(n=rng.randrange(100)) + " " + rng.choice(tail) for p in picks]
    )
    tagged = tag_topics(texts)
    expected = {(i, topic) for i, p in enumerate(picks) for topic in templates[p][1]}
    assert set(zip(tagged["text_index"], tagged["topic"], strict=True)) == expected


def test_the_same_theme_in_russian_and_english_is_one_proposed_topic_in_both() -> None:
    texts = pd.Series(PLANTED["ru"][1] + PLANTED["en"][1])
    themes = discover_themes(texts, tag_topics(texts), 4)
    assert len(themes) == 2  # found apart: the texts share no word across the languages

    ((name, keywords),) = proposed_topics(themes).items()
    assert name == "package" and list(keywords) == ["ru", "en"]
    assert "упаковка" in keywords["ru"] and "package" in keywords["en"]
    tagged = tag_topics(texts, Taxonomy.default({name: keywords}))
    assert set(tagged.loc[tagged["topic"] == name, "text_index"]) == set(range(len(texts)))


def test_themes_whose_words_do_not_translate_stay_separate_topics() -> None:
    weather = ["Погода и город", "город и погода, музыка", "музыка, погода"]
    texts = pd.Series(weather + PLANTED["en"][1])
    proposed = proposed_topics(discover_themes(texts, tag_topics(texts), 4))
    assert sorted(map(list, proposed.values())) == [["en"], ["ru"]]


def test_the_demos_packaging_comments_propose_one_bilingual_topic() -> None:
    comments = generate(customers=3_000).frames["survey_responses"]["comment"].dropna()
    texts = comments.drop_duplicates().reset_index(drop=True)
    proposed = proposed_topics(discover_themes(texts, tag_topics(texts), 5))
    (keywords,) = [words for words in proposed.values() if list(words) == ["ru", "en"]]
    assert "упаковка" in keywords["ru"] and {"box", "package"} <= set(keywords["en"])
