"""Item-to-item co-occurrence: what is bought in the same basket, and by the same customer.

Counts come from one sparse product (groups x items)^T (groups x items); statistics are
confidence P(j | i) with a shrinkage term, so an item seen once does not claim certainty,
and lift, so that the merely popular can be told from the truly complementary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp


@dataclass(frozen=True)
class Cooccurrence:
    """Pair counts (csr, zero diagonal), per-item group counts and the number of groups."""

    pairs: sp.csr_matrix
    item_groups: np.ndarray
    n_groups: int

    def confidence(self, shrinkage: float = 5.0, min_support: int = 2) -> sp.csr_matrix:
        """Row i holds P(j | i) = count(i, j) / (count(i) + shrinkage) for pairs seen min_support times."""
        pairs = self.pairs.copy()
        pairs.data[pairs.data < min_support] = 0
        pairs.eliminate_zeros()
        seen = self.item_groups.astype(np.float64) + shrinkage
        # an item in no group has no pairs either: its row stays empty (not 1/0 with shrinkage 0)
        scale = np.divide(1.0, seen, out=np.zeros_like(seen), where=seen > 0)
        return sp.csr_matrix(sp.diags(scale.astype(np.float32)) @ pairs)

    def lift(self, min_support: int = 2) -> sp.csr_matrix:
        """count(i, j) * N / (count(i) count(j)): 1 means independent, far above 1 means 'goes with'."""
        coo = self.pairs.tocoo()
        keep = coo.data >= min_support
        rows, cols, counts = coo.row[keep], coo.col[keep], coo.data[keep].astype(np.float64)
        values = counts * self.n_groups / (self.item_groups[rows] * self.item_groups[cols])
        return sp.csr_matrix((values.astype(np.float32), (rows, cols)), shape=self.pairs.shape)


def cooccurrence(group_keys: pd.Series, item_idx: np.ndarray, n_items: int) -> Cooccurrence:
    """Co-occurrence of items within groups (orders for baskets, customers for histories).

    An item counts once per group however many times it appears in it.
    """
    groups, _ = pd.factorize(group_keys, sort=False)
    n_groups = int(groups.max()) + 1 if len(groups) else 0
    membership = sp.csr_matrix((np.ones(len(groups), dtype=np.float32), (groups, item_idx)),
                               shape=(n_groups, n_items))
    membership.data[:] = 1.0  # duplicates summed by the constructor; binarise
    membership.sum_duplicates()
    membership.data[:] = 1.0
    pairs = (membership.T @ membership).tocsr()
    pairs.setdiag(0)
    pairs.eliminate_zeros()
    item_groups = np.asarray(membership.sum(axis=0)).ravel()
    return Cooccurrence(pairs.astype(np.float32), item_groups, n_groups)
