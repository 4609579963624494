"""The exceptions cxloop raises for problems a user can fix; the CLI turns them into exit code 2."""

from __future__ import annotations


class CxloopError(Exception):
    """A problem with the user's input or environment, with a message that says how to fix it."""


class ConfigError(CxloopError):
    """`cxloop.yaml` is missing, malformed or inconsistent."""


class HypothesisError(CxloopError):
    """A hypothesis YAML file is malformed or inconsistent."""


class StoreError(CxloopError):
    """The canonical store cannot be reached or used."""


class SourceError(CxloopError):
    """A source failed: the vendor's message, the source, the stream and the page."""
