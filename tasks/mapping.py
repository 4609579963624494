"""Vendor records into canonical rows: column names, identity hashing, timestamps in UTC."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any

import pandas as pd

from connectors.canonical import TABLES
from connectors.errors import SourceError


def email_hash(emails: pd.Series) -> pd.Series:
    """SHA-256 of each trimmed, lower-cased e-mail: the join key across sources."""
    normalised = emails.str.strip().str.lower()
    return normalised.map(lambda e: hashlib.sha256(e.encode()).hexdigest(), na_action="ignore")


def to_canonical(
    table: str, records: Sequence[Mapping[str, Any]] | pd.DataFrame, where: str
) -> pd.DataFrame:
    """Records already named canonically into a frame for `table`, ready to upsert.

    Raw e-mails become `email_hash` and are dropped; timestamps become naive UTC. A customer
    column that is not canonical is a declared dimension (the config checked the field maps):
    it joins the record's `attributes`. `where` (source/stream/page) names the page in the
    error if a required column is missing.
    """
    frame = pd.DataFrame(records)
    spec = TABLES[table]
    if "email" in frame.columns:
        frame["email_hash"] = email_hash(frame.pop("email"))
    if "attributes" in spec.columns:
        frame = with_dimensions(frame, [c for c in frame.columns if c not in spec.columns])
    missing = [name for name in spec.required if name not in frame.columns]
    if missing:
        raise SourceError(
            f"{where}: records lack {', '.join(missing)}; nothing of this page was saved."
        )
    for name, kind in spec.columns.items():
        if kind in (datetime, date) and name in frame.columns:
            frame[name] = pd.to_datetime(frame[name], utc=True).dt.tz_localize(None)
    return frame


def with_dimensions(frame: pd.DataFrame, dimensions: Sequence[str]) -> pd.DataFrame:
    """`frame` with the `dimensions` columns moved into its `attributes` dicts (as text;
    missing values left out), merged over any attributes it already has."""
    if not dimensions:
        return frame
    columns = frame[list(dimensions)].astype(object)
    values = columns.where(columns.notna(), None)
    given = frame["attributes"] if "attributes" in frame.columns else [None] * len(frame)
    attributes = [
        {**(old or {}), **{k: str(v) for k, v in new.items() if v is not None}}
        for old, new in zip(given, values.to_dict("records"), strict=True)
    ]
    return frame.drop(columns=list(dimensions)).assign(attributes=attributes)
