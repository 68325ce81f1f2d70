"""The one protocol every recommender follows.

Models learn on a :class:`~features.dataset.Dataset` and score customers by internal index;
turning scores into lists is not theirs to do: every list goes through the one ranking path
(:func:`training.ranking.make_lists`), with the same rules for every model and baseline.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, NamedTuple, Self, TypeVar

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field

from features.dataset import Dataset


class ModelConfig(BaseModel):
    """Base for model hyper-parameters: unknown keys are an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


ConfigT = TypeVar("ConfigT", bound=ModelConfig)


@dataclass(frozen=True)
class InnerProduct:
    """A model whose score is ``user[c] @ item[i] + user_offset[c] + item_offset[i]``: what an
    item index searches (:mod:`training.retrieval`) instead of scoring every item. The arrays
    are the model's own, not copies."""

    user: np.ndarray
    """Customers x dimensions, float32."""
    item: np.ndarray
    """Items x dimensions, float32."""
    user_offset: np.ndarray | None = None
    """Per customer, added to every item's score (None: nothing)."""
    item_offset: np.ndarray | None = None
    """Per item, added to its score for every customer (None: nothing)."""


class MatrixSize(NamedTuple):
    """What one fit costs depends on: the interaction matrix's shape and its stored entries."""

    customers: int
    items: int
    entries: int

    @classmethod
    def of(cls, dataset: Dataset) -> MatrixSize:
        """The size of ``dataset``'s interaction matrix, which every explore family fits on."""
        return cls(*dataset.shape, int(dataset.interactions.nnz))

    def __str__(self) -> str:
        return f"{self.customers:,} x {self.items:,} ({self.entries:,} entries)"


@dataclass(frozen=True)
class FitCost:
    """One fit's estimate: wall seconds on one core and the working memory it adds at its peak.

    The constants behind each family's estimate were measured on the 2-core VM of
    docs/benchmarks.md ("Scale"); they are meant to tell a fit of minutes from one of hours,
    not to time it to the second.
    """

    seconds: float = 0.0
    gib: float = 0.0


def factor_memory(size: MatrixSize, factors: int) -> float:
    """GiB of a factor model's fit (ALS, BPR, LightFM): factors and their copies for every row,
    and the matrix with the transposed copy its library makes."""
    return ((size.customers + size.items) * factors * 4 * 4 + size.entries * 12 * 3) / 2**30


class FitBudget(BaseModel):
    """The most one fit of a family may cost before training skips that family (with the reason
    in the terminal, the selection and MLflow): a default that ran for hours or ran out of
    memory on a large shop would be a defect. Per fit, because a run fits each family once per
    validation window, once on the test split and once more for the bundle."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fit_minutes: float = Field(20.0, gt=0, description="Most estimated minutes of one fit.")
    memory_gib: float = Field(12.0, gt=0, description="Most estimated GiB of working memory of one fit.")


class Recommender(ABC, Generic[ConfigT]):
    """fit(dataset) -> self; score(customers) -> dense scores; score_history(rows) -> fold-in scores.

    Following scikit-learn, ``__init__`` only stores the config and learned state ends in
    an underscore, so an unfitted model is cheap to build from a logged config. Generic over
    its config (``class ALSModel(Recommender[ALSConfig])``), so ``self.config`` has the
    family's own fields for the type checker.
    """

    family: str = ""
    config_class: type[ConfigT]
    """The family's hyper-parameter model: configs and saved bundles are turned back into models by it."""

    def __init__(self, config: ConfigT | None = None) -> None:
        self.config: ConfigT = config if config is not None else self.config_class()

    @abstractmethod
    def fit(self, dataset: Dataset) -> Self:
        """Learn from the dataset's interactions."""

    @abstractmethod
    def score(self, customers: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        """Scores (len(customers) x n_items, float32) for customers given their interaction rows."""

    def cannot_fit(self, n_customers: int, n_items: int) -> str | None:
        """Why this family cannot be fitted on a customers x items matrix of this size, or None.

        Training skips a family that cannot run at a shop's size and records the reason (a
        default that crashed on a normal catalogue would be a defect); ``fit`` refuses it too.
        """
        return None

    def fit_cost(self, size: MatrixSize) -> FitCost:
        """One fit's estimated cost at ``size``; nothing for a family linear in the entries
        with a small constant (the baselines, co-occurrence)."""
        return FitCost()

    def over_budget(self, size: MatrixSize, budget: FitBudget) -> str | None:
        """Why training skips this family at ``size``: a hard limit (:meth:`cannot_fit`) or an
        estimated fit over ``budget``; None when it is fitted."""
        if (reason := self.cannot_fit(size.customers, size.items)) is not None:
            return reason
        cost = self.fit_cost(size)
        if cost.seconds > budget.fit_minutes * 60:
            return (f"an estimated {cost.seconds / 60:,.1f} min a fit on {size}, over the budget's "
                    f"fit_minutes={budget.fit_minutes:g}")
        if cost.gib > budget.memory_gib:
            return (f"an estimated {cost.gib:,.1f} GiB to fit on {size}, over the budget's "
                    f"memory_gib={budget.memory_gib:g}")
        return None

    def score_history(self, history: sp.csr_matrix) -> np.ndarray | None:
        """Scores for visitors the model never saw, from interaction rows alone (fold-in).

        What a live session needs: an anonymous visitor or a new customer has no row in
        the fitted state, only the items they just touched. None where a family cannot
        fold a new row in; callers then use the item-item model.
        """
        return None

    def inner_product(self) -> InnerProduct | None:
        """The model's scores as an inner product of customer and item vectors, where they are
        one (factor models); None for every other family, whose scores are computed whole."""
        return None

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
