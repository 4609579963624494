"""Pilot arms by salted hash: the one split rule the demo's planted pilots and the experiments
share (light: pandas and numpy only, so a connector may import it)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def assign_arms(customer_ids: pd.Series, salt: str, pilot_share: float) -> np.ndarray:
    """`pilot` or `control` per customer: 64-bit hash of `salt:id` below `pilot_share` of 2⁶⁴.

    Deterministic across runs and machines, so operations can reproduce the split.
    """
    keys = salt + ":" + customer_ids.astype(str)
    buckets = pd.util.hash_pandas_object(keys, index=False).to_numpy(dtype=np.uint64)
    return np.where(buckets < np.uint64(pilot_share * 2.0**64), "pilot", "control")
