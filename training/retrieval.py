"""Where the ranker's explore scores come from: every item's score, or an index over the items.

The explore tower (:mod:`training.ranker`) reads, per customer, the explore model's best items
they never bought, the model's score at a few other items (their own, the popular head) and
the row's best score (the scale that makes families comparable). Scoring every item for every
customer is what a list costs on a large catalogue: at 100,000 items one customer's best new
items take about 3.5 ms and a block's about 0.7 ms a customer (``benchmarks/bench_retrieval.py``). So from
:attr:`training.ranking.RankingConfig.index_from_items` items on, a model whose scores are an
inner product (:meth:`training.models.base.Recommender.inner_product`: ALS, BPR, LightFM)
answers from an HNSW graph over its item vectors (faiss), and only the items the graph returns
and the few others asked for are scored. The graph is approximate: on the sample shops it
finds 99% of the exact candidates, and the training run measures it on the shop's own
customers (:func:`index_hits`). Evaluation, the bundle, the service and the batch
job all take their explore scores from here, so what is measured is what is served.
"""

from __future__ import annotations

import functools
import weakref
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from training.models.base import InnerProduct, Recommender
from training.top_k import best_columns

HNSW_NEIGHBOURS = 32
"""Links per item in the graph (faiss's ``M``)."""
HNSW_BUILD_DEPTH = 80
"""Candidates weighed when an item is linked in (``efConstruction``)."""
HNSW_SEARCH_DEPTH = 128
"""Candidates a search keeps (``efSearch``; at least the items asked for): 0.988 of the exact
candidates at 100,000 items on the sample shop, against 0.936 at 64 and 0.991 at 256
(``benchmarks/bench_retrieval.py``, docs/benchmarks.md)."""


def explore_scale(scores: np.ndarray) -> np.ndarray:
    """Per row, what puts the explore model's scores into [0, 1]: one over the row's best
    positive score (0 for a row without one), so that families of any scale read alike."""
    top = np.max(scores, axis=1) if scores.shape[1] else np.zeros(len(scores))
    return np.where(top > 0, 1.0 / np.where(top > 0, top, 1.0), 0.0).astype(np.float32)


class Explore(Protocol):
    """The explore model's scores for a block of customers, as the towers read them."""

    @property
    def n_items(self) -> int: ...

    def scale(self) -> np.ndarray:
        """Per row: :func:`explore_scale` of the row's scores."""
        ...

    def best_new(self, depth: int, owned: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """Per row, its best ``depth`` items but the (row, item) pairs ``owned``, best first
        (equal scores by item), -1 after a row's last."""
        ...

    def at(self, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        """The scores of (row, item) pairs."""
        ...

    def finite(self, items: np.ndarray) -> np.ndarray:
        """Per row, whether the model scores each of ``items`` at all (rows x len(items))."""
        ...


@dataclass(frozen=True)
class DenseExplore:
    """Every item's score (rows x items, float32): exact."""

    scores: np.ndarray

    @property
    def n_items(self) -> int:
        return int(self.scores.shape[1])

    def scale(self) -> np.ndarray:
        return self._scale

    @functools.cached_property
    def _scale(self) -> np.ndarray:  # both towers read it: one pass over the block
        return explore_scale(self.scores)

    def best_new(self, depth: int, owned: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        return best_columns(self.scores, depth, excluded=owned)[0]

    def at(self, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.scores[rows, items]

    def finite(self, items: np.ndarray) -> np.ndarray:
        return np.isfinite(self.scores[:, items])


class ItemIndex:
    """An HNSW graph (faiss) over a model's item vectors by inner product (an item's own offset
    as one more dimension). Built with one thread, so every worker that builds it from the same
    bundle with the same faiss on the same kind of CPU builds the same graph; a bundle keeps the
    one training built (:data:`INDEX_FILE`), so a worker reads it instead of building it."""

    def __init__(self, product: InnerProduct, search_depth: int = HNSW_SEARCH_DEPTH,
                 saved: np.ndarray | None = None) -> None:
        import faiss  # only a catalogue that large needs it

        self.product = product
        self.search_depth = search_depth
        self._faiss: Any = faiss
        vectors = product.item if product.item_offset is None else np.hstack([product.item,
                                                                              product.item_offset[:, None]])
        faiss.omp_set_num_threads(1)  # one core per worker, as every BLAS call here
        if saved is not None:
            self._index = faiss.deserialize_index(saved)
            if (self._index.ntotal, self._index.d) != vectors.shape:
                raise ValueError(f"the saved item index holds {self._index.ntotal} x {self._index.d} vectors, "
                                 f"the model {vectors.shape[0]} x {vectors.shape[1]}")
            return
        self._index = faiss.IndexHNSWFlat(vectors.shape[1], HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
        self._index.hnsw.efConstruction = HNSW_BUILD_DEPTH
        self._index.add(np.ascontiguousarray(vectors, dtype=np.float32))

    def serialized(self) -> np.ndarray:
        """The graph and its vectors as bytes (faiss's own format), for :data:`INDEX_FILE`."""
        return np.asarray(self._faiss.serialize_index(self._index), dtype=np.uint8)

    @property
    def n_items(self) -> int:
        return len(self.product.item)

    def search(self, customers: np.ndarray, k: int) -> np.ndarray:
        """Each customer's ``k`` items of highest score, as far as the graph finds them (-1 after).
        A search keeps ``max(search_depth, k)`` candidates, so a customer's answer depends on
        their own vector and ``k`` alone, never on who else is searched with them."""
        k = min(k, self.n_items)
        if not len(customers) or k <= 0:
            return np.full((len(customers), max(k, 0)), -1, dtype=np.int64)
        query = self.product.user[customers]
        if self.product.item_offset is not None:
            query = np.hstack([query, np.ones((len(query), 1), dtype=query.dtype)])
        self._faiss.omp_set_num_threads(1)  # OpenMP's setting is per thread: this one's too
        params = self._faiss.SearchParametersHNSW(efSearch=max(self.search_depth, k))  # per call: thread-safe
        _, found = self._index.search(np.ascontiguousarray(query, dtype=np.float32), k, params=params)
        return found.astype(np.int64)


_BUILT: weakref.WeakKeyDictionary[Recommender, ItemIndex] = weakref.WeakKeyDictionary()
"""Each fitted model's index, built once however many windows, rows and requests ask for it."""
INDEX_FILE = "item_index.npy"
"""Where a bundle keeps its primary model's index (faiss's bytes as a NumPy array: no pickle)."""


def restore_index(model: Recommender, saved: np.ndarray) -> None:
    """Make ``saved`` (:meth:`ItemIndex.serialized` of this model's index) the index
    :func:`item_index` answers for ``model``: a worker reads the graph training built."""
    product = model.inner_product()
    if product is not None:
        _BUILT[model] = ItemIndex(product, saved=saved)


def item_index(model: Recommender, n_items: int, index_from_items: int | None) -> ItemIndex | None:
    """The model's item index when the catalogue is at least ``index_from_items`` long and its
    scores are an inner product; None otherwise (every item is scored)."""
    if index_from_items is None or n_items < index_from_items:
        return None
    if model not in _BUILT:
        product = model.inner_product()
        if product is None:
            return None
        _BUILT[model] = ItemIndex(product)
    return _BUILT[model]


class IndexedExplore:
    """Scores from an :class:`ItemIndex`: each customer's best items as far as the graph finds
    them (``depth`` beyond their own items, which it returns too), and exact scores of any
    pair asked for. A customer's answer is the same in any block, alone or not."""

    def __init__(self, index: ItemIndex, customers: np.ndarray, owned: tuple[np.ndarray, np.ndarray],
                 depth: int) -> None:
        product = index.product
        n = len(customers)
        self._depth = depth
        self._user = product.user[customers]
        self._item = product.item
        self._user_offset = (product.user_offset[customers] if product.user_offset is not None
                             else np.zeros(n, dtype=np.float32))
        self._item_offset = product.item_offset
        own_rows, own_items = owned
        # each customer asks for depth items more than they own; most ask for no more than the
        # search keeps anyway, so one search answers them all, a heavy buyer's is their own
        wanted = np.maximum(depth + np.bincount(own_rows, minlength=n), index.search_depth)
        rows_found, items_found = [], []
        for k in np.unique(wanted):
            group = np.flatnonzero(wanted == k)
            found = index.search(customers[group], int(k))
            at_row, at_col = np.nonzero(found >= 0)
            rows_found.append(group[at_row])
            items_found.append(found[at_row, at_col])
        self._rows = np.concatenate(rows_found) if rows_found else np.zeros(0, dtype=np.int64)
        self._items = np.concatenate(items_found) if items_found else np.zeros(0, dtype=np.int64)
        self._scores = self.at(self._rows, self._items)
        top = np.full(n, -np.inf, dtype=np.float32)
        np.maximum.at(top, self._rows, self._scores)
        if len(own_rows):  # the row's best may be an item the graph did not return
            np.maximum.at(top, own_rows, self.at(own_rows, own_items))
        self._scale = explore_scale(top[:, None])

    @property
    def n_items(self) -> int:
        return len(self._item)

    def scale(self) -> np.ndarray:
        return self._scale

    def best_new(self, depth: int, owned: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        if depth > self._depth:
            raise ValueError(f"searched for {self._depth} new items a customer, not {depth}")
        n = len(self._scale)
        key = self._rows.astype(np.int64) * self.n_items + self._items
        new = ~np.isin(key, owned[0].astype(np.int64) * self.n_items + owned[1])
        rows, items, scores = self._rows[new], self._items[new], self._scores[new]
        order = np.lexsort((items, -scores, rows))  # by row, best first, equal scores by item
        rows, items = rows[order], items[order]
        counts = np.bincount(rows, minlength=n)
        place = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)  # each one's place in its row
        keep = place < depth
        out = np.full((n, depth), -1, dtype=np.int64)
        out[rows[keep], place[keep]] = items[keep]
        width = int((out >= 0).sum(axis=1).max(initial=0))
        return out[:, :width]

    def at(self, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        scores = np.einsum("ij,ij->i", self._user[rows], self._item[items]) + self._user_offset[rows]
        if self._item_offset is not None:
            scores = scores + self._item_offset[items]
        return scores.astype(np.float32)

    def finite(self, items: np.ndarray) -> np.ndarray:
        return np.ones((len(self._scale), len(items)), dtype=bool)  # a factor model scores every item


def index_hits(index: ItemIndex, exact: DenseExplore, customers: np.ndarray,
               owned: tuple[np.ndarray, np.ndarray], depth: int) -> tuple[int, int]:
    """Of the exact best ``depth`` new items of ``customers`` (``exact``: their every item's
    score), how many the index finds, and how many there are: the recall a training run reports."""
    truth = exact.best_new(depth, owned)
    found = IndexedExplore(index, customers, owned, depth).best_new(depth, owned)
    truth_rows, truth_cols = np.nonzero(truth >= 0)
    found_rows, found_cols = np.nonzero(found >= 0)
    width = exact.n_items
    hits = np.isin(truth_rows * width + truth[truth_rows, truth_cols], found_rows * width + found[found_rows, found_cols])
    return int(hits.sum()), len(truth_rows)
