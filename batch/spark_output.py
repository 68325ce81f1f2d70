"""Where the Spark engine writes: Spark's own writer for paths (Parquet/CSV part files and
``_SUCCESS``), the local engine's SQL sink for databases, and the way back for tests and notebooks."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from batch.schema import PICKS_COLUMNS, PICKS_DTYPES, conform
from batch.sinks import DEFAULT_SQL_TIMEOUT_S, DEFAULT_TABLE, SqlSink
from features.sources import is_database_url, safe_url

if TYPE_CHECKING:  # pyspark is an optional dependency (extra `spark`)
    from pyspark.sql import DataFrame


def output_format(out: str) -> str:
    """``csv`` for a path ending in .csv or .csv.gz, else ``parquet``."""
    return "csv" if out.rstrip("/").lower().endswith((".csv", ".csv.gz")) else "parquet"


def describe_output(out: str, table: str = DEFAULT_TABLE) -> str:
    """Where :func:`write_picks` writes, as the summary and the MLflow run name it."""
    return f"{safe_url(out)} table {table}" if is_database_url(out) else f"{out} (Spark {output_format(out)} folder)"


def write_picks(picks: DataFrame, out: str, *, table: str = DEFAULT_TABLE, single_file: bool = False,
                sql_timeout_s: float = DEFAULT_SQL_TIMEOUT_S) -> str:
    """Write the picks where ``out`` says; returns a description for the job's summary.

    - a SQLAlchemy URL: rows stream through the driver into the local engine's
      :class:`~batch.sinks.SqlSink` (a staging table swapped in at the end, as locally);
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
    columns = PICKS_COLUMNS
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
        # ids may be any text, so only the nullable trigger columns read an empty cell as null
        frames = [pd.read_csv(p, dtype={"customer_id": str, "item_id": str, "reason": str, "model_version": str,
                                        "trigger": str, "trigger_detail": str},
                              keep_default_na=False, na_values={"trigger": [""], "trigger_detail": [""]})
                  for p in parts]
    else:
        frames = [pd.read_parquet(p) for p in parts]
    if not frames:
        return conform(pd.DataFrame({c: pd.Series(dtype=t) for c, t in PICKS_DTYPES.items()}))
    return conform(pd.concat(frames, ignore_index=True))
