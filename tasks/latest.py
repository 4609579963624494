"""The store's newest pain-point ranking and experiment results: what reports and the CLI show."""

from __future__ import annotations

import pandas as pd
from sqlalchemy.engine import Engine

from tasks import store


def latest_results(engine: Engine) -> pd.DataFrame:
    """Each hypothesis' newest `experiment_result` rows (one per metric)."""
    results = store.read_frame(engine, store.ExperimentResult)
    if results.empty:
        return results
    newest = results.groupby("hypothesis_id")["as_of"].transform("max")
    return results[results["as_of"] == newest]


def latest_pain_points(engine: Engine) -> pd.DataFrame:
    """The most recent pain-point ranking."""
    pain = store.read_frame(engine, store.PainPoint)
    return pain[pain["period"] == pain["period"].max()] if len(pain) else pain
