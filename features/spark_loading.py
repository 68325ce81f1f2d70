"""Load a shop with Spark: the row rules of the long tables run as Spark tasks.

``shoprec train --engine spark`` reads the shop through :func:`load_shop_spark`. The rules are
the local engine's own (:func:`features.validation.validate_table`), run by Spark tasks on
pieces of a table's Parquet files (whole row groups, about :data:`PIECE_ROWS` rows a piece,
numbered as the local reader numbers them); each task hands its kept and quarantined rows to
the driver as Arrow files, and :func:`features.loading.finish_load` applies the cross-table
rules, aliases and returns as for the local engine. The :class:`ShopData`, its quarantine and its load
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

from features.errors import first_line, one_line
from features.loading import CheckedTable, Progress, ShopData, check_table, finish_load, open_shop
from features.schema import ROW_COLUMN, TABLES, ContractConfig, ContractError
from features.sources import CHUNK_ROWS, FolderSource, RawTable, Source, parquet_chunks, parquet_columns
from features.spark_session import start_spark

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


@dataclass(frozen=True)
class SparkTable:
    """A table whose rows Spark checks: where it is, its pieces, and each file's contract columns."""

    location: str
    pieces: list[Piece]
    columns: dict[str, list[str]]


def load_shop_spark(location: str | os.PathLike[str], *, spark: SparkSession | None = None,
                    now: pd.Timestamp | None = None, progress: Progress | None = None,
                    config: ContractConfig | None = None) -> ShopData:
    """:func:`features.loading.load_shop` with the long Parquet tables checked on Spark.

    Every table's columns are checked before any row is read, as the local engine does.
    ``spark``: a session to use; by default the one :func:`features.spark_session.start_spark`
    finds or starts (one started here is stopped when the load ends, so the training that
    follows does not share the machine with an idle JVM; a caller's own is left up)."""
    source = open_shop(location)
    now = now if now is not None else pd.Timestamp.now(tz="UTC")
    plans = {name: _plan(source, name) for name in TABLES if name in source.available()}
    owned = None
    if spark is None and any(isinstance(plan, SparkTable) for plan in plans.values()):
        spark, started = start_spark("shoprec-load")
        owned = spark if started else None
    try:
        checked: dict[str, CheckedTable] = {}
        for name, plan in plans.items():
            if isinstance(plan, SparkTable):
                assert spark is not None  # started above for any SparkTable
                if progress:
                    tasks = len(plan.pieces)
                    progress(f"validating {name} on Spark ({tasks} task{'s' * (tasks > 1)})")
                checked[name] = _check_on_spark(spark, name, plan, now, config)
            else:
                checked[name] = check_table(name, plan, now=now, config=config, progress=progress)
    finally:
        if owned is not None:
            owned.stop()
    return finish_load(checked, source=source.description, progress=progress)


def _plan(source: Source, name: str) -> SparkTable | RawTable:
    """How a table is checked (see the module's doc): its pieces for Spark, or the local
    engine's reader. Either way its columns are checked now, every file's (an empty part's too)."""
    if name not in ON_SPARK or not isinstance(source, FolderSource):
        return source.read(TABLES[name])
    files = source.parquet_files(name)
    if not files:
        return source.read(TABLES[name])
    columns = {str(path): parquet_columns(path, TABLES[name]) for path in files}
    pieces = parquet_pieces(files, PIECE_ROWS)
    if not pieces:  # not a row in any file: the local engine makes the empty table (or the error)
        return source.read(TABLES[name])
    return SparkTable(source.location(name), pieces, columns)


def _check_on_spark(spark: SparkSession, name: str, table: SparkTable, now: pd.Timestamp,
                    config: ContractConfig | None) -> CheckedTable:
    """One Spark task per piece. Each writes its kept and quarantined rows as Arrow files into a
    scratch folder the driver reads them from, in row order: only a few numbers a chunk go
    through Spark, so neither JVM holds the table (the first version returned the rows as
    binary cells, and a 1.8M-row orders table ran the driver JVM's 1 GiB heap out)."""
    with _scratch_folder(name) as scratch:
        task = functools.partial(_check_pieces, name=name, pieces=table.pieces, columns=table.columns,
                                 location=table.location, now=now, config=config, scratch=scratch)
        rows = spark.range(len(table.pieces), numPartitions=len(table.pieces)).mapInPandas(task, TASK_SCHEMA).collect()
        errors = [row["error"] for row in rows if row["error"]]
        if errors:
            raise ContractError(errors[0])
        kept, quarantine = [], []
        for piece, chunk in sorted((row["piece"], row["chunk"]) for row in rows):
            kept.append(_read_result(scratch, piece, chunk, "clean"))
            quarantine.append(_read_result(scratch, piece, chunk, "quarantine"))
    clean = pd.concat(kept, ignore_index=True)
    return CheckedTable(table.location, clean, quarantine, sum(int(row["rows_in"]) for row in rows))


def _scratch_folder(name: str) -> tempfile.TemporaryDirectory[str]:
    """A fresh folder for one table's task outputs, removed when the table is read back (what
    cannot be removed, say an NFS mount's stand-in for a file still open elsewhere, is left)."""
    root = os.environ.get(SCRATCH_VARIABLE) or None
    try:
        return tempfile.TemporaryDirectory(prefix=f"shoprec-load-{name}-", dir=root, ignore_cleanup_errors=True)
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
    """Read one task's output into memory (not mapped: the frame must not keep the file), then
    delete it, freeing the disk as the table builds up."""
    path = _result_path(scratch, piece, chunk, kind)
    try:
        with pa.OSFile(str(path), "rb") as source:
            frame = pa.ipc.open_file(source).read_all().to_pandas()
    except FileNotFoundError:
        raise ContractError(f"{path}: a Spark task wrote it, but the driver does not see it; "
                            f"{SCRATCH_HINT}") from None
    except (pa.ArrowException, OSError) as error:
        raise ContractError(f"{path}: the driver cannot read what a Spark task wrote ({first_line(error)}); "
                            f"{SCRATCH_HINT}") from None
    path.unlink()
    return frame
