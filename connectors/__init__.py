"""Vendor adapters: HTTP (or files, or a generator) in, raw records out."""

from __future__ import annotations

from typing import Any

from connectors.base import Source
from tasks.errors import ConfigError


def open_source(name: str, kind: str, options: dict[str, Any]) -> Source:
    """The connector for a configured source; `ConfigError` on options it does not take."""
    if kind == "demo":
        from connectors.demo import DemoSource as connector
    elif kind == "hubspot":
        from connectors.hubspot import HubSpotSource as connector
    else:
        raise ConfigError(f"sources.{name}: unknown kind {kind!r}")
    try:
        return connector(name=name, **options)
    except TypeError as exc:
        raise ConfigError(
            f"sources.{name}.options: {exc}; see the README for {kind} options."
        ) from None
