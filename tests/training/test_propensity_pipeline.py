"""The train job fits, logs and bundles the propensity models, and records skipped ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from features.sample import SampleConfig, generate_shop
from features.table_files import write_tables
from training import tracking
from training.bundle import Bundle
from training.pipeline import TrainConfig, run_training
from training.propensity_set import PropensityUnavailable

FAST = TrainConfig(families=["ease"], propensity={"fit_snapshots": 2, "candidates": ["logistic"]})


def test_train_logs_propensity_and_bundles_it(mlflow_home: Path, tmp_path: Path) -> None:
    tables = generate_shop(SampleConfig(customers=1200, items=200, days=120, seed=4)).tables
    write_tables({k: v for k, v in tables.items() if k != "events"}, tmp_path / "shop", "parquet")
    result = run_training(str(tmp_path / "shop"), FAST, register=False)
    run = tracking.configure().get_run(result.run_id)
    assert "propensity.customer.roc_auc" in run.data.metrics
    assert "propensity.customer.baseline.roc_auc" in run.data.metrics
    assert "propensity.email.brier" in run.data.metrics
    assert run.data.tags["shoprec.propensity.session"] == "skipped: no events table"
    assert run.data.tags["shoprec.propensity.customer"] == "logistic"
    artifacts = {a.path for a in tracking.configure().list_artifacts(result.run_id, "evaluation")}
    assert {"evaluation/propensity_reliability.png", "evaluation/propensity_customer_deciles.csv"} <= artifacts

    saved = Bundle.load(result.bundle.save(tmp_path / "bundle"))
    assert saved.metadata["propensity"] == {"customer": "ok", "session": "skipped: no events table",
                                            "email": "ok"}
    scores = saved.email_open_propensity(saved.customers.external_ids[:10].tolist())
    assert scores["probability"].between(0, 1).all()
    with pytest.raises(PropensityUnavailable, match="no events table"):
        saved.session_propensity(tables["events"].head(5))
