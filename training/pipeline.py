"""The train job: load -> split -> fit -> evaluate -> log -> refit -> bundle -> register -> gate.

Model choice happens on a validation window carved from the end of the training period;
the test window (the last ``test_days``) is only used to report every model's metrics, so
the figures a data scientist compares in MLflow are never the ones the choice was fitted to.
A failed or rejected run never touches the ``champion`` alias.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from features.dataset import InteractionConfig, build_dataset
from features.errors import UserError
from features.engines import Engine, load_shop_with
from features.loading import ShopData
from features.schema import ContractConfig
from features.sources import is_database_url, safe_url
from features.triggers import TriggerConfig
from training import plots, registry, tracking
from training.bundle import COOCCURRENCE, POPULARITY, PRIMARY, Bundle
from training.bundle_files import content_hash
from training.bundle_profiles import build_profiles
from training.evaluate import SplitConfig, Window
from training.models import build_model
from training.models.base import FitBudget
from training.propensity import PropensityConfig, PropensityReport, evaluate_propensity, fit_propensity
from training.propensity_rows import Snapshots
from training.propensity_set import PropensitySet
from training.pyfunc import log_bundle
from training.ranker import Ranker
from training.ranking import RankingConfig
from training.retrieval import DenseExplore, index_hits
from training.selection import BASELINES, Selection, select
from training.top_k import rows_of
from training.tuning import TuneConfig, tune

Progress = Callable[[str], None]
EXPLORE_FAMILIES = ("als", "ease", "lightfm", "cooccurrence", "bpr")
"""The families the ranker can sit on (``families``); the rest of MODELS are baselines and the
repeat scorer, which every run evaluates anyway (training/selection.py)."""


class TrainConfig(BaseModel):
    """Everything that decides a training run; logged to MLflow as flat params."""

    model_config = ConfigDict(extra="forbid")

    contract: ContractConfig = Field(default_factory=ContractConfig)
    interactions: InteractionConfig = Field(default_factory=InteractionConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    families: list[str] = Field(default_factory=lambda: ["als", "ease", "lightfm", "cooccurrence"],
                                description="Explore families evaluated alone and under the ranker (bpr is "
                                            "available but not default: it trailed every other family).")
    ranking: RankingConfig = Field(default_factory=RankingConfig)
    budget: FitBudget = Field(default_factory=FitBudget, description="Families whose estimated fit is over it "
                              "at the shop's size are skipped, with the reason.")
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    primary_metric: str = "ndcg"
    gate_tolerance: float = Field(0.02, ge=0, le=1)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    propensity: PropensityConfig = Field(default_factory=PropensityConfig)
    triggers: TriggerConfig = Field(default_factory=TriggerConfig,
                                    description="The windows of the campaign plan's lifecycle triggers.")
    model_name: str = "shoprec"
    experiment: str = "shoprec"

    @field_validator("families")
    @classmethod
    def _known_families(cls, families: list[str]) -> list[str]:
        unknown = [f for f in families if f not in EXPLORE_FAMILIES]
        if unknown or not families:
            raise UserError(f"families must be a non-empty list from {list(EXPLORE_FAMILIES)}, got {families}")
        return families

    @property
    def metric_key(self) -> str:
        return f"{self.primary_metric}_at_{self.split.k}"


@dataclass
class TrainResult:
    run_id: str
    chosen: str
    """The row served: ``ranker_<family>``, or a baseline (chosen, or fallen back to)."""
    metrics: pd.DataFrame
    validation: pd.DataFrame
    bundle: Bundle
    selection: Selection
    model_version: str | None = None
    gate: registry.GateDecision | None = None


def flatten(prefix: str, value: Any) -> dict[str, Any]:
    """Nested config -> MLflow params ``a.b.c = value``."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(flatten(f"{prefix}.{key}" if prefix else str(key), inner))
        return out
    return {prefix: value}


def evaluate_shop(shop: ShopData, config: TrainConfig, progress: Progress | None = None
                  ) -> tuple[Selection, TrainConfig]:
    """Tune (when asked) and choose on validation, report on test (training/selection.py).

    Returns the selection and the config with the tuned hyper-parameters in ``params``.
    """
    def tune_on(window: Window, families: list[str], params: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return tune(window, families, params, config.metric_key, config.split.k, config.tune, progress)

    selection = select(shop, config.families, config.params, config.split, config.ranking, config.interactions,
                       config.metric_key, config.budget, tune_on if config.tune.trials else None, progress)
    if config.tune.trials:  # what the selection fitted with: tuned, or kept where the tuned one was over budget
        config = config.model_copy(update={"params": selection.params})
    return selection, config


def build_bundle(shop: ShopData, config: TrainConfig, family: str, metadata: dict[str, Any],
                 propensity: PropensitySet | None = None, ranker: Ranker | None = None,
                 cap: int | None = None) -> Bundle:
    """Refit the primary model (``family``, under ``ranker`` when given), the fallback and the
    cross-sell model on the whole history, with every profile and the list rules (``cap``: the
    diversity cap chosen on validation).

    ``propensity`` (from :func:`training.propensity.fit_propensity`) is passed in rather than
    fitted here, so callers that only need recommendations do not pay for it.
    """
    dataset = build_dataset(shop, config.interactions)
    profiles = build_profiles(shop, dataset, float(config.split.test_days), config.triggers)
    models = {
        PRIMARY: build_model(family, config.params.get(family)).fit(dataset),
        POPULARITY: build_model("popularity", config.params.get("popularity")).fit(dataset),
        COOCCURRENCE: build_model("cooccurrence", config.params.get("cooccurrence")).fit(dataset),
    }
    ranking = config.ranking.model_copy(update={
        "diversity_cap": cap if cap is not None else config.ranking.diversity_cap,
        "horizon_days": config.ranking.horizon_days or float(config.split.test_days)})
    return Bundle.from_dataset(dataset, models, {**metadata, "ranking": ranking.model_dump()}, profiles, propensity,
                               ranker)


INDEX_CHECK_CUSTOMERS = 2_000
"""Customers the served bundle's item index is checked on against every item's score."""


def _index_recall(bundle: Bundle) -> float | None:
    """Share of the exact explore candidates the bundle's item index finds, on a seeded sample
    of its customers; None when its explore scores are every item's."""
    personal = bundle.personal
    if personal.index is None or personal.ranker is None:
        return None
    warm = np.flatnonzero(bundle.has_history)
    chosen = np.sort(np.random.default_rng(0).choice(warm, min(INDEX_CHECK_CUSTOMERS, len(warm)), replace=False))
    hits = wanted = 0
    for start in range(0, len(chosen), bundle.block_rows):
        rows = chosen[start:start + bundle.block_rows]
        exact = DenseExplore(np.asarray(personal.model.score(rows, personal.interactions[rows]), dtype=np.float32))
        found, asked = index_hits(personal.index, exact, rows, rows_of(personal.history.counts, rows)[:2],
                                  personal.ranker.depth)
        hits, wanted = hits + found, wanted + asked
    return hits / wanted if wanted else None


def run_training(data: str, config: TrainConfig | None = None, *, register: bool = True,
                 progress: Progress | None = None, engine: Engine = "local") -> TrainResult:
    """The whole job. With ``register=False`` it evaluates and logs but registers nothing.
    ``engine`` loads the data (:func:`features.engines.load_shop_with`); the rest runs here.

    Any failure ends the MLflow run as FAILED before registration, so the champion alias
    only ever moves at the very end of a complete, gated run.
    """
    config = config or TrainConfig()
    client = tracking.configure()
    experiment_id = tracking.ensure_experiment(client, config.experiment)
    for dead in tracking.fail_dead_runs(client, experiment_id):
        if progress:
            progress(f"run {dead} was left RUNNING by a process that died: marked FAILED")
    shop = load_shop_with(engine, data, progress=progress, config=config.contract)
    with mlflow.start_run(experiment_id=experiment_id, tags=tracking.process_tags()) as run, \
            tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tags({"shoprec.data": safe_url(str(data)) if is_database_url(data) else str(data), "shoprec.tables": ",".join(shop.report.present),
                         "shoprec.register": str(register), "shoprec.load_engine": engine})
        mlflow.log_dict(shop.report.to_dict(), "data/load_report.json")
        selection, config = evaluate_shop(shop, config, progress)
        test, validation, split = selection.test, selection.validation, selection.test_split
        served, key, strongest = selection.primary_row, config.metric_key, selection.strongest_baseline
        mlflow.set_tags({"shoprec.chosen": selection.chosen, "shoprec.served": served,
                         "shoprec.strongest_baseline": strongest, "shoprec.diversity_cap": str(selection.cap),
                         **({"shoprec.fallback": selection.fallback_reason} if selection.fallback_reason else {}),
                         **{f"shoprec.skipped.{family}": reason for family, reason in selection.skipped.items()}})
        mlflow.log_params(flatten("", config.model_dump()))
        mlflow.log_params({"split.cutoff": split.cutoff.isoformat(), "split.cold_buyers": split.cold_buyers,
                           "split.evaluated_customers": len(split.customers),
                           "split.window_customers": split.window_customers,
                           "validation.windows": len(selection.windows),
                           "validation.customers": sum(w["customers"] for w in selection.windows)})
        for stage, table in (("test", test), ("validation", validation)):
            for row, values in table.iterrows():
                mlflow.log_metrics({f"{stage}.{row}.{name}": float(v) for name, v in values.items()})
        mlflow.log_metrics({key: float(test.loc[served, key]), f"baseline_{key}": float(test.loc[strongest, key]),
                            **{f"diversity.{name}": value for name, value in selection.cap_effect.items()}})
        if selection.ranker is not None:
            mlflow.log_dict(selection.ranker.coefficients(), "evaluation/ranker_coefficients.json")
        _log_report_artifacts(shop, test, validation, Path(tmp), key)
        propensity = None
        if config.propensity.enabled:
            snapshots = Snapshots()  # the bundle's fit reuses evaluation's feature snapshots
            report = evaluate_propensity(shop, config.propensity, progress, snapshots)
            _log_propensity(report, Path(tmp))
            propensity = fit_propensity(shop, config.propensity, progress, snapshots)
            del snapshots  # a frame per cut-off: not held through the refit and the bundle
            propensity.beats_baseline = {target: report.beats_baseline(target) for target in propensity.models}
        if progress:
            progress(f"refitting {selection.family} on the full history and building the bundle")
        bundle = build_bundle(shop, config, selection.family, {
            "chosen": served, "metric": key, "test_metrics": test.loc[served].to_dict(),
            "baseline": strongest, "baseline_metrics": test.loc[strongest].to_dict(),
            "tables_present": shop.report.present, "run_id": run.info.run_id, "config": config.model_dump(),
            "validation_windows": selection.windows,
        }, propensity, selection.ranker, selection.cap)
        if (recall := _index_recall(bundle)) is not None:
            mlflow.log_metric("explore_index_recall", recall)
            if progress:
                progress(f"explore candidates from the item index: {recall:.2%} of the exact ones found for "
                         f"{INDEX_CHECK_CUSTOMERS:,} customers or fewer")
        bundle_dir = bundle.save(Path(tmp) / "bundle")
        model_uri = log_bundle(bundle, bundle_dir, _requirements())
        result = TrainResult(run.info.run_id, served, test, validation, bundle, selection)
        if register:
            result.model_version = registry.register(
                client, config.model_name, model_uri, key, float(test.loc[served, key]),
                float(test.loc[strongest, key]), content_hash(bundle_dir), baseline_name=strongest,
                serves_baseline=served if served in BASELINES else None)
            result.gate = registry.gate(client, config.model_name, result.model_version, config.gate_tolerance)
            mlflow.set_tags({"shoprec.gate": "passed" if result.gate.passed else "rejected",
                             "shoprec.gate_reason": result.gate.reason})
            if result.gate.passed:
                registry.promote(client, config.model_name, result.model_version)
    return result


def _log_report_artifacts(shop: ShopData, test: pd.DataFrame, validation: pd.DataFrame, tmp: Path,
                          key: str) -> None:
    if shop.report.rows_quarantined:
        shop.write_quarantine(tmp / "quarantine")
        mlflow.log_artifacts(str(tmp / "quarantine"), "data/quarantine")
    test.to_csv(tmp / "test_metrics.csv")
    validation.to_csv(tmp / "validation_metrics.csv")
    mlflow.log_artifact(str(tmp / "test_metrics.csv"), "evaluation")
    mlflow.log_artifact(str(tmp / "validation_metrics.csv"), "evaluation")
    mlflow.log_figure(plots.metric_comparison(test, key), "evaluation/metric_comparison.png")
    mlflow.log_figure(plots.price_band_histogram(shop["orders"]), "data/price_bands.png")


def _log_propensity(report: PropensityReport, tmp: Path) -> None:
    """Metrics as ``propensity.<target>.<metric>``, the choice and skip reasons as tags, deciles and plot."""
    for target, status in report.status.items():
        mlflow.set_tag(f"shoprec.propensity.{target}", report.chosen.get(target, status))
        if target in report.baseline:
            mlflow.set_tag(f"shoprec.propensity.{target}.baseline", report.baseline[target])
    for target, values in report.metrics.items():
        mlflow.log_metrics({f"propensity.{target}.{name}": float(v) for name, v in values.items()})
        path = tmp / f"propensity_{target}_deciles.csv"
        report.deciles[target].to_csv(path)
        mlflow.log_artifact(str(path), "evaluation")
    if report.deciles:
        mlflow.log_figure(plots.reliability(report.deciles), "evaluation/propensity_reliability.png")


def _requirements() -> list[str]:
    """Pinned to what trained the bundle, so a pyfunc environment rebuild matches it."""
    return [f"{name}=={version(name)}" for name in ("mlflow", "pandas", "numpy", "scipy", "pyarrow",
                                                     "implicit", "threadpoolctl", "pydantic", "scikit-learn",
                                                     "faiss-cpu")]
