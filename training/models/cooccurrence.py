"""Bought-together model: item-item association from baskets and histories, for cart cross-sell."""

from __future__ import annotations

from typing import Self

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import Field

from features.cooccurrence import cooccurrence
from features.dataset import Dataset
from training.models.base import ModelConfig, Recommender


class CooccurrenceConfig(ModelConfig):
    basket_weight: float = Field(1.0, ge=0, description="Weight of same-order co-occurrence.")
    history_weight: float = Field(0.1, ge=0, description="Weight of same-customer co-occurrence.")
    shrinkage: float = Field(5.0, ge=0, description="Added to the anchor's count: rare anchors claim less.")
    min_support: int = Field(1, ge=1, description="Pairs seen fewer times are dropped.")


class CooccurrenceModel(Recommender[CooccurrenceConfig]):
    """Scores item j for a set of items S as sum over i in S of the blended P(j | i)."""

    family = "cooccurrence"
    config_class = CooccurrenceConfig

    def fit(self, dataset: Dataset) -> Self:
        c = self.config
        n_items = dataset.shape[1]
        rows, cols = dataset.purchases.nonzero()
        history = cooccurrence(pd.Series(rows), cols, n_items)
        association = c.history_weight * history.confidence(c.shrinkage, c.min_support)
        basket = cooccurrence(dataset.baskets["order_id"], dataset.baskets["item_idx"].to_numpy(), n_items)
        association = association + c.basket_weight * basket.confidence(c.shrinkage, c.min_support)
        self.item_item_ = sp.csr_matrix(association, dtype=np.float32)
        return self

    def score(self, customers: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        binary = history.copy()
        binary.data[:] = 1.0
        return np.asarray((binary @ self.item_item_).todense(), dtype=np.float32)

    def score_history(self, history: sp.csr_matrix) -> np.ndarray:
        """Item-item scores from history alone, so a new row needs nothing more."""
        return self.score(np.zeros(history.shape[0], dtype=np.int64), history)

    def score_items(self, item_idx: np.ndarray) -> np.ndarray:
        """Scores for a cart: the sum of the cart items' association rows."""
        return np.asarray(self.item_item_[np.asarray(item_idx)].sum(axis=0)).ravel()
