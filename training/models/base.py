"""The one protocol every recommender follows, and the shared batch top-k.

Models learn on a :class:`~features.dataset.Dataset` and score customers by internal
index; :meth:`Recommender.recommend` turns scores into the top k items per customer with
exclusions applied as a sparse mask, in blocks so memory stays bounded.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Self

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict

from features.dataset import Dataset

BLOCK_CUSTOMERS = 4096


class ModelConfig(BaseModel):
    """Base for model hyper-parameters: unknown keys are an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Recommender(ABC):
    """fit(dataset) -> self; score(customers) -> dense scores; recommend(...) -> top k.

    Following scikit-learn, ``__init__`` only stores the config and learned state ends in
    an underscore, so an unfitted model is cheap to build from a logged config.
    """

    family: str = ""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config

    @abstractmethod
    def fit(self, dataset: Dataset) -> Self:
        """Learn from the dataset's interactions."""

    @abstractmethod
    def score(self, customers: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        """Scores (len(customers) x n_items, float32) for customers given their interaction rows."""

    def recommend(self, dataset: Dataset, customers: np.ndarray, k: int,
                  exclude: sp.csr_matrix | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item indices and scores per customer, best first; excluded items never appear.

        Rows with fewer than k allowed items are padded with index -1 and score -inf.
        """
        customers = np.asarray(customers, dtype=np.int64)
        all_items = np.empty((len(customers), k), dtype=np.int64)
        all_scores = np.empty((len(customers), k), dtype=np.float32)
        for start in range(0, len(customers), BLOCK_CUSTOMERS):
            block = customers[start:start + BLOCK_CUSTOMERS]
            scores = self.score(block, dataset.interactions[block])
            mask = exclude[block] if exclude is not None else None
            items, top = top_k(scores, k, mask)
            all_items[start:start + len(block)] = items
            all_scores[start:start + len(block)] = top
        return all_items, all_scores

    def recommend_frame(self, dataset: Dataset, customer_ids: list[str] | np.ndarray, k: int,
                        exclude: sp.csr_matrix | None = None) -> pd.DataFrame:
        """The protocol's external form: ``customer_id, item_id, score, rank`` (rank from 1)."""
        idx = dataset.customers.to_index(np.asarray(customer_ids, dtype=object))
        items, scores = self.recommend(dataset, idx, k, exclude)
        valid = items >= 0
        n = len(idx)
        return pd.DataFrame({
            "customer_id": np.repeat(np.asarray(customer_ids, dtype=object), k)[valid.ravel()],
            "item_id": dataset.items.to_external(items[valid]),
            "score": scores[valid],
            "rank": np.tile(np.arange(1, k + 1), n)[valid.ravel()],
        })


def top_k(scores: np.ndarray, k: int, exclude: sp.csr_matrix | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Best k columns per row with ``argpartition`` (O(n) per row), then a sort of those k only."""
    scores = np.array(scores, dtype=np.float32, copy=True)
    if exclude is not None and exclude.nnz:
        coo = exclude.tocoo()
        scores[coo.row, coo.col] = -np.inf
    k_eff = min(k, scores.shape[1])
    part = np.argpartition(-scores, k_eff - 1, axis=1)[:, :k_eff]
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    items = np.take_along_axis(part, order, axis=1)
    top = np.take_along_axis(part_scores, order, axis=1)
    items[~np.isfinite(top)] = -1
    if k_eff < k:
        items = np.pad(items, ((0, 0), (0, k - k_eff)), constant_values=-1)
        top = np.pad(top, ((0, 0), (0, k - k_eff)), constant_values=-np.inf)
    return items, top
