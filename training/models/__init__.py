"""Every model family behind the one protocol of :mod:`training.models.base`.

``MODELS`` maps a family name (as used in configs, MLflow params and the bundle) to its
class; each class names its hyper-parameter model in ``config_class``, so configs and
saved bundles can be turned back into models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from features.errors import UserError
from training.models.base import Recommender
from training.models.baselines import OwnMostBoughtModel, RecentPopularityModel, TifuKNNModel
from training.models.cooccurrence import CooccurrenceModel
from training.models.ease import EASEModel
from training.models.factorization import ALSModel, BPRModel
from training.models.lightfm_model import LightFMModel
from training.models.popularity import PopularityModel
from training.models.repeat import RepeatModel

MODELS: dict[str, type[Recommender]] = {
    model.family: model
    for model in (PopularityModel, RecentPopularityModel, OwnMostBoughtModel, TifuKNNModel, RepeatModel,
                  ALSModel, BPRModel, EASEModel, LightFMModel, CooccurrenceModel)
}


def build_model(family: str, params: dict[str, Any] | None = None) -> Recommender:
    """An unfitted model of ``family`` with validated hyper-parameters."""
    if family not in MODELS:
        raise UserError(f"unknown model family {family!r}; choose from {', '.join(MODELS)}")
    model_class = MODELS[family]
    return model_class(model_class.config_class(**(params or {})))


def load_model(folder: Path) -> Recommender:
    """A fitted model from :meth:`Recommender.save` output."""
    spec = json.loads((folder / "model.json").read_text())
    return build_model(spec["family"], spec["config"]).load_state(folder)
