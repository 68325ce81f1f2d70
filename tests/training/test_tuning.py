"""Optuna tuning: validation window only, nested MLflow runs, never worse than the starting setting."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from features.loading import validate_tables
from features.sample import SampleConfig, generate_shop
from features.sources import RawTable
from training import tracking
from training.evaluate import SplitConfig, Window, prepare_window, time_split
from training.models import build_model
from training.ranking import RankingConfig
from training.selection import validate_ranker
from training.tuning import SPACES, TuneConfig, tune


@pytest.fixture(scope="module")
def validation_split() -> Window:
    """The validation window of a small sample shop: the 28 days before the test window."""
    generated = generate_shop(SampleConfig(customers=1200, items=300, days=150, seed=4))
    shop = validate_tables({k: RawTable(v, k) for k, v in generated.tables.items()}, source="s")
    test = time_split(shop, SplitConfig())
    return prepare_window(shop, time_split(shop.before(test.cutoff), SplitConfig()), RankingConfig(), 28.0)


def test_every_tunable_family_has_a_space_for_real_parameters() -> None:
    for family, space in SPACES.items():
        import optuna

        params = space(optuna.trial.FixedTrial(build_model(family).config.model_dump()))
        build_model(family, params)  # the names exist and the values validate


def test_tuning_logs_nested_trials_and_never_loses_to_the_start(validation_split, mlflow_home: Path) -> None:
    client = tracking.configure()
    start = {"als": {"factors": 4, "iterations": 2, "regularization": 5.0}}
    key = "ndcg_at_10"
    with mlflow.start_run(experiment_id=tracking.ensure_experiment(client, "tune")) as parent:
        best = tune(validation_split, ["als", "ease"], start, key, 10, TuneConfig(trials=4, minutes=2, seed=1))
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 8
    assert {c.data.tags["shoprec.tuning_family"] for c in children} == {"als", "ease"}
    train = validation_split.split.train

    def served(setting: dict) -> float:  # the ranker over the family: the row a run serves
        return validate_ranker(validation_split, build_model("als", setting).fit(train), 10)[1][key]

    start_score, tuned_score = served(start["als"]), served(best["als"])
    assert tuned_score >= start_score
    assert all(f"validation_alone.{key}" in c.data.metrics for c in children)
    best_logged = max(c.data.metrics[f"validation.{key}"] for c in children if c.data.tags["shoprec.tuning_family"] == "als")
    assert tuned_score == pytest.approx(best_logged)


def test_same_seed_same_choice(validation_split, mlflow_home: Path) -> None:
    tracking.configure()
    runs = []
    for _ in range(2):
        with mlflow.start_run():
            runs.append(tune(validation_split, ["ease"], {}, "ndcg_at_10", 10, TuneConfig(trials=3, seed=3)))
    assert runs[0] == runs[1]
