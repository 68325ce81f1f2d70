"""The model registry: register as ``challenger``, promote to ``champion`` only through the gate.

Aliases, not stages (stages are deprecated in MLflow). Each version carries its held-out
metrics as tags, so the gate compares a candidate with the champion without re-running
anything, and a data scientist sees the numbers next to the version in the UI.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

CHAMPION, CHALLENGER = "champion", "challenger"
DESCRIPTION = "shoprec bundle: recommendations and propensity"
METRIC_TAG, BASELINE_TAG, PRIMARY_METRIC_TAG = "shoprec.metric", "shoprec.baseline", "shoprec.primary_metric"
BASELINE_NAME_TAG, SERVES_BASELINE_TAG = "shoprec.baseline_name", "shoprec.serves_baseline"
BUNDLE_HASH_TAG = "shoprec.bundle_sha256"
"""The registered bundle's content hash (:func:`training.bundle_files.content_hash`): what makes a
cached copy provably this version's, whatever its number (serving/lifecycle.py)."""


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reason: str


def register(client: MlflowClient, name: str, model_uri: str, metric_name: str,
             metric: float, baseline: float, bundle_sha256: str | None = None, *, baseline_name: str = "popularity",
             serves_baseline: str | None = None) -> str:
    """Register the run's model, tag it with its metrics, the strongest baseline it was compared
    with, the baseline it serves when no model beat them (``serves_baseline``), its content hash,
    and point ``challenger`` at it."""
    # register_model resolves MLflow 3 logged-model URIs (models:/m-...) for file and server stores
    # alike, and creates the registered model on first use (so it never claims it "already exists").
    version = mlflow.register_model(model_uri, name)
    if not client.get_registered_model(name).description:
        client.update_registered_model(name, description=DESCRIPTION)
    tags = {PRIMARY_METRIC_TAG: metric_name, METRIC_TAG: f"{metric:.6f}", BASELINE_TAG: f"{baseline:.6f}",
            BASELINE_NAME_TAG: baseline_name, SERVES_BASELINE_TAG: serves_baseline or ""}
    if bundle_sha256 is not None:
        tags[BUNDLE_HASH_TAG] = bundle_sha256
    for key, value in tags.items():
        client.set_model_version_tag(name, version.version, key, value)
    client.set_registered_model_alias(name, CHALLENGER, version.version)
    return str(version.version)


def champion_version(client: MlflowClient, name: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        return None


def gate(client: MlflowClient, name: str, version: str, tolerance: float) -> GateDecision:
    """Pass when the candidate beats the strongest baseline (of popularity, recent popularity,
    own most-bought, TIFU-KNN) and is no worse than the champion beyond ``tolerance``.

    A bundle that serves a baseline because no model beat it passes only as the first champion:
    a registry must always hold something servable, but a baseline never replaces a model.
    The tolerance is relative: 0.02 lets a candidate 2% below the champion through, since
    retraining on fresher data is worth a little noise on a moving test window.
    """
    tags = client.get_model_version(name, version).tags
    metric_name, metric, baseline = tags[PRIMARY_METRIC_TAG], float(tags[METRIC_TAG]), float(tags[BASELINE_TAG])
    baseline_name = tags.get(BASELINE_NAME_TAG, "popularity")
    current = champion_version(client, name)
    if served := tags.get(SERVES_BASELINE_TAG):
        if current is None:
            return GateDecision(True, f"first champion serves the baseline {served} ({metric_name} {metric:.4f}; "
                                      f"strongest baseline {baseline_name} {baseline:.4f}): no model beat them")
        return GateDecision(False, f"serves a baseline ({served}); champion v{current} is kept")
    if metric <= baseline:
        return GateDecision(False, f"{metric_name} {metric:.4f} does not beat {baseline_name} ({baseline:.4f})")
    if current is None:
        return GateDecision(True, f"first champion: {metric_name} {metric:.4f} > {baseline_name} {baseline:.4f}")
    champion_tags = client.get_model_version(name, current).tags
    if champion_tags.get(PRIMARY_METRIC_TAG) != metric_name:
        return GateDecision(False, f"champion v{current} was judged on {champion_tags.get(PRIMARY_METRIC_TAG)}, "
                                   f"not {metric_name}; promote by hand if intended")
    champion_metric = float(champion_tags[METRIC_TAG])
    floor = champion_metric * (1.0 - tolerance)
    if metric < floor:
        return GateDecision(False, f"{metric_name} {metric:.4f} is below champion v{current} "
                                   f"({champion_metric:.4f}, floor {floor:.4f})")
    return GateDecision(True, f"{metric_name} {metric:.4f} >= floor {floor:.4f} of champion v{current}")


def promote(client: MlflowClient, name: str, version: str) -> None:
    """Point ``champion`` at ``version`` (the service polls this alias)."""
    client.get_model_version(name, version)  # raises a clear error for an unknown version
    client.set_registered_model_alias(name, CHAMPION, version)
