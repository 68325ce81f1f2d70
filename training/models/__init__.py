"""Every model family behind the one protocol of :mod:`training.models.base`.

``MODELS`` maps a family name (as used in configs, MLflow params and the bundle) to its
class and hyper-parameter model, so configs and saved bundles can be turned back into models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from training.models.base import ModelConfig, Recommender
from training.models.cooccurrence import CooccurrenceConfig, CooccurrenceModel
from training.models.ease import EASEConfig, EASEModel
from training.models.factorization import ALSConfig, ALSModel, BPRConfig, BPRModel
from training.models.lightfm_model import LightFMConfig, LightFMModel
from training.models.popularity import PopularityConfig, PopularityModel

MODELS: dict[str, tuple[type[Recommender], type[ModelConfig]]] = {
    "popularity": (PopularityModel, PopularityConfig),
    "als": (ALSModel, ALSConfig),
    "bpr": (BPRModel, BPRConfig),
    "ease": (EASEModel, EASEConfig),
    "cooccurrence": (CooccurrenceModel, CooccurrenceConfig),
    "lightfm": (LightFMModel, LightFMConfig),
}


def build_model(family: str, params: dict[str, Any] | None = None) -> Recommender:
    """An unfitted model of ``family`` with validated hyper-parameters."""
    if family not in MODELS:
        raise ValueError(f"unknown model family {family!r}; choose from {', '.join(MODELS)}")
    model_class, config_class = MODELS[family]
    return model_class(config_class(**(params or {})))  # type: ignore[call-arg]


def load_model(folder: Path) -> Recommender:
    """A fitted model from :meth:`Recommender.save` output."""
    spec = json.loads((folder / "model.json").read_text())
    return build_model(spec["family"], spec["config"]).load_state(folder)
