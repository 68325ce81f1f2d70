"""The one protocol every recommender follows.

Models learn on a :class:`~features.dataset.Dataset` and score customers by internal index;
turning scores into lists is not theirs to do: every list goes through the one ranking path
(:func:`training.ranking.make_lists`), with the same rules for every model and baseline.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Generic, Self, TypeVar

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict

from features.dataset import Dataset


class ModelConfig(BaseModel):
    """Base for model hyper-parameters: unknown keys are an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


ConfigT = TypeVar("ConfigT", bound=ModelConfig)


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

    def score_history(self, history: sp.csr_matrix) -> np.ndarray | None:
        """Scores for visitors the model never saw, from interaction rows alone (fold-in).

        What a live session needs: an anonymous visitor or a new customer has no row in
        the fitted state, only the items they just touched. None where a family cannot
        fold a new row in; callers then use the item-item model.
        """
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
