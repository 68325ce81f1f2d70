"""Where ids sit in an index of unique ids: the one look-up for a request's few ids and a
table's millions.

Below :mod:`features.loading` (aliases are resolved with it), so it imports no other module
of the package.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

FEW_IDS = 16
"""Up to this many ids are looked up one by one (a request's customer or cart), beyond it in one
``get_indexer``: pandas builds an Index of the ids for that, which costs a request more than
the look-ups themselves."""
COLUMN_IDS = 100_000
"""From this many ids on (a table's column, not a request's list), pyarrow looks them up in their
own Arrow strings: ``get_indexer`` would first make a Python string of every one (tens of bytes
each, millions of them)."""


def positions(index: pd.Index, ids: pd.Series | np.ndarray | list[str]) -> np.ndarray:
    """``index.get_indexer(ids)`` for a unique ``index``: each id's position, -1 where absent."""
    if len(ids) <= FEW_IDS:
        out = np.full(len(ids), -1, dtype=np.intp)
        for n, value in enumerate(ids):
            try:
                out[n] = index.get_loc(value)
            except (KeyError, TypeError):  # absent, or not an id at all (unhashable)
                pass
        return out
    if len(ids) >= COLUMN_IDS and isinstance(ids, pd.Series) and pd.api.types.is_string_dtype(ids):
        try:
            value_set = pa.array(index.to_numpy(), type=pa.string())
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # an index that is not all strings: pandas' look-up
            return index.get_indexer(pd.Index(ids, dtype=object))
        found = pc.index_in(pa.array(ids, type=pa.string(), from_pandas=True), value_set=value_set)
        return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.intp)
    return index.get_indexer(pd.Index(ids, dtype=object))


def members(column: pd.Series, values: pd.Index | pd.Series | np.ndarray) -> np.ndarray:
    """``column.isin(values)`` as a bool array. For a column of strings pyarrow finds them in one
    call: pandas' ``isin`` on Arrow strings first makes a Python scalar of every value looked for."""
    if pd.api.types.is_string_dtype(column):
        try:
            value_set = pa.array(values, type=pa.string(), from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # values that are not all strings: pandas' look-up
            return column.isin(values).to_numpy(dtype=bool)
        found = pc.is_in(pa.array(column, type=pa.string(), from_pandas=True), value_set=value_set)
        return found.to_numpy(zero_copy_only=False).astype(bool)
    return column.isin(values).to_numpy(dtype=bool)
