"""Matrix factorisation from the ``implicit`` library: ALS and BPR behind the shared protocol.

``implicit`` is imported where a model is fitted, not when one is loaded: a fitted model is
two factor arrays, and serving scores them with numpy alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Self, TypeVar

import numpy as np
import scipy.sparse as sp
from pydantic import Field
from threadpoolctl import threadpool_limits

from features.dataset import Dataset
from training.models.base import FitCost, InnerProduct, MatrixSize, ModelConfig, Recommender, factor_memory

if TYPE_CHECKING:
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.cpu.bpr import BayesianPersonalizedRanking


class ALSConfig(ModelConfig):
    """Hu, Koren & Volinsky (2008). ``alpha`` scales confidence: it matters more than ``factors``."""

    factors: int = Field(64, ge=2, le=512)
    regularization: float = Field(0.05, ge=0)
    alpha: float = Field(10.0, gt=0)
    iterations: int = Field(15, ge=1, le=200)
    random_state: int = 42


class BPRConfig(ModelConfig):
    factors: int = Field(64, ge=2, le=512)
    learning_rate: float = Field(0.05, gt=0)
    regularization: float = Field(0.01, ge=0)
    iterations: int = Field(100, ge=1, le=2000)
    random_state: int = 42


FactorConfigT = TypeVar("FactorConfigT", bound=ModelConfig)
ALS_ENTRY_S, ALS_ROW_S = 5e-9, 5e-10
"""ALS seconds per iteration: per entry and factor (conjugate-gradient steps) plus per row and
factor squared (each row's solve); measured on sample shops of 47k and 208k entries."""
BPR_ENTRY_S = 4e-9
"""BPR seconds per iteration, entry and factor (one sampled triple per entry)."""


class _FactorModel(Recommender[FactorConfigT]):
    """Shared scoring: customer factors dot item factors, one matrix product per block."""

    def _store(self, model: AlternatingLeastSquares | BayesianPersonalizedRanking) -> None:
        self.user_factors_ = np.ascontiguousarray(model.user_factors, dtype=np.float32)
        self.item_factors_ = np.ascontiguousarray(model.item_factors, dtype=np.float32)

    def score(self, customers: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        return self.user_factors_[customers] @ self.item_factors_.T

    def inner_product(self) -> InnerProduct:
        return InnerProduct(self.user_factors_, self.item_factors_)


class ALSModel(_FactorModel[ALSConfig]):
    family = "als"
    config_class = ALSConfig

    def fit_cost(self, size: MatrixSize) -> FitCost:
        c = self.config
        per_iteration = c.factors * (size.entries * ALS_ENTRY_S + (size.customers + size.items) * c.factors * ALS_ROW_S)
        return FitCost(c.iterations * per_iteration, factor_memory(size, c.factors))

    def fit(self, dataset: Dataset) -> Self:
        from implicit.cpu.als import AlternatingLeastSquares

        c = self.config
        model = AlternatingLeastSquares(factors=c.factors, regularization=c.regularization, alpha=c.alpha,
                                        iterations=c.iterations, random_state=c.random_state,
                                        calculate_training_loss=False, num_threads=1)
        with threadpool_limits(limits=1, user_api="blas"):
            model.fit(dataset.interactions, show_progress=False)
        self._store(model)
        return self

    def score_history(self, history: sp.csr_matrix) -> np.ndarray:
        """Fold new rows in as ALS itself solves a customer's factors, item factors fixed:
        x = (YᵀY + Yᵀ(C - I)Y + λI)⁻¹ YᵀCp with confidence C = alpha * weight, as implicit's
        ``recalculate_user`` does; then score like any fitted customer."""
        c = self.config
        y = self.item_factors_.astype(np.float64)
        gram = y.T @ y + c.regularization * np.eye(y.shape[1])
        history = sp.csr_matrix(history)
        factors = np.zeros((history.shape[0], y.shape[1]), dtype=np.float32)
        for row in range(history.shape[0]):
            items = history.indices[history.indptr[row]:history.indptr[row + 1]]
            if not len(items):
                continue
            confidence = c.alpha * history.data[history.indptr[row]:history.indptr[row + 1]].astype(np.float64)
            touched = y[items]
            lhs = gram + touched.T @ ((confidence - 1.0)[:, None] * touched)
            factors[row] = np.linalg.solve(lhs, touched.T @ confidence)
        return factors @ self.item_factors_.T


class BPRModel(_FactorModel[BPRConfig]):
    family = "bpr"
    config_class = BPRConfig

    def fit_cost(self, size: MatrixSize) -> FitCost:
        c = self.config
        return FitCost(c.iterations * c.factors * size.entries * BPR_ENTRY_S, factor_memory(size, c.factors))

    def fit(self, dataset: Dataset) -> Self:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        c = self.config
        model = BayesianPersonalizedRanking(factors=c.factors, learning_rate=c.learning_rate,
                                            regularization=c.regularization, iterations=c.iterations,
                                            random_state=c.random_state, num_threads=1)
        with threadpool_limits(limits=1, user_api="blas"):
            model.fit(dataset.interactions, show_progress=False)
        self._store(model)
        return self
