"""The train job end to end against a real local MLflow (SQLite + artefact folder)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from features.sample import SampleConfig, generate_shop
from features.schema import ContractError
from features.table_files import write_tables
from training import registry, tracking
from training.pipeline import TrainConfig, run_training
from training.ranking import RankingConfig

FAST = TrainConfig(families=["als", "ease", "cooccurrence"], params={"als": {"factors": 32, "iterations": 10}})
INDEXED = TrainConfig(families=["als"], params={"als": {"factors": 32, "iterations": 10}},
                      ranking=RankingConfig(index_from_items=1))
"""The ranker's explore candidates from the item index (training/retrieval.py) even on a small catalogue."""


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sample")
    shop = generate_shop(SampleConfig(customers=1500, items=300, days=150, seed=3))
    write_tables(shop.tables, folder, "parquet")
    return folder


def test_train_logs_registers_and_promotes(sample_dir: Path, mlflow_home: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # artefacts must land in SHOPREC_HOME, not where the job started
    result = run_training(str(sample_dir), FAST)
    client = tracking.configure()
    assert client.get_run(result.run_id).info.artifact_uri.startswith((mlflow_home / "mlartifacts").as_uri())
    assert not (tmp_path / "mlruns").exists()
    assert result.gate is not None and result.gate.passed, result.gate
    assert registry.champion_version(client, "shoprec") == result.model_version
    run = client.get_run(result.run_id)
    assert run.data.params["split.test_days"] == "28"
    assert run.data.tags["shoprec.chosen"] == result.chosen
    for family in ("popularity", "als", "ease", "cooccurrence"):
        assert f"test.{family}.ndcg_at_10" in run.data.metrics
        assert f"validation.{family}.ndcg_at_10" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "evaluation")}
    assert "evaluation/metric_comparison.png" in artifacts
    report = json.loads(Path(client.download_artifacts(result.run_id, "data/load_report.json")).read_text())
    assert report["tables"]["orders"]["rows_quarantined"] > 0  # the sample plants dirty rows
    best = result.metrics.loc[result.chosen, "ndcg_at_10"]
    assert best > result.metrics.loc["popularity", "ndcg_at_10"]


def test_champion_loaded_in_a_fresh_process_answers_like_the_trained_bundle(
        sample_dir: Path, mlflow_home: Path, tmp_path: Path) -> None:
    """With the explore candidates from the item index: the fresh process builds its own index,
    and the run reports how many of the exact candidates the trained one finds."""
    result = run_training(str(sample_dir), INDEXED)
    assert result.chosen == "ranker_als" and result.bundle.personal.index is not None
    assert tracking.configure().get_run(result.run_id).data.metrics["explore_index_recall"] >= 0.95
    customers = [*result.bundle.customers.external_ids[:20].tolist(), "never-seen-customer"]
    expected = result.bundle.recommend(customers, 10)
    script = (
        "import sys, mlflow, pandas as pd\n"
        "from training import tracking\n"
        "tracking.configure()\n"
        "model = mlflow.pyfunc.load_model('models:/shoprec@champion')\n"
        "ids = pd.read_json(sys.argv[1])\n"
        "model.predict(ids, params={'k': 10}).to_json(sys.argv[2], orient='records')\n"
    )
    pd.DataFrame({"customer_id": customers}).to_json(tmp_path / "in.json")
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "in.json"), str(tmp_path / "out.json")],
                   check=True, timeout=300, capture_output=True)
    got = pd.read_json(tmp_path / "out.json", orient="records", dtype={"customer_id": str, "item_id": str})
    assert list(got["item_id"]) == list(expected["item_id"])
    assert list(got["customer_id"]) == list(expected["customer_id"])
    assert (got[got["customer_id"] == "never-seen-customer"]["reason"] == "popular").all()


def test_rejected_or_failed_runs_never_touch_the_champion(sample_dir: Path, mlflow_home: Path,
                                                        tmp_path: Path) -> None:
    first = run_training(str(sample_dir), FAST)
    client = tracking.configure()
    weak = TrainConfig(families=["bpr"], params={"bpr": {"factors": 2, "iterations": 1, "learning_rate": 1e-4}})
    second = run_training(str(sample_dir), weak)
    assert second.gate is not None and not second.gate.passed
    assert registry.champion_version(client, "shoprec") == first.model_version

    (tmp_path / "broken").mkdir()
    pd.read_parquet(sample_dir / "items.parquet").to_parquet(tmp_path / "broken" / "items.parquet")
    pd.read_parquet(sample_dir / "orders.parquet").drop(columns=["ts"]).to_parquet(
        tmp_path / "broken" / "orders.parquet")
    with pytest.raises(ContractError, match="missing required column 'ts'"):
        run_training(str(tmp_path / "broken"), FAST)
    assert registry.champion_version(client, "shoprec") == first.model_version


def test_evaluate_only_registers_nothing(sample_dir: Path, mlflow_home: Path) -> None:
    result = run_training(str(sample_dir), FAST, register=False)
    assert result.model_version is None
    assert MlflowClient(tracking.tracking_uri()).search_registered_models() == []
