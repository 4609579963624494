"""Vendor adapters: HTTP (or files, or a generator) in, raw records out."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields, is_dataclass
from importlib import import_module
from typing import Any

from connectors.base import Source
from connectors.errors import ConfigError

# kind → "module:class", imported only when a source of that kind is used.
SOURCE_KINDS = {
    "amocrm": "connectors.amocrm:AmoCrmSource",
    "bitrix24": "connectors.bitrix24:Bitrix24Source",
    "demo": "connectors.demo:DemoSource",
    "files": "connectors.files:FilesSource",
    "ga4": "connectors.ga4:GA4Source",
    "hubspot": "connectors.hubspot:HubSpotSource",
    "jivo": "connectors.jivo:JivoSource",
    "matomo": "connectors.matomo:MatomoSource",
    "omnidesk": "connectors.omnidesk:OmnideskSource",
    "qualtrics": "connectors.qualtrics:QualtricsSource",
    "salesforce": "connectors.salesforce:SalesforceSource",
    "sql": "connectors.sql:SqlSource",
    "surveymonkey": "connectors.surveymonkey:SurveyMonkeySource",
    "typeform": "connectors.typeform:TypeformSource",
    "usedesk": "connectors.usedesk:UsedeskSource",
    "yandex_metrica": "connectors.yandex_metrica:YandexMetricaSource",
}


# Kinds whose constructor reads no file, secret or network: building one checks every option.
OFFLINE_KINDS = ("demo", "files")
NUMBERS = {"int": "a whole number", "float": "a number", "bool": "true or false"}


@dataclass(frozen=True)
class OptionProblem:
    """An option a source would refuse: its name (None: the options as a whole) and a message
    naming the source, the option and the fix."""

    option: str | None
    message: str


def field_map_table(kind: str) -> str | None:
    """The canonical table a `kind` source's flat `field_map` fills (vendor field → column);
    None where its `field_map` is per object, each object filling its own table."""
    return getattr(_connector("", kind), "FIELD_MAP_TABLE", None)


def open_source(name: str, kind: str, options: dict[str, Any]) -> Source:
    """The connector for a configured source; `ConfigError` on options it does not take."""
    return _built(_connector(name, kind), name, kind, options)


def _built(build: Callable[..., Source], name: str, kind: str, options: dict[str, Any]) -> Source:
    try:
        return build(name=name, **options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"sources.{name}.options: {exc}; see the README for {kind} options."
        ) from None


def option_problems(name: str, kind: str, options: dict[str, Any]) -> list[OptionProblem]:
    """What a source of `kind` would refuse in `options`, found without opening anything.

    Every kind is checked for option names it does not take and for numbers that are not
    numbers. The offline kinds are then built, so all their own checks run, and the HTTP kinds
    are built `offline` (no secret read, no client made), so all their checks run but those of
    the environment's secrets; a database source's other checks need its engine, so they run
    when the flow opens it.
    """
    connector = _connector(name, kind)
    problems = _signature_problems(connector, name, kind, options)
    build = connector if kind in OFFLINE_KINDS else getattr(connector, "offline", None)
    if not problems and build is not None:
        try:
            _built(build, name, kind, options)
        except ConfigError as exc:
            problems.append(OptionProblem(None, str(exc)))
    return problems


def _connector(name: str, kind: str) -> type:
    if kind not in SOURCE_KINDS:
        raise ConfigError(
            f"sources.{name}: unknown kind {kind!r}; known: {', '.join(SOURCE_KINDS)}"
        )
    module, cls = SOURCE_KINDS[kind].split(":")
    return getattr(import_module(module), cls)


def _signature_problems(
    connector: type, name: str, kind: str, options: dict[str, Any]
) -> list[OptionProblem]:
    """Options the connector's constructor does not take, and numeric ones of the wrong type."""
    accepted = [p for p in inspect.signature(connector).parameters if p != "name"]
    # A dataclass's field types are strings here (postponed annotations): "int", "float", ….
    typed = (
        {f.name: f for f in fields(connector) if f.type in NUMBERS}
        if is_dataclass(connector)
        else {}
    )
    problems = []
    for option, value in options.items():
        where = f"sources.{name}.options.{option}"
        if option not in accepted:
            close = difflib.get_close_matches(option, accepted, n=1)
            hint = f"did you mean `{close[0]}`? " if close else ""
            problems.append(OptionProblem(option, (
                f"{where}: {kind} sources take no option `{option}`; {hint}"
                f"the options are {', '.join(accepted)}."
            )))  # fmt: skip
        elif option in typed and not _is_a(value, typed[option].type):
            default = typed[option].default
            example = "" if default is MISSING else f", e.g. {option}: {default}"
            problems.append(OptionProblem(
                option, f"{where}: got {value!r}; write {NUMBERS[typed[option].type]}{example}."
            ))  # fmt: skip
    return problems


def _is_a(value: Any, type_name: str) -> bool:
    """Whether a YAML value fits a field typed `int`, `float` or `bool` (true is no number)."""
    if type_name == "bool":
        return isinstance(value, bool)
    allowed = int if type_name == "int" else int | float
    return isinstance(value, allowed) and not isinstance(value, bool)
