"""Business rules shared by evaluation, the bundle, the service and the batch job.

One place, so that offline metrics measure the same lists the shop will show.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp


def durable_exclusions(purchases: sp.csr_matrix, durable: pd.Series | np.ndarray,
                       customers: np.ndarray | None = None) -> sp.csr_matrix:
    """Items a customer already bought that must not be suggested again: durables only.

    Consumables (coffee, pet food) are legitimately re-bought, so they stay recommendable.
    Rows follow ``customers`` (all customers when None).
    """
    rows = purchases if customers is None else purchases[customers]
    mask = sp.csr_matrix(rows @ sp.diags(np.asarray(durable, dtype=np.float32)))
    mask.eliminate_zeros()
    mask.data[:] = 1.0
    return mask


def out_of_stock_mask(in_stock: pd.Series | np.ndarray, n_rows: int) -> sp.csr_matrix:
    """A mask with the out-of-stock items set on every one of ``n_rows`` rows."""
    out = ~np.asarray(in_stock, dtype=bool)
    cols = np.flatnonzero(out)
    rows = np.repeat(np.arange(n_rows), len(cols))
    return sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, np.tile(cols, n_rows))),
                         shape=(n_rows, len(out)))
