"""The one protocol every recommender follows, and the shared batch top-k.

Models learn on a :class:`~features.dataset.Dataset` and score customers by internal
index; :meth:`Recommender.recommend` turns scores into the top k items per customer with
exclusions applied as a sparse mask, in blocks so memory stays bounded.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Self

import numpy as np
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
    config_class: type[ModelConfig] = ModelConfig

    def __init__(self, config: ModelConfig | None = None) -> None:
        self.config = config if config is not None else self.config_class()

    @abstractmethod
    def fit(self, dataset: Dataset) -> Self:
        """Learn from the dataset's interactions."""

    @abstractmethod
    def score(self, customers: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        """Scores (len(customers) x n_items, float32) for customers given their interaction rows."""

    def score_history(self, history: sp.csr_matrix) -> np.ndarray | None:
        """Scores for visitors the model never saw, from interaction rows alone (fold-in).

        What a live session needs: an anonymous visitor or a new customer has no row in
        the fitted state, only the items they just touched. None where a family cannot
        fold a new row in; callers then use the item-item model.
        """
        return None

    def recommend(self, interactions: sp.csr_matrix, customers: np.ndarray, k: int,
                  exclude: sp.csr_matrix | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item indices and scores per customer, best first; excluded items never appear.

        ``interactions`` is the full customer x item matrix the model was fitted on (models
        that score from history read the customers' rows). ``exclude`` is row-aligned with
        ``customers``. Rows with fewer than k allowed items are padded with -1 / -inf.
        Works in blocks of customers so memory stays bounded whatever the base size.
        """
        customers = np.asarray(customers, dtype=np.int64)
        all_items = np.empty((len(customers), k), dtype=np.int64)
        all_scores = np.empty((len(customers), k), dtype=np.float32)
        for start in range(0, len(customers), BLOCK_CUSTOMERS):
            stop = start + BLOCK_CUSTOMERS
            block = customers[start:stop]
            scores = self.score(block, interactions[block])
            items, top = top_k(scores, k, exclude[start:stop] if exclude is not None else None)
            all_items[start:start + len(block)] = items
            all_scores[start:start + len(block)] = top
        return all_items, all_scores

    def state(self) -> dict[str, np.ndarray | sp.csr_matrix]:
        """Learned state: every attribute whose name ends in an underscore."""
        return {name: value for name, value in vars(self).items() if name.endswith("_")}

    def save(self, folder: Path) -> None:
        """Arrays as .npy / sparse .npz plus the config as JSON: no pickle, readable anywhere."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.json").write_text(json.dumps({"family": self.family, "config": self.config.model_dump()}))
        for name, value in self.state().items():
            if sp.issparse(value):
                sp.save_npz(folder / f"{name}.npz", sp.csr_matrix(value))
            else:
                np.save(folder / f"{name}.npy", np.asarray(value), allow_pickle=False)

    def load_state(self, folder: Path) -> Self:
        for path in sorted(folder.iterdir()):
            if path.suffix == ".npy":
                setattr(self, path.stem, np.load(path, allow_pickle=False))
            elif path.suffix == ".npz":
                setattr(self, path.stem, sp.load_npz(path).tocsr())
        return self


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
