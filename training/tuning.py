"""Per-shop hyper-parameter search with Optuna, on the validation window only.

Shops differ: a badly set ALS loses to popularity, and its alpha and regularisation matter
more than its size. Each family gets its own TPE study over its key hyper-parameters,
seeded for reproducibility, with the family's current setting enqueued as the first trial
so tuning can only match or improve the validation score. Every trial is a nested MLflow
run under the training run. The test window is never seen here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import mlflow
import optuna
from pydantic import BaseModel, ConfigDict, Field

from training.evaluate import Window
from training.models import build_model
from training.selection import validate_ranker

Progress = Callable[[str], None]
Space = Callable[[optuna.trial.BaseTrial], dict[str, Any]]

SPACES: dict[str, Space] = {
    "als": lambda t: {
        "factors": t.suggest_int("factors", 16, 128, log=True),
        "regularization": t.suggest_float("regularization", 1e-3, 10.0, log=True),
        "alpha": t.suggest_float("alpha", 1.0, 100.0, log=True),
        "iterations": t.suggest_int("iterations", 5, 30),
    },
    "bpr": lambda t: {
        "factors": t.suggest_int("factors", 16, 128, log=True),
        "learning_rate": t.suggest_float("learning_rate", 1e-3, 0.2, log=True),
        "regularization": t.suggest_float("regularization", 1e-4, 0.1, log=True),
        "iterations": t.suggest_int("iterations", 50, 400, log=True),
    },
    "ease": lambda t: {"l2": t.suggest_float("l2", 1.0, 5000.0, log=True)},
    "lightfm": lambda t: {
        "no_components": t.suggest_int("no_components", 16, 128, log=True),
        "learning_rate": t.suggest_float("learning_rate", 0.005, 0.2, log=True),
        "epochs": t.suggest_int("epochs", 10, 60),
        "identity_weight": t.suggest_float("identity_weight", 0.5, 20.0, log=True),
    },
    "cooccurrence": lambda t: {
        "history_weight": t.suggest_float("history_weight", 0.0, 1.0),
        "shrinkage": t.suggest_float("shrinkage", 0.0, 50.0),
        "min_support": t.suggest_int("min_support", 1, 3),
    },
}


class TuneConfig(BaseModel):
    """``trials`` per family (0 = no tuning) within ``minutes`` for the whole search."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trials: int = Field(0, ge=0, le=1000)
    minutes: float = Field(10.0, gt=0)
    seed: int = 42


def _current(family: str, params: dict[str, Any], space: Space) -> dict[str, Any]:
    """The family's current setting (defaults overridden by ``params``), restricted to the space."""
    config = build_model(family, params).config.model_dump()
    probe = optuna.trial.FixedTrial(config)
    return {name: config[name] for name in space(probe)}


def tune(window: Window, families: list[str], params: dict[str, dict[str, Any]], metric_key: str, k: int,
         config: TuneConfig, progress: Progress | None = None) -> dict[str, dict[str, Any]]:
    """Best validation setting per family under the repeat/explore ranker (the row a run serves,
    towers cross-fitted: :func:`training.selection.validate_ranker`), merged over ``params``;
    families without a space keep theirs. A family's best setting alone can be a worse one under
    the ranker (EASE on the sample shop: l2 50 is best alone, 200 under the ranker), so the ranker
    row decides; the family alone is logged beside it (``validation_alone.*``)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tunable = [f for f in families if f in SPACES]
    active = mlflow.active_run()
    experiment_id = active.info.experiment_id if active else None  # nested runs stay beside their parent
    deadline = time.monotonic() + config.minutes * 60.0
    best = {family: dict(values) for family, values in params.items()}
    for position, family in enumerate(tunable):
        space, base = SPACES[family], dict(params.get(family, {}))
        remaining_families = len(tunable) - position
        budget = max(1.0, (deadline - time.monotonic()) / remaining_families)

        def objective(trial: optuna.Trial, family: str = family, space: Space = space,
                      base: dict[str, Any] = base) -> float:
            setting = {**base, **space(trial)}
            model = build_model(family, setting).fit(window.split.train)
            alone, metrics, _, _ = validate_ranker(window, model, k)
            with mlflow.start_run(nested=True, run_name=f"tune-{family}-{trial.number}", experiment_id=experiment_id):
                mlflow.set_tag("shoprec.tuning_family", family)
                mlflow.log_params(setting)
                mlflow.log_metrics({f"validation.{name}": value for name, value in metrics.items()})
                mlflow.log_metrics({f"validation_alone.{name}": value for name, value in alone.items()})
            if progress:
                progress(f"tuning {family}: trial {trial.number + 1}, {metric_key} {metrics[metric_key]:.4f}")
            return metrics[metric_key]

        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=config.seed))
        study.enqueue_trial(_current(family, base, space))
        study.optimize(objective, n_trials=config.trials, timeout=budget)
        best[family] = {**base, **study.best_params}
    return best
