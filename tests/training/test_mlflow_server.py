"""The train -> register -> promote cycle against a real `mlflow server` backed by PostgreSQL."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from features.sample import SampleConfig, generate_shop
from features.table_files import write_tables
from training import registry, tracking
from training.pipeline import TrainConfig, run_training

pytestmark = pytest.mark.postgres


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(postgres_url: str, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = open(tmp_path / "mlflow-server.log", "w")  # noqa: SIM115 - the server writes it until the fixture ends
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri", postgres_url,
         "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "MLFLOW_TRACKING_URI": ""},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start: {(tmp_path / 'mlflow-server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def test_cycle_against_server_with_postgres_backend(mlflow_server: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    shop = generate_shop(SampleConfig(customers=800, items=200, days=120, seed=5))
    write_tables(shop.tables, tmp_path / "shop", "parquet")
    config = TrainConfig(families=["ease", "cooccurrence"])
    result = run_training(str(tmp_path / "shop"), config)
    client = tracking.configure()
    assert tracking.tracking_uri() == mlflow_server
    assert result.gate is not None and result.gate.passed
    assert registry.champion_version(client, "shoprec") == result.model_version
    model = mlflow.pyfunc.load_model("models:/shoprec@champion")
    customers = result.bundle.customers.external_ids[:5].tolist()
    answer = model.predict(pd.DataFrame({"customer_id": customers}), params={"k": 5})
    assert list(answer["item_id"]) == list(result.bundle.recommend(customers, 5)["item_id"])
