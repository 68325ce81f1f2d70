"""A training job killed half-way leaves the champion and the registry exactly as they were,
and its MLflow run is marked FAILED by the next run rather than left RUNNING."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from features.sample import SampleConfig, generate_shop
from features.table_files import write_tables
from training import registry, tracking
from training.pipeline import TrainConfig, run_training

SHOPREC = str(Path(sys.executable).with_name("shoprec"))


def test_killed_training_changes_nothing(tmp_path: Path, mlflow_home: Path) -> None:
    shop = generate_shop(SampleConfig(customers=1500, items=300, days=150, seed=21))
    write_tables(shop.tables, tmp_path / "shop", "parquet")
    first = run_training(str(tmp_path / "shop"), TrainConfig(families=["ease"]))
    client = tracking.configure()
    versions_before = {v.version for v in client.search_model_versions("name='shoprec'")}

    env = {**os.environ, "SHOPREC_HOME": str(mlflow_home), "OPENBLAS_NUM_THREADS": "1"}
    job = subprocess.Popen([SHOPREC, "train", "--data", str(tmp_path / "shop")], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert job.stderr is not None
    for line in job.stderr:  # progress lines: kill it in the middle of fitting
        if "fitting lightfm" in line:
            job.send_signal(signal.SIGKILL)
            break
    job.wait(timeout=60)
    if job.returncode != -signal.SIGKILL:
        pytest.fail(f"the job ended before it could be killed (exit {job.returncode})")

    assert registry.champion_version(client, "shoprec") == first.model_version
    assert {v.version for v in client.search_model_versions("name='shoprec'")} == versions_before

    # the killed run cannot end itself; the next training marks it FAILED instead of RUNNING for ever
    experiment = client.get_experiment_by_name("shoprec").experiment_id
    killed = client.search_runs([experiment], "attributes.status = 'RUNNING'")
    assert len(killed) == 1 and killed[0].data.tags[tracking.PID_TAG] == str(job.pid)
    run_training(str(tmp_path / "shop"), TrainConfig(families=["ease"], propensity={"enabled": False}),
                 register=False)
    after = client.get_run(killed[0].info.run_id)
    assert after.info.status == "FAILED" and "killed or crashed" in after.data.tags["shoprec.failure"]
    assert not client.search_runs([experiment], "attributes.status = 'RUNNING'")
