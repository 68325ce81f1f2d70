"""Email picks on Spark: the local engine's bundle, rules and output, spread over executors.

``shoprec picks --engine spark`` runs here. The driver resolves the model once (an alias such
as ``models:/shoprec@champion`` is pinned to the version it points at *now*, so an alias moved
mid-job cannot mix two models), takes its copy from the bundle cache the service and the local
engine share (serving/lifecycle.py: downloaded once, keyed by what the registry says the
version is), verifies the bundle's checksums and ships the bundle folder to the executors as a Spark archive
(``spark.addArtifacts(..., archive=True)``: ``SparkContext.addArchive`` on classic Spark, an
artifact upload under Spark Connect), which is how ``mlflow.pyfunc.spark_udf`` ships a model.
Each executor's Python worker loads it once (``Bundle.load``, exactly what the pyfunc's
``ShoprecModel.load_context`` does, checksums included) and keeps its
:class:`ShopRecommender` for later tasks; every block of customers then goes through
:func:`batch.job.score_block`, the local engine's own function, so both engines apply
one code path of rules, fallbacks and send decisions.

``mapInPandas`` rather than ``spark_udf``: a UDF returns one value per input row, while picks
are k rows per customer, and the pyfunc's ``predict`` answers ``Bundle.recommend`` (no email
rules, no send decision). See ``docs/spark.md`` for running on a real cluster.
"""

from __future__ import annotations

import argparse
import atexit
import functools
import json
import logging
import shutil
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from batch.customers import read_customers
from batch.job import DEFAULT_BLOCK, JobResult, blocks, score_block
from batch.model_ref import ModelRef, find_bundle, registry_copy, resolve_model_uri
from batch.runs import fail_picks_run, finish_picks_run, start_picks_run
from batch.schema import SPARK_DDL, conform
from batch.sinks import DEFAULT_SQL_TIMEOUT_S, DEFAULT_TABLE
from batch.spark_output import describe_output, write_picks
from batch.summary import PicksSummary
from features.errors import USER_ERRORS, UserError, one_line
from features.spark_session import start_spark
from serving.config import ServingConfig, serving_config
from serving.recommender import ShopRecommender
from training.bundle import FALLBACK, Bundle
from training.bundle_files import verify

if TYPE_CHECKING:  # pyspark is an optional dependency (extra `spark`)
    from pyspark.sql import DataFrame, SparkSession

logger = logging.getLogger("shoprec.picks.spark")


# ---- the model, driver side ----------------------------------------------------------------------
@dataclass(frozen=True)
class ShippedModel:
    """The verified bundle folder on the driver and the archive executors find it under."""

    resolved: ModelRef
    """The model as :func:`batch.model_ref.resolve_model_uri` pinned it (the MLflow run's tags)."""
    bundle_dir: Path
    archive_name: str
    n_customers: int

    @property
    def model_version(self) -> str:
        return self.resolved.version


_DRIVER_TMP: list[Path] = []


def _remove_driver_tmp() -> None:
    for folder in _DRIVER_TMP:
        shutil.rmtree(folder, ignore_errors=True)


def _driver_tmp() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="shoprec-picks-"))
    if not _DRIVER_TMP:
        atexit.register(_remove_driver_tmp)
    _DRIVER_TMP.append(folder)
    return folder


def ship_model(model: str, spark: SparkSession) -> ShippedModel:
    """Resolve the model once on the driver (the local engine's :func:`batch.model_ref.resolve_model_uri`:
    an alias is pinned to its version now), take a registry version from the shared bundle cache,
    verify the bundle and add it as a Spark archive.

    The files stay on the driver until the interpreter exits: the DataFrames built on them
    are lazy, and executors fetch the archive only when a job runs.
    """
    import pyarrow.parquet as pq

    resolved = resolve_model_uri(model)
    work = _driver_tmp()
    bundle_dir = resolved.folder if resolved.folder is not None else registry_copy(resolved).folder
    verify(bundle_dir)  # fail once, here, rather than on every executor
    # A unique name: Spark refuses a second, different archive under a name it already has.
    stem = "shoprec-bundle-" + "".join(c if c.isalnum() else "-" for c in resolved.version)[-60:]
    archive = str(work / f"{stem}-{uuid.uuid4().hex[:12]}.tar")
    with tarfile.open(archive, "w") as tar:  # entries under bundle/: Hadoop's untar refuses a "./" entry
        tar.add(bundle_dir, arcname="bundle")
    spark.addArtifacts(archive, archive=True)
    logger.info("shipping %s (%s) to the executors as %s", resolved.version, bundle_dir, Path(archive).name)
    return ShippedModel(resolved, bundle_dir, Path(archive).name,
                        pq.ParquetFile(bundle_dir / "customers.parquet").metadata.num_rows)


# ---- the model, executor side ---------------------------------------------------------------------
_EXECUTOR_CACHE: dict[str, ShopRecommender] = {}


def _executor_recommender(archive_name: str, model_version: str, config: dict[str, Any] | None) -> ShopRecommender:
    """This worker process's recommender for the shipped archive, built on first use only.

    Python workers are reused across tasks (``spark.python.worker.reuse``, on by default), so
    a worker loads each shipped bundle once; only the latest one is kept.
    """
    key = f"{archive_name}|{model_version}|{config}"
    if key not in _EXECUTOR_CACHE:
        from pyspark import SparkFiles

        folder = find_bundle(Path(SparkFiles.get(archive_name)), archive_name)
        _EXECUTOR_CACHE.clear()
        _EXECUTOR_CACHE[key] = ShopRecommender(Bundle.load(folder), model_version,
                                               ServingConfig(**config) if config is not None else None)
    return _EXECUTOR_CACHE[key]


def _score_partition(batches: Iterator[pd.DataFrame], *, archive_name: str, model_version: str, k: int,
                     config: dict[str, Any] | None, block: int, by_index: bool) -> Iterator[pd.DataFrame]:
    from threadpoolctl import threadpool_limits

    recommender = _executor_recommender(archive_name, model_version, config)
    with threadpool_limits(1, user_api="blas"):  # Spark runs one task per core: one BLAS thread each
        for batch in batches:
            if by_index:
                ids = recommender.bundle.customers.external_ids[batch["id"].to_numpy()]
            else:
                ids = batch["customer_id"].to_numpy(dtype=object)
            for chunk in blocks(np.asarray([str(c) for c in ids], dtype=object), block):
                yield conform(score_block(recommender, chunk, k))


def _default_partitions(spark: SparkSession) -> int:
    """The cluster's cores (default parallelism); the shuffle partitions under Spark Connect."""
    try:
        return max(int(spark.sparkContext.defaultParallelism), 1)
    except Exception:  # noqa: BLE001 - Spark Connect has no SparkContext
        return max(int(spark.conf.get("spark.sql.shuffle.partitions", "200") or 200), 1)


def customer_frame(spark: SparkSession, customer_ids: DataFrame | Sequence[str] | np.ndarray,
                   column: str = "customer_id") -> DataFrame:
    """Customer ids as a one-column Spark frame, cleaned as :func:`batch.customers.read_customers`
    cleans a file: ids as strings, trimmed; empty and null ids dropped; duplicates scored once."""
    from pyspark.sql import DataFrame as SparkFrame
    from pyspark.sql import functions as F

    if not isinstance(customer_ids, SparkFrame):
        ids = pd.DataFrame({"customer_id": pd.Series(list(customer_ids), dtype=object)})
        customer_ids, column = spark.createDataFrame(ids, "customer_id string"), "customer_id"
    if column not in customer_ids.columns:
        raise UserError(f"customer ids need a {column!r} column (have {', '.join(customer_ids.columns)})")
    cleaned = F.trim(F.col(column).cast("string"))
    return (customer_ids.select(cleaned.alias("customer_id"))
            .where(F.col("customer_id").isNotNull() & (F.col("customer_id") != ""))
            .dropDuplicates(["customer_id"]))


def spark_picks(model: str | ShippedModel, customer_ids: DataFrame | Sequence[str] | np.ndarray | None, k: int,
                spark: SparkSession, *, column: str = "customer_id", only_send: bool = False,
                partitions: int | None = None, config: ServingConfig | None = None,
                block: int = DEFAULT_BLOCK) -> DataFrame:
    """Email picks as a lazy Spark DataFrame in :data:`batch.schema.SPARK_DDL`: one row per customer and rank.

    ``model`` is a model URI or folder (shipped here) or an already shipped model.
    ``customer_ids``: a Spark DataFrame with ``column``, a list of ids (cleaned by
    :func:`customer_frame`), or None for every customer of the bundle (generated on the
    executors from index ranges: nothing is collected or sent from the driver). Unknown ids get
    fallbacks as in the local engine. ``partitions``: scoring tasks (default: the cluster's
    default parallelism).
    """
    from pyspark.sql import functions as F

    if k < 1:
        raise UserError("k must be at least 1")
    shipped = model if isinstance(model, ShippedModel) else ship_model(model, spark)
    if customer_ids is None:
        source = (spark.range(shipped.n_customers, numPartitions=partitions) if partitions
                  else spark.range(shipped.n_customers))
    else:
        # Explicitly: adaptive execution would coalesce the small id shuffle into a task or two,
        # while the scoring after it is heavy. repartition(n) is never coalesced.
        source = customer_frame(spark, customer_ids, column).repartition(partitions or _default_partitions(spark))
    score = functools.partial(
        _score_partition, archive_name=shipped.archive_name, model_version=shipped.model_version, k=int(k),
        config=config.model_dump() if config is not None else None, block=int(block),
        by_index=customer_ids is None)
    picks = source.mapInPandas(score, schema=SPARK_DDL)
    return picks.where(F.col("send")) if only_send else picks


# ---- the job (what `shoprec picks --engine spark` runs) ---------------------------------------------
def summarise(picks: DataFrame, bundle: Bundle, ids: np.ndarray | None, k: int, only_send: bool) -> dict[str, Any]:
    """The local engine's run summary (:class:`batch.summary.PicksSummary`), from Spark aggregates
    over the (unfiltered) picks; ``ids`` are the scored customers, None for the whole bundle."""
    from pyspark.sql import functions as F

    per_customer = picks.groupBy("customer_id").agg(
        F.count(F.lit(1)).alias("n"),
        F.max(F.when(F.col("rank") == 1, F.col("send").cast("int"))).alias("send"),
        F.max(F.col("reason").startswith(FALLBACK).cast("int")).alias("fallback"))
    totals = per_customer.agg(
        F.count(F.lit(1)).alias("with_picks"), F.sum((F.col("n") < k).cast("int")).alias("short"),
        F.sum("send").alias("sent"), F.sum("fallback").alias("fallback"), F.sum("n").alias("picks"),
        F.sum(F.col("n") * F.col("send")).alias("sent_rows")).first()
    assert totals is not None, "an aggregate without grouping has one row"
    summary = PicksSummary(k)
    summary.add_customers(bundle, bundle.customers.external_ids if ids is None else ids)
    summary.customers_with_picks = int(totals["with_picks"] or 0)
    summary.short_customers = int(totals["short"] or 0) + summary.customers - summary.customers_with_picks
    summary.sent = int(totals["sent"] or 0)
    summary.fallback_customers = int(totals["fallback"] or 0)
    summary.picks = int(totals["picks"] or 0)
    summary.rows_written = int(totals["sent_rows"] or 0) if only_send else summary.picks
    summary.reasons = {r["reason"]: int(r["count"]) for r in picks.groupBy("reason").count().collect()}
    items: pd.DataFrame = picks.groupBy("item_id").count().toPandas()
    summary.item_picks = np.zeros(len(bundle.items), dtype=np.int64)
    item_idx = bundle.items.to_index(items["item_id"].to_numpy(dtype=object), unknown="mark")
    np.add.at(summary.item_picks, item_idx[item_idx >= 0], items["count"].to_numpy()[item_idx >= 0])
    return summary.to_dict(bundle)


def run_spark_job(model: str, out: str, *, k: int = 10, customers_file: Path | None = None,
                  only_send: bool = False, table: str = DEFAULT_TABLE, sql_timeout_s: float = DEFAULT_SQL_TIMEOUT_S,
                  partitions: int | None = None, block: int = DEFAULT_BLOCK,
                  track: bool = True, spark: SparkSession | None = None,
                  log: Callable[[str], None] = lambda _: None) -> JobResult:
    """Ship, score, write, summarise and (with ``track``) log the MLflow batch run: the same
    :class:`batch.job.JobResult` and the same run (params, tags, metrics, link to the model
    version) as the local engine, with ``engine=spark``. A failure marks the run FAILED."""
    started = time.perf_counter()
    config = serving_config()  # the service's rules (SHOPREC_SERVING_CONFIG), shipped to the executors
    customers = read_customers(customers_file) if customers_file is not None else None  # a bad file fails first
    output = describe_output(out, table)
    if spark is None:
        spark, _ = start_spark("shoprec-picks")  # left up, as before, for the process's end to stop
    from pyspark import StorageLevel
    master = spark.conf.get("spark.master", "Spark Connect")
    log(f"shipping {model} to Spark ({master})")
    shipped = ship_model(model, spark)
    ids = customers.ids if customers is not None else None
    n = len(ids) if ids is not None else shipped.n_customers
    inputs = (customers.to_dict() if customers is not None else
              {"source": "bundle (every customer)", "rows_in": n, "empty_ids_skipped": 0,
               "duplicate_ids_dropped": 0, "customers": n})
    log(f"scoring {n:,} customers with {shipped.model_version} on Spark into {output}")
    run = (start_picks_run(shipped.resolved, engine="spark", k=k, only_send=only_send,
                           customers_source=str(inputs["source"]), output=output,
                           params={"partitions": partitions or "default", "block": block, "spark_master": master})
           if track else None)
    try:
        scoring_started = time.perf_counter()
        picks = spark_picks(shipped, ids, k, spark, partitions=partitions, config=config, block=block).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            output = write_picks(picks.where("send") if only_send else picks, out, table=table,
                                 sql_timeout_s=sql_timeout_s)
            seconds = time.perf_counter() - scoring_started
            result = summarise(picks, Bundle.load(shipped.bundle_dir), ids, k, only_send)
        finally:
            picks.unpersist()
    except BaseException:
        if run is not None:
            fail_picks_run()
        raise
    result["input"] = inputs
    rate = n / max(seconds, 1e-9)
    result.update(model_version=shipped.model_version, model_uri=model, output=output, only_send=only_send, k=k,
                  engine="spark", seconds=round(seconds, 3),
                  seconds_with_load=round(time.perf_counter() - started, 3), customers_per_s=round(rate, 1))
    run_id = finish_picks_run(run, shipped.resolved, result) if run is not None else None
    return JobResult(result, shipped.model_version, output, seconds, rate, run_id)


# ---- spark-submit ----------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None, spark: SparkSession | None = None) -> JobResult:
    """The spark-submit entry (``spark-submit .../batch/spark.py --model URI --out TARGET``): the
    options of ``shoprec picks`` that the Spark engine reads, one job, its summary printed as JSON.
    A bad option, file or model is one ``error:`` line and exit code 2."""
    parser = argparse.ArgumentParser(prog="batch/spark.py", description="Email picks on Spark (see docs/spark.md).")
    parser.add_argument("--model", default="models:/shoprec@champion",
                        help="models:/NAME@ALIAS, models:/NAME/VERSION or a bundle folder")
    parser.add_argument("--out", required=True, help="Spark path (s3a://, hdfs://, a folder) or SQLAlchemy URL")
    parser.add_argument("--k", type=int, default=10, help="picks per customer")
    parser.add_argument("--customers", type=Path, help="CSV/Parquet with a customer_id column (default: everyone)")
    parser.add_argument("--only-send", action="store_true", help="write only customers marked send")
    parser.add_argument("--table", default=DEFAULT_TABLE, help="table name when --out is a SQLAlchemy URL")
    parser.add_argument("--sql-timeout", type=float, default=DEFAULT_SQL_TIMEOUT_S)
    parser.add_argument("--partitions", type=int, help="scoring tasks (default: the cluster's cores)")
    parser.add_argument("--block", type=int, default=DEFAULT_BLOCK, help="customers per scored block")
    parser.add_argument("--no-track", action="store_true", help="do not log the run to MLflow")
    args = parser.parse_args(argv)
    try:
        result = run_spark_job(args.model, args.out, k=args.k, customers_file=args.customers,
                               only_send=args.only_send, table=args.table, sql_timeout_s=args.sql_timeout,
                               partitions=args.partitions, block=args.block, track=not args.no_track, spark=spark,
                               log=logger.info)
    except USER_ERRORS as error:
        parser.exit(2, f"error: {one_line(error)}\n")
    print(json.dumps(result.summary, default=str))
    return result


if __name__ == "__main__":
    # Through the importable module, not this __main__ copy: Spark pickles the scoring function
    # by reference then, so each executor worker keeps its one cached recommender across tasks.
    import batch.spark

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    batch.spark.main()
