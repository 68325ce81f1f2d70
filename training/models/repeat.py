"""The personal repeat scorer: what the customer bought, weighted by how re-buyable it is and
whether it is due, in the personal-frequency family (TIFU-KNN's user vector, Hu et al. 2020).

score(u, i) = sum over u's purchases of i of 0.5 ** (age / half_life)
              x the item's learned re-buy probability (features/repurchase.py)
              x min(1, days since the last purchase / the item's learned interval)

so a consumable bought often and recently ranks high once it is due, one bought yesterday
waits for its interval, and an item nobody re-buys scores nothing. Items the customer never
bought get the shop's popularity, scaled far below any own item, as the fill a shop would use.
This is the repeat half of the ranker (:mod:`training.ranker`), alone; it is reported next
to the explore models and the blend.
"""

from __future__ import annotations

from typing import Self

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import Field

from features.dataset import Dataset
from features.repurchase import rebuy_profile
from training.models.base import ModelConfig, Recommender
from training.ranking import days_since_last


class RepeatConfig(ModelConfig):
    half_life_days: float = Field(180.0, gt=0, description="Age at which a purchase counts half.")


class RepeatModel(Recommender[RepeatConfig]):
    family = "repeat"
    config_class = RepeatConfig

    def fit(self, dataset: Dataset) -> Self:
        c = self.config
        baskets = dataset.baskets
        age = (dataset.as_of - pd.to_datetime(baskets["ts"], utc=True)).dt.total_seconds().to_numpy() / 86_400.0
        decayed = sp.csr_matrix((np.power(0.5, np.maximum(age, 0) / c.half_life_days).astype(np.float32),
                                 (baskets["customer_idx"].to_numpy(), baskets["item_idx"].to_numpy())),
                                shape=dataset.shape)
        decayed.sum_duplicates()
        orders = pd.DataFrame({"customer_id": baskets["customer_idx"].to_numpy(),
                               "item_id": dataset.items.to_external(baskets["item_idx"].to_numpy()),
                               "ts": baskets["ts"].array})
        profile, _ = rebuy_profile(orders, dataset.catalogue)
        interval = profile["interval_days"].to_numpy(dtype=np.float64)
        fill = float(np.nanmedian(interval)) if np.isfinite(interval).any() else 30.0
        self.decayed_ = decayed
        self.since_ = days_since_last(baskets, dataset.as_of, dataset.shape)
        self.rebuy_ = profile["rebuy_prob"].to_numpy(dtype=np.float32)
        self.interval_ = np.nan_to_num(interval, nan=fill).astype(np.float32)
        popularity = np.asarray(dataset.purchases.sum(axis=0)).ravel()
        self.fill_ = (1e-6 * popularity / max(float(popularity.max()), 1.0)).astype(np.float32)
        return self

    def score(self, customers: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        own = self.decayed_[customers].tocoo()
        since = np.asarray(self.since_[customers][own.row, own.col]).ravel()
        due = np.minimum(1.0, since / self.interval_[own.col])
        out = np.broadcast_to(self.fill_, (len(customers), len(self.fill_))).copy()
        out[own.row, own.col] += own.data * self.rebuy_[own.col] * due
        return out
