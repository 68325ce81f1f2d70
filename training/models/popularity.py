"""Most-bought items: the baseline every model must beat, and the fallback for unknown customers."""

from __future__ import annotations

from typing import Self

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from features.dataset import Dataset
from training.models.base import ModelConfig, Recommender


class PopularityConfig(ModelConfig):
    window_days: float | None = Field(90.0, gt=0, description="Count purchases in this trailing window; None = all.")


class PopularityModel(Recommender):
    """Scores every customer with the item's decayed purchase weight; same list for everyone."""

    family = "popularity"
    config_class = PopularityConfig

    def fit(self, dataset: Dataset) -> Self:
        counts = np.asarray(dataset.purchases.sum(axis=0)).ravel()
        # The decayed interaction weight breaks ties between equally bought items by recency.
        recency = np.asarray(dataset.interactions.sum(axis=0)).ravel()
        self.item_scores_ = (counts + 1e-3 * recency / (recency.max() or 1.0)).astype(np.float32)
        return self

    def score(self, customers: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        return np.broadcast_to(self.item_scores_, (len(customers), len(self.item_scores_)))
