"""Most-bought items: the baseline every model must beat, and the fallback for unknown customers."""

from __future__ import annotations

from typing import Self

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import Field

from features.dataset import Dataset
from training.models.base import ModelConfig, Recommender


class PopularityConfig(ModelConfig):
    window_days: float | None = Field(None, gt=0, description="Count purchases in this trailing window; None = all.")


class PopularityModel(Recommender[PopularityConfig]):
    """Scores every customer with the item's purchase count (in the window); same list for everyone.

    Ties (and items unsold in the window) are broken by all-time purchases, then by the decayed
    interaction weight, so the order never depends on the row order of the data.
    """

    family = "popularity"
    config_class = PopularityConfig

    def fit(self, dataset: Dataset) -> Self:
        c = self.config
        all_time = np.asarray(dataset.purchases.sum(axis=0)).ravel().astype(np.float64)
        recency = np.asarray(dataset.interactions.sum(axis=0)).ravel()
        tie = 1e-3 * recency / (recency.max() or 1.0)
        if c.window_days is None:
            counts = all_time
        else:
            baskets = dataset.baskets
            recent = (dataset.as_of - pd.to_datetime(baskets["ts"], utc=True)) <= pd.Timedelta(days=c.window_days)
            counts = np.bincount(baskets["item_idx"].to_numpy()[recent.to_numpy()],
                                 minlength=dataset.shape[1]).astype(np.float64)
            tie = tie * 1e-3 + 1e-3 * all_time / (all_time.max() or 1.0)
        self.item_scores_ = (counts + tie).astype(np.float32)
        return self

    def score(self, customers: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        return np.broadcast_to(self.item_scores_, (len(customers), len(self.item_scores_)))
