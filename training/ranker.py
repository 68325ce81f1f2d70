"""The repeat/explore ranker: one probability per (customer, item), learned per shop on its
validation window, for items the customer bought before and items new to them alike.

On grocery and retail data a customer's own most-bought items beat most collaborative models
(Li et al., "A Next Basket Recommendation Reality Check", 2023), yet most of what a customer
buys next is new to them. So each list merges two kinds of candidates by the one number that
makes them comparable, the probability of being bought in the next window:

- **buy again** (``own`` tower): every item the customer bought, described by how often they
  bought it, how re-buyable it is (:mod:`features.repurchase`), how far into its re-buy
  interval the last purchase is (due or not yet), its popularity, the explore model's score,
  and how much of the customer's buying its product type takes and this item within that type
  (a household that has switched brands of milk);
- **explore** (``new`` tower): the best items the customer never bought by the explore model
  (ALS, EASE, LightFM, item-item) and by popularity, described by their scores and ranks and
  by how much of the customer's buying the item's product type takes (a new variant of what
  they buy every week against an item of a kind they never buy).

Each tower is a standardised logistic regression fitted on the validation window's real
purchases (every own pair, every candidate pair: no sampling, so the two are calibrated
alike and can be merged by probability). Serving needs numpy only: the fitted scaler and
coefficients are plain arrays in the bundle.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.errors import UserError
from training.models.base import Recommender
from training.ranking import Candidates
from training.retrieval import DenseExplore, Explore, IndexedExplore, ItemIndex
from training.top_k import rows_of

DUE_EDGES = (0.25, 0.5, 0.75, 1.0, 1.5, 3.0)
"""Where a purchase stands in its item's re-buy interval (days since / interval): one indicator
per band, so the towers learn the shop's own shape (just bought, filling up, due, overdue,
lapsed) rather than one assumed curve."""
REACH_EDGES = (0.5, 0.75, 1.0, 1.5)
"""Where the end of the lists' horizon falls in the interval ((days since + horizon) / interval):
below 0.75 the item cannot be due before the next list; the towers learn how much that costs."""
OWN_FEATURES = ("log_count", "rebuy_logit",
                *(f"due_band_{lo:g}_{hi:g}" for lo, hi in pairwise(DUE_EDGES)), "due_band_lapsed",
                *(f"reach_band_{lo:g}_{hi:g}" for lo, hi in pairwise(REACH_EDGES)), "reach_band_beyond",
                "explore", "popularity", "recent_popularity", "activity", "group_share", "share_of_group")
NEW_FEATURES = ("explore", "explore_rank", "popularity", "popularity_rank", "recent_popularity", "activity",
                "group_share")
"""``group_share``: the customer's purchase lines in the item's group (its product type, else its
category: :attr:`training.ranking.Rules.group`) over all their lines; ``share_of_group``: the
customer's lines of the item over their lines in its group."""
EXPLORE_DEPTH = 30
"""New-to-the-customer candidates per customer from each of the explore model and popularity."""
MAX_FIT_CUSTOMERS = 20_000
"""Validation customers the towers are fitted on at most (a random subset beyond, over all the
windows): plenty for a handful of coefficients, and it bounds the fit on a base of millions."""


def gather(matrix: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``matrix[rows[i], cols[i]]`` for every i as a flat array (also when there are none)."""
    if not len(rows):
        return np.zeros(0, dtype=matrix.dtype)
    return np.asarray(matrix[rows, cols]).ravel()


def _log_share(counts: np.ndarray) -> np.ndarray:
    top = float(np.max(counts)) if len(counts) else 0.0
    return (np.log1p(counts) / np.log1p(top) if top > 0 else np.zeros_like(counts, dtype=np.float64)).astype(np.float32)


@dataclass(frozen=True)
class History:
    """What the towers read besides the explore model, as of one instant: who bought what, how
    often and how long ago, and per item its popularity and learned re-buy profile."""

    counts: sp.csr_matrix
    """Customer x item purchase lines."""
    bought: sp.csr_matrix
    """Customer x item days since the last purchase plus one (:func:`training.ranking.days_since_last`)."""
    popularity: np.ndarray
    """Per item, log-scaled into [0, 1]: all purchases."""
    popularity_order: np.ndarray
    """Items by popularity, most bought first (ties by index): the explore tower's popular candidates."""
    popularity_place: np.ndarray
    """Per item, its position in ``popularity_order``."""
    recent_popularity: np.ndarray
    """Per item, log-scaled into [0, 1]: purchases in the last ``recent_days``."""
    rebuy_logit: np.ndarray
    interval_days: np.ndarray
    lines: np.ndarray
    """Per customer: purchase lines."""
    activity: np.ndarray
    """Per customer, log-scaled into [0, 1]: purchase lines."""
    horizon_days: float
    """The lists' horizon: "due" means a next purchase is expected within it."""
    group: np.ndarray
    """Per item: its group (:attr:`training.ranking.Rules.group`)."""
    groups: int
    """How many groups (one more than the highest code)."""

    @classmethod
    def from_arrays(cls, counts: sp.csr_matrix, bought: sp.csr_matrix, item_counts: np.ndarray,
                    recent_counts: np.ndarray, rebuy: pd.DataFrame, horizon_days: float, group: np.ndarray
                    ) -> History:
        """``rebuy`` is the item re-buy profile (features/repurchase.py) in item-index order;
        ``group`` each item's group code (0 to the number of groups - 1)."""
        rebuy_prob = rebuy["rebuy_prob"].to_numpy(dtype=np.float64)
        interval_days = rebuy["interval_days"].to_numpy(dtype=np.float64)
        prob = np.clip(np.nan_to_num(rebuy_prob, nan=0.0), 1e-4, 1 - 1e-4)
        interval = np.where(np.isfinite(interval_days) & (interval_days > 0), interval_days, np.nan)
        fill = float(np.nanmedian(interval)) if np.isfinite(interval).any() else 30.0
        popularity = _log_share(item_counts.astype(np.float64))
        counts, bought = counts.tocsr(), bought.tocsr()
        counts.sort_indices()
        bought.sort_indices()
        order = np.argsort(-popularity, kind="stable")
        place = np.empty(len(order), dtype=np.int64)
        place[order] = np.arange(len(order))
        group = np.asarray(group, dtype=np.int64)
        if len(group) != counts.shape[1] or (len(group) and group.min() < 0):
            raise ValueError(f"group: one code >= 0 per item expected ({len(group)} for {counts.shape[1]} items)")
        per_customer = np.asarray(counts.sum(axis=1)).ravel()
        return cls(counts=counts, bought=bought, popularity=popularity, popularity_order=order, popularity_place=place,
                   recent_popularity=_log_share(recent_counts.astype(np.float64)),
                   rebuy_logit=np.log(prob / (1 - prob)).astype(np.float32),
                   interval_days=np.nan_to_num(interval, nan=fill).astype(np.float32),
                   lines=per_customer.astype(np.float64), activity=_log_share(per_customer),
                   horizon_days=float(horizon_days), group=group, groups=int(group.max(initial=-1)) + 1)

    def group_share(self, rows: np.ndarray, own: tuple[np.ndarray, np.ndarray, np.ndarray], pair_rows: np.ndarray,
                    items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For (row position, item) pairs of customers ``rows``: the customer's lines in the item's
        group over all their lines, and those lines themselves. ``own``: the customers' purchase
        lines, ``rows_of(self.counts, rows)``; summed per (row, group) here, a block at a time, so
        that one customer's request costs a few numpy calls, not a sparse look-up."""
        own_rows, own_items, count = own
        width = max(self.groups, 1)
        keys, inverse = np.unique(own_rows.astype(np.int64) * width + self.group[own_items], return_inverse=True)
        sums = np.bincount(inverse, weights=count.astype(np.float64), minlength=len(keys))
        wanted = pair_rows.astype(np.int64) * width + self.group[items]
        at = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
        lines = np.where(keys[at] == wanted, sums[at], 0.0) if len(keys) else np.zeros(len(wanted))
        return lines / np.maximum(self.lines[rows][pair_rows], 1.0), lines


@dataclass(frozen=True)
class Pairs:
    """Feature rows of one tower: (row position, item) pairs and their features."""

    rows: np.ndarray
    items: np.ndarray
    features: np.ndarray


def _bands(values: np.ndarray, edges: tuple[float, ...]) -> np.ndarray:
    """One indicator column per band above the first edge (below it: all zeros)."""
    band = np.searchsorted(np.asarray(edges), values, side="right")
    return (band[:, None] == np.arange(1, len(edges) + 1)[None, :]).astype(np.float32)


def own_pairs(history: History, rows: np.ndarray, explore: Explore) -> Pairs:
    """Every item each customer bought, with :data:`OWN_FEATURES` (``explore``: the explore
    model's scores for customers ``rows``, :mod:`training.retrieval`)."""
    own_row, own_col, count = rows_of(history.counts, rows)
    bought_row, bought_col, bought_since = rows_of(history.bought, rows)
    if np.array_equal(bought_row, own_row) and np.array_equal(bought_col, own_col):  # same pairs, same order
        days = bought_since.astype(np.float64) - 1.0
    else:
        days = gather(history.bought, rows[own_row], own_col) - 1.0
    since = np.maximum(days, 0.0) + 1.0
    interval = history.interval_days[own_col]
    share, group_lines = history.group_share(rows, (own_row, own_col, count), own_row, own_col)
    bands = np.hstack([_bands(since / interval, DUE_EDGES), _bands((since + history.horizon_days) / interval,
                                                                 REACH_EDGES)])
    features = np.column_stack([
        np.log1p(count), history.rebuy_logit[own_col], bands,
        np.clip(explore.at(own_row, own_col), 0, None) * explore.scale()[own_row],
        history.popularity[own_col], history.recent_popularity[own_col], history.activity[rows][own_row],
        share, count / np.maximum(group_lines, 1.0),
    ]).astype(np.float32)
    return Pairs(own_row.astype(np.int64), own_col.astype(np.int64), features)


def new_pairs(history: History, rows: np.ndarray, explore: Explore, depth: int = EXPLORE_DEPTH) -> Pairs:
    """Per customer, the ``depth`` best items they never bought by the explore model and by
    popularity (the union), with :data:`NEW_FEATURES`.

    The explore model's best per block (:meth:`training.retrieval.Explore.best_new`); popularity is one global order, of
    which each row takes its first ``depth`` items it does not own. An item both lists hold
    appears once, with both ranks. Pairs come as the explore list's, row by row, then the popular
    additions, row by row.
    """
    n, n_items = len(rows), explore.n_items
    depth = min(depth, n_items)
    own_rows, own_cols, own_counts = rows_of(history.counts, rows)
    top = explore.best_new(depth, (own_rows, own_cols))
    explore_ok = top >= 0

    width = min(n_items, depth + int(np.bincount(own_rows, minlength=n).max(initial=0)))
    head = history.popularity_order[:width]  # every row's popular candidates come from here
    not_own = explore.finite(head)
    own_place = history.popularity_place[own_cols]
    in_head = own_place < width
    not_own[own_rows[in_head], own_place[in_head]] = False
    popular_rank = np.cumsum(not_own, axis=1)
    popular_ok = not_own & (popular_rank <= depth)
    explore_rows, explore_column = np.nonzero(explore_ok)
    explore_items = top[explore_rows, explore_column]
    explore_rank = (explore_column + 1).astype(np.float64)
    # the explore candidates that are also in the popular head, by their place there
    place = history.popularity_place[explore_items]
    shared = np.flatnonzero(place < width)
    shared_rows, shared_place = explore_rows[shared], place[shared]
    explore_popular_rank = np.zeros(len(explore_items), dtype=np.float64)
    explore_popular_rank[shared] = np.where(popular_ok[shared_rows, shared_place],
                                            popular_rank[shared_rows, shared_place], 0)
    extra = popular_ok.copy()  # popular candidates the explore list lacks
    extra[shared_rows, shared_place] = False
    extra_rows, extra_place = np.nonzero(extra)
    union_rows = np.concatenate([explore_rows, extra_rows])
    union_items = np.concatenate([explore_items, head[extra_place]])
    explore_ranks = np.concatenate([explore_rank, np.full(len(extra_rows), depth + 1.0)])
    popular_ranks = np.concatenate([explore_popular_rank, popular_rank[extra_rows, extra_place].astype(np.float64)])

    def scaled(rank: np.ndarray) -> np.ndarray:  # 1 -> 0, beyond the depth -> 1
        return np.log(np.where(rank > 0, rank, depth + 1.0)) / np.log(depth + 1)

    features = np.column_stack([
        np.clip(explore.at(union_rows, union_items), 0, None) * explore.scale()[union_rows], scaled(explore_ranks),
        history.popularity[union_items], scaled(popular_ranks), history.recent_popularity[union_items],
        history.activity[rows][union_rows],
        history.group_share(rows, (own_rows, own_cols, own_counts), union_rows, union_items)[0],
    ]).astype(np.float32)
    return Pairs(union_rows.astype(np.int64), union_items.astype(np.int64), features)


@dataclass(frozen=True)
class Tower:
    """A standardised logistic regression as arrays; ``constant`` when training saw one class only."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    constant: float | None = None

    def probability(self, features: np.ndarray) -> np.ndarray:
        if self.constant is not None:
            return np.full(len(features), self.constant, dtype=np.float32)
        # the standardisation folded into the weights: one product, no (features - mean) / scale temporaries
        weights = self.coef / self.scale
        logit = features @ weights + (self.intercept - self.mean @ weights)  # float64: a row's answer is its own
        return (1.0 / (1.0 + np.exp(-np.clip(logit, -30, 30)))).astype(np.float32)

    def to_dict(self) -> dict[str, object]:
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist(), "coef": self.coef.tolist(),
                "intercept": self.intercept, "constant": self.constant}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Tower:
        return cls(np.asarray(data["mean"], dtype=np.float64), np.asarray(data["scale"], dtype=np.float64),
                   np.asarray(data["coef"], dtype=np.float64), float(data["intercept"]), data.get("constant"))

    def aligned(self, saved: Sequence[str], names: tuple[str, ...]) -> Tower:
        """This tower, fitted on features ``saved``, over features ``names``: a feature added since
        it was fitted weighs nothing, so a bundle saved by an earlier version ranks as it did."""
        if len(saved) != len(self.coef):
            raise UserError(f"bundle's ranker names {len(saved)} features for {len(self.coef)} weights: retrain it")
        if tuple(saved) == names:
            return self
        if unknown := sorted(set(saved) - set(names)):
            raise UserError(f"bundle's ranker uses features this version does not compute ({', '.join(unknown)}): "
                            "serve it with the version that trained it, or retrain")
        place = [list(saved).index(name) if name in saved else -1 for name in names]

        def take(values: np.ndarray, fill: float) -> np.ndarray:
            return np.array([values[i] if i >= 0 else fill for i in place], dtype=np.float64)
        return Tower(take(self.mean, 0.0), take(self.scale, 1.0), take(self.coef, 0.0), self.intercept, self.constant)


def fit_tower(pairs: Pairs, labels: np.ndarray, names: tuple[str, ...]) -> Tower:
    """Logistic regression (scikit-learn, L2, C=1) on standardised features, as arrays."""
    width = len(names)
    if not len(labels) or labels.all() or not labels.any():
        rate = float(labels.mean()) if len(labels) else 0.0
        return Tower(np.zeros(width), np.ones(width), np.zeros(width), 0.0, constant=rate)
    from sklearn.linear_model import LogisticRegression

    mean = pairs.features.mean(axis=0).astype(np.float64)
    scale = pairs.features.std(axis=0).astype(np.float64)
    scale[scale < 1e-9] = 1.0
    model = LogisticRegression(C=1.0, max_iter=2000).fit((pairs.features - mean) / scale, labels)
    return Tower(mean, scale, model.coef_[0].astype(np.float64), float(model.intercept_[0]))


@dataclass(frozen=True)
class Ranker:
    own: Tower
    new: Tower
    depth: int = EXPLORE_DEPTH

    def score(self, history: History, rows: np.ndarray, explore: Explore) -> Candidates:
        """Merged buy-again and explore probabilities for customers ``rows`` given the explore
        model's scores for them: each row's own items and new candidates."""
        fresh = new_pairs(history, rows, explore, self.depth)
        owned = own_pairs(history, rows, explore)
        return Candidates.from_pairs(len(rows), np.concatenate([fresh.rows, owned.rows]),
                                     np.concatenate([fresh.items, owned.items]),
                                     np.concatenate([self.new.probability(fresh.features),
                                                     self.own.probability(owned.features)]))

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "ranker.json").write_text(json.dumps({
            "own": self.own.to_dict(), "new": self.new.to_dict(), "depth": self.depth,
            "own_features": OWN_FEATURES, "new_features": NEW_FEATURES}, indent=2))

    @classmethod
    def load(cls, folder: Path) -> Ranker:
        data = json.loads((folder / "ranker.json").read_text())
        return cls(Tower.from_dict(data["own"]).aligned(data["own_features"], OWN_FEATURES),
                   Tower.from_dict(data["new"]).aligned(data["new_features"], NEW_FEATURES), int(data["depth"]))

    def coefficients(self) -> dict[str, float]:
        """Named coefficients (standardised units), for MLflow and the docs."""
        out = {}
        for prefix, tower, names in (("own", self.own, OWN_FEATURES), ("new", self.new, NEW_FEATURES)):
            out.update({f"{prefix}.{n}": float(c) for n, c in zip(names, tower.coef, strict=True)})
            out[f"{prefix}.intercept"] = float(tower.intercept if tower.constant is None else np.nan)
        return out


@dataclass(frozen=True)
class Personal:
    """Where a customer's personal scores come from: the explore (or baseline) model, through the
    ranker when there is one. The bundle, the evaluation and the service all score through here."""

    model: Recommender
    interactions: sp.csr_matrix
    history: History
    ranker: Ranker | None = None
    index: ItemIndex | None = None
    """The explore model's item index on a large catalogue (:func:`training.retrieval.item_index`)."""

    def score(self, rows: np.ndarray) -> np.ndarray | Candidates:
        """What :func:`training.ranking.make_lists` takes: the ranker's candidates, or the model's
        own dense scores (rows x items) without a ranker."""
        if self.ranker is None:
            return np.asarray(self.model.score(rows, self.interactions[rows]), dtype=np.float32)
        return self.ranker.score(self.history, rows, self.explore(rows))

    def explore(self, rows: np.ndarray) -> Explore:
        """The explore model's scores for customers ``rows``: from the item index when there is
        one, else every item's."""
        if self.index is None:
            return DenseExplore(np.asarray(self.model.score(rows, self.interactions[rows]), dtype=np.float32))
        own_rows, own_items, _ = rows_of(self.history.counts, rows)
        depth = self.ranker.depth if self.ranker is not None else EXPLORE_DEPTH
        return IndexedExplore(self.index, rows, (own_rows, own_items), depth)


def as_dense(scores: np.ndarray | Candidates, n_items: int) -> np.ndarray:
    """Personal scores as rows x items (0 where a ranker has no candidate)."""
    return scores.dense(n_items) if isinstance(scores, Candidates) else np.asarray(scores, dtype=np.float32)
