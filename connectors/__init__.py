"""Vendor adapters: HTTP (or files, or a generator) in, raw records out."""

from __future__ import annotations

from importlib import import_module
from typing import Any

from connectors.base import Source
from tasks.errors import ConfigError

# kind → "module:class", imported only when a source of that kind is used.
SOURCE_KINDS = {
    "amocrm": "connectors.amocrm:AmoCrmSource",
    "bitrix24": "connectors.bitrix24:Bitrix24Source",
    "demo": "connectors.demo:DemoSource",
    "files": "connectors.files:FilesSource",
    "ga4": "connectors.ga4:GA4Source",
    "hubspot": "connectors.hubspot:HubSpotSource",
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


def open_source(name: str, kind: str, options: dict[str, Any]) -> Source:
    """The connector for a configured source; `ConfigError` on options it does not take."""
    if kind not in SOURCE_KINDS:
        raise ConfigError(
            f"sources.{name}: unknown kind {kind!r}; known: {', '.join(SOURCE_KINDS)}"
        )
    module, cls = SOURCE_KINDS[kind].split(":")
    connector = getattr(import_module(module), cls)
    try:
        return connector(name=name, **options)
    except TypeError as exc:
        raise ConfigError(
            f"sources.{name}.options: {exc}; see the README for {kind} options."
        ) from None
