"""What a request's lists are drawn from, made once per bundle, so that a request merges a few
short candidate lists instead of scoring the whole catalogue.

- **Partners** (:func:`top_partners`): each item's best co-occurrence partners, the cart's
  candidates; deep enough that the cross-sells keep the exact lists' items (a test measures it).
- **Customer rows** (:class:`CustomerRows`): each customer's personal scores, scaled into [0, 1]
  by their best (with a ranker, its candidates: a hundred or so items per customer), and what
  the rules keep from them (:class:`Exclusions`), one sparse row each; made for the whole base when the service
  warms a bundle, within a memory budget, else one customer at a time (a batch job, a test, a
  base too large for the budget).
- **Ranked tiers** (:class:`TierLists`): the shop's popular items, per category and per fallback
  list, best first, of which a request reads only a prefix (:func:`training.tiers.rank_tiers`).

A sparse vector here is (items ascending, float32 scores); an item it does not name scores 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from training.ranker import Personal
from training.ranking import Candidates, Fallbacks, Rules
from training.tiers import AnyTier, Tier, TierUnion
from training.top_k import rows_of

CUSTOMER_ROWS_BYTES = 512 * 2**20
"""Memory the whole base's rows of one kind may take; beyond it they are made per request."""
WARM_BLOCK = 2048
"""Customers whose rows are made at once when they are made for the whole base (at most)."""
PROBE = 64
"""Customers whose rows are made first, to estimate the whole base's against the budget."""


@dataclass(frozen=True)
class Sparse:
    """Scores for the items named, ascending (every other item scores 0)."""

    items: np.ndarray
    scores: np.ndarray

    @classmethod
    def empty(cls) -> Sparse:
        return cls(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32))

    @classmethod
    def from_dense(cls, scores: np.ndarray) -> Sparse:
        items = np.flatnonzero(scores)
        return cls(items, scores[items].astype(np.float32))

    def on(self, items: np.ndarray) -> np.ndarray:
        """The scores of ``items``, 0 for those not named."""
        if not len(self.items):
            return np.zeros(len(items), dtype=np.float32)
        at = np.minimum(np.searchsorted(self.items, items), len(self.items) - 1)
        return np.where(self.items[at] == items, self.scores[at], 0.0).astype(np.float32)


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """``np.unique`` of a request's few hundred items by one sort: cheaper at these sizes."""
    merged = np.sort(values).astype(np.int64)
    first = np.ones(len(merged), dtype=bool)
    first[1:] = merged[1:] != merged[:-1]
    return merged[first]


def union(arrays: list[np.ndarray]) -> np.ndarray:
    """The items of any of ``arrays`` (each ascending, each item once), ascending."""
    given = [a for a in arrays if len(a)]
    if len(given) <= 1:
        return given[0].astype(np.int64) if given else np.zeros(0, dtype=np.int64)
    return sorted_unique(np.concatenate(given))


def blend(parts: list[tuple[float, Sparse]]) -> Sparse:
    """``w1 * s1 + w2 * s2 + ...`` on the union of their items, in float32 and in that order: the
    very numbers the same sum over whole catalogue rows gives."""
    items = union([part.items for _, part in parts])
    total: np.ndarray = np.zeros(len(items), dtype=np.float32)
    for weight, part in parts:
        total = total + np.float32(weight) * part.on(items)
    return Sparse(items, total)


def scale_to_best(scores: np.ndarray) -> np.ndarray:
    """Scores scaled into [0, 1] by the best positive one (all 0 without one), float32: what
    every personal and partner score is blended at, so families of any scale blend by weight."""
    top = np.max(scores, axis=-1, keepdims=True, initial=0.0)
    return np.where(top > 0, np.clip(scores, 0, None) / np.where(top > 0, top, 1.0), 0.0).astype(np.float32)


def top_partners(item_item: sp.csr_matrix, depth: int | None) -> sp.csr_matrix:
    """Each row's best ``depth`` stored entries (all of them with None), columns ascending; equal
    scores keep the lower column."""
    matrix = sp.csr_matrix(item_item, dtype=np.float32, copy=True)
    matrix.sort_indices()
    if depth is None or not matrix.nnz or np.diff(matrix.indptr).max() <= depth:
        return matrix
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    order = np.lexsort((matrix.indices, -matrix.data, rows))  # per row: best first, ties by column
    place = np.arange(matrix.nnz) - np.repeat(matrix.indptr[:-1], np.diff(matrix.indptr))
    keep = np.zeros(matrix.nnz, dtype=bool)
    keep[order[place < depth]] = True
    kept = sp.csr_matrix((matrix.data[keep], (rows[keep], matrix.indices[keep])), shape=matrix.shape)
    kept.sort_indices()
    return kept


@dataclass(frozen=True)
class CartPartners:
    """The cart's (and the live session's) partner scores, with who pulls each item."""

    scores: Sparse
    """Sum over anchors of weight x partner score, scaled into [0, 1]."""
    anchor: np.ndarray
    item: np.ndarray
    pull: np.ndarray
    """Per stored (anchor position, item) entry, in anchor order: weight x partner score."""

    @classmethod
    def of(cls, partners: sp.csr_matrix, anchors: np.ndarray, weights: np.ndarray) -> CartPartners:
        anchor, item, value = rows_of(partners, anchors)
        pull = value * weights[anchor]
        items = sorted_unique(item) if len(anchors) > 1 else item.astype(np.int64)
        at = np.searchsorted(items, item)
        total = np.zeros(len(items), dtype=np.float32)
        np.add.at(total, at, pull)  # anchor by anchor, in float32, as a sparse product sums them
        return cls(Sparse(items, scale_to_best(total)), anchor, item, pull)

    def strongest(self, item: int) -> int:
        """Position of the anchor that pulls ``item`` hardest (the first of equals)."""
        column = self.item == item
        return int(self.anchor[column][np.argmax(self.pull[column])])


class CustomerRows:
    """One sparse row per customer, made by ``make`` (internal indices -> rows x items csr, columns
    ascending): for the whole base at once by :meth:`warm`, else one customer at a time."""

    def __init__(self, make: Callable[[np.ndarray], sp.csr_matrix], n_items: int) -> None:
        self.make = make
        self.n_items = n_items
        self.rows: sp.csr_matrix | None = None

    def warm(self, customers: np.ndarray, n_customers: int, block: int = WARM_BLOCK) -> bool:
        """Make the rows of ``customers`` (internal indices, ascending) now, ``block`` customers at
        a time (the bundle's dense scoring block), unless they would take more than
        :data:`CUSTOMER_ROWS_BYTES`: a first :data:`PROBE` customers estimate the whole base, and
        the running total stops the making as soon as it passes the budget. False: served per
        request."""
        blocks, entries = [], 0
        starts = [0, *range(min(PROBE, len(customers)), len(customers), max(block, 1))] if len(customers) else []
        for start, end in zip(starts, [*starts[1:], len(customers)] if starts else [], strict=True):
            made = self.make(customers[start:end])
            entries += made.nnz  # 12 bytes an entry: a float32 value, an int32 item, an index pointer's share
            estimate = entries * len(customers) / end if not start else entries
            if 12 * estimate > CUSTOMER_ROWS_BYTES:
                return False
            blocks.append(made)
        counts = np.zeros(n_customers, dtype=np.int64)
        if blocks:
            counts[customers] = np.concatenate([np.diff(b.indptr) for b in blocks])
        indices = np.concatenate([b.indices for b in blocks]) if blocks else np.zeros(0, dtype=np.int32)
        data = np.concatenate([b.data for b in blocks]) if blocks else np.zeros(0, dtype=np.float32)
        self.rows = sp.csr_matrix((data, indices, np.concatenate([[0], np.cumsum(counts)])),
                                  shape=(n_customers, self.n_items))
        return True

    def of(self, customer: int) -> Sparse:
        """The customer's row (an internal index)."""
        made = self.rows  # read once: the rows of the whole base, or None
        rows = made if made is not None else self.make(np.array([customer]))
        at = customer if made is not None else 0
        start, end = rows.indptr[at], rows.indptr[at + 1]
        return Sparse(rows.indices[start:end].astype(np.int64), rows.data[start:end])


def personal_rows(personal: Personal, n_items: int) -> CustomerRows:
    """Each customer's personal scores (:class:`training.ranker.Personal`: the ranker's candidates,
    else the model's whole row), scaled into [0, 1] by their best, positive ones only."""

    def make(customers: np.ndarray) -> sp.csr_matrix:
        scores = personal.score(customers)
        if isinstance(scores, Candidates):
            scaled = scale_to_best(scores.scores)
            rows, cols = np.nonzero((scores.items >= 0) & (scaled > 0))
            items, values = scores.items[rows, cols], scaled[rows, cols]
        else:
            scaled = scale_to_best(np.asarray(scores, dtype=np.float32))
            rows, items = np.nonzero(scaled > 0)
            values = scaled[rows, items]
        return _csr(rows, items, values, (len(customers), n_items))

    return CustomerRows(make, n_items)


class Exclusions(CustomerRows):
    """What the rules keep from each customer whatever the score (:meth:`training.ranking.Rules.excluded`),
    one row per customer: the items excluded one by one, then the categories a recent purchase
    blocks, one entry each (column ``n_catalogue`` + the category's code).

    A category block covers thousands of items of a large catalogue: rows with the blocks
    spelled out as items passed the memory budget (on the 40,000-item sample shop already), and
    were made per request.
    Here a request spells out its one customer's few blocks from the categories' members.
    """

    def __init__(self, rules: Rules) -> None:
        self.members = rules.members
        """Category x item: the category's non-repeat items (what its block keeps away)."""
        self.n_catalogue = rules.n_items
        width = self.n_catalogue + self.members.shape[0]

        def make(customers: np.ndarray) -> sp.csr_matrix:
            (item_rows, items), (block_rows, categories) = rules.excluded_parts(customers)
            rows = np.concatenate([item_rows, block_rows])
            columns = np.concatenate([items, self.n_catalogue + categories])
            return _csr(rows, columns, np.ones(len(rows), dtype=np.float32), (len(customers), width))

        super().__init__(make, width)

    def items_of(self, customer: int) -> np.ndarray:
        """The items kept from the customer (an internal index), blocks spelled out; an item may
        come twice."""
        row = self.of(customer).items
        split = int(np.searchsorted(row, self.n_catalogue))
        if split == len(row):
            return row
        members = self.members
        return np.concatenate([row[:split], *(members.indices[members.indptr[c]:members.indptr[c + 1]]
                                              for c in (row[split:] - self.n_catalogue).tolist())])


def _csr(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    matrix = sp.csr_matrix((values, (rows, cols)), shape=shape, dtype=np.float32)
    matrix.sum_duplicates()  # columns ascending, each once
    return matrix


@dataclass(frozen=True)
class TierLists:
    """The popular tiers, ranked once: per category (its items by the shop's popularity), per
    fallback list (:class:`training.ranking.Fallbacks`), and every item (popularity, then any)."""

    by_category: list[Tier]
    by_fallback: list[Tier]
    anything: Tier

    @classmethod
    def build(cls, popularity: np.ndarray, item_category: np.ndarray, n_categories: int,
              fallbacks: Fallbacks) -> TierLists:
        by_category = [Tier.from_dense(np.where(item_category == c, popularity, 0.0)) for c in range(n_categories)]
        by_fallback = [Tier.from_dense(row) for row in fallbacks.scores]
        return cls(by_category, by_fallback, Tier.from_dense(popularity + 1e-6))

    def in_categories(self, categories: np.ndarray) -> AnyTier:
        """Popular items of any of ``categories``, best first (merged as deep as a request reads)."""
        tiers = [self.by_category[c] for c in sorted(set(categories.tolist()))]
        return tiers[0] if len(tiers) == 1 else TierUnion(tiers)
