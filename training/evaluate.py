"""Honest offline evaluation: train on the past, test on the next period, same split and the
same ranking path for every model and every baseline.

The test window is the last ``test_days`` of orders. Customers are evaluated when they
bought in the test window and had any interaction before it (warm customers); test buyers
with no history are counted and reported as ``cold_buyers`` rather than silently dropped,
because a collaborative model cannot score them (the service serves them fallbacks).

Every list is made exactly as the service makes it (:func:`training.ranking.make_lists` over a
:class:`~training.bundle.Bundle` of the window's training view: the rules, the fallback fill,
the diversity cap), so the metrics measure the lists the shop would have shown. Besides the
usual metrics, hits are split as the "Next Basket Recommendation Reality Check" (Li et al.
2023) splits them: **repeat** (items the customer bought before the cut-off) and **explore**
(items new to them), because a model can look good by only re-listing what people buy anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field

from features.dataset import Dataset, InteractionConfig, build_dataset
from features.errors import UserError
from features.loading import ShopData
from training.bundle import POPULARITY, PRIMARY, Bundle
from training.bundle_profiles import build_profiles
from training.models import build_model
from training.models.base import Recommender
from training.ranker import Personal, Ranker
from training.ranking import Candidates, RankingConfig, Rules, make_lists
from training.top_k import block_rows

BLOCK = 1024
"""Most customers scored at once in evaluation; fewer on a large catalogue (:func:`training.top_k.block_rows`)."""


class SplitConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    test_days: int = Field(28, ge=1, description="Length of the held-out window at the end of the orders.")
    k: int = Field(10, ge=1, le=100)
    min_validation_customers: int = Field(
        500, ge=1, description="Choices need this many evaluated customers: validation windows of test_days are "
                               "added further back until they hold as many (or max_validation_windows is reached).")
    max_validation_windows: int = Field(3, ge=1, le=12)
    max_test_customers: int = Field(
        50_000, ge=100, description="The test window's figures are computed on at most this many of its customers "
                                    "(a seeded random subset; the run says how many of how many): every model is "
                                    "scored over the whole catalogue for each, and the gains' intervals already "
                                    "say how precise the sample is.")


@dataclass(frozen=True)
class TimeSplit:
    """Training view before ``cutoff`` and the warm customers' purchases after it.

    ``relevant`` and ``repeat`` are row-aligned with ``customers`` (training indices);
    ``repeat`` marks the relevant items the customer had bought before the cut-off.
    """

    train: Dataset
    cutoff: pd.Timestamp
    customers: np.ndarray
    relevant: sp.csr_matrix
    repeat: sp.csr_matrix
    cold_buyers: int
    test_orders: int
    window_customers: int
    """Warm buyers in the window: ``len(customers)`` unless this is a subsample of them."""

    def subsample(self, limit: int, seed: int = 0) -> TimeSplit:
        """The same split on at most ``limit`` of its customers (a seeded random subset, in order)."""
        if len(self.customers) <= limit:
            return self
        keep = np.sort(np.random.default_rng(seed).choice(len(self.customers), limit, replace=False))
        return TimeSplit(self.train, self.cutoff, self.customers[keep], self.relevant[keep], self.repeat[keep],
                         self.cold_buyers, self.test_orders, self.window_customers)


def time_split(shop: ShopData, config: SplitConfig | None = None,
               interactions: InteractionConfig | None = None) -> TimeSplit:
    """Cut the orders at ``max(ts) - test_days``; build the training view strictly before it."""
    config = config or SplitConfig()
    orders = shop["orders"]
    if not len(orders):
        raise UserError("no order lines to train on: every row of orders was quarantined or returned "
                         "(see the load report: shoprec validate DATA)")
    cutoff = orders["ts"].max() - pd.Timedelta(days=config.test_days)
    train = build_dataset(shop, interactions, until=cutoff)
    test = orders[orders["ts"] >= cutoff]
    if len(test) == 0 or len(train.baskets) == 0:
        raise UserError(f"time split at {cutoff} leaves an empty train or test window; change test_days")
    cust = train.customers.to_index(test["customer_id"], unknown="mark")
    item = train.items.to_index(test["item_id"], unknown="mark")
    has_history = np.zeros(len(train.customers), dtype=bool)
    has_history[np.unique(train.interactions.nonzero()[0])] = True
    warm = (cust >= 0) & (item >= 0)
    warm[warm] &= has_history[cust[warm]]
    buyers = pd.Series(test["customer_id"].to_numpy())
    cold_buyers = len(set(buyers[~warm]) - set(buyers[warm]))
    customers = np.unique(cust[warm])
    row_of = np.full(len(train.customers), -1, dtype=np.int64)
    row_of[customers] = np.arange(len(customers))
    relevant = sp.csr_matrix((np.ones(int(warm.sum()), dtype=np.float32), (row_of[cust[warm]], item[warm])),
                             shape=(len(customers), len(train.items)))
    relevant.sum_duplicates()
    relevant.data[:] = 1.0
    bought = train.purchases[customers].astype(bool).astype(np.float32)
    repeat = sp.csr_matrix(relevant.multiply(bought))
    repeat.eliminate_zeros()
    return TimeSplit(train, cutoff, customers, relevant, repeat, cold_buyers, len(test), len(customers))


def validation_splits(shop: ShopData, test_cutoff: pd.Timestamp, config: SplitConfig,
                      interactions: InteractionConfig | None = None) -> list[TimeSplit]:
    """Windows of ``test_days`` before the test window, newest first, until they hold
    ``min_validation_customers`` evaluated customers (or ``max_validation_windows``, or history runs out)."""
    windows: list[TimeSplit] = []
    end = test_cutoff
    while len(windows) < config.max_validation_windows:
        try:
            window = time_split(shop.before(end), config, interactions)
        except ValueError:
            if windows:
                break
            raise
        windows.append(window)
        if sum(len(w.customers) for w in windows) >= config.min_validation_customers:
            break
        end = window.cutoff
    return windows


@dataclass(frozen=True)
class Window:
    """One split with the bundle of its training view: the rules, fallbacks and history the
    lists are made from, exactly as a served bundle would make them."""

    split: TimeSplit
    bundle: Bundle

    @property
    def rules(self) -> Rules:
        return self.bundle.rules

    def personal(self, model: Recommender, ranker: Ranker | None = None) -> Personal:
        index = self.bundle.explore_index(model) if ranker is not None else None
        return Personal(model, self.bundle.interactions, self.bundle.history, ranker, index)

    def blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        """(first row position, customers) per block of evaluated customers."""
        step = block_rows(self.split.train.shape[1], BLOCK)
        for start in range(0, len(self.split.customers), step):
            yield start, self.split.customers[start:start + step]


def prepare_window(shop: ShopData, split: TimeSplit, ranking: RankingConfig, recent_days: float) -> Window:
    """The window's bundle: the training view, its popularity fallback and every profile."""
    popularity = build_model(POPULARITY).fit(split.train)
    profiles = build_profiles(shop.before(split.cutoff), split.train, recent_days)
    horizon = ranking.horizon_days if ranking.horizon_days is not None else recent_days
    bundle = Bundle.from_dataset(split.train, {PRIMARY: popularity, POPULARITY: popularity},
                                 {"ranking": ranking.model_copy(update={"horizon_days": horizon}).model_dump()},
                                 profiles)
    return Window(split, bundle)


def lists_for(window: Window, scores: Callable[[np.ndarray, int], np.ndarray | Candidates], k: int,
              rules: Rules | None = None) -> np.ndarray:
    """Every evaluated customer's list (item indices, -1 padded) from ``scores(customers, start)``:
    a block's personal scores (dense, or a ranker's candidates), made into lists by the one
    ranking path."""
    rules = rules or window.rules
    out = []
    for start, customers in window.blocks():
        out.append(make_lists(rules, window.bundle.fallbacks, customers, scores(customers, start), k).items)
    return np.vstack(out) if out else np.zeros((0, k), dtype=np.int64)


def customer_metrics(recommended: np.ndarray, split: TimeSplit) -> dict[str, np.ndarray]:
    """Per evaluated customer: precision, recall, NDCG, average precision and hit @k (k = columns
    of ``recommended``), and the hit and own-item masks the pooled metrics are made from.

    ``recommended`` holds item indices per evaluated customer (-1 = padding). Vectorised: one
    sparse gather for all hits.
    """
    relevant = split.relevant
    n, k = recommended.shape
    valid = recommended >= 0
    rows = np.repeat(np.arange(n), k)
    cols = np.where(valid, recommended, 0).ravel()
    hits = (np.asarray(relevant[rows, cols]).reshape(n, k) > 0) & valid
    own = (np.asarray(split.train.purchases[split.customers][rows, cols]).reshape(n, k) > 0) & valid
    n_relevant = np.asarray(relevant.sum(axis=1)).ravel()
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(discounts)[np.minimum(n_relevant, k).astype(int) - 1]
    precision_at_i = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
    return {
        f"precision_at_{k}": hits.sum(axis=1) / k,
        f"recall_at_{k}": hits.sum(axis=1) / n_relevant,
        f"ndcg_at_{k}": (hits * discounts).sum(axis=1) / ideal,
        f"map_at_{k}": (precision_at_i * hits).sum(axis=1) / np.minimum(n_relevant, k),
        f"hit_rate_at_{k}": hits.any(axis=1).astype(np.float64),
        "hits": hits, "own": own,
    }


def ranking_metrics(recommended: np.ndarray, split: TimeSplit,
                    per_customer: dict[str, np.ndarray] | None = None) -> dict[str, float]:
    """The means of :func:`customer_metrics` (``per_customer``, when the caller has them
    already), coverage, novelty, and the repeat/explore split: the share of list slots given
    to items the customer bought before, and recall of repeat and of explore purchases
    separately."""
    per_customer = dict(per_customer if per_customer is not None else customer_metrics(recommended, split))
    hits, own = per_customer.pop("hits"), per_customer.pop("own")
    n, k = recommended.shape
    valid = recommended >= 0
    item_popularity = np.asarray(split.train.purchases.sum(axis=0)).ravel()
    n_relevant = np.asarray(split.relevant.sum(axis=1)).ravel()
    n_repeat = np.asarray(split.repeat.sum(axis=1)).ravel()
    shown = recommended[valid]
    share = item_popularity / max(item_popularity.sum(), 1.0)
    novelty = -np.log2(np.clip(share[shown], 1e-12, None)).mean() if len(shown) else 0.0
    repeat_hits, explore_hits = (hits & own).sum(axis=1), (hits & ~own).sum(axis=1)
    has_repeat, has_explore = n_repeat > 0, (n_relevant - n_repeat) > 0

    def mean_where(values: np.ndarray, mask: np.ndarray) -> float:
        return float(values[mask].mean()) if mask.any() else 0.0

    return {
        **{name: float(values.mean()) for name, values in per_customer.items()},
        "coverage": float(len(np.unique(shown)) / split.train.shape[1]),
        "novelty": float(novelty),
        "repeat_share": float(own.sum() / max(valid.sum(), 1)),
        f"repeat_recall_at_{k}": mean_where(repeat_hits / np.maximum(n_repeat, 1), has_repeat),
        f"explore_recall_at_{k}": mean_where(explore_hits / np.maximum(n_relevant - n_repeat, 1), has_explore),
        "repeat_hits": float(repeat_hits.sum()),
        "explore_hits": float(explore_hits.sum()),
        "evaluated_customers": float(n),
    }


BOOTSTRAP_REPLICATES = 1000
"""Resamples of the test customers behind each gain's interval."""


def relative_gains(values: Mapping[str, np.ndarray], baseline: str, replicates: int = BOOTSTRAP_REPLICATES,
                   seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """For each row of ``values`` (per-customer metric values, all row-aligned on the same
    customers), how much higher its mean is than ``values[baseline]``'s, relative, with its 95%
    interval: (gain, low, high); all NaN when the baseline's mean is not positive.

    A paired Poisson bootstrap over customers: each replicate weighs every customer by a
    Poisson(1) draw, as resampling with replacement does, and the same draws weigh every row,
    so the interval reflects how much the gain depends on which customers happened to buy in
    the window. Seeded, so a run's table is reproducible; drawn once for all rows, in chunks
    that bound memory on a large window.
    """
    names = list(values)
    table = np.column_stack([np.asarray(values[name], dtype=np.float64) for name in names])
    base = names.index(baseline)
    means = table.mean(axis=0) if len(table) else np.zeros(len(names))
    if not means[base] > 0:
        return {name: (float("nan"),) * 3 for name in names}
    rng = np.random.default_rng(seed)
    chunk = max(1, min(replicates, 16_000_000 // max(len(table), 1)))
    draws = []
    for start in range(0, replicates, chunk):
        weights = rng.poisson(1.0, size=(min(chunk, replicates - start), len(table))).astype(np.float64)
        sums = weights @ table
        with np.errstate(divide="ignore", invalid="ignore"):  # a draw without the baseline's buyers: inf
            draws.append(sums / sums[:, base:base + 1] - 1.0)
    low, high = np.percentile(np.vstack(draws), [2.5, 97.5], axis=0)
    gains = means / means[base] - 1.0
    return {name: (float(gains[i]), float(low[i]), float(high[i])) for i, name in enumerate(names)}


def pooled_metrics(parts: list[dict[str, float]]) -> dict[str, float]:
    """Metrics of several windows as one: means weighted by evaluated customers, counts summed."""
    weights = np.array([p["evaluated_customers"] for p in parts], dtype=np.float64)
    out = {}
    for name in parts[0]:
        values = np.array([p[name] for p in parts], dtype=np.float64)
        out[name] = float(values.sum() if name in ("repeat_hits", "explore_hits", "evaluated_customers")
                          else (values * weights).sum() / max(weights.sum(), 1.0))
    return out


def model_lists(model: Recommender, window: Window, k: int, ranker: Ranker | None = None,
                rules: Rules | None = None) -> np.ndarray:
    """A fitted model's lists (through ``ranker`` when given) for the window's warm customers."""
    personal = window.personal(model, ranker)
    return lists_for(window, lambda customers, _: personal.score(customers), k, rules)


def evaluate_model(model: Recommender, window: Window, k: int, ranker: Ranker | None = None,
                   rules: Rules | None = None) -> dict[str, float]:
    """:func:`ranking_metrics` of :func:`model_lists`."""
    return ranking_metrics(model_lists(model, window, k, ranker, rules), window.split)
