"""Where shop tables come from and go to: a folder of CSV/Parquet files or a SQL database.

Readers check a table's columns at once and then give its source values untouched (text
from CSV, typed columns from Parquet and SQL) a chunk at a time, as they are validated
(pyarrow's streaming CSV reader, Parquet record batches, SQL server-side cursors; only the
contract columns). :mod:`features.schema` does all the checking, so every source gets the
same rules and the same error messages.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import sqlalchemy as sa

from features.errors import first_line
from features.schema import BAD_ENCODING_COLUMN, ROW_COLUMN, TABLES, ContractError, TableSpec, check_columns
from features.table_files import FILE_SUFFIXES

CHUNK_ROWS = 1_000_000
"""Rows read and validated at a time: validation's working copies of a chunk (text stripped,
parsed, flagged) are a few hundred bytes a row, so a chunk costs a few hundred MB whatever the
table's length."""
SQL_CHUNK_ROWS = 200_000
CSV_BLOCK_BYTES = 16 << 20
"""Bytes pyarrow's streaming CSV reader parses at a time (its default is 1 MiB)."""


@dataclass(frozen=True)
class RawTable:
    """Source values of one table as read, and where they came from (for error messages).

    ``data`` is one frame (an importer's, a test's) or the frames a reader yields one chunk
    at a time, so that a large table is validated a chunk at a time and never held whole as
    text (:func:`features.loading.validate_tables`). A reader's chunks can be read once.
    """

    data: pd.DataFrame | Iterable[pd.DataFrame]
    location: str

    def batches(self) -> Iterator[pd.DataFrame]:
        """The rows in order, at most :data:`CHUNK_ROWS` a frame, each with :data:`ROW_COLUMN`
        (1-based, counted across the chunks where the reader did not number them). A reader
        left part-way (validation failed) is closed at once: its file or cursor with it."""
        frames = [self.data] if isinstance(self.data, pd.DataFrame) else self.data
        first_row = 1
        try:
            for frame in frames:
                for start in range(0, max(len(frame), 1), CHUNK_ROWS):
                    chunk = frame.iloc[start:start + CHUNK_ROWS]
                    if ROW_COLUMN not in chunk.columns:
                        chunk = chunk.assign(**{ROW_COLUMN: np.arange(first_row, first_row + len(chunk),
                                                                      dtype=np.int64)})
                    first_row += len(chunk)
                    yield chunk
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()


class Source(Protocol):
    """A place that holds some of the contract tables."""

    description: str

    def available(self) -> set[str]:
        """Names of the contract tables present."""

    def read(self, spec: TableSpec) -> RawTable:
        """Read the contract columns of one present table."""


def is_database_url(location: str | os.PathLike[str]) -> bool:
    """A SQLAlchemy URL whose dialect is installed (``postgresql+psycopg://``, ``sqlite:///``), as
    opposed to a filesystem URI (``s3a://``, ``hdfs://``, ``gs://``, ``file://``) or a path: the one
    rule for every place that takes either (data, the picks output, the event log)."""
    text = str(location)
    if "://" not in text:
        return False
    try:
        sa.engine.make_url(text).get_dialect()
    except Exception:  # noqa: BLE001 - not a URL, or no such dialect: a filesystem scheme
        return False
    return True


def open_source(location: str | os.PathLike[str]) -> Source:
    """A :class:`Source` for a folder path or a SQLAlchemy URL; any other ``scheme://`` is a
    :class:`ContractError` (data is read from local folders and databases)."""
    if is_database_url(location):
        return SqlSource(str(location))
    if "://" in str(location):
        scheme = str(location).split("://", 1)[0]
        raise ContractError(f"{safe_url(str(location))}: '{scheme}' is not an installed SQLAlchemy dialect; "
                            f"give a data folder or a database URL (postgresql+psycopg://..., sqlite:///...)")
    return FolderSource(Path(location))


class FolderSource:
    """Tables as ``<table>.csv``, ``<table>.csv.gz`` or ``<table>.parquet`` in one folder, or as a
    folder ``<table>/`` of Parquet parts (read in name order as one table; the live event log
    writes ``events/`` this way)."""

    def __init__(self, folder: Path) -> None:
        if not folder.is_dir():
            raise ContractError(f"{folder}: no such data folder")
        self.folder = folder
        self.description = str(folder)
        self._files = self._find_files()

    def _find_files(self) -> dict[str, Path]:
        files: dict[str, Path] = {}
        for name in TABLES:
            found = [self.folder / f"{name}{suffix}" for suffix in FILE_SUFFIXES
                     if (self.folder / f"{name}{suffix}").is_file()]
            parts_dir = self.folder / name
            has_parts = parts_dir.is_dir() and bool(table_parts(parts_dir))
            if len(found) > 1 or (found and has_parts):
                given = [p.name for p in found] + ([f"{name}/"] if has_parts else [])
                hint = "keep one"
                if has_parts:
                    moved = [p.name for p in found if p.suffix == ".parquet"]
                    hint = (f"move {moved[0]} into {name}/ as one more part (part-<anything>.parquet), or remove it"
                            if moved else
                            f"convert {found[0].name} to Parquet and move it into {name}/ as one more part, "
                            f"or remove it")
                raise ContractError(f"{self.folder}: table '{name}' is given twice ({', '.join(given)}); {hint}")
            if found:
                files[name] = found[0]
            elif has_parts:
                files[name] = parts_dir
        return files

    def available(self) -> set[str]:
        return set(self._files)

    def read(self, spec: TableSpec) -> RawTable:
        """The table's chunks, read as they are validated; the columns are checked now."""
        path = self._files[spec.name]
        if path.is_dir():
            return RawTable(read_parquet_parts(path, spec), self.location(spec.name))
        return RawTable(read_parquet(path, spec) if path.suffix == ".parquet" else read_csv(path, spec),
                        self.location(spec.name))

    def location(self, name: str) -> str:
        """How messages and quarantine records name the table's source: its file, or ``<folder>/``."""
        path = self._files[name]
        return f"{path}/" if path.is_dir() else str(path)

    def parquet_files(self, name: str) -> list[Path] | None:
        """The table's Parquet files in row order (one file, or a folder's parts), or None for a CSV."""
        path = self._files[name]
        if path.is_dir():
            return table_parts(path)
        return [path] if path.suffix == ".parquet" else None


def table_parts(folder: Path) -> list[Path]:
    """The Parquet parts of a table folder, in name order.

    Names starting with ``.`` or ``_`` are skipped (temp files of a writer that has not
    finished, Spark's ``_SUCCESS``); any other file that is not ``.parquet`` is an error, so
    a CSV dropped there is not silently ignored.
    """
    parts = []
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        if path.name.startswith((".", "_")):
            continue
        if not path.is_file() or path.suffix != ".parquet":
            raise ContractError(f"{path}: a table folder holds only Parquet parts (*.parquet); "
                                f"move this {'folder' if path.is_dir() else 'file'} out or convert it")
        parts.append(path)
    return parts


def csv_header(path: Path) -> list[str]:
    """Column names of a (possibly gzipped) CSV file, read without loading it."""
    try:
        header = pd.read_csv(path, nrows=0, encoding_errors="replace")
    except pd.errors.EmptyDataError:
        raise ContractError(f"{path}: file is empty (no header row)") from None
    except (pd.errors.ParserError, OSError, EOFError) as error:  # a broken gzip stream, an unreadable header
        raise ContractError(f"{path}: cannot read the CSV header: {first_line(error)}") from None
    return [str(c).strip() for c in header.columns]


def read_csv(path: Path, spec: TableSpec) -> Iterator[pd.DataFrame]:
    """The contract columns of a CSV as text, :data:`CHUNK_ROWS` rows at a time (columns checked first).

    pyarrow's streaming reader parses it (one thread: validation, not parsing, is most of a
    load's time) and keeps strings in Arrow memory. The columns are read as bytes and
    decoded a chunk at a time: a value that is not valid UTF-8 gets U+FFFD for its bad bytes
    and its row is flagged, so the schema quarantines it ("not valid UTF-8") instead of
    failing the whole load or guessing.
    """
    present = csv_header(path)
    check_columns(spec, present, str(path))
    wanted = [c for c in spec.column_names if c in present]
    convert = pacsv.ConvertOptions(
        column_types={c: pa.binary() for c in wanted},
        include_columns=wanted,
        strings_can_be_null=True,
        null_values=[""],
        quoted_strings_can_be_null=True,
    )
    return _csv_chunks(path, convert)


def _csv_chunks(path: Path, convert: pacsv.ConvertOptions) -> Iterator[pd.DataFrame]:
    """Exactly :data:`CHUNK_ROWS` rows a chunk (the last holds the rest; an empty file one empty chunk)."""
    parsed, yielded = 0, False
    try:
        reader = pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES),
                                convert_options=convert)
        pending = reader.schema.empty_table()
        for batch in reader:
            parsed += batch.num_rows
            pending = pa.concat_tables([pending, pa.Table.from_batches([batch])])
            while pending.num_rows >= CHUNK_ROWS:
                yield _decoded(pending.slice(0, CHUNK_ROWS))
                pending, yielded = pending.slice(CHUNK_ROWS), True
        if pending.num_rows or not yielded:
            yield _decoded(pending)
    except (pa.ArrowInvalid, OSError, EOFError) as error:
        raise ContractError(f"{path}: cannot parse CSV after data row {parsed:,}: {first_line(error)}") from None


def _decoded(table: pa.Table) -> pd.DataFrame:
    """Byte columns as text. In a column that is not valid UTF-8, each value that is not is decoded
    with U+FFFD for its bad bytes and its row flagged in :data:`BAD_ENCODING_COLUMN`."""
    frame = pd.DataFrame(index=pd.RangeIndex(table.num_rows))
    bad = np.zeros(table.num_rows, dtype=bool)
    for name, column in zip(table.column_names, table.columns, strict=True):
        try:
            frame[name] = column.cast(pa.string()).to_pandas()
        except pa.ArrowInvalid:  # not UTF-8 somewhere in this chunk's column: find the values
            text: list[str | None] = []
            for row, value in enumerate(column.to_pylist()):
                try:
                    text.append(None if value is None else value.decode("utf-8"))
                except UnicodeDecodeError:
                    text.append(value.decode("utf-8", "replace"))
                    bad[row] = True
            frame[name] = pd.Series(text, dtype="str")
    if bad.any():
        frame[BAD_ENCODING_COLUMN] = bad
    return frame


def read_parquet(path: Path, spec: TableSpec) -> Iterator[pd.DataFrame]:
    """The contract columns of a Parquet file, :data:`CHUNK_ROWS` rows at a time (columns checked first)."""
    return parquet_chunks(path, parquet_columns(path, spec))


def read_parquet_parts(folder: Path, spec: TableSpec) -> Iterator[pd.DataFrame]:
    """The parts of a table folder, in name order, as one table's chunks; row numbers then count
    across the parts. Every part's columns are checked before any is read, and each part is
    open only while it is read (a live event log has thousands); parts may type a column
    differently (validation gives every chunk the contract's types)."""
    checked = [(part, parquet_columns(part, spec)) for part in table_parts(folder)]
    return (chunk for part, columns in checked for chunk in parquet_chunks(part, columns))


def parquet_columns(path: Path, spec: TableSpec) -> list[str]:
    """The contract columns the file holds (its schema read, the file not kept open)."""
    try:
        present = pq.read_schema(path).names
    except (pa.ArrowInvalid, OSError) as error:
        raise ContractError(f"{path}: not a readable Parquet file: {first_line(error)}") from None
    check_columns(spec, present, str(path))
    return [c for c in spec.column_names if c in present]


NULLABLE_INTEGERS = {arrow: pandas for arrow, pandas in (
    (pa.int8(), pd.Int8Dtype()), (pa.int16(), pd.Int16Dtype()), (pa.int32(), pd.Int32Dtype()),
    (pa.int64(), pd.Int64Dtype()), (pa.uint8(), pd.UInt8Dtype()), (pa.uint16(), pd.UInt16Dtype()),
    (pa.uint32(), pd.UInt32Dtype()), (pa.uint64(), pd.UInt64Dtype()))}
"""Parquet integers as pandas' nullable integers: plain ``to_pandas`` makes a column float in a
chunk that holds a null and int in one that does not, so a quarantined id would read "4.0" or
"4" depending on where the chunks were cut (and differ between the local and Spark engines)."""


def parquet_chunks(path: Path, columns: list[str], row_groups: Sequence[int] | None = None) -> Iterator[pd.DataFrame]:
    """The file's rows (or those of ``row_groups`` only), :data:`CHUNK_ROWS` at a time; a file
    without rows gives one empty chunk."""
    try:
        with pq.ParquetFile(path) as file:
            yielded = False
            for batch in file.iter_batches(batch_size=CHUNK_ROWS, columns=columns, row_groups=row_groups):
                yield batch.to_pandas(types_mapper=NULLABLE_INTEGERS.get)
                yielded = True
            if not yielded:
                yield file.schema_arrow.empty_table().select(columns).to_pandas(types_mapper=NULLABLE_INTEGERS.get)
    except (pa.ArrowException, OSError) as error:  # a footer that reads over data that does not
        raise ContractError(f"{path}: not a readable Parquet file: {first_line(error)}") from None


class SqlSource:
    """Tables of the same names in a database reached by a SQLAlchemy URL."""

    def __init__(self, url: str) -> None:
        try:
            self.engine = sa.create_engine(url)
            with self.engine.connect() as conn:
                self._tables = set(sa.inspect(conn).get_table_names())
        except (sa.exc.SQLAlchemyError, ImportError) as error:
            raise ContractError(f"{safe_url(url)}: cannot open database: {first_line(error)}") from None
        self.description = safe_url(url)

    def available(self) -> set[str]:
        return {name for name in TABLES if name in self._tables}

    def read(self, spec: TableSpec) -> RawTable:
        """The table's chunks, fetched by a server-side cursor as they are validated; the
        columns are checked now."""
        location = f"{self.description} table {spec.name}"
        with self.engine.connect() as conn:
            present = [c["name"] for c in sa.inspect(conn).get_columns(spec.name)]
        check_columns(spec, present, location)
        wanted = [c for c in spec.column_names if c in present]
        return RawTable(self._chunks(spec.name, wanted), location)

    def _chunks(self, table: str, wanted: list[str]) -> Iterator[pd.DataFrame]:
        columns: list[sa.ColumnClause[Any]] = [sa.column(c) for c in wanted]
        query = sa.select(*columns).select_from(sa.table(table))
        rows, yielded = 0, False
        try:
            with self.engine.connect() as conn:
                streaming = conn.execution_options(stream_results=True)
                for chunk in pd.read_sql(query, streaming, chunksize=SQL_CHUNK_ROWS):
                    yield chunk
                    rows, yielded = rows + len(chunk), True
                if not yielded:
                    yield pd.DataFrame(columns=wanted)
        except sa.exc.SQLAlchemyError as error:
            raise ContractError(f"{self.description} table {table}: reading failed after row {rows:,}: "
                                f"{first_line(error)}") from None


def safe_url(url: str) -> str:
    """The URL with any password hidden, fit for logs, MLflow tags and error messages."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url.split("@")[-1]


def write_sql(tables: Mapping[str, pd.DataFrame], url: str) -> None:
    """Replace the contract tables in a database, all in one transaction."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for name, frame in tables.items():
            frame.to_sql(name, conn, if_exists="replace", index=False, chunksize=50_000)
