"""Load a shop with Spark: the row rules of the long tables run as Spark tasks.

``shoprec train --engine spark`` reads the shop through :func:`load_shop_spark`. The rules are
the local engine's own (:func:`features.validation.validate_table`), run by Spark tasks on
pieces of a table's Parquet files (whole row groups, about :data:`CHUNK_ROWS` rows a piece,
numbered as the local reader numbers them); each task sends its kept and quarantined rows back
to the driver in Arrow, and :func:`features.loading.finish_load` applies the cross-table rules,
aliases and returns as for the local engine. The :class:`ShopData`, its quarantine and its load
report are therefore the local engine's (tests/features/test_spark_loading.py holds them equal).

What runs where, and why:

- **Spark**: the tables without a unique key (orders, events, email_events), read from Parquet
  (a file, or a folder of parts). They are the long ones, and each row is checked on its own.
- **The driver, with the local engine**: the tables with a unique key (items, customers,
  customer_aliases: the first good row claims a key, so the rows are needed in order; they are
  the short tables); any table in CSV (a CSV cannot be cut at a row without reading it up to
  there); every table of a SQL source.

Executors read the files themselves and write what they checked as Arrow files into a scratch
folder that the driver reads back (``SHOPREC_SPARK_SCRATCH``, by default the system's
temporary folder), so the data folder and the scratch folder must be at the same path on the
driver and every executor (Spark local mode; a cluster's shared mount such as Databricks'
``/Volumes``). The validated tables are held on the driver, as with the local engine: Spark
shares out the checking, not the memory (docs/spark.md, "Loading a shop on Spark").
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.errors import UserError, first_line, one_line
from features.loading import CheckedTable, Progress, ShopData, check_table, finish_load, open_shop, require_rows
from features.schema import ROW_COLUMN, TABLES, ContractConfig, ContractError
from features.sources import CHUNK_ROWS, FolderSource, Source, parquet_chunks, parquet_columns

if TYPE_CHECKING:  # pyspark is an optional dependency (extra `spark`)
    from pyspark.sql import SparkSession

ON_SPARK = tuple(name for name, spec in TABLES.items() if spec.unique_key is None)
"""Tables whose rows Spark checks (when in Parquet): no row's verdict depends on another row."""
PIECE_ROWS = CHUNK_ROWS
"""Rows a Spark task checks, about (whole row groups: a larger row group is one task)."""
TASK_SCHEMA = "piece long, chunk long, rows_in long, error string"
SCRATCH_VARIABLE = "SHOPREC_SPARK_SCRATCH"
SCRATCH_HINT = (f"set {SCRATCH_VARIABLE} to a folder the driver and every executor share "
                f"(the system's temporary folder is used by default, which only Spark's local mode shares)")


@dataclass(frozen=True)
class Piece:
    """Whole row groups of one Parquet file, and the table row number of their first row."""

    path: str
    row_groups: tuple[int, ...]
    first_row: int
    rows: int


def parquet_pieces(files: list[Path], target_rows: int) -> list[Piece]:
    """The files' row groups, in row order, cut into pieces of about ``target_rows`` rows (a
    larger row group is a piece of its own); rows are numbered across the files from 1, as
    :meth:`features.sources.RawTable.batches` numbers them. Footers only are read."""
    pieces: list[Piece] = []
    first = 1
    for path in files:
        try:
            meta = pq.read_metadata(path)
        except (pa.ArrowInvalid, OSError) as error:
            raise ContractError(f"{path}: not a readable Parquet file: {first_line(error)}") from None
        groups: list[int] = []
        rows = 0
        for group in range(meta.num_row_groups):
            size = meta.row_group(group).num_rows
            if groups and rows + size > target_rows:
                pieces.append(Piece(str(path), tuple(groups), first, rows))
                first, groups, rows = first + rows, [], 0
            if size:
                groups.append(group)
                rows += size
        if groups:
            pieces.append(Piece(str(path), tuple(groups), first, rows))
            first += rows
    return pieces


def load_shop_spark(location: str | os.PathLike[str], *, spark: SparkSession | None = None,
                    now: pd.Timestamp | None = None, progress: Progress | None = None,
                    config: ContractConfig | None = None) -> ShopData:
    """:func:`features.loading.load_shop` with the long Parquet tables checked on Spark.

    ``spark``: a session to use; by default the one :func:`features.spark_session.spark_session`
    finds or starts (a session started here is stopped when the load ends, so the training that
    follows does not share the machine with an idle JVM)."""
    source = open_shop(location)
    now = now if now is not None else pd.Timestamp.now(tz="UTC")
    started = None
    if spark is None and any(_pieces(source, name) for name in ON_SPARK if name in source.available()):
        spark = started = _start_spark()
    try:
        checked: dict[str, CheckedTable] = {}
        for name in (name for name in TABLES if name in source.available()):
            pieces = _pieces(source, name)
            if pieces and spark is not None and isinstance(source, FolderSource):
                if progress:
                    progress(f"validating {name} on Spark ({len(pieces)} task{'s' * (len(pieces) > 1)})")
                checked[name] = _check_on_spark(spark, source, name, pieces, now, config)
            else:
                if progress:
                    progress(f"validating {name}")
                checked[name] = check_table(name, source.read(TABLES[name]), now=now, config=config)
            require_rows(name, checked[name])
    finally:
        if started is not None:
            started.stop()
    return finish_load(checked, source=source.description)


def _start_spark() -> SparkSession:
    from features.spark_session import spark_session

    try:
        return spark_session("shoprec-train")
    except ImportError:
        raise UserError("--engine spark needs pyspark and Java 17+: pip install 'shoprec[spark]'") from None
    except Exception as error:  # noqa: BLE001 - no Java, a bad master URL: one line for the CLI
        raise UserError(f"--engine spark: cannot start Spark ({first_line(error)})") from error


def _pieces(source: Source, name: str) -> list[Piece]:
    """The pieces Spark checks, or none where the driver checks the table (see the module's doc)."""
    if name not in ON_SPARK or not isinstance(source, FolderSource):
        return []
    files = source.parquet_files(name)
    return parquet_pieces(files, PIECE_ROWS) if files else []


def _check_on_spark(spark: SparkSession, source: FolderSource, name: str, pieces: list[Piece],
                    now: pd.Timestamp, config: ContractConfig | None) -> CheckedTable:
    """One Spark task per piece. Each writes its kept and quarantined rows as Arrow files into a
    scratch folder the driver reads them from, in row order: only a few numbers a chunk go
    through Spark, so neither JVM holds the table (the first version returned the rows as
    binary cells, and a 1.8M-row orders table ran the driver JVM's 1 GiB heap out)."""
    spec = TABLES[name]
    columns = {piece.path: parquet_columns(Path(piece.path), spec) for piece in pieces}  # checked here, first
    location = source.location(name)
    with _scratch_folder(name) as scratch:
        task = functools.partial(_check_pieces, name=name, pieces=pieces, columns=columns, location=location,
                                 now=now, config=config, scratch=scratch)
        results = spark.range(len(pieces), numPartitions=len(pieces)).mapInPandas(task, TASK_SCHEMA).collect()
        errors = [row["error"] for row in results if row["error"]]
        if errors:
            raise ContractError(errors[0])
        ordered = sorted((row["piece"], row["chunk"]) for row in results)
        kept, quarantine = [], []
        for piece, chunk in ordered:
            kept.append(_read_result(scratch, piece, chunk, "clean"))
            quarantine.append(_read_result(scratch, piece, chunk, "quarantine"))
    clean = pd.concat(kept, ignore_index=True)
    return CheckedTable(location, clean, quarantine, sum(int(row["rows_in"]) for row in results))


def _scratch_folder(name: str) -> tempfile.TemporaryDirectory[str]:
    """A fresh folder for one table's task outputs, removed when the table is read back."""
    root = os.environ.get(SCRATCH_VARIABLE) or None
    try:
        return tempfile.TemporaryDirectory(prefix=f"shoprec-load-{name}-", dir=root)
    except OSError as error:
        raise ContractError(f"{SCRATCH_VARIABLE}={root}: cannot make a folder there ({first_line(error)})") from None


def _check_pieces(batches: Iterator[pd.DataFrame], *, name: str, pieces: list[Piece], columns: dict[str, list[str]],
                  location: str, now: pd.Timestamp, config: ContractConfig | None,
                  scratch: str) -> Iterator[pd.DataFrame]:
    """Executor side: read each piece given by id, number its rows, check them, write the
    outcome to ``scratch``; a file that cannot be read (or written) is one error row, told on
    the driver as the local engine tells it."""
    from features.validation import validate_table

    for ids in batches:
        for piece_id in ids["id"].to_numpy():
            piece = pieces[int(piece_id)]
            first = piece.first_row
            try:
                for number, chunk in enumerate(parquet_chunks(Path(piece.path), columns[piece.path],
                                                              piece.row_groups)):
                    chunk = chunk.assign(**{ROW_COLUMN: np.arange(first, first + len(chunk), dtype=np.int64)})
                    first += len(chunk)
                    checked = validate_table(TABLES[name], chunk, location, now=now, config=config)
                    _write_result(checked.clean, scratch, piece_id, number, "clean")
                    _write_result(checked.quarantine, scratch, piece_id, number, "quarantine")
                    yield pd.DataFrame({"piece": [piece_id], "chunk": [number], "rows_in": [len(chunk)],
                                        "error": [None]})
            except ContractError as error:
                yield pd.DataFrame({"piece": [piece_id], "chunk": [-1], "rows_in": [0], "error": [one_line(error)]})
            except OSError as error:
                yield pd.DataFrame({"piece": [piece_id], "chunk": [-1], "rows_in": [0],
                                    "error": [f"{scratch}: an executor cannot write its checked rows here "
                                              f"({first_line(error)}); {SCRATCH_HINT}"]})


def _result_path(scratch: str, piece: int, chunk: int, kind: str) -> Path:
    return Path(scratch) / f"{piece:06d}-{chunk:04d}.{kind}.arrow"


def _write_result(frame: pd.DataFrame, scratch: str, piece: int, chunk: int, kind: str) -> None:
    """A frame as an Arrow IPC file (pandas' dtypes travel in the schema's metadata), written
    under a temporary name and renamed, so the driver never reads half a file."""
    path = _result_path(scratch, piece, chunk, kind)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    table = pa.Table.from_pandas(frame, preserve_index=False)
    with pa.OSFile(str(partial), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    os.replace(partial, path)


def _read_result(scratch: str, piece: int, chunk: int, kind: str) -> pd.DataFrame:
    """Read (then delete, freeing the disk as the table builds up) one task's output."""
    path = _result_path(scratch, piece, chunk, kind)
    try:
        with pa.memory_map(str(path)) as source:
            frame = pa.ipc.open_file(source).read_all().to_pandas()
    except FileNotFoundError:
        raise ContractError(f"{path}: a Spark task wrote it, but the driver does not see it; "
                            f"{SCRATCH_HINT}") from None
    path.unlink()
    return frame
