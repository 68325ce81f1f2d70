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
:func:`serving.picks.score_block`, the local engine's own function, so both engines apply
one code path of rules, fallbacks and send decisions.

``mapInPandas`` rather than ``spark_udf``: a UDF returns one value per input row, while picks
are k rows per customer, and the pyfunc's ``predict`` answers ``Bundle.recommend`` (no email
rules, no send decision). See ``docs/spark.md`` for running on a real cluster.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import shutil
import sys
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
import pyarrow as pa

from serving.picks_sinks import DEFAULT_SQL_TIMEOUT_S, PICKS_SCHEMA as SINK_SCHEMA

if TYPE_CHECKING:  # pyspark is an optional dependency (extra `spark`)
    from pyspark.sql import DataFrame, SparkSession

    from serving.picks import JobResult, ModelRef
    from serving.recommender import ServingConfig, ShopRecommender

logger = logging.getLogger("shoprec.picks.spark")

# The local engine's output schema (serving/picks_sinks.py PICKS_SCHEMA), as Spark DDL and pandas dtypes.
_SPARK_TYPES = {pa.string(): ("string", "str"), pa.int32(): ("int", "int32"), pa.float64(): ("double", "float64"),
                pa.bool_(): ("boolean", "bool")}
PICKS_SCHEMA = ", ".join(f"{f.name} {_SPARK_TYPES[f.type][0]}" for f in SINK_SCHEMA)
PICKS_DTYPES = {f.name: _SPARK_TYPES[f.type][1] for f in SINK_SCHEMA}
DEFAULT_LOCAL_MASTER = "local[2]"
DEFAULT_BLOCK = 1024
"""Customers per ``score_block`` call on an executor (scoring sub-blocks further by BLOCK_ROWS)."""


# ---- the session -----------------------------------------------------------------------------
def _master_configured() -> bool:
    """Whether Spark's usual settings already name a master (spark-submit, PYSPARK_SUBMIT_ARGS,
    MASTER, spark-defaults.conf); pyspark itself would silently fall back to ``local[*]``."""
    if "PYSPARK_GATEWAY_PORT" in os.environ or os.environ.get("MASTER"):
        return True  # launched by spark-submit / the pyspark shell, or the classic MASTER variable
    if "--master" in os.environ.get("PYSPARK_SUBMIT_ARGS", ""):
        return True
    conf_dirs = [os.environ.get("SPARK_CONF_DIR"),
                 os.path.join(os.environ["SPARK_HOME"], "conf") if os.environ.get("SPARK_HOME") else None]
    for folder in filter(None, conf_dirs):
        defaults = Path(folder) / "spark-defaults.conf"
        if defaults.is_file() and any(line.split()[:1] == ["spark.master"]
                                      for line in defaults.read_text().splitlines()):
            return True
    return False


def spark_session(app_name: str = "shoprec-picks", master: str | None = None) -> SparkSession:
    """A Spark session from the usual settings.

    In order: an explicit ``master``; an active session (reused as it is); ``SPARK_REMOTE``
    (Spark Connect: the server decides); ``SPARK_MASTER``; a master given by spark-submit,
    ``PYSPARK_SUBMIT_ARGS``, ``MASTER`` or spark-defaults.conf; else ``local[2]``. A local
    master gets 4 shuffle partitions, no UI and this Python for its workers.
    """
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None and master is None:
        return active
    builder = SparkSession.builder.appName(app_name)
    if master is None and os.environ.get("SPARK_REMOTE"):
        return builder.getOrCreate()
    master = master or os.environ.get("SPARK_MASTER") or (None if _master_configured() else DEFAULT_LOCAL_MASTER)
    if master is not None:
        builder = builder.master(master)
    if master is not None and master.startswith("local"):
        # Local workers are forked by this JVM: make them run this interpreter, not `python3` on PATH.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = (builder.config("spark.sql.shuffle.partitions", "4")
                   .config("spark.ui.enabled", "false")
                   .config("spark.ui.showConsoleProgress", "false"))
    spark = builder.getOrCreate()
    try:
        spark.sparkContext.setLogLevel("WARN")
    except Exception:  # noqa: BLE001 - Spark Connect has no SparkContext; the server owns its logs
        pass
    return spark


# ---- the model, driver side ----------------------------------------------------------------------
@dataclass(frozen=True)
class ShippedModel:
    """The verified bundle folder on the driver and the archive executors find it under."""

    resolved: ModelRef
    """The model as :func:`serving.picks.resolve_model_uri` pinned it (the MLflow run's tags)."""
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
    """Resolve the model once on the driver (the local engine's :func:`serving.picks.resolve_model_uri`:
    an alias is pinned to its version now), take a registry version from the shared bundle cache,
    verify the bundle and add it as a Spark archive.

    The files stay on the driver until the interpreter exits: the DataFrames built on them
    are lazy, and executors fetch the archive only when a job runs.
    """
    import pyarrow.parquet as pq

    from serving.picks import registry_copy, resolve_model_uri
    from training.bundle import verify

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

        from serving.picks import find_bundle
        from serving.recommender import ServingConfig, ShopRecommender
        from training.bundle import Bundle

        folder = find_bundle(Path(SparkFiles.get(archive_name)), archive_name)
        _EXECUTOR_CACHE.clear()
        _EXECUTOR_CACHE[key] = ShopRecommender(Bundle.load(folder), model_version,
                                               ServingConfig(**config) if config is not None else None)
    return _EXECUTOR_CACHE[key]


def conform(frame: pd.DataFrame) -> pd.DataFrame:
    """A picks frame in :data:`PICKS_DTYPES`' column order and dtypes (the sinks' schema)."""
    return frame[list(PICKS_DTYPES)].astype(PICKS_DTYPES).reset_index(drop=True)


def _score_partition(batches: Iterator[pd.DataFrame], *, archive_name: str, model_version: str, k: int,
                     config: dict[str, Any] | None, block: int, by_index: bool) -> Iterator[pd.DataFrame]:
    from threadpoolctl import threadpool_limits

    from serving.picks import score_block

    recommender = _executor_recommender(archive_name, model_version, config)
    with threadpool_limits(1, user_api="blas"):  # Spark runs one task per core: one BLAS thread each
        for batch in batches:
            if by_index:
                ids = recommender.bundle.customers.external_ids[batch["id"].to_numpy()]
            else:
                ids = batch["customer_id"].to_numpy(dtype=object)
            for start in range(0, len(ids), block):
                yield conform(score_block(recommender, [str(c) for c in ids[start:start + block]], k))


def _default_partitions(spark: SparkSession) -> int:
    """The cluster's cores (default parallelism); the shuffle partitions under Spark Connect."""
    try:
        return max(int(spark.sparkContext.defaultParallelism), 1)
    except Exception:  # noqa: BLE001 - Spark Connect has no SparkContext
        return max(int(spark.conf.get("spark.sql.shuffle.partitions", "200") or 200), 1)


def customer_frame(spark: SparkSession, customer_ids: DataFrame | Sequence[str] | np.ndarray,
                   column: str = "customer_id") -> DataFrame:
    """Customer ids as a one-column Spark frame, cleaned as ``serving.picks.read_customers``
    cleans a file: ids as strings, trimmed; empty and null ids dropped; duplicates scored once."""
    from pyspark.sql import DataFrame as SparkFrame
    from pyspark.sql import functions as F

    if not isinstance(customer_ids, SparkFrame):
        ids = pd.DataFrame({"customer_id": pd.Series(list(customer_ids), dtype=object)})
        customer_ids, column = spark.createDataFrame(ids, "customer_id string"), "customer_id"
    if column not in customer_ids.columns:
        raise ValueError(f"customer ids need a {column!r} column (have {', '.join(customer_ids.columns)})")
    cleaned = F.trim(F.col(column).cast("string"))
    return (customer_ids.select(cleaned.alias("customer_id"))
            .where(F.col("customer_id").isNotNull() & (F.col("customer_id") != ""))
            .dropDuplicates(["customer_id"]))


def spark_picks(model: str | ShippedModel, customer_ids: DataFrame | Sequence[str] | np.ndarray | None, k: int,
                spark: SparkSession, *, column: str = "customer_id", only_send: bool = False,
                partitions: int | None = None, config: ServingConfig | None = None,
                block: int = DEFAULT_BLOCK) -> DataFrame:
    """Email picks as a lazy Spark DataFrame in :data:`PICKS_SCHEMA`: one row per customer and rank.

    ``model`` is a model URI or folder (shipped here) or an already shipped model.
    ``customer_ids``: a Spark DataFrame with ``column``, a list of ids (cleaned by
    :func:`customer_frame`), or None for every customer of the bundle (generated on the
    executors from index ranges: nothing is collected or sent from the driver). Unknown ids get
    fallbacks as in the local engine. ``partitions``: scoring tasks (default: the cluster's
    default parallelism).
    """
    from pyspark.sql import functions as F

    if k < 1:
        raise ValueError("k must be at least 1")
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
    picks = source.mapInPandas(score, schema=PICKS_SCHEMA)
    return picks.where(F.col("send")) if only_send else picks


# ---- output ------------------------------------------------------------------------------------------
def output_format(out: str) -> str:
    """``csv`` for a path ending in .csv or .csv.gz, else ``parquet``."""
    return "csv" if out.rstrip("/").lower().endswith((".csv", ".csv.gz")) else "parquet"


def describe_output(out: str, table: str = "email_picks") -> str:
    """Where :func:`write_picks` writes, as the summary and the MLflow run name it."""
    from features.sources import safe_url
    from serving.picks_sinks import is_database_url

    return f"{safe_url(out)} table {table}" if is_database_url(out) else f"{out} (Spark {output_format(out)} folder)"


def write_picks(picks: DataFrame, out: str, *, table: str = "email_picks", single_file: bool = False,
                sql_timeout_s: float = DEFAULT_SQL_TIMEOUT_S) -> str:
    """Write the picks where ``out`` says; returns a description for the job's summary.

    - a SQLAlchemy URL: rows stream through the driver into the local engine's
      :class:`~serving.picks_sinks.SqlSink` (a staging table swapped in at the end, as locally);
    - anything else is a Spark path (``s3a://``, ``hdfs://``, ``gs://``, a local folder): Spark's
      own writer, a folder of part files plus ``_SUCCESS``, Parquet or CSV (header; gzip for
      ``.csv.gz``) by the name's ending, each part sorted by customer and rank.

    Folder semantics are Spark's, not the local engine's atomic swap: mode overwrite deletes
    what is at ``out`` when the job starts, tasks write under ``_temporary`` and the job commit
    moves their files into place, and ``_SUCCESS`` appears only once every task committed. A
    failed job leaves no ``_SUCCESS`` (and the previous output is already gone), so readers
    must check for it; see docs/spark.md. ``single_file`` coalesces to one part file (one
    task writes everything: small outputs only).
    """
    from serving.picks_sinks import SqlSink, is_database_url

    if is_database_url(out):
        sink = SqlSink(out, table, sql_timeout_s)
        stream_to_sink(picks, sink)
        return sink.description
    fmt = output_format(out)
    frame = picks.coalesce(1) if single_file else picks
    writer = frame.sortWithinPartitions("customer_id", "rank").write.mode("overwrite").format(fmt)
    if fmt == "csv":
        writer = writer.option("header", True)
        if out.rstrip("/").lower().endswith(".gz"):
            writer = writer.option("compression", "gzip")
    writer.save(out)
    return describe_output(out, table)


def stream_to_sink(picks: DataFrame, sink: Any, rows_per_block: int = 50_000) -> None:
    """Pull the rows to the driver a partition at a time into a local-engine sink, then commit
    (abort on any failure: the previous output stays). Driver memory: one partition plus one
    block; throughput is one writer's, which suits a database table, not a huge file."""
    columns = list(PICKS_DTYPES)
    with sink:
        block: list[tuple[Any, ...]] = []
        for row in picks.select(*columns).toLocalIterator(prefetchPartitions=True):
            block.append(tuple(row))
            if len(block) >= rows_per_block:
                sink.write(conform(pd.DataFrame.from_records(block, columns=columns)))
                block = []
        if block:
            sink.write(conform(pd.DataFrame.from_records(block, columns=columns)))


def read_picks_folder(out: str | Path) -> pd.DataFrame:
    """A Spark output folder on this machine back as one pandas frame (tests, notebooks);
    refuses a folder without ``_SUCCESS``."""
    folder = Path(out)
    if not (folder / "_SUCCESS").is_file():
        raise FileNotFoundError(f"{folder}: no _SUCCESS marker (the job failed or is still running)")
    parts = sorted(p for p in folder.glob("part-*") if not p.name.endswith(".crc"))
    if output_format(str(out)) == "csv":
        frames = [pd.read_csv(p, dtype={"customer_id": str, "item_id": str, "reason": str, "model_version": str},
                              keep_default_na=False) for p in parts]
    else:
        frames = [pd.read_parquet(p) for p in parts]
    if not frames:
        return conform(pd.DataFrame({c: pd.Series(dtype=t) for c, t in PICKS_DTYPES.items()}))
    return conform(pd.concat(frames, ignore_index=True))


# ---- the job (what `shoprec picks --engine spark` runs) ---------------------------------------------
def summarise(picks: DataFrame, recommender: ShopRecommender, ids: np.ndarray | None, k: int,
              only_send: bool) -> dict[str, Any]:
    """The local engine's run summary (:class:`serving.picks.PicksSummary`), from Spark aggregates
    over the (unfiltered) picks; ``ids`` are the scored customers, None for the whole bundle."""
    from pyspark.sql import functions as F

    from serving.picks import PicksSummary
    from training.bundle import FALLBACK

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
    summary.add_customers(recommender, recommender.bundle.customers.external_ids if ids is None else ids)
    summary.customers_with_picks = int(totals["with_picks"] or 0)
    summary.short_customers = int(totals["short"] or 0) + summary.customers - summary.customers_with_picks
    summary.sent = int(totals["sent"] or 0)
    summary.fallback_customers = int(totals["fallback"] or 0)
    summary.picks = int(totals["picks"] or 0)
    summary.rows_written = int(totals["sent_rows"] or 0) if only_send else summary.picks
    summary.reasons = {r["reason"]: int(r["count"]) for r in picks.groupBy("reason").count().collect()}
    items: pd.DataFrame = picks.groupBy("item_id").count().toPandas()
    summary.item_picks = np.zeros(recommender.n_items, dtype=np.int64)
    item_idx = recommender.bundle.items.to_index(items["item_id"].to_numpy(dtype=object), unknown="mark")
    np.add.at(summary.item_picks, item_idx[item_idx >= 0], items["count"].to_numpy()[item_idx >= 0])
    return summary.to_dict(recommender)


def run_spark_job(model: str, out: str, *, k: int = 10, customers_file: Path | None = None,
                  only_send: bool = False, table: str = "email_picks", sql_timeout_s: float = DEFAULT_SQL_TIMEOUT_S,
                  partitions: int | None = None,
                  track: bool = True, spark: SparkSession | None = None,
                  log: Callable[[str], None] = lambda _: None) -> JobResult:
    """Ship, score, write, summarise and (with ``track``) log the MLflow batch run: the same
    :class:`serving.picks.JobResult` and the same run (params, tags, metrics, link to the model
    version) as the local engine, with ``engine=spark``. A failure marks the run FAILED."""
    try:
        from pyspark import StorageLevel
    except ImportError:
        raise ValueError("--engine spark needs pyspark and Java 17+: pip install 'shoprec[spark]'") from None

    from serving.picks import JobResult, fail_picks_run, finish_picks_run, read_customers, start_picks_run
    from serving.recommender import ShopRecommender
    from training.bundle import Bundle

    started = time.perf_counter()
    customers = read_customers(customers_file) if customers_file is not None else None  # a bad file fails first
    output = describe_output(out, table)
    if spark is None:
        try:
            spark = spark_session()
        except Exception as error:  # noqa: BLE001 - no Java, a bad master URL: one line for the CLI
            raise ValueError(f"--engine spark: cannot start Spark ({str(error).strip().splitlines()[0]})") from error
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
                           params={"partitions": partitions or "default", "spark_master": master})
           if track else None)
    try:
        scoring_started = time.perf_counter()
        picks = spark_picks(shipped, ids, k, spark, partitions=partitions).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            output = write_picks(picks.where("send") if only_send else picks, out, table=table,
                                 sql_timeout_s=sql_timeout_s)
            seconds = time.perf_counter() - scoring_started
            recommender = ShopRecommender(Bundle.load(shipped.bundle_dir), shipped.model_version)
            result = summarise(picks, recommender, ids, k, only_send)
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


if __name__ == "__main__":  # spark-submit .../serving/picks_spark.py --model ... --out ... (see docs/spark.md)
    from training.cli import app

    app(["picks", "--engine", "spark", *sys.argv[1:]])
