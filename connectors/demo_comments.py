"""Demo survey comments: composed from parts with variation, on- and off-topic for their theme.

A comment is an opener, a core (the theme's complaint or remark in several phrasings, with
details: days late, amounts, order numbers, products) and a closer, then sometimes written
informally: lower case, no final punctuation, an emoji, an English word in a Russian comment.
Themes are the five ticket topics (each core names its topic with a keyword of the shipped
taxonomy, `tasks/lexicons/topics.yaml`, and no other ticket topic), "promoter", "passive"
and "detractor". `OFF_TOPIC_SHARE` of the topic themes' comments are generic complaints
(prices, support, the app, "всё плохо") that name no ticket topic, so evidence filtering has
something to filter. `PACKAGING_SHARE` of the passives are about packaging, which no shipped
topic covers: the theme `cxloop themes` should propose. `PROBE_SHARE` of the detractor and
topic themes' comments carry a phone number, an e-mail address or a `<script>` tag.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from string import Formatter

import numpy as np
import pandas as pd

TOPIC_THEMES = ("delivery", "payment", "login", "product_quality", "returns")
OFF_TOPIC_SHARE = 0.2
PACKAGING_SHARE = 0.5
PROBE_SHARE = 0.05
LOWER_SHARE = 0.15
BARE_SHARE = 0.2  # no final punctuation
EMOJI_SHARE = 0.1
MIXED_SHARE = 0.08  # Russian comments that slip in an English word

# Cores per (pool, language): a pool is a theme, or "packaging" (passives about packaging).
# Off-topic comments of a topic theme come from the "detractor" pool.
CORES: dict[tuple[str, str], tuple[str, ...]] = {
    ("delivery", "ru"): (
        "Курьер опоздал {late}",
        "Заказ {order} доставили только через {wait}",
        "Доставка сорвалась {times}",
        "Привезли не в тот интервал, курьер даже не позвонил",
        "Посылку {order} не отследить, трек-номер не работает",
        "Курьер не приехал в назначенное время, прождал {hours}",
        "{product} ехали {wait}, хотя срок доставки был два дня",
        "Доставку переносили {times}, заказ {order} до сих пор в пути",
        "Пункт выдачи закрыт, а заказ {order} хранится только три дня",
        "Обещали привезти к обеду, курьер появился {hours} спустя",
    ),
    ("delivery", "en"): (
        "The courier was {late} late",
        "Order {order} was delivered {late} late",
        "Delivery slot missed {times}",
        "My parcel has been stuck for {wait}, tracking shows nothing",
        "The driver never showed up and nobody called",
        "Shipping took {wait} for a pair of {product}",
        "The tracking number for order {order} does not work",
        "Delivery was rescheduled {times} and the {product} are still not here",
        "The courier left the parcel at the wrong door",
    ),
    ("payment", "ru"): (
        "Деньги списали дважды, {amount}",
        "Оплата картой не проходит, пробовал {times}",
        "С карты списали {amount}, а заказ {order} так и не оформился",
        "Платёж завис, {amount} заблокированы уже {wait}",
        "Двойное списание {amount} за один заказ",
        "Оплата через СБП не работает, пришлось звонить в банк",
        "Заплатил {amount}, а в заказе {order} пишет, что оплаты нет",
        "Карту не принимает, хотя на ней есть деньги",
    ),
    ("payment", "en"): (
        "I was charged twice, {amount} each time",
        "Card payment keeps failing at checkout",
        "Charged {amount} for order {order} that never went through",
        "My bank shows a pending transaction of {amount} for {wait} now",
        "Double charge of {amount} on my credit card",
        "Apple Pay fails every time I try",
        "Paid {amount} for order {order} and it still says unpaid",
        "The invoice for order {order} is wrong by {amount}",
    ),
    ("login", "ru"): (
        "Не могу войти в личный кабинет, код не приходит",
        "Код подтверждения приходит через {minutes}",
        "Пароль приходится сбрасывать {times}, в аккаунт не попасть",
        "Восстановить пароль невозможно, письмо не приходит",
        "Авторизация по номеру телефона не работает уже {wait}",
        "Аккаунт заблокировали без объяснений",
        "Вход по паролю не работает, пробовал {times}",
        "Не получается зайти в личный кабинет уже {wait}",
    ),
    ("login", "en"): (
        "Cannot log in, the verification code never comes",
        "Password reset does not work, tried {times}",
        "Locked out of my account for {wait}",
        "Sign in fails even with the right password",
        "The verification code takes {minutes} to come",
        "My account was blocked with no explanation",
        "I cannot sign in since {weekday}",
    ),
    ("product_quality", "ru"): (
        "{product} с браком, качество хуже, чем на фото",
        "{product} сломались через {wait}",
        "Качество ужасное, {product} развалились {when}",
        "Материал тонкий, швы расходятся",
        "Явная подделка, а не оригинал",
        "{product} не соответствуют описанию",
        "Пришли бракованные {product}, заказ {order}",
        "Дефект на {product} видно сразу",
    ),
    ("product_quality", "en"): (
        "The {product} are defective",
        "The {product} broke after {wait}",
        "Poor quality, the {product} fell apart {when}",
        "The {product} came damaged",
        "Obviously a fake, not the original",
        "Faulty {product}, one side does not work",
        "The material is thin and the seams are coming apart",
        "Order {order}: the {product} are not as described",
    ),
    ("returns", "ru"): (
        "Возврат оформляли {weeks}",
        "Хочу вернуть {product}, а магазин отказывается принять",
        "Заявку на возврат по заказу {order} не рассматривают уже {wait}",
        "Обмен {product} занял {weeks}",
        "Компенсацию обещали {wait} назад, до сих пор ничего",
        "Вернуть товар невозможно, везде отказ",
        "Возврат {amount} за {product} так и не пришёл",
    ),
    ("returns", "en"): (
        "The return took {weeks} to process",
        "Still waiting for my refund for order {order}",
        "They refused to exchange the {product}",
        "Returning the {product} was a nightmare, {weeks} of emails",
        "A refund of {amount} was promised {wait} ago, nothing yet",
        "The return label never came, so the {product} are still with me",
    ),
    ("detractor", "ru"): (
        "Всё плохо",
        "Больше не закажу",
        "Не понравилось обслуживание",
        "Поддержка отвечает очень долго",
        "Оператор нагрубил и положил трубку",
        "До горячей линии не дозвониться",
        "Цены выросли, раньше было дешевле",
        "Слишком дорого для такого сервиса",
        "Приложение постоянно вылетает",
        "Сайт тормозит, ничего не найти",
        "Ужасный сервис, не рекомендую",
        "Разочарован, ожидал большего",
    ),
    ("detractor", "en"): (
        "Everything is bad",
        "Support is slow and unhelpful",
        "The operator was rude to me",
        "Could not get through to the hotline",
        "Prices went up again, too expensive now",
        "The app keeps crashing",
        "The website is painfully slow",
        "Terrible service, would not recommend",
        "Disappointed, expected much more",
        "Not worth it at all",
    ),
    ("promoter", "ru"): (
        "Всё отлично, быстро и удобно",
        "Пользуюсь давно и доволен",
        "Отличный сервис",
        "Рекомендую друзьям",
        "Заказываю не первый раз, всё на высоте",
        "{product} отличные, очень доволен",
        "Всё понравилось, буду заказывать ещё",
        "Неплохо, пользуюсь давно",
        "Лучший магазин, где я покупал {product}",
    ),
    ("promoter", "en"): (
        "Great service, fast and easy",
        "Not bad at all, I keep coming back",
        "Love it, ordering again",
        "Always a pleasure",
        "The {product} are great, very happy",
        "Everything went smoothly",
        "Best shop I have bought {product} from",
        "Really happy, would recommend",
    ),
    ("passive", "ru"): (
        "В целом нормально, но цены могли бы быть ниже",
        "Ничего особенного",
        "Нормально, без восторга",
        "Сойдёт",
        "Средне, есть куда расти",
        "{product} нормальные, но ничего выдающегося",
    ),
    ("passive", "en"): (
        "It is fine, nothing special",
        "OK overall, prices could be lower",
        "Average experience",
        "Decent, could be better",
        "The {product} are okay, nothing more",
    ),
    ("packaging", "ru"): (
        "Упаковка мятая, коробка порвана",
        "Коробка пришла мятая, упаковку стоит улучшить",
        "Упаковка так себе: коробка мятая, плёнка порвана",
        "Коробка мятая, упаковка порвана, плёнка тоже",
        "Упаковка хлипкая, коробка продавлена",
        "{product} нормальные, но коробка мятая и упаковка порвана",
    ),
    ("packaging", "en"): (
        "Flimsy packaging, the box was crushed",
        "The packaging was crushed and the box torn",
        "Poor packaging, the box came crushed, the {product} survived somehow",
        "Packaging could be better, the box was torn",
        "The {product} are fine but the packaging was torn and the box crushed",
    ),
}


@dataclass(frozen=True)
class Mood:
    """How comments of one mood open, close, end and get informal, per language."""

    openers: dict[str, tuple[str, ...]]  # ending in ", " or a space: the core goes on in lower case
    closers: dict[str, tuple[str, ...]]
    endings: tuple[str, ...]
    emoji: tuple[str, ...]
    english: tuple[str, ...]  # slipped into Russian comments, before the text
    opener_share: float
    closer_share: float
    informal: float  # times the *_SHARE of informal writing


NEGATIVE = Mood(
    openers={
        "ru": (
            "Здравствуйте. ",
            "Ну что сказать. ",
            "Опять. ",
            "Добрый день. ",
            "Честно, ",
            "Короче, ",
            "Если честно, ",
            "В общем, ",
            "Капец, ",
            "Жесть, ",
        ),
        "en": (
            "Hi. ",
            "Well. ",
            "Again. ",
            "Hello. ",
            "Honestly, ",
            "To be fair, ",
            "Seriously, ",
            "So, ",
            "Ugh, ",
        ),
    },
    closers={
        "ru": (
            "Больше не закажу",
            "Очень разочарован",
            "Ужас",
            "Надеюсь, исправите",
            "Это не дело",
            "Кошмар",
            "Так нельзя",
            "Неприятно",
            "Сделайте что-нибудь",
        ),
        "en": (
            "Never again",
            "Very disappointed",
            "Sort it out",
            "Not happy",
            "Awful",
            "Unacceptable",
            "Do better",
            "Fix it pls",
        ),
    },
    endings=(".", ".", "!", "!!!", "..."),
    emoji=("😡", "👎", "🤬", "😤"),
    english=("Fail. ", "Seriously? ", "Wtf, ", "Sorry, но "),
    opener_share=0.5,
    closer_share=0.5,
    informal=1.0,
)
NEUTRAL = Mood(
    openers={
        "ru": ("Ну. ", "Хм. ", "Добрый день. ", "В целом, ", "Если честно, ", "Так, "),
        "en": ("Hm. ", "Well. ", "Overall, ", "Honestly, ", "I guess "),
    },
    closers={
        "ru": ("Посмотрим", "Пока так", "Имхо", "Как-то так"),
        "en": ("We will see", "That is it", "Imho", "Meh"),
    },
    endings=(".", ".", "", "..."),
    emoji=("🤷", "😐"),
    english=("Ok, ", "Meh. ", "So-so, "),
    opener_share=0.02,
    closer_share=0.02,
    informal=0.1,
)
POSITIVE = Mood(
    openers={
        "ru": ("Спасибо! ", "Спс. ", "Добрый день. ", "Честно, ", "В общем, "),
        "en": ("Thanks! ", "Thx. ", "Honestly, ", "All in all, "),
    },
    closers={
        "ru": ("Так держать", "Спасибо", "Молодцы", "Всем советую"),
        "en": ("Keep it up", "Thank you", "Well done", "Cheers"),
    },
    endings=("!", ".", "!!", "!"),
    emoji=("👍", "🙂", "❤️", "🔥"),
    english=("Wow, ", "Top! ", "Nice, "),
    opener_share=0.02,
    closer_share=0.02,
    informal=0.1,
)
PACKAGING = Mood(
    openers=NEUTRAL.openers,
    closers={
        "ru": ("Мелочь, но неприятно", "Обидно", "Посмотрим", "Исправьте, пожалуйста"),
        "en": ("Small thing, but still", "A bit annoying", "Please fix", "Meh"),
    },
    endings=NEUTRAL.endings,
    emoji=NEUTRAL.emoji,
    english=NEUTRAL.english,
    opener_share=0.3,
    closer_share=0.3,
    informal=0.5,
)
# By pool; every other pool (the topic themes and "detractor") is NEGATIVE. Praise and
# indifference vary little, as in real surveys: theme discovery counts each wording once, and
# thousands of wordings of "всё отлично" would outweigh the packaging theme.
MOODS = {"promoter": POSITIVE, "passive": NEUTRAL, "packaging": PACKAGING}

# Slot values per language. In "order", "amount" and "phone" the "{}" is a drawn number.
SLOTS: dict[str, dict[str, tuple[str, ...]]] = {
    "late": {
        "ru": ("на два дня", "на три дня", "на 5 дней", "на неделю", "на целый день", "на 4 часа"),
        "en": ("two days", "3 days", "a week", "five hours", "a whole day"),
    },
    "wait": {
        "ru": ("неделю", "две недели", "10 дней", "5 дней", "месяц", "три дня"),
        "en": ("a week", "two weeks", "10 days", "5 days", "a month", "three days"),
    },
    "weeks": {
        "ru": ("три недели", "месяц", "две недели", "полтора месяца"),
        "en": ("three weeks", "a month", "two weeks", "six weeks"),
    },
    "times": {
        "ru": ("дважды", "три раза", "уже второй раз", "снова", "пять раз"),
        "en": ("twice", "three times", "again", "for the third time", "five times"),
    },
    "hours": {"ru": ("весь день", "три часа", "до вечера", "два часа")},
    "minutes": {
        "ru": ("10 минут", "полчаса", "час", "20 минут"),
        "en": ("10 minutes", "half an hour", "an hour", "20 minutes"),
    },
    "when": {
        "ru": ("после первой стирки", "через неделю", "в первый же день", "через месяц"),
        "en": ("after one wash", "within a week", "on the first day", "after a month"),
    },
    "weekday": {"en": ("Monday", "Friday", "last week", "yesterday")},
    "product": {
        "ru": ("кроссовки", "наушники", "джинсы", "шторы", "перчатки", "ботинки", "колонки"),
        "en": ("headphones", "sneakers", "jeans", "curtains", "speakers", "gloves", "boots"),
    },
    "order": {"ru": ("№{}", "№ {}", "номер {}"), "en": ("#{}", "no. {}", "number {}")},
    "amount": {"ru": ("{} ₽", "{} руб.", "{} рублей"), "en": ("${}", "£{}", "{} dollars")},
    "phone": {"ru": ("+7 (912) {}", "8 (912) {}"), "en": ("+7 (912) {}", "+7 912 {}")},
    "email": {
        lang: ("angry.customer", "ivan.petrov", "k.smirnova", "jane_doe") for lang in ("ru", "en")
    },
}
PROBES = {
    "ru": ("Перезвоните мне: {phone}", "Мой номер {phone}, жду звонка", "Пишите на {email}"),
    "en": ("Please email me at {email}", "Call me back on {phone}", "Contact: {email}"),
}
SCRIPT = "<script>alert('xss')</script> "


@dataclass(frozen=True)
class Comments:
    """Comment texts (object array; None where no core fits the row's theme and language) and
    whether each names its theme's topic (always False outside `TOPIC_THEMES`)."""

    text: np.ndarray
    on_topic: np.ndarray


def comments(rng: np.random.Generator, theme: np.ndarray, language: np.ndarray) -> np.ndarray:
    """A composed comment per row of `theme` and `language`, as an object array (`compose`)."""
    return compose(rng, theme, language).text


def compose(rng: np.random.Generator, theme: np.ndarray, language: np.ndarray) -> Comments:
    """Comments for rows of `theme` (a `TOPIC_THEMES` topic, "promoter", "passive" or
    "detractor") and `language` ("ru", "en"), the same for the same `rng` state."""
    theme = np.asarray(theme, dtype=object)
    language = np.asarray(language, dtype=object)
    n = len(theme)
    topical = np.isin(theme, TOPIC_THEMES)
    off_topic = topical & (rng.random(n) < OFF_TOPIC_SHARE)
    pool = np.where(off_topic, "detractor", theme)
    pool = np.where((theme == "passive") & (rng.random(n) < PACKAGING_SHARE), "packaging", pool)
    core = _choose(rng, CORES, pool, language)
    known = pd.notna(core)
    values = _slot_values(rng, language)
    text = _capitalised(_rendered(np.where(known, core, ""), values))
    negative = known & ~np.isin(pool, tuple(MOODS))
    probed = negative & (rng.random(n) < PROBE_SHARE)
    script = rng.random(n) < 1 / 3
    sentence = _rendered(_per_language(rng, PROBES, language), values)
    text = np.where(probed & script, SCRIPT + text, text)
    text = np.where(probed & ~script, text + ". " + sentence, text)
    for mood, rows in ((NEGATIVE, negative), *((m, known & (pool == k)) for k, m in MOODS.items())):
        text = _styled(rng, text, rows, language, mood)
    return Comments(np.where(known, text, None), topical & ~off_topic)


def _choose(
    rng: np.random.Generator,
    table: Mapping[tuple[object, str], tuple[str, ...]],
    key: np.ndarray,
    language: np.ndarray,
) -> np.ndarray:
    """Per row, one of `table[(key, language)]` at random; None where the table has no entry."""
    out = np.full(len(key), None, dtype=object)
    pick = rng.random(len(key))
    groups = pd.DataFrame({"key": key, "language": language}).groupby(["key", "language"])
    for group, rows in groups.indices.items():
        options = table.get(group)
        if options is not None:
            out[rows] = np.array(options, dtype=object)[(pick[rows] * len(options)).astype(int)]
    return out


def _per_language(
    rng: np.random.Generator, options: Mapping[str, tuple[str, ...]], language: np.ndarray
) -> np.ndarray:
    """Per row, one of `options[language]` at random; "" for a language without options."""
    table = {(0, lang): values for lang, values in options.items()}
    chosen = _choose(rng, table, np.zeros(len(language)), language)
    return np.where(pd.notna(chosen), chosen, "")


def _pick(rng: np.random.Generator, options: tuple[str, ...], n: int) -> np.ndarray:
    return np.array(options, dtype=object)[rng.integers(len(options), size=n)]


def _number(rng: np.random.Generator, low: int, high: int, n: int) -> np.ndarray:
    return rng.integers(low, high, size=n).astype(str).astype(object)


def _slot_values(rng: np.random.Generator, language: np.ndarray) -> dict[str, np.ndarray]:
    """Per slot of `SLOTS`, a value for every row in the row's language."""
    n = len(language)
    ru = language == "ru"
    gap = _pick(rng, ("-", " "), n)
    numbers = {
        "order": _number(rng, 100_000, 9_999_999, n),
        # Roubles in hundreds, dollars and pounds in units.
        "amount": np.where(
            ru, _number(rng, 3, 250, n) + _pick(rng, ("00", "90", "50"), n), _number(rng, 5, 400, n)
        ),
        "phone": _number(rng, 200, 999, n)
        + gap
        + _number(rng, 10, 99, n)
        + gap
        + _number(rng, 10, 99, n),
    }
    values = {slot: _per_language(rng, options, language) for slot, options in SLOTS.items()}
    values["email"] = values["email"] + "@example.com"
    for slot, number in numbers.items():
        values[slot] = _rendered(values[slot], {"": number})
    return values


def _rendered(templates: np.ndarray, values: Mapping[str, np.ndarray]) -> np.ndarray:
    """`templates` with each "{slot}" replaced by the row's `values[slot]`; None stays None."""
    out = templates.copy()
    codes, distinct = pd.factorize(templates)
    for code, template in enumerate(distinct):
        pieces = _pieces(template)
        if all(slot is None for _, slot in pieces):
            continue
        rows = codes == code
        text = np.full(rows.sum(), "", dtype=object)
        for literal, slot in pieces:
            text = text + literal + (values[slot][rows] if slot is not None else "")
        out[rows] = text
    return out


@cache
def _pieces(template: str) -> tuple[tuple[str, str | None], ...]:
    """`template`'s literal text and slot name pairs, the slot None after the last literal."""
    return tuple((literal, slot) for literal, slot, _, _ in Formatter().parse(template))


def _capitalised(text: np.ndarray) -> np.ndarray:
    s = pd.Series(text, dtype=object)
    return (s.str[:1].str.upper() + s.str[1:]).to_numpy(dtype=object)


def _styled(
    rng: np.random.Generator, text: np.ndarray, rows: np.ndarray, language: np.ndarray, mood: Mood
) -> np.ndarray:
    """`text` with, in `rows`, an opener, a closer and an ending of `mood`, some written
    informally: an English word first (Russian only), lower case, no final punctuation, emoji."""
    body, language = text[rows], language[rows]
    n = len(body)
    chance = [mood.opener_share, mood.closer_share, MIXED_SHARE, LOWER_SHARE, BARE_SHARE]
    chance = np.array([*chance, EMOJI_SHARE]) * [1, 1, *[mood.informal] * 4]
    opened, closed, mixed, lower, bare, emoji = (rng.random((n, 6)) < chance).T
    body = np.where(opened, _prefixed(_per_language(rng, mood.openers, language), body), body)
    closer = _pick(rng, (". ", "! "), n) + _per_language(rng, mood.closers, language)
    body = np.where(closed, body + closer, body) + _pick(rng, mood.endings, n)
    english = _prefixed(_pick(rng, mood.english, n), body)
    body = np.where(mixed & (language == "ru"), english, body)
    s = pd.Series(body, dtype=object)
    s = s.where(~lower, s.str.lower())
    s = s.where(~bare, s.str.rstrip(".!"))
    body = np.where(emoji, s + " " + _pick(rng, mood.emoji, n), s)
    out = text.copy()
    out[rows] = body
    return out


def _prefixed(prefix: np.ndarray, text: np.ndarray) -> np.ndarray:
    """`prefix + text`, the text's first letter in lower case after a prefix that ends no
    sentence (English "I" stays)."""
    s = pd.Series(text, dtype=object)
    ends = {p: p.rstrip()[-1:] in (".", "!", "?") for p in pd.unique(prefix)}
    goes_on = ~pd.Series(prefix).map(ends).to_numpy(bool) & ~s.str.startswith(("I ", "I'"))
    lowered = s.str[:1].str.lower() + s.str[1:]
    return prefix + np.where(goes_on, lowered, text)
