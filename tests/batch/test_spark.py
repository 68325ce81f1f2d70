"""The Spark engine gives the local engine's picks and summary: same bundle (through the registry), same rules.

Spark runs in local mode (two cores), but the model takes the path a cluster uses: alias
pinned on the driver, downloaded, shipped to the executors as a Spark archive, loaded there.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import sqlalchemy as sa

from serving.recommender import ShopRecommender
from training import registry, tracking
from training.bundle import Bundle
from training.pyfunc import log_bundle

pytest.importorskip("pyspark", reason="pyspark is not installed (pip install 'shoprec[spark]')")
pytestmark = pytest.mark.skipif(
    not (shutil.which("java") or os.environ.get("JAVA_HOME")),
    reason="Spark needs Java 17+ (no `java` on PATH and no JAVA_HOME)")

from batch.job import run_job, score_block  # noqa: E402 - after the skips
from batch.model_ref import load_model_uri  # noqa: E402
from batch.schema import PICKS_SCHEMA, SPARK_DDL, conform  # noqa: E402
from batch.spark import main, run_spark_job, spark_picks  # noqa: E402
from features.spark_session import spark_session  # noqa: E402
from batch.spark_output import read_picks_folder  # noqa: E402

MODEL = "models:/shoprec@champion"
K = 5
VOLATILE = {"seconds", "seconds_with_load", "customers_per_s", "output", "engine"}


@pytest.fixture(scope="module")
def champion(bundle_with_propensity: Bundle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The sample bundle (propensity models included) logged as a pyfunc, registered and promoted
    in a private local MLflow."""
    bundle = bundle_with_propensity
    home = tmp_path_factory.mktemp("spark-mlflow")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.setenv("SHOPREC_HOME", str(home))
        client = tracking.configure()
        with mlflow.start_run(experiment_id=tracking.ensure_experiment(client, "spark-picks")):
            uri = log_bundle(bundle, bundle.save(home / "bundle"), ["mlflow"])
        version = registry.register(client, "shoprec", uri, "ndcg_at_10", 0.2, 0.1)
        registry.promote(client, "shoprec", version)
        yield version


@pytest.fixture(scope="module")
def local(champion: str) -> ShopRecommender:
    """What the local engine scores with."""
    loaded = load_model_uri(MODEL)
    assert loaded.version == f"shoprec/v{champion}"
    return ShopRecommender(loaded.bundle, loaded.version)


@pytest.fixture(scope="module")
def spark():  # noqa: ANN201 - pyspark's type is imported lazily
    """local[2]; SHOPREC_TEST_SPARK_MASTER=local-cluster[2,1,1024] runs the module against two
    separate executor JVMs (the archive then really travels through Spark's file server)."""
    session = spark_session("shoprec-picks-test", master=os.environ.get("SHOPREC_TEST_SPARK_MASTER", "local[2]"))
    yield session
    session.stop()


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return conform(frame).sort_values(["customer_id", "rank"], kind="stable").reset_index(drop=True)


def _stable(summary: dict) -> dict:
    return {key: value for key, value in summary.items() if key not in VOLATILE}


def test_schema_is_the_sinks_schema() -> None:
    from pyspark.sql.pandas.types import from_arrow_schema

    assert ", ".join(f"{f.name} {f.dataType.simpleString()}" for f in from_arrow_schema(PICKS_SCHEMA)) == SPARK_DDL


def test_engines_agree_on_every_customer(spark, local: ShopRecommender, champion: str,  # noqa: ANN001
                                         tmp_path: Path) -> None:
    on_spark = run_spark_job(MODEL, str(tmp_path / "spark.parquet"), k=K, spark=spark, partitions=3)
    locally = run_job(MODEL, str(tmp_path / "local.parquet"), k=K)
    got, expected = read_picks_folder(tmp_path / "spark.parquet"), pd.read_parquet(tmp_path / "local.parquet")
    assert got["customer_id"].nunique() == len(local.bundle.customers)
    assert set(got["model_version"]) == {locally.model_version}
    pd.testing.assert_frame_equal(_sorted(got), _sorted(expected), check_exact=True)
    assert _stable(on_spark.summary) == _stable(locally.summary)
    # both logged as batch runs of shoprec-picks, linked alike to the model version
    client = tracking.configure()
    spark_run, local_run = client.get_run(on_spark.run_id), client.get_run(locally.run_id)
    assert client.get_experiment(spark_run.info.experiment_id).name == "shoprec-picks"
    assert spark_run.info.experiment_id == local_run.info.experiment_id and spark_run.info.status == "FINISHED"
    assert spark_run.data.params["engine"] == "spark" and local_run.data.params["engine"] == "local"
    assert spark_run.data.params["partitions"] == "3"
    shared = {"model_uri", "model_version", "k", "only_send", "customers_source"}
    assert {p: spark_run.data.params[p] for p in shared} == {p: local_run.data.params[p] for p in shared}
    linking = {"shoprec.kind", "shoprec.model_uri", "shoprec.model_version", "shoprec.model_name",
               "shoprec.registry_version", "shoprec.source_run_id"}
    assert {t: spark_run.data.tags[t] for t in linking} == {t: local_run.data.tags[t] for t in linking}
    assert spark_run.data.tags["shoprec.model_version"] == f"shoprec/v{champion}"
    timing = {"seconds", "customers_per_s"}
    assert {m: v for m, v in spark_run.data.metrics.items() if m not in timing} == \
        {m: v for m, v in local_run.data.metrics.items() if m not in timing}
    assert spark_run.data.metrics["customers"] == len(local.bundle.customers)
    # the version points at the latest picks run, whichever engine ran it (the local one ran last)
    assert client.get_model_version("shoprec", champion).tags["shoprec.last_picks_run_id"] == locally.run_id


def test_a_failed_spark_job_is_logged_as_failed(spark, champion: str, tmp_path: Path,  # noqa: ANN001
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import batch.spark as picks_spark

    def no_writer(*_args: object, **_kwargs: object) -> str:
        raise RuntimeError("lost the executors")

    monkeypatch.setattr(picks_spark, "write_picks", no_writer)
    with pytest.raises(RuntimeError, match="lost the executors"):
        run_spark_job(MODEL, str(tmp_path / "spark.parquet"), k=K, spark=spark)
    client = tracking.configure()
    experiment = client.get_experiment_by_name("shoprec-picks")
    latest = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"],
                                max_results=1)[0]
    assert latest.info.status == "FAILED" and latest.data.params["engine"] == "spark"
    assert mlflow.active_run() is None


def test_engines_agree_on_a_customer_file(spark, local: ShopRecommender, tmp_path: Path) -> None:  # noqa: ANN001
    """Unknown, duplicate, padded and empty ids; --only-send; CSV and a SQL table as outputs."""
    known = [str(c) for c in local.bundle.customers.external_ids[::37]]
    file = tmp_path / "customers.csv"
    pd.DataFrame({"customer_id": [*known, "no-such-customer", known[0], f" {known[1]} ", ""]}).to_csv(file, index=False)
    locally = run_job(MODEL, str(tmp_path / "local.csv"), k=K, customers_file=file, only_send=True, track=False)
    expected = _sorted(pd.read_csv(tmp_path / "local.csv", dtype={"customer_id": str, "item_id": str}))
    assert 0 < expected["customer_id"].nunique() < len(known)  # only-send keeps some, not all

    on_spark = run_spark_job(MODEL, str(tmp_path / "spark.csv"), k=K, customers_file=file, only_send=True,
                             spark=spark, track=False)
    pd.testing.assert_frame_equal(_sorted(read_picks_folder(tmp_path / "spark.csv")), expected, rtol=1e-12)
    assert _stable(on_spark.summary) == _stable(locally.summary)

    url = f"sqlite:///{tmp_path / 'picks.db'}"
    run_spark_job(MODEL, url, k=K, customers_file=file, only_send=True, table="picks", spark=spark, track=False)
    pd.testing.assert_frame_equal(_sorted(pd.read_sql_table("picks", sa.create_engine(url))), expected, rtol=1e-12)


def test_spark_frame_input_with_unknown_and_null_ids(spark, local: ShopRecommender) -> None:  # noqa: ANN001
    known = [str(c) for c in local.bundle.customers.external_ids[::97]]
    frame = spark.createDataFrame(pd.DataFrame({"customer": [*known, "no-such-customer", None]}), "customer string")
    got = _sorted(spark_picks(MODEL, frame, K, spark, column="customer").toPandas())
    expected = _sorted(score_block(local, [*known, "no-such-customer"], K))
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    stranger = expected[expected["customer_id"] == "no-such-customer"]
    assert len(stranger) == K and not stranger["send"].any()


def test_the_spark_submit_entry_runs_one_job(spark, local: ShopRecommender, tmp_path: Path,  # noqa: ANN001
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """``spark-submit batch/spark.py --model ... --out ...`` runs the job itself (not the CLI): the
    picks land in a Spark folder, the summary is printed as JSON, a bad model is one line and exit 2."""
    out = tmp_path / "submitted.parquet"
    result = main(["--model", MODEL, "--out", str(out), "--k", "3", "--no-track"], spark=spark)
    got = read_picks_folder(out)
    assert got["customer_id"].nunique() == len(local.bundle.customers)
    assert got.groupby("customer_id").size().max() == 3
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["customers"] == result.summary["customers"]
    with pytest.raises(SystemExit) as exited:
        main(["--model", str(tmp_path / "nowhere"), "--out", str(out)], spark=spark)
    assert exited.value.code == 2
    assert f"--model {tmp_path / 'nowhere'}: no such folder" in capsys.readouterr().err


def test_the_module_runs_as_a_spark_submit_script() -> None:
    """``spark-submit batch/spark.py`` runs the file as a script: it must start and list its options."""
    import subprocess
    import sys

    import batch.spark as module

    run = subprocess.run([sys.executable, module.__file__, "--help"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "--model" in run.stdout and "--block" in run.stdout and "--partitions" in run.stdout
