"""Honest offline evaluation: train on the past, test on the next period, same split for every model.

The test window is the last ``test_days`` of orders. Customers are evaluated when they
bought in the test window and had any interaction before it (warm customers); test buyers
with no history are counted and reported as ``cold_buyers`` rather than silently dropped,
because a collaborative model cannot score them (the service serves them fallbacks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field

from features.dataset import Dataset, InteractionConfig, build_dataset
from features.loading import ShopData
from training.models.base import Recommender
from training.rules import durable_exclusions


class SplitConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    test_days: int = Field(28, ge=1, description="Length of the held-out window at the end of the orders.")
    k: int = Field(10, ge=1, le=100)


@dataclass(frozen=True)
class TimeSplit:
    """Training view before ``cutoff`` and the warm customers' purchases after it.

    ``relevant`` and ``exclude`` are row-aligned with ``customers`` (training indices).
    """

    train: Dataset
    cutoff: pd.Timestamp
    customers: np.ndarray
    relevant: sp.csr_matrix
    exclude: sp.csr_matrix
    cold_buyers: int
    test_orders: int


def time_split(shop: ShopData, config: SplitConfig | None = None,
               interactions: InteractionConfig | None = None) -> TimeSplit:
    """Cut the orders at ``max(ts) - test_days``; build the training view strictly before it."""
    config = config or SplitConfig()
    orders = shop["orders"]
    if not len(orders):
        raise ValueError("no order lines to train on: every row of orders was quarantined or returned "
                         "(see the load report: shoprec validate DATA)")
    cutoff = orders["ts"].max() - pd.Timedelta(days=config.test_days)
    train = build_dataset(shop, interactions, until=cutoff)
    test = orders[orders["ts"] >= cutoff]
    if len(test) == 0 or len(train.baskets) == 0:
        raise ValueError(f"time split at {cutoff} leaves an empty train or test window; change test_days")
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
    exclude = durable_exclusions(train.purchases, train.catalogue["durable"], customers)
    return TimeSplit(train, cutoff, customers, relevant, exclude, cold_buyers, len(test))


def ranking_metrics(recommended: np.ndarray, relevant: sp.csr_matrix, n_items: int,
                    item_popularity: np.ndarray) -> dict[str, float]:
    """Precision, recall, NDCG, MAP, hit rate @k (k = columns of ``recommended``), coverage, novelty.

    ``recommended`` holds item indices per evaluated customer (-1 = padding), row-aligned
    with ``relevant``. Fully vectorised: one sparse gather for all hits.
    """
    n, k = recommended.shape
    valid = recommended >= 0
    rows = np.repeat(np.arange(n), k)
    cols = np.where(valid, recommended, 0).ravel()
    hits = (np.asarray(relevant[rows, cols]).reshape(n, k) > 0) & valid
    n_relevant = np.asarray(relevant.sum(axis=1)).ravel()
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits * discounts).sum(axis=1)
    ideal = np.cumsum(discounts)[np.minimum(n_relevant, k).astype(int) - 1]
    precision_at_i = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
    average_precision = (precision_at_i * hits).sum(axis=1) / np.minimum(n_relevant, k)
    shown = recommended[valid]
    share = item_popularity / max(item_popularity.sum(), 1.0)
    novelty = -np.log2(np.clip(share[shown], 1e-12, None)).mean() if len(shown) else 0.0
    return {
        f"precision_at_{k}": float(hits.sum(axis=1).mean() / k),
        f"recall_at_{k}": float((hits.sum(axis=1) / n_relevant).mean()),
        f"ndcg_at_{k}": float((dcg / ideal).mean()),
        f"map_at_{k}": float(average_precision.mean()),
        f"hit_rate_at_{k}": float(hits.any(axis=1).mean()),
        "coverage": float(len(np.unique(shown)) / n_items),
        "novelty": float(novelty),
    }


def evaluate_model(model: Recommender, split: TimeSplit, k: int) -> dict[str, float]:
    """Evaluate an already fitted model on the split's warm customers."""
    recommended, _ = model.recommend(split.train.interactions, split.customers, k, split.exclude)
    popularity = np.asarray(split.train.purchases.sum(axis=0)).ravel()
    metrics = ranking_metrics(recommended, split.relevant, split.train.shape[1], popularity)
    metrics["evaluated_customers"] = float(len(split.customers))
    return metrics
