"""The gate: champion moves only for a candidate that beats popularity and holds up against it."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from training import registry, tracking


class Constant(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):  # noqa: ANN001
        return model_input


def _register(client, metric: float, baseline: float, tmp_path: Path) -> str:
    experiment = tracking.ensure_experiment(client, "gate-test")
    with mlflow.start_run(experiment_id=experiment):
        info = mlflow.pyfunc.log_model(name="model", python_model=Constant(), pip_requirements=["mlflow"])
    return registry.register(client, "gated", info.model_uri, "ndcg_at_10", metric, baseline)


def test_gate_sequence(mlflow_home: Path, tmp_path: Path) -> None:
    client = tracking.configure()
    assert tracking.tracking_uri() == f"sqlite:///{mlflow_home.resolve() / 'mlflow.db'}"

    v1 = _register(client, 0.20, 0.10, tmp_path)
    first = registry.gate(client, "gated", v1, tolerance=0.02)
    assert first.passed and "first champion" in first.reason
    registry.promote(client, "gated", v1)

    v2 = _register(client, 0.15, 0.10, tmp_path)  # 25% worse than the champion
    worse = registry.gate(client, "gated", v2, tolerance=0.02)
    assert not worse.passed and "below champion" in worse.reason
    assert registry.champion_version(client, "gated") == v1
    assert str(client.get_model_version_by_alias("gated", registry.CHALLENGER).version) == v2

    v3 = _register(client, 0.197, 0.10, tmp_path)  # within the 2% tolerance
    assert registry.gate(client, "gated", v3, tolerance=0.02).passed

    v4 = _register(client, 0.30, 0.35, tmp_path)  # great number, but popularity is better
    no_lift = registry.gate(client, "gated", v4, tolerance=0.02)
    assert not no_lift.passed and "does not beat popularity" in no_lift.reason

    registry.promote(client, "gated", v2)  # forced by hand
    assert registry.champion_version(client, "gated") == v2


def test_promote_unknown_version_raises(mlflow_home: Path, tmp_path: Path) -> None:
    client = tracking.configure()
    _register(client, 0.2, 0.1, tmp_path)
    with pytest.raises(mlflow.exceptions.MlflowException):
        registry.promote(client, "gated", "99")
