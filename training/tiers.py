"""A request's list from several tiers of scores in turn (a cross-sell: the cart's partners, then
what is popular in the cart's categories, then the customer's fallback list, then anything), under
the rules and the one top-k of :mod:`training.ranking` and :mod:`training.top_k`.

Tiers are sparse (the items a tier scores), so a request costs what its candidates cost rather
than the catalogue; :func:`rank_tiers` gives the list that ranking every item of every tier would.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.ranking import Rules
from training.top_k import CANDIDATE_DEPTH, capped_top_k


@dataclass(frozen=True)
class Tier:
    """One tier of a request's list: scores for the items it names (every other item scores 0)."""

    items: np.ndarray
    scores: np.ndarray
    ranked: bool = False
    """The items come best first (score down, then item up), so that a prefix of them stands
    for the whole tier (a long precomputed list: the shop's popular items); an unranked tier
    (a cart's partners, a customer's candidates) is always read whole."""

    @classmethod
    def from_dense(cls, scores: np.ndarray) -> Tier:
        """A per-item score vector as a ranked tier of its positive items."""
        items = np.flatnonzero(scores > 0)
        order = np.argsort(-scores[items], kind="stable")
        return cls(items[order], scores[items[order]], ranked=True)

    @property
    def top(self) -> float:
        """The tier's best positive score (0 without one)."""
        if self.ranked:
            return max(float(self.scores[0]), 0.0) if len(self.scores) else 0.0
        return max(float(np.max(self.scores, initial=0.0)), 0.0)

    @property
    def size(self) -> int:
        return len(self.items)

    def head(self, depth: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Items and scores of the first ``depth`` of a ranked tier; the whole tier for None, and
        always for an unranked one."""
        if depth is None or not self.ranked:
            return self.items, self.scores
        return self.items[:depth], self.scores[:depth]


class TierUnion:
    """Ranked tiers of disjoint items (several categories' popular items) as one ranked tier,
    merged only as deep as it is read: each of the union's first n items is among the first n
    of its own part, so a request that reads a prefix (:func:`rank_tiers`) sorts a few hundred items, not
    every item of the parts (thousands each in a large catalogue)."""

    ranked = True

    def __init__(self, parts: list[Tier]) -> None:
        self.parts = parts

    @property
    def top(self) -> float:
        return max((part.top for part in self.parts), default=0.0)

    @property
    def size(self) -> int:
        return sum(part.size for part in self.parts)

    def head(self, depth: int | None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`Tier.head` of the merged parts, best first (score down, then item up)."""
        heads = [part.head(depth) for part in self.parts]
        items = np.concatenate([i for i, _ in heads])
        scores = np.concatenate([s for _, s in heads])
        order = np.lexsort((items, -scores))[:depth]
        return items[order], scores[order]


AnyTier = Tier | TierUnion


def rank_tiers(rules: Rules, free: np.ndarray, tiers: list[AnyTier], k: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The list of a request that ranks several tiers of scores in turn (a cross-sell: the cart's
    partners, then what is popular in the cart's categories, then the customer's fallback list, then
    anything): each item ranks in the first tier that gives it a positive score, every pick of an
    earlier tier before any of a later one, by score within its tier (equal scores by item), under
    one diversity cap (:attr:`Rules.cap`) over the whole list.

    ``free`` (per item) is what may be shown: :meth:`Rules.allowed` for the customer, narrowed by the
    request's own limits (the cart, a price band). Tiers are sparse, so a request costs what its
    candidates cost, not the catalogue: a ranked tier is read to a depth of ``CANDIDATE_DEPTH * k``
    items, and only when the list reaches past that depth (every one of them taken, not free or
    capped) is it made again from whole tiers, which is the same answer. Returns (items, tier of
    each pick, its score there), k each, -1 / -1 / 0 after the last. Keys are float64 (tier offset plus the score over the
    tier's best), so a tier's order is its scores' order exactly.
    """
    depth = max(int(k), 1) * CANDIDATE_DEPTH
    cut = [t for t, tier in enumerate(tiers) if tier.ranked and tier.size > depth]
    items, tier_of, scores = _rank_candidates(rules, free, tiers, k, depth if cut else None)
    if cut and ((items < 0).any() or tier_of.max(initial=-1) > cut[0]):  # it read past a cut tier
        items, tier_of, scores = _rank_candidates(rules, free, tiers, k, None)
    return items, tier_of, scores


def _rank_candidates(rules: Rules, free: np.ndarray, tiers: list[AnyTier], k: int, depth: int | None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`rank_tiers` over each tier's items (a ranked tier's first ``depth``; None: all)."""
    parts = [tier.head(depth) for tier in tiers]
    items = np.concatenate([np.asarray(i, dtype=np.int64) for i, _ in parts])
    scores = np.concatenate([np.asarray(s, dtype=np.float64) for _, s in parts])
    tier = np.repeat(np.arange(len(tiers)), [len(i) for i, _ in parts])
    keep = (scores > 0) & free[items]
    items, scores, tier = items[keep], scores[keep], tier[keep]
    order = np.lexsort((tier, items))  # by item, then tier: an item's first tier leads
    items, scores, tier = items[order], scores[order], tier[order]
    first = np.ones(len(items), dtype=bool)
    first[1:] = items[1:] != items[:-1]
    items, scores, tier = items[first], scores[first], tier[first]
    if not len(items):
        k = max(int(k), 0)
        return np.full(k, -1, dtype=np.int64), np.full(k, -1, dtype=np.int64), np.zeros(k)
    top = np.array([tier_.top for tier_ in tiers], dtype=np.float64)
    key = 2.0 * (len(tiers) - tier) + scores / np.where(top > 0, top, 1.0)[tier]
    position, _ = capped_top_k(key[None, :], k, rules.group[items][None, :], rules.cap)
    picked = np.maximum(position[0], 0)
    found = position[0] >= 0
    return np.where(found, items[picked], -1), np.where(found, tier[picked], -1), np.where(found, scores[picked], 0.0)
