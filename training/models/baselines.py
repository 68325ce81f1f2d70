"""The baselines a data scientist tries first, behind the same protocol as every model.

Every evaluation puts shoprec next to these, on the same split and through the same ranking
rules, because they are what a shop would otherwise run: global popularity
(:mod:`training.models.popularity`), recent popularity, "the items you buy most" and a
time-decayed repeat baseline in the TIFU-KNN family (Hu et al., SIGIR 2020), which the "Next
Basket Recommendation Reality Check" (Li et al., 2023) found hard to beat on grocery data.
They run with their published defaults, untuned, as a reader of those papers would run them.
"""

from __future__ import annotations

from typing import Self

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import Field

from features.dataset import Dataset
from training.models.base import ModelConfig, Recommender
from training.models.popularity import PopularityConfig, PopularityModel
from training.top_k import best_columns, block_rows


class RecentPopularityConfig(PopularityConfig):
    window_days: float | None = Field(28.0, gt=0, description="Count purchases in this trailing window.")


class RecentPopularityModel(PopularityModel):
    """What sold in the last four weeks (ties broken by all-time sales): the same list for everyone."""

    family = "recent_popularity"
    config_class = RecentPopularityConfig


class OwnMostBoughtConfig(ModelConfig):
    pass


class OwnMostBoughtModel(Recommender[OwnMostBoughtConfig]):
    """Each customer's own most-bought items (purchase lines), then the shop's most popular."""

    family = "own_most_bought"
    config_class = OwnMostBoughtConfig

    def fit(self, dataset: Dataset) -> Self:
        self.counts_ = dataset.purchases.tocsr().astype(np.float32)
        popularity = np.asarray(dataset.purchases.sum(axis=0)).ravel()
        self.fill_ = (1e-3 * popularity / max(float(popularity.max()), 1.0)).astype(np.float32)
        return self

    def score(self, customers: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        return np.asarray(self.counts_[customers].todense(), dtype=np.float32) + self.fill_


class TifuKNNConfig(ModelConfig):
    """TIFU-KNN's published defaults (Cornac's example; the reference implementation's)."""

    neighbours: int = Field(300, ge=1)
    within_decay: float = Field(0.9, gt=0, le=1, description="Decay per basket inside a group.")
    group_decay: float = Field(0.7, gt=0, le=1, description="Decay per group, oldest weakest.")
    groups: int = Field(7, ge=1, description="A customer's baskets, in time order, in this many groups.")
    alpha: float = Field(0.7, ge=0, le=1, description="Weight of the customer's own vector against the neighbours'.")


class TifuKNNModel(Recommender[TifuKNNConfig]):
    """Time-decayed personal item frequency, blended with that of the nearest customers.

    A customer's baskets (orders) in time order are cut into ``groups`` groups; a basket's
    items weigh ``within_decay`` per later basket of its group, a group ``group_decay`` per
    later group, each averaged. The prediction is ``alpha`` times the customer's vector plus
    ``1 - alpha`` times the mean vector of their ``neighbours`` most cosine-similar customers
    (those with any similarity; a customer with fewer than ``neighbours`` of them borrows less).
    """

    family = "tifu_knn"
    config_class = TifuKNNConfig

    def fit(self, dataset: Dataset) -> Self:
        c = self.config
        baskets = dataset.baskets[["order_id", "customer_idx", "item_idx", "ts"]]
        order = (baskets.groupby(["customer_idx", "order_id"], sort=False)["ts"].min().reset_index()
                 .sort_values(["customer_idx", "ts", "order_id"], kind="stable"))
        n_baskets = order.groupby("customer_idx")["order_id"].transform("size").to_numpy()
        position = order.groupby("customer_idx").cumcount().to_numpy()
        n_groups = np.minimum(n_baskets, c.groups)
        group = position * n_groups // n_baskets
        first_of_group = np.ceil(group * n_baskets / n_groups).astype(np.int64)
        group_size = np.ceil((group + 1) * n_baskets / n_groups).astype(np.int64) - first_of_group
        within = position - first_of_group
        weight = ((c.within_decay ** (group_size - 1 - within)) / group_size
                  * (c.group_decay ** (n_groups - 1 - group)) / n_groups)
        weights = pd.Series(weight, index=pd.MultiIndex.from_frame(order[["customer_idx", "order_id"]]))
        lines = baskets.drop_duplicates(["customer_idx", "order_id", "item_idx"])
        line_weight = weights.reindex(pd.MultiIndex.from_frame(lines[["customer_idx", "order_id"]])).to_numpy()
        vectors = sp.csr_matrix((line_weight.astype(np.float32),
                                 (lines["customer_idx"].to_numpy(), lines["item_idx"].to_numpy())),
                                shape=dataset.shape)
        vectors.sum_duplicates()
        self.vectors_ = vectors
        norms = np.sqrt(np.asarray(vectors.multiply(vectors).sum(axis=1)).ravel())
        self.unit_ = sp.csr_matrix(sp.diags(np.where(norms > 0, 1.0 / np.maximum(norms, 1e-12), 0.0)
                                            .astype(np.float32)) @ vectors)
        return self

    def score(self, customers: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        c = self.config
        customers = np.asarray(customers, dtype=np.int64)
        neighbours = self._neighbours(customers, c.neighbours)
        own = np.asarray(self.vectors_[customers].todense(), dtype=np.float32)
        return c.alpha * own + (1 - c.alpha) * np.asarray((neighbours @ self.vectors_).todense(), dtype=np.float32)

    def _neighbours(self, customers: np.ndarray, k: int) -> sp.csr_matrix:
        """Rows x customers, ``1 / k`` at each row's ``k`` most cosine-similar other customers.

        Kept sparse: a customer with no similar one has no neighbours (rather than ``k``
        arbitrary ones). Equal similarities rank by customer index. The similarities of a few
        rows at a time are made dense and cut by the one top-k (:func:`training.top_k.best_columns`,
        sized by :func:`training.top_k.block_rows`): sorting every shared-item pair of a block
        instead took most of a 200,000-customer run's evaluation, where a popular item makes
        nearly every pair of customers similar.
        """
        n_customers = self.unit_.shape[0]
        others = self.unit_.T.tocsr()  # once a call, not once a few rows
        step = block_rows(n_customers, len(customers))
        rows, cols = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
        for start in range(0, len(customers), step):
            part = customers[start:start + step]
            similarity = (self.unit_[part] @ others).toarray()
            similarity[similarity <= 0] = -np.inf  # no item in common: not a neighbour
            similarity[np.arange(len(part)), part] = -np.inf  # nor oneself
            nearest, _ = best_columns(similarity, k)
            row, rank = np.nonzero(nearest >= 0)
            rows.append(row + start)
            cols.append(nearest[row, rank])
        row_of, neighbour = np.concatenate(rows), np.concatenate(cols)
        return sp.csr_matrix((np.full(len(row_of), 1.0 / k, dtype=np.float32), (row_of, neighbour)),
                             shape=(len(customers), n_customers))
