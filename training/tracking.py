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
SQLITE_PREFIX = "sqlite:///"


def shoprec_home() -> Path:
    return Path(os.environ.get("SHOPREC_HOME", DEFAULT_HOME)).resolve()


def tracking_uri() -> str:
    """The tracking URI in force: the user's ``MLFLOW_TRACKING_URI``, or the local SQLite default."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    home = shoprec_home()
    home.mkdir(parents=True, exist_ok=True)
    return f"{SQLITE_PREFIX}{home / 'mlflow.db'}"


def configure() -> MlflowClient:
    """Point MLflow at the tracking URI in force and return a client for it."""
    # Per-file download bars drown the job's own progress in logs; the job reports its steps.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    given = os.environ.get("MLFLOW_TRACKING_URI")
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    if not given:
        # MLflow exports the URI as MLFLOW_TRACKING_URI; left there, the local default would
        # pass for the user's choice and pin the process to the first SHOPREC_HOME it saw.
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(client: MlflowClient, name: str) -> str:
    """The experiment id, creating it (with its artefact folder next to a SQLite database).

    Decided from the URI, not from the environment: ``mlflow.set_tracking_uri`` exports
    ``MLFLOW_TRACKING_URI`` itself, so the environment cannot tell the local default from a
    server, and MLflow's own default for a database store is ``./mlruns`` in whatever
    folder the job happened to start in.
    """
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    artifact_location = None
    uri = tracking_uri()
    if uri.startswith(SQLITE_PREFIX):
        artifact_location = (Path(uri[len(SQLITE_PREFIX):]).parent / "mlartifacts").as_uri()
    return client.create_experiment(name, artifact_location=artifact_location)
