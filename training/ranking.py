"""The one ranking path: every list shoprec shows or scores is made by :func:`make_lists`.

Offline evaluation, the MLflow pyfunc (``Bundle.recommend``), the service and the batch job
all rank with the same rules, in one place, so the metrics a data scientist reads measure the
lists the shop shows:

- never an out-of-stock item, nor one of a never-recommend category (fuel, gift cards,
  deposits: :class:`RankingConfig.never_recommend`);
- never an item the customer bought that is in practice never re-bought (learned, or flagged
  ``durable``: :mod:`features.repurchase`), nor, within the category's learned window, another
  such item of a category they bought in (no second TV a week after the first);
- never a consumable that cannot be due within the list's horizon (``horizon_days``, the window
  the lists are scored on): one whose learned wait (``wait_days``: nine in ten re-purchases of it
  come later) after the customer's last purchase of it ends after the horizon;
- only positive scores (a model that has nothing to say does not fill the list with noise);
- at most :attr:`Rules.cap` items of one product type (or category, without product types)
  per list, so that a list does not hold six kinds of the same milk.

Exclusions are sparse positions built from the customer's history, so their cost follows the
history, not customers x items; the cap is applied by a vectorised greedy pass over the best
candidates of each row.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field

from training.top_k import CANDIDATE_DEPTH, capped_top_k, pack_rows, rows_of

DIVERSITY_CANDIDATES = (2, 3, 4, 5)
"""Caps tried on the validation window when :attr:`RankingConfig.diversity_cap` is not set."""
DIVERSITY_TOLERANCE = 0.01
"""The tightest cap whose validation NDCG is within 1% (relative) of the uncapped list is chosen."""


class RankingConfig(BaseModel):
    """The shop's list rules; part of ``TrainConfig`` (``ranking``) and recorded in the bundle."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    diversity_cap: int | None = Field(None, ge=1, description=(
        "At most this many items of one product type (else category) per list; None: the tightest of "
        f"{DIVERSITY_CANDIDATES} that costs no accuracy on the validation window."))
    never_recommend: list[str] = Field(default_factory=list, description=(
        "Categories or product types never recommended (fuel, gift cards, deposits), matched exactly."))
    horizon_days: float | None = Field(None, gt=0, description=(
        "Lists are for purchases within this many days (None: the training split's test_days); a bought "
        "consumable whose learned wait ends after it is left out."))
    index_from_items: int | None = Field(50_000, ge=1, description=(
        "From this many items, a factor model's (ALS, BPR, LightFM) best new items for the ranker come from an "
        "approximate nearest-neighbour index (faiss HNSW) instead of every item's score; None: never."))


@dataclass(frozen=True)
class Rules:
    """The rules of :mod:`training.ranking` for one catalogue and one purchase history.

    Built by :func:`build_rules`; rows are customers' internal indices (the history's rows).
    """

    blocked: np.ndarray
    """Per item: never shown to anyone (out of stock, never-recommend)."""
    non_repeat: np.ndarray
    """Per item: never re-suggested to a customer who bought it."""
    wait_days: np.ndarray
    """Per item: days after a purchase before it is due again for that customer."""
    horizon_days: float
    """The lists' horizon: an item whose wait ends later is left out."""
    category: np.ndarray
    """Per item: its category code (columns of ``category_blocks``)."""
    block_days: np.ndarray
    """Per category: days a purchase of a non-repeat item keeps the category's other non-repeat
    items away (0: no block, inf: for ever)."""
    bought: sp.csr_matrix
    """Customer x item, days since the last purchase plus one (0 where never bought)."""
    group: np.ndarray
    """Per item: its diversity group (product type, else category)."""
    cap: int | None
    members: sp.csr_matrix
    """Category x item: the category's non-repeat items (what a category block keeps away)."""

    @property
    def n_items(self) -> int:
        return len(self.blocked)

    def with_cap(self, cap: int | None) -> Rules:
        return dataclasses.replace(self, cap=cap)

    def excluded(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row position, item) pairs the history excludes for customers ``rows``: bought non-repeat
        items, and non-repeat items of a category whose window a purchase there has not closed."""
        (item_rows, items), (block_rows, categories) = self._parts(rows)
        if not len(block_rows):
            return item_rows, items
        pairs = sp.csr_matrix((np.ones(len(block_rows), dtype=np.float32), (block_rows, categories)),
                              shape=(len(rows), len(self.block_days)))  # a category bought twice: summed, one block
        blocked = sp.coo_matrix(pairs @ self.members)
        return np.concatenate([item_rows, blocked.row]).astype(np.int64), np.concatenate([items, blocked.col]).astype(np.int64)

    def excluded_parts(self, rows: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """What :meth:`excluded` keeps from customers ``rows``, before category blocks become items:
        (row position, item) pairs excluded one by one (bought non-repeat items, re-buys not yet
        due), and (row position, category) pairs, each category once a row, whose non-repeat items
        (the category's row of ``members``) a recent purchase there keeps away. A block covers
        thousands of items of a large catalogue: the service holds it as one entry."""
        one_by_one, (block_rows, categories) = self._parts(rows)
        if not len(block_rows):
            return one_by_one, (block_rows, categories)
        # unique (row, category) keys by one flat sort: np.unique over an axis costs tens of
        # microseconds, on every request's call
        n_categories = len(self.block_days)
        keys = np.unique(block_rows * n_categories + categories)
        return one_by_one, (keys // n_categories, keys % n_categories)

    def _parts(self, rows: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """:meth:`excluded_parts` with a category bought twice named twice."""
        row, col, since = rows_of(self.bought, rows)
        own = self.non_repeat[col]
        waiting = ~own & (since - 1.0 + self.horizon_days < self.wait_days[col])
        one_by_one = own | waiting
        cats = self.category[col[own]]
        open_ = since[own] - 1.0 < self.block_days[cats]
        return ((row[one_by_one].astype(np.int64), col[one_by_one].astype(np.int64)),
                (row[own][open_].astype(np.int64), cats[open_].astype(np.int64)))

    def allowed(self, rows: np.ndarray) -> np.ndarray:
        """Rows x items: what the rules allow whatever the score (for the fallback fills)."""
        allowed = np.broadcast_to(~self.blocked, (len(rows), self.n_items)).copy()
        known = np.flatnonzero(rows >= 0)
        if len(known):
            excluded_rows, excluded_cols = self.excluded(rows[known])
            allowed[known[excluded_rows], excluded_cols] = False
        return allowed


def days_since_last(baskets: pd.DataFrame, as_of: pd.Timestamp, shape: tuple[int, int]) -> sp.csr_matrix:
    """Customer x item: days from each customer's last purchase of the item to ``as_of``, plus one
    (so that "bought today" is still stored); 0 where never bought."""
    age = (as_of - pd.to_datetime(baskets["ts"], utc=True)).dt.total_seconds().to_numpy() / 86_400.0
    last = pd.DataFrame({"r": baskets["customer_idx"].to_numpy(), "c": baskets["item_idx"].to_numpy(),
                         "age": np.maximum(age, 0.0)}).groupby(["r", "c"], sort=False)["age"].min()
    rows = last.index.get_level_values(0).to_numpy()
    cols = last.index.get_level_values(1).to_numpy()
    return sp.csr_matrix(((last.to_numpy() + 1.0).astype(np.float32), (rows, cols)), shape=shape)


def build_rules(catalogue: pd.DataFrame, rebuy_items: pd.DataFrame, rebuy_categories: pd.DataFrame,
                bought: sp.csr_matrix, config: RankingConfig, cap: int | None = None,
                horizon_days: float = 28.0) -> Rules:
    """The rules for a catalogue (in item-index order), its learned re-buy profile and a history;
    ``config.horizon_days``, when set, wins over ``horizon_days``."""
    category = catalogue["category"].astype(str)
    codes = pd.Index(rebuy_categories["category"].astype(str)).get_indexer(category)
    never = set(config.never_recommend)
    types = catalogue["product_type"].astype(str) if "product_type" in catalogue else None
    blocked = ~catalogue["in_stock"].to_numpy(dtype=bool) | category.isin(never).to_numpy()
    if types is not None:
        blocked |= types.isin(never).to_numpy() & catalogue["product_type"].notna().to_numpy()
    group_key = types.where(catalogue["product_type"].notna(), "category:" + category) if types is not None \
        else category
    profile = rebuy_items.set_index(rebuy_items["item_id"].astype(str)).reindex(catalogue["item_id"].astype(str))
    non_repeat = profile["non_repeat"].fillna(False).to_numpy(dtype=bool)
    category_codes = np.maximum(codes, 0).astype(np.int64)
    n_items = len(catalogue)
    members = sp.csr_matrix((non_repeat.astype(np.float32), (category_codes, np.arange(n_items))),
                            shape=(len(rebuy_categories), n_items))
    members.eliminate_zeros()
    return Rules(
        blocked=blocked, non_repeat=non_repeat,
        wait_days=profile["wait_days"].fillna(0.0).to_numpy(dtype=np.float64),
        horizon_days=float(config.horizon_days if config.horizon_days is not None else horizon_days),
        category=category_codes,
        block_days=rebuy_categories["block_days"].to_numpy(dtype=np.float64), bought=bought.tocsr(),
        group=pd.factorize(group_key)[0].astype(np.int64), cap=cap if cap is not None else config.diversity_cap,
        members=members,
    )


@dataclass(frozen=True)
class Fallbacks:
    """The popular lists that fill what the personal scores leave short: one per RFM segment,
    then the shop's (last row). Every pick of a list that is not personal comes from here."""

    scores: np.ndarray
    """Lists x items, float32: purchases of the segment's members; the last row the shop's."""
    reasons: tuple[str, ...]
    """Per list: ``popular_in_segment:<segment>`` or ``popular``."""
    of_customer: np.ndarray
    """Per customer index: the row of ``scores`` their fill comes from."""
    fill: np.ndarray
    """Lists x items: the fill order's key, in (0, 1.001]: the list's share of its best, then the
    shop's popularity a thousand times weaker, then any item (a last resort)."""
    order: np.ndarray
    """Lists x :data:`FALLBACK_DEPTH`: each list's items by ``fill``, best first."""

    @property
    def shop(self) -> int:
        return len(self.scores) - 1

    def rows_for(self, customers: np.ndarray) -> np.ndarray:
        """The list of each customer (-1, unknown: the shop's)."""
        return np.where(customers >= 0, self.of_customer[np.maximum(customers, 0)], self.shop)


FALLBACK_DEPTH = 1024
"""Items of each fallback list kept in order; a row that runs past them is made the long way."""


def build_fallbacks(purchases: sp.csr_matrix, popularity: np.ndarray, segment: np.ndarray) -> Fallbacks:
    """``segment`` holds each customer's segment name (None without one)."""
    names = sorted({s for s in segment if isinstance(s, str)})
    member = pd.Index(names, dtype=object).get_indexer(pd.Index(segment, dtype=object))
    rows = np.flatnonzero(member >= 0)
    onehot = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (member[rows], rows)),
                           shape=(len(names), purchases.shape[0]))
    segment_counts = np.asarray((onehot @ purchases).todense(), dtype=np.float32).reshape(len(names), purchases.shape[1])
    scores = np.vstack([segment_counts, np.asarray(popularity, dtype=np.float32)[None, :]])
    shop = scores[-1] / max(float(scores[-1].max()), 1e-12)
    fill = (scores / np.maximum(scores.max(axis=1, keepdims=True), 1e-12) + 1e-3 * shop + 1e-6).astype(np.float32)
    order = np.argsort(-fill, axis=1, kind="stable")[:, :FALLBACK_DEPTH]
    reasons = (*(f"popular_in_segment:{s}" for s in names), "popular")
    return Fallbacks(scores, reasons, np.where(member >= 0, member, len(names)).astype(np.int64), fill, order)


@dataclass(frozen=True)
class Candidates:
    """A block's personal candidates: per row, item indices (-1 after the last) and raw scores;
    what a ranker gives instead of a dense row over the whole catalogue."""

    items: np.ndarray
    scores: np.ndarray

    @classmethod
    def from_pairs(cls, n: int, rows: np.ndarray, items: np.ndarray, scores: np.ndarray) -> Candidates:
        """Pack (row, item, score) triples into rows (any order; each (row, item) at most once),
        each row's candidates by item index, so that ties rank as over the whole catalogue."""
        key = rows.astype(np.int64) * (int(items.max(initial=0)) + 1) + items
        order = np.argsort(key, kind="stable")  # timsort: the own pairs come in sorted runs
        rows, items, scores = rows[order], items[order], scores[order]
        return cls(*pack_rows(n, rows, items, scores, np.bincount(rows, minlength=n), 0.0, np.float32))

    def dense(self, n_items: int) -> np.ndarray:
        out = np.zeros((len(self.items), n_items), dtype=np.float32)
        rows, cols = np.nonzero(self.items >= 0)
        out[rows, self.items[rows, cols]] = self.scores[rows, cols]
        return out


@dataclass(frozen=True)
class ListBlock:
    """Lists for a block of customers, left-packed best first (-1 / 0 after the last pick)."""

    items: np.ndarray
    scores: np.ndarray
    personal: np.ndarray
    """True where the pick came from the personal scores (else from the customer's fallback list)."""
    fallback: np.ndarray
    """Per row, the :class:`Fallbacks` list its fill came from."""


PERSONAL_TIER = 2.0
"""Personal scores (scaled into (0, 1] per row) are lifted by this above every fallback score."""


def make_lists(rules: Rules, fallbacks: Fallbacks, customers: np.ndarray,
               personal: np.ndarray | Candidates | None, k: int) -> ListBlock:
    """The one way a list is made, for every caller: the personal scores (a ranker's candidates,
    or a model's dense rows x items; None: none) through every rule, then the customer's fallback
    list (their segment's popular items, else the shop's, then anything allowed) for what is
    left, all under one diversity cap.

    ``customers`` are internal indices (-1: unknown, no history rules); ``personal`` rows align
    with them. Both tiers go through one :func:`capped_top_k` over the personal candidates and
    the head of each fallback list; a row that could run past that head is made over the whole
    catalogue instead (:func:`make_lists_dense`, the same answer at a higher cost).
    """
    n, n_items = len(customers), rules.n_items
    k = max(int(k), 0)
    free = rules.allowed(customers)  # rows x items: what the rules allow
    candidates = _personal_candidates(personal, free, k)
    if not candidates.items.shape[1]:  # no personal candidate in the block: one empty column
        candidates = Candidates(np.full((n, 1), -1, dtype=np.int64), np.zeros((n, 1), dtype=np.float32))
    lists = fallbacks.rows_for(customers)
    top = candidates.scores.max(axis=1, keepdims=True)
    lifted = np.where(candidates.items >= 0, PERSONAL_TIER + candidates.scores / np.where(top > 0, top, 1.0),
                      -np.inf).astype(np.float32)
    group = np.where(candidates.items >= 0, rules.group[np.maximum(candidates.items, 0)], -1)
    position, _ = capped_top_k(lifted, k, group=group, cap=rules.cap)
    items = np.where(position >= 0, np.take_along_axis(candidates.items, np.maximum(position, 0), axis=1), -1)
    scores = np.where(position >= 0, np.take_along_axis(candidates.scores, np.maximum(position, 0), axis=1), 0.0)
    block = ListBlock(items, scores.astype(np.float64), position >= 0, lists)
    short = np.flatnonzero((position < 0).any(axis=1)) if k else np.zeros(0, dtype=np.int64)
    if len(short):  # fewer than k personal picks: the customer's fallback list fills the rest
        ran_out = _fill(block, short, candidates, lifted, rules, fallbacks, free, k)
        if len(ran_out):  # past the head of the fill list: those rows over the whole catalogue
            dense = personal[ran_out] if isinstance(personal, np.ndarray) else (
                personal.dense(n_items)[ran_out] if personal is not None else None)
            redo = make_lists_dense(rules, fallbacks, customers[ran_out], dense, k)
            block.items[ran_out], block.scores[ran_out], block.personal[ran_out] = redo.items, redo.scores, redo.personal
    return block


def _fill(block: ListBlock, short: np.ndarray, candidates: Candidates, lifted: np.ndarray, rules: Rules,
          fallbacks: Fallbacks, free: np.ndarray, k: int) -> np.ndarray:
    """Rows ``short`` of ``block`` made again with both tiers: their personal candidates and the
    head of their fallback list, under one cap. Returns the rows that ran past that head with
    items still allowed beyond it (to be made over the whole catalogue)."""
    n_items, width = rules.n_items, candidates.items.shape[1]
    rows = np.arange(len(short))[:, None]
    own_items = candidates.items[short]
    taken = free[short]
    taken[rows, np.maximum(own_items, 0)] &= own_items < 0  # a personal candidate is not also a fill
    lists = block.fallback[short]
    depth = min(fallbacks.order.shape[1], k * CANDIDATE_DEPTH + width + int((~free[short]).sum(axis=1).max()))
    fill_items = fallbacks.order[lists, :depth]
    fill_value = np.where(taken[rows, fill_items], fallbacks.fill[lists[:, None], fill_items], -np.inf)
    values = np.hstack([lifted[short], fill_value]).astype(np.float32)
    items_of = np.hstack([own_items, fill_items])
    group = np.where(items_of >= 0, rules.group[np.maximum(items_of, 0)], -1)
    position, _ = capped_top_k(values, k, group=group, cap=rules.cap)
    picked = np.where(position >= 0, np.take_along_axis(items_of, np.maximum(position, 0), axis=1), -1)
    is_personal = (position >= 0) & (position < width)
    own_scores = np.take_along_axis(candidates.scores[short], np.minimum(np.maximum(position, 0), width - 1), axis=1)
    raw = np.where(is_personal, own_scores, fallbacks.scores[lists[:, None], np.maximum(picked, 0)])
    block.items[short], block.personal[short] = picked, is_personal
    block.scores[short] = np.where(picked >= 0, raw, 0.0)
    return short[((picked >= 0).sum(axis=1) < k) & (depth < n_items) & (free[short].sum(axis=1) > depth)]


def _personal_candidates(personal: np.ndarray | Candidates | None, free: np.ndarray, k: int) -> Candidates:
    """The personal tier under the rules (``free``: rows x items allowed): positive, allowed
    candidates; dense rows are cut to their best ``k * CANDIDATE_DEPTH`` allowed items, which the
    cap can never exhaust."""
    n, n_items = free.shape
    if personal is None:
        return Candidates(np.full((n, 0), -1, dtype=np.int64), np.zeros((n, 0), dtype=np.float32))
    if isinstance(personal, np.ndarray):
        scores = np.where(free & (personal > 0), personal, -np.inf).astype(np.float32)
        items, top = capped_top_k(scores, min(n_items, max(k, 1) * CANDIDATE_DEPTH))
        return Candidates(items, np.where(items >= 0, top, 0.0).astype(np.float32))
    items, scores = personal.items, personal.scores
    ok = (items >= 0) & (scores > 0) & free[np.arange(n)[:, None], np.maximum(items, 0)]
    return Candidates(np.where(ok, items, -1), np.where(ok, scores, 0.0).astype(np.float32))


def make_lists_dense(rules: Rules, fallbacks: Fallbacks, customers: np.ndarray, personal: np.ndarray | None,
                     k: int) -> ListBlock:
    """:func:`make_lists` over the whole catalogue: every item scored (personal tier above the
    fill), every rule as a dense mask. The reference the fast path is held to (a test), and
    what it falls back to for rows that exhaust the fallback lists' heads."""
    n = len(customers)
    lists = fallbacks.rows_for(customers)
    combined = fallbacks.fill[lists].astype(np.float32)
    raw = np.zeros_like(combined)
    if personal is not None:
        own = np.array(personal, dtype=np.float32, copy=True)
        own[~(own > 0)] = 0.0
        top = own.max(axis=1, keepdims=True)
        combined = np.where(own > 0, PERSONAL_TIER + own / np.where(top > 0, top, 1.0), combined).astype(np.float32)
        raw = own
    known = np.flatnonzero(customers >= 0)
    combined[:, rules.blocked] = -np.inf
    if len(known):
        excluded_rows, excluded_cols = rules.excluded(customers[known])
        combined[known[excluded_rows], excluded_cols] = -np.inf
    items, ranked = capped_top_k(combined, k, rules.group, rules.cap)
    picked = np.maximum(items, 0)
    is_personal = (ranked >= PERSONAL_TIER) & (items >= 0)
    rows = np.arange(n)[:, None]
    scores = np.where(is_personal, raw[rows, picked], fallbacks.scores[lists][rows, picked]).astype(np.float64)
    scores[items < 0] = 0.0
    return ListBlock(items, scores, is_personal, lists)
