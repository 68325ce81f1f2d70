"""Where MLflow lives: a local SQLite database and artefact folder by default, or a server.

``MLFLOW_TRACKING_URI`` (a server, or a database URL such as PostgreSQL) wins; otherwise
everything goes under ``SHOPREC_HOME`` (default ``./shoprec-home``), so a fresh clone
needs no server to train, register and serve.
"""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

DEFAULT_HOME = "shoprec-home"


def shoprec_home() -> Path:
    return Path(os.environ.get("SHOPREC_HOME", DEFAULT_HOME)).resolve()


def tracking_uri() -> str:
    """The tracking URI in force: the environment's, or the local SQLite default."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    home = shoprec_home()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'mlflow.db'}"


def configure() -> MlflowClient:
    """Point MLflow at the tracking URI in force and return a client for it."""
    # Per-file download bars drown the job's own progress in logs; the job reports its steps.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(client: MlflowClient, name: str) -> str:
    """The experiment id, creating it (with a local artefact folder when tracking locally)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    artifact_location = None
    if tracking_uri().startswith("sqlite:///") and not os.environ.get("MLFLOW_TRACKING_URI"):
        artifact_location = (shoprec_home() / "mlartifacts").as_uri()
    return client.create_experiment(name, artifact_location=artifact_location)
