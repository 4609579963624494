"""Which customer a record belongs to, and fast membership and lookup on string ids."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


def identify(records: pd.DataFrame, customers: pd.DataFrame) -> pd.DataFrame:
    """`records` with `customer_id` filled from the customer with the same e-mail hash.

    Sources that carry the CRM id keep it; others (a survey with only an e-mail) are joined
    by the normalised e-mail's hash; the rest stay without a customer.
    """
    if "email_hash" not in records.columns:
        return records
    unknown = records["customer_id"].isna() & records["email_hash"].notna()
    if not unknown.any():
        return records
    # `lookup` takes the first customer with the hash, should two share one.
    by_email = customers.set_index("email_hash")["customer_id"]
    found = lookup(records.loc[unknown, "email_hash"], by_email)
    return records.assign(customer_id=records["customer_id"].fillna(found))


def _ids(values: pd.Series | pd.Index) -> pa.Array:
    """Ids as Arrow: numbers (customer numbers, `CxData.numbered`) as floats, else text."""
    if pd.api.types.is_numeric_dtype(values):
        return pa.array(np.asarray(values, dtype=float), from_pandas=True)
    return pa.array(values, type=pa.large_string(), from_pandas=True)


def is_in(values: pd.Series, known: pd.Series | pd.Index) -> np.ndarray:
    """`values.isin(known)` for string ids as a boolean array; missing values never match.

    Through Arrow: pandas 3 builds a Python object per element of `known` for string
    columns, seconds per call at a million customers.
    """
    return pc.is_in(_ids(values), value_set=_ids(known), skip_nulls=True).to_numpy(
        zero_copy_only=False
    )


def lookup(keys: pd.Series, table: pd.Series) -> pd.Series:
    """`keys.map(table)` for string ids: `table`'s value at each key, NaN where none.

    Through Arrow, for the same reason as `is_in`; `table`'s index should be unique (the
    first match wins).
    """
    values = pd.api.extensions.take(table.array, rows_in(keys, table.index), allow_fill=True)
    return pd.Series(values, index=keys.index, name=keys.name)


def rows_in(keys: pd.Series, known: pd.Series | pd.Index) -> np.ndarray:
    """Position of each key in `known`, -1 where absent. Millions of keys are looked up in
    slices on all cores (Arrow releases the GIL): hashing the text ids is most of the cost."""
    ids, value_set = _ids(keys), _ids(known)
    if len(ids) < PARALLEL_ROWS or THREADS < 2:
        return _positions(ids, value_set)
    size = -(-len(ids) // THREADS)  # one slice per core: each builds its own hash table
    slices = [ids.slice(start, size) for start in range(0, len(ids), size)]
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        return np.concatenate(list(pool.map(lambda part: _positions(part, value_set), slices)))


def _positions(ids: pa.Array, value_set: pa.Array) -> np.ndarray:
    return pc.index_in(ids, value_set=value_set).fill_null(-1).to_numpy()


# Cores that lookups and the ranking's candidate kinds share; `rows_in` slices more keys.
THREADS = min(os.cpu_count() or 1, 8)
PARALLEL_ROWS = 1_000_000
