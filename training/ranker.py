"""The repeat/explore ranker: one probability per (customer, item), learned per shop on its
validation window, for items the customer bought before and items new to them alike.

On grocery and retail data a customer's own most-bought items beat most collaborative models
(Li et al., "A Next Basket Recommendation Reality Check", 2023), yet most of what a customer
buys next is new to them. So each list merges two kinds of candidates by the one number that
makes them comparable, the probability of being bought in the next window:

- **buy again** (``own`` tower): every item the customer bought, described by how often they
  bought it, how re-buyable it is (:mod:`features.repurchase`), how far into its re-buy
  interval the last purchase is (due or not yet), its popularity and the explore model's score;
- **explore** (``new`` tower): the best items the customer never bought by the explore model
  (ALS, EASE, LightFM, item-item) and by popularity, described by their scores and ranks.

Each tower is a standardised logistic regression fitted on the validation window's real
purchases (every own pair, every candidate pair: no sampling, so the two are calibrated
alike and can be merged by probability). Serving needs numpy only: the fitted scaler and
coefficients are plain arrays in the bundle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from training.models.base import Recommender

DUE_EDGES = (0.25, 0.5, 0.75, 1.0, 1.5, 3.0)
"""Where a purchase stands in its item's re-buy interval (days since / interval): one indicator
per band, so the towers learn the shop's own shape (just bought, filling up, due, overdue,
lapsed) rather than one assumed curve."""
REACH_EDGES = (0.5, 0.75, 1.0, 1.5)
"""Where the end of the lists' horizon falls in the interval ((days since + horizon) / interval):
below 0.75 the item cannot be due before the next list; the towers learn how much that costs."""
OWN_FEATURES = ("log_count", "rebuy_logit",
                *(f"due_band_{lo:g}_{hi:g}" for lo, hi in zip(DUE_EDGES, DUE_EDGES[1:])), "due_band_lapsed",
                *(f"reach_band_{lo:g}_{hi:g}" for lo, hi in zip(REACH_EDGES, REACH_EDGES[1:])), "reach_band_beyond",
                "explore", "popularity", "recent_popularity", "activity")
NEW_FEATURES = ("explore", "explore_rank", "popularity", "popularity_rank", "recent_popularity", "activity")
EXPLORE_DEPTH = 100
"""New-to-the-customer candidates per customer from each of the explore model and popularity."""
MAX_FIT_CUSTOMERS = 20_000
"""Validation customers the towers are fitted on at most (a random subset beyond): plenty for
a handful of coefficients, and it bounds the fit on a base of millions."""


def normalise(scores: np.ndarray) -> np.ndarray:
    """Row-wise into [0, 1] by the row's best positive score (families differ in scale)."""
    top = np.max(scores, axis=1, keepdims=True) if scores.shape[1] else np.zeros((len(scores), 1))
    safe = np.where(top > 0, top, 1.0)
    return np.where(top > 0, np.clip(scores, 0, None) / safe, 0.0).astype(np.float32)


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
    recent_popularity: np.ndarray
    """Per item, log-scaled into [0, 1]: purchases in the last ``recent_days``."""
    rebuy_logit: np.ndarray
    interval_days: np.ndarray
    activity: np.ndarray
    """Per customer, log-scaled into [0, 1]: purchase lines."""
    horizon_days: float
    """The lists' horizon: "due" means a next purchase is expected within it."""

    @classmethod
    def from_arrays(cls, counts: sp.csr_matrix, bought: sp.csr_matrix, item_counts: np.ndarray,
                    recent_counts: np.ndarray, rebuy: pd.DataFrame, horizon_days: float) -> History:
        """``rebuy`` is the item re-buy profile (features/repurchase.py) in item-index order."""
        rebuy_prob = rebuy["rebuy_prob"].to_numpy(dtype=np.float64)
        interval_days = rebuy["interval_days"].to_numpy(dtype=np.float64)
        prob = np.clip(np.nan_to_num(rebuy_prob, nan=0.0), 1e-4, 1 - 1e-4)
        interval = np.where(np.isfinite(interval_days) & (interval_days > 0), interval_days, np.nan)
        fill = float(np.nanmedian(interval)) if np.isfinite(interval).any() else 30.0
        return cls(counts=counts.tocsr(), bought=bought.tocsr(), popularity=_log_share(item_counts.astype(np.float64)),
                   recent_popularity=_log_share(recent_counts.astype(np.float64)),
                   rebuy_logit=np.log(prob / (1 - prob)).astype(np.float32),
                   interval_days=np.nan_to_num(interval, nan=fill).astype(np.float32),
                   activity=_log_share(np.asarray(counts.sum(axis=1)).ravel()), horizon_days=float(horizon_days))


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


def own_pairs(history: History, rows: np.ndarray, explore: np.ndarray) -> Pairs:
    """Every item each customer bought, with :data:`OWN_FEATURES`."""
    counts = history.counts[rows].tocoo()
    days = gather(history.bought[rows], counts.row, counts.col) - 1.0
    since = np.maximum(days, 0.0) + 1.0
    interval = history.interval_days[counts.col]
    bands = np.hstack([_bands(since / interval, DUE_EDGES), _bands((since + history.horizon_days) / interval,
                                                                 REACH_EDGES)])
    features = np.column_stack([
        np.log1p(counts.data), history.rebuy_logit[counts.col], bands,
        explore[counts.row, counts.col],
        history.popularity[counts.col], history.recent_popularity[counts.col], history.activity[rows][counts.row],
    ]).astype(np.float32)
    return Pairs(counts.row.astype(np.int64), counts.col.astype(np.int64), features)


def new_pairs(history: History, rows: np.ndarray, explore: np.ndarray, depth: int = EXPLORE_DEPTH) -> Pairs:
    """Per customer, the ``depth`` best items they never bought by the explore model and by
    popularity (the union), with :data:`NEW_FEATURES`."""
    n, n_items = explore.shape
    depth = min(depth, n_items)
    owned = history.counts[rows].tocoo()
    masked = explore.copy()
    masked[owned.row, owned.col] = -np.inf
    by_popularity = np.broadcast_to(history.popularity, explore.shape).copy()
    by_popularity[owned.row, owned.col] = -np.inf
    ranks = []
    for scores in (masked, by_popularity):
        top = np.argpartition(-scores, depth - 1, axis=1)[:, :depth] if depth < n_items else \
            np.tile(np.arange(n_items), (n, 1))
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        finite = np.isfinite(np.take_along_axis(scores, top, axis=1))
        rank = sp.csr_matrix((np.tile(np.arange(1, depth + 1, dtype=np.float32), n)[finite.ravel()],
                              (np.repeat(np.arange(n), depth)[finite.ravel()], top.ravel()[finite.ravel()])),
                             shape=(n, n_items))
        ranks.append(rank)
    union = (ranks[0] + ranks[1]).tocoo()
    explore_rank = gather(ranks[0], union.row, union.col)
    popularity_rank = gather(ranks[1], union.row, union.col)

    def scaled(rank: np.ndarray) -> np.ndarray:  # 1 -> 0, beyond the depth -> 1
        return np.log(np.where(rank > 0, rank, depth + 1)) / np.log(depth + 1)

    features = np.column_stack([
        np.clip(explore[union.row, union.col], 0, None), scaled(explore_rank), history.popularity[union.col],
        scaled(popularity_rank), history.recent_popularity[union.col], history.activity[rows][union.row],
    ]).astype(np.float32)
    return Pairs(union.row.astype(np.int64), union.col.astype(np.int64), features)


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
        logit = ((features - self.mean) / self.scale) @ self.coef + self.intercept
        return (1.0 / (1.0 + np.exp(-np.clip(logit, -30, 30)))).astype(np.float32)

    def to_dict(self) -> dict[str, object]:
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist(), "coef": self.coef.tolist(),
                "intercept": self.intercept, "constant": self.constant}

    @classmethod
    def from_dict(cls, data: dict) -> Tower:  # type: ignore[type-arg]
        return cls(np.asarray(data["mean"], dtype=np.float64), np.asarray(data["scale"], dtype=np.float64),
                   np.asarray(data["coef"], dtype=np.float64), float(data["intercept"]), data.get("constant"))


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
class Scored:
    """A block of personal scores: the merged probabilities (rows x items, 0 where no candidate)
    and which items are the customer's own (buy again)."""

    scores: np.ndarray
    own: sp.csr_matrix


@dataclass(frozen=True)
class Ranker:
    own: Tower
    new: Tower
    depth: int = EXPLORE_DEPTH

    def score(self, history: History, rows: np.ndarray, explore: np.ndarray) -> Scored:
        """Merged buy-again and explore probabilities for customers ``rows`` given the explore
        model's raw scores for them (rows x items)."""
        normalised = normalise(np.asarray(explore, dtype=np.float32))
        out = np.zeros(normalised.shape, dtype=np.float32)
        fresh = new_pairs(history, rows, normalised, self.depth)
        out[fresh.rows, fresh.items] = self.new.probability(fresh.features)
        owned = own_pairs(history, rows, normalised)
        out[owned.rows, owned.items] = self.own.probability(owned.features)
        own = sp.csr_matrix((np.ones(len(owned.rows), dtype=bool), (owned.rows, owned.items)), shape=out.shape)
        return Scored(out, own)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "ranker.json").write_text(json.dumps({
            "own": self.own.to_dict(), "new": self.new.to_dict(), "depth": self.depth,
            "own_features": OWN_FEATURES, "new_features": NEW_FEATURES}, indent=2))

    @classmethod
    def load(cls, folder: Path) -> Ranker:
        data = json.loads((folder / "ranker.json").read_text())
        return cls(Tower.from_dict(data["own"]), Tower.from_dict(data["new"]), int(data["depth"]))

    def coefficients(self) -> dict[str, float]:
        """Named coefficients (standardised units), for MLflow and the docs."""
        out = {}
        for prefix, tower, names in (("own", self.own, OWN_FEATURES), ("new", self.new, NEW_FEATURES)):
            out.update({f"{prefix}.{n}": float(c) for n, c in zip(names, tower.coef, strict=True)})
            out[f"{prefix}.intercept"] = float(tower.intercept if tower.constant is None else np.nan)
        return out


def fit_ranker(history: History, rows: np.ndarray, explore: np.ndarray, relevant: sp.csr_matrix,
               seed: int = 0) -> Ranker:
    """Fit both towers on customers ``rows`` (explore scores and ``relevant`` row-aligned with
    them: what each bought in the window)."""
    if len(rows) > MAX_FIT_CUSTOMERS:
        keep = np.sort(np.random.default_rng(seed).choice(len(rows), MAX_FIT_CUSTOMERS, replace=False))
        rows, explore, relevant = rows[keep], explore[keep], relevant[keep]
    normalised = normalise(np.asarray(explore, dtype=np.float32))
    relevant = relevant.tocsr()
    owned = own_pairs(history, rows, normalised)
    fresh = new_pairs(history, rows, normalised)
    label = (lambda p: gather(relevant, p.rows, p.items) > 0)
    return Ranker(fit_tower(owned, label(owned), OWN_FEATURES), fit_tower(fresh, label(fresh), NEW_FEATURES))


@dataclass(frozen=True)
class Personal:
    """Where a customer's personal scores come from: the explore (or baseline) model, through the
    ranker when there is one. The bundle, the evaluation and the service all score through here."""

    model: Recommender
    interactions: sp.csr_matrix
    history: History
    ranker: Ranker | None = None

    def score(self, rows: np.ndarray) -> Scored:
        raw = np.asarray(self.model.score(rows, self.interactions[rows]), dtype=np.float32)
        if self.ranker is None:
            own = self.history.counts[rows].astype(bool).tocsr()
            return Scored(raw, own)
        return self.ranker.score(self.history, rows, raw)
