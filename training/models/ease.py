"""EASE (Steck 2019): a closed-form item-item linear model, strong on small and mid catalogues."""

from __future__ import annotations

from pathlib import Path
from typing import Self

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from pydantic import Field
from threadpoolctl import threadpool_limits

from features.dataset import Dataset
from features.errors import UserError
from training.models.base import FitCost, MatrixSize, ModelConfig, Recommender

MAX_ITEMS = 30_000
"""Default largest catalogue for EASE: the Gram matrix is dense, items^2 float64 (7.2 GB at 30,000).
With everything else a fit holds (:data:`BYTES_PER_CELL`), the default memory budget of
:class:`training.models.base.FitBudget` (12 GiB) skips EASE first, from about 25,000 items."""


CUBE_S = 3.9e-11
"""Seconds per items cubed of the dense inverse on one core (2.5 s at 4,000 items)."""
BYTES_PER_CELL = 20
"""Peak bytes per items x items cell: the float64 Gram matrix and its inverse, the weights
and their float32 copy (8.1 GiB at 20,819 items)."""


class EASEConfig(ModelConfig):
    l2: float = Field(200.0, gt=0, description="Ridge penalty on the item-item weights.")
    max_items: int = Field(MAX_ITEMS, ge=1, description="Largest catalogue EASE is fitted on: its Gram matrix "
                                                        "is dense, items^2 float64 (7.2 GB at 30,000 items).")


class EASEModel(Recommender[EASEConfig]):
    """B = argmin ||X - XB||^2 + l2 ||B||^2 with diag(B) = 0, solved in closed form."""

    family = "ease"
    config_class = EASEConfig

    def cannot_fit(self, n_customers: int, n_items: int) -> str | None:
        if n_items <= self.config.max_items:
            return None
        return (f"needs a dense {n_items:,} x {n_items:,} matrix ({n_items ** 2 * 8 / 1e9:,.1f} GB); "
                f"fitted up to max_items={self.config.max_items:,}")

    def fit_cost(self, size: MatrixSize) -> FitCost:
        return FitCost(CUBE_S * float(size.items) ** 3, BYTES_PER_CELL * float(size.items) ** 2 / 2**30)

    def fit(self, dataset: Dataset) -> Self:
        n_items = dataset.shape[1]
        reason = self.cannot_fit(*dataset.shape)
        if reason is not None:
            raise UserError(f"EASE {reason}: use ALS on this catalogue")
        x = dataset.interactions
        gram = (x.T @ x).toarray().astype(np.float64)
        gram[np.diag_indices(n_items)] += self.config.l2
        # One BLAS thread whatever the caller's environment: scipy's bundled OpenBLAS crashed
        # (SIGSEGV, no message) inverting a 20,819-item Gram matrix with two threads.
        with threadpool_limits(limits=1, user_api="blas"):
            precision = scipy.linalg.inv(gram, overwrite_a=True, check_finite=False)
        weights = -precision / np.diag(precision)
        weights[np.diag_indices(n_items)] = 0.0
        # Row-major: scipy's sparse x dense product copies a column-major operand on every call,
        # which for 20,819 items is 1.7 GB per block of customers (the inverse comes column-major).
        self.weights_ = np.ascontiguousarray(weights, dtype=np.float32)
        return self

    def load_state(self, folder: Path) -> Self:
        super().load_state(folder)
        self.weights_ = np.ascontiguousarray(self.weights_)  # bundles saved before it was row-major
        return self

    def score(self, customers: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        return np.asarray(history @ self.weights_, dtype=np.float32)

    def score_history(self, history: sp.csr_matrix) -> np.ndarray:
        """EASE scores from history alone, so a new row needs nothing more."""
        return self.score(np.zeros(history.shape[0], dtype=np.int64), history)
