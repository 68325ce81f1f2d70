"""Where MLflow lives: the user's MLFLOW_TRACKING_URI wins; otherwise SHOPREC_HOME decides,
every time, even after MLflow exported the previous default into the environment."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from training import tracking


def test_the_local_default_follows_shoprec_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("SHOPREC_HOME", str(tmp_path / "a"))
    tracking.configure()
    assert mlflow.get_tracking_uri() == f"sqlite:///{tmp_path / 'a' / 'mlflow.db'}"
    monkeypatch.setenv("SHOPREC_HOME", str(tmp_path / "b"))  # MLflow has exported a's URI by now
    tracking.configure()
    assert mlflow.get_tracking_uri() == tracking.tracking_uri() == f"sqlite:///{tmp_path / 'b' / 'mlflow.db'}"


def test_a_tracking_uri_the_user_gives_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOPREC_HOME", str(tmp_path / "a"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracking.configure()
    chosen = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", chosen)
    tracking.configure()
    assert tracking.tracking_uri() == mlflow.get_tracking_uri() == chosen
    client = tracking.configure()
    experiment = client.get_experiment(tracking.ensure_experiment(client, "where"))
    assert experiment.artifact_location == (tmp_path / "mlartifacts").as_uri()  # beside the database
