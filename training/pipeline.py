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
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from features.aliases import resolve_aliases
from features.dataset import InteractionConfig, build_dataset
from features.loading import ShopData, load_shop
from features.profiles import category_affinity, customer_profiles, email_open_rates, repurchase_intervals
from features.schema import ContractConfig
from features.sources import is_sql_url, safe_url
from training import plots, registry, tracking
from training.bundle import ALIASES, COOCCURRENCE, POPULARITY, PRIMARY, Bundle, content_hash
from training.evaluate import SplitConfig, TimeSplit, evaluate_model, time_split
from training.models import MODELS, build_model
from training.propensity import PropensityConfig, PropensityReport, evaluate_propensity, fit_propensity
from training.propensity_set import PropensitySet
from training.pyfunc import log_bundle
from training.tuning import TuneConfig, tune

Progress = Callable[[str], None]
BASELINE = "popularity"


class TrainConfig(BaseModel):
    """Everything that decides a training run; logged to MLflow as flat params."""

    model_config = ConfigDict(extra="forbid")

    contract: ContractConfig = Field(default_factory=ContractConfig)
    interactions: InteractionConfig = Field(default_factory=InteractionConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    families: list[str] = Field(default_factory=lambda: ["als", "bpr", "ease", "lightfm", "cooccurrence"])
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    primary_metric: str = "ndcg"
    gate_tolerance: float = Field(0.02, ge=0, le=1)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    propensity: PropensityConfig = Field(default_factory=PropensityConfig)
    model_name: str = "shoprec"
    experiment: str = "shoprec"

    @field_validator("families")
    @classmethod
    def _known_families(cls, families: list[str]) -> list[str]:
        unknown = [f for f in families if f not in MODELS or f == BASELINE]
        if unknown or not families:
            raise ValueError(f"families must be a non-empty list from {[f for f in MODELS if f != BASELINE]}, "
                             f"got {families}")
        return families

    @property
    def metric_key(self) -> str:
        return f"{self.primary_metric}_at_{self.split.k}"


@dataclass
class TrainResult:
    run_id: str
    chosen: str
    metrics: pd.DataFrame
    validation: pd.DataFrame
    bundle: Bundle
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


def fit_and_evaluate(split: TimeSplit, config: TrainConfig, progress: Progress | None) -> pd.DataFrame:
    """Every family plus the popularity baseline on one split: a family x metric table."""
    rows = {}
    for family in [BASELINE, *config.families]:
        if progress:
            progress(f"fitting {family} on {split.train.shape[0]:,} x {split.train.shape[1]:,}")
        model = build_model(family, config.params.get(family)).fit(split.train)
        rows[family] = evaluate_model(model, split, config.split.k)
    return pd.DataFrame.from_dict(rows, orient="index")


def splits(shop: ShopData, config: TrainConfig) -> tuple[TimeSplit, TimeSplit]:
    """Nested time splits: validation (for choices) ends where the test window begins."""
    test_split = time_split(shop, config.split, config.interactions)
    validation_split = time_split(shop.before(test_split.cutoff), config.split, config.interactions)
    return validation_split, test_split


def evaluate_shop(shop: ShopData, config: TrainConfig, progress: Progress | None = None
                  ) -> tuple[pd.DataFrame, pd.DataFrame, TimeSplit, TrainConfig]:
    """Tune (when asked) and choose on validation, report on test.

    Returns the validation table, the test table, the test split and the config with the
    tuned hyper-parameters in ``params``.
    """
    validation_split, test_split = splits(shop, config)
    if config.tune.trials:
        tuned = tune(validation_split, config.families, config.params, config.metric_key, config.split.k,
                     config.tune, progress)
        config = config.model_copy(update={"params": tuned})
    validation = fit_and_evaluate(validation_split, config, progress)
    test = fit_and_evaluate(test_split, config, progress)
    return validation, test, test_split, config


def choose(validation: pd.DataFrame, config: TrainConfig) -> str:
    candidates = validation.loc[config.families, config.metric_key]
    return str(candidates.idxmax())


def build_bundle(shop: ShopData, config: TrainConfig, chosen: str, metadata: dict[str, Any],
                 propensity: PropensitySet | None = None) -> Bundle:
    """Refit the chosen model, the fallback and the cross-sell model on the whole history, with profiles.

    ``propensity`` (from :func:`training.propensity.fit_propensity`) is passed in rather than
    fitted here, so callers that only need recommendations do not pay for it.
    """
    dataset = build_dataset(shop, config.interactions)
    items = shop["items"]
    profiles = {
        "customers": customer_profiles(shop["orders"], items, dataset.as_of),
        "category_affinity": category_affinity(shop["orders"], items, dataset.as_of),
        "repurchase": repurchase_intervals(shop["orders"], items),
    }
    if shop.has("email_events"):
        profiles["email_open_rates"] = email_open_rates(shop["email_events"])
    if shop.has("customer_aliases"):
        resolved, _ = resolve_aliases(shop["customer_aliases"])
        profiles[ALIASES] = pd.DataFrame({"alias_id": resolved.index.to_numpy(dtype=object),
                                          "customer_id": resolved.to_numpy(dtype=object)})
    if shop.has("customers") and "email_opt_in" in shop["customers"]:
        customers = shop["customers"]
        profiles["email_opt_out"] = customers.loc[~customers["email_opt_in"].astype(bool), ["customer_id"]]
    models = {
        PRIMARY: build_model(chosen, config.params.get(chosen)).fit(dataset),
        POPULARITY: build_model(BASELINE, config.params.get(BASELINE)).fit(dataset),
        COOCCURRENCE: build_model("cooccurrence", config.params.get("cooccurrence")).fit(dataset),
    }
    return Bundle.from_dataset(dataset, models, metadata, profiles, propensity)


def run_training(data: str, config: TrainConfig | None = None, *, register: bool = True,
                 progress: Progress | None = None) -> TrainResult:
    """The whole job. With ``register=False`` it evaluates and logs but registers nothing.

    Any failure ends the MLflow run as FAILED before registration, so the champion alias
    only ever moves at the very end of a complete, gated run.
    """
    config = config or TrainConfig()
    client = tracking.configure()
    experiment_id = tracking.ensure_experiment(client, config.experiment)
    for dead in tracking.fail_dead_runs(client, experiment_id):
        if progress:
            progress(f"run {dead} was left RUNNING by a process that died: marked FAILED")
    shop = load_shop(data, progress=progress, config=config.contract)
    with mlflow.start_run(experiment_id=experiment_id, tags=tracking.process_tags()) as run, \
            tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tags({"shoprec.data": safe_url(str(data)) if is_sql_url(data) else str(data), "shoprec.tables": ",".join(shop.report.present),
                         "shoprec.register": str(register)})
        mlflow.log_dict(shop.report.to_dict(), "data/load_report.json")
        validation, test, split, config = evaluate_shop(shop, config, progress)
        chosen = choose(validation, config)
        key = config.metric_key
        mlflow.set_tag("shoprec.chosen", chosen)
        mlflow.log_params(flatten("", config.model_dump()))
        mlflow.log_params({"split.cutoff": split.cutoff.isoformat(), "split.cold_buyers": split.cold_buyers,
                           "split.evaluated_customers": len(split.customers)})
        for stage, table in (("test", test), ("validation", validation)):
            for family, row in table.iterrows():
                mlflow.log_metrics({f"{stage}.{family}.{name}": float(v) for name, v in row.items()})
        mlflow.log_metrics({key: float(test.loc[chosen, key]), f"baseline_{key}": float(test.loc[BASELINE, key])})
        _log_report_artifacts(shop, test, validation, Path(tmp), key)
        propensity = None
        if config.propensity.enabled:
            _log_propensity(evaluate_propensity(shop, config.propensity, progress), Path(tmp))
            propensity = fit_propensity(shop, config.propensity, progress)
        if progress:
            progress(f"refitting {chosen} on the full history and building the bundle")
        bundle = build_bundle(shop, config, chosen, {
            "chosen": chosen, "metric": key, "test_metrics": test.loc[chosen].to_dict(),
            "baseline_metrics": test.loc[BASELINE].to_dict(), "tables_present": shop.report.present,
            "run_id": run.info.run_id, "config": config.model_dump(),
        }, propensity)
        bundle_dir = bundle.save(Path(tmp) / "bundle")
        model_uri = log_bundle(bundle, bundle_dir, _requirements())
        result = TrainResult(run.info.run_id, chosen, test, validation, bundle)
        if register:
            result.model_version = registry.register(client, config.model_name, model_uri, key,
                                                     float(test.loc[chosen, key]), float(test.loc[BASELINE, key]),
                                                     content_hash(bundle_dir))
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
                                                     "implicit", "threadpoolctl", "pydantic", "scikit-learn")]
