"""Vendor records into canonical rows: column names, identity hashing, timestamps in UTC."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from connectors.errors import SourceError
from tasks.store import INGESTED, timestamp_columns


def email_hash(emails: pd.Series) -> pd.Series:
    """SHA-256 of each trimmed, lower-cased e-mail: the join key across sources."""
    normalised = emails.str.strip().str.lower()
    return normalised.map(lambda e: hashlib.sha256(e.encode()).hexdigest(), na_action="ignore")


def to_canonical(
    table: str, records: Sequence[Mapping[str, Any]] | pd.DataFrame, where: str
) -> pd.DataFrame:
    """Records already named canonically into a frame for `table`, ready to upsert.

    Raw e-mails become `email_hash` and are dropped; timestamps become naive UTC. `where`
    (source/stream/page) names the page in the error if a required column is missing.
    """
    frame = pd.DataFrame(records)
    model = INGESTED[table]
    if "email" in frame.columns:
        frame["email_hash"] = email_hash(frame.pop("email"))
    required = [
        name for name, info in model.model_fields.items()
        if info.is_required() and name not in ("source",)
    ]  # fmt: skip
    missing = [name for name in required if name not in frame.columns]
    if missing:
        raise SourceError(
            f"{where}: records lack {', '.join(missing)}; nothing of this page was saved."
        )
    for name in timestamp_columns(model):
        if name in frame.columns:
            frame[name] = pd.to_datetime(frame[name], utc=True).dt.tz_localize(None)
    return frame
