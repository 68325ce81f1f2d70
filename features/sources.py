"""Where shop tables come from and go to: a folder of CSV/Parquet files or a SQL database.

Readers return the source values untouched (text from CSV, typed columns from Parquet
and SQL) plus a 1-based row number; :mod:`features.schema` does all the checking, so
every source gets the same rules and the same error messages. Reads are columnar
(pyarrow) or chunked (SQL server-side cursors) and only fetch contract columns.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import sqlalchemy as sa

from features.errors import first_line
from features.schema import BAD_ENCODING_COLUMN, ROW_COLUMN, TABLES, ContractError, TableSpec, check_columns

FileFormat = Literal["csv", "csv.gz", "parquet"]
FILE_SUFFIXES: tuple[str, ...] = (".csv", ".csv.gz", ".parquet")
SQL_CHUNK_ROWS = 200_000
INVALID_UTF8_MARK = "\ufffd"


@dataclass(frozen=True)
class RawTable:
    """Source values of one table as read, and where they came from (for error messages)."""

    frame: pd.DataFrame
    location: str


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
        path = self._files[spec.name]
        if path.is_dir():
            return RawTable(_with_row_numbers(read_parquet_parts(path, spec)), f"{path}/")
        frame = read_parquet(path, spec) if path.suffix == ".parquet" else read_csv(path, spec)
        return RawTable(_with_row_numbers(frame), str(path))


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


def _with_row_numbers(frame: pd.DataFrame) -> pd.DataFrame:
    frame[ROW_COLUMN] = np.arange(1, len(frame) + 1, dtype=np.int64)
    return frame


def csv_header(path: Path) -> list[str]:
    """Column names of a (possibly gzipped) CSV file, read without loading it."""
    try:
        header = pd.read_csv(path, nrows=0, encoding_errors="replace")
    except pd.errors.EmptyDataError:
        raise ContractError(f"{path}: file is empty (no header row)") from None
    except (pd.errors.ParserError, OSError, EOFError) as error:  # a broken gzip stream, an unreadable header
        raise ContractError(f"{path}: cannot read the CSV header: {first_line(error)}") from None
    return [str(c).strip() for c in header.columns]


def read_csv(path: Path, spec: TableSpec) -> pd.DataFrame:
    """Read the contract columns of a CSV as text.

    pyarrow parses in parallel and keeps strings in Arrow memory. A file that is not valid
    UTF-8 is re-read with the bad bytes replaced by U+FFFD; the schema then quarantines
    those rows ("not valid UTF-8") instead of failing the whole load or guessing.
    """
    present = csv_header(path)
    check_columns(spec, present, str(path))
    wanted = [c for c in spec.column_names if c in present]
    convert = pacsv.ConvertOptions(
        column_types={c: pa.string() for c in wanted},
        include_columns=wanted,
        strings_can_be_null=True,
        null_values=[""],
        quoted_strings_can_be_null=True,
    )
    try:
        table = pacsv.read_csv(path, convert_options=convert)
        return table.to_pandas()
    except pa.ArrowInvalid as error:
        if "UTF8" not in str(error).upper().replace("-", ""):
            raise ContractError(f"{path}: cannot parse CSV: {first_line(error)}") from None
    # No usecols: with it pandas silently truncates a line that has too many fields.
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""],
                            encoding_errors="replace")[wanted]
    except pd.errors.ParserError as error:
        raise ContractError(f"{path}: cannot parse CSV: {first_line(error)}") from None
    frame[BAD_ENCODING_COLUMN] = np.zeros(len(frame), dtype=bool)
    for name in wanted:
        frame[BAD_ENCODING_COLUMN] |= frame[name].str.contains(INVALID_UTF8_MARK, regex=False).fillna(False)
    return frame


def read_parquet(path: Path, spec: TableSpec) -> pd.DataFrame:
    try:
        present = pq.read_schema(path).names
    except (pa.ArrowInvalid, OSError) as error:
        raise ContractError(f"{path}: not a readable Parquet file: {first_line(error)}") from None
    check_columns(spec, present, str(path))
    try:
        return pd.read_parquet(path, columns=[c for c in spec.column_names if c in present])
    except (pa.ArrowException, OSError) as error:  # a footer that reads over data that does not
        raise ContractError(f"{path}: not a readable Parquet file: {first_line(error)}") from None


def read_parquet_parts(folder: Path, spec: TableSpec) -> pd.DataFrame:
    """The parts of a table folder as one frame; row numbers then count across the parts in name order."""
    tables = []
    for part in table_parts(folder):
        try:
            present = pq.read_schema(part).names
        except (pa.ArrowInvalid, OSError) as error:
            raise ContractError(f"{part}: not a readable Parquet file: {first_line(error)}") from None
        check_columns(spec, present, str(part))
        try:
            tables.append(pq.read_table(part, columns=[c for c in spec.column_names if c in present]))
        except (pa.ArrowInvalid, OSError) as error:
            raise ContractError(f"{part}: not a readable Parquet file: {first_line(error)}") from None
    try:
        table = pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise ContractError(f"{folder}/: parts disagree on column types: {first_line(error)}") from None
    return table.to_pandas()


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
        location = f"{self.description} table {spec.name}"
        with self.engine.connect() as conn:
            present = [c["name"] for c in sa.inspect(conn).get_columns(spec.name)]
            check_columns(spec, present, location)
            wanted = [c for c in spec.column_names if c in present]
            columns: list[sa.ColumnClause[Any]] = [sa.column(c) for c in wanted]
            query = sa.select(*columns).select_from(sa.table(spec.name))
            streaming = conn.execution_options(stream_results=True)
            chunks = list(pd.read_sql(query, streaming, chunksize=SQL_CHUNK_ROWS))
        frame = pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame(columns=wanted)
        return RawTable(_with_row_numbers(frame), location)


def safe_url(url: str) -> str:
    """The URL with any password hidden, fit for logs, MLflow tags and error messages."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url.split("@")[-1]


def write_tables(tables: Mapping[str, pd.DataFrame], out_dir: str | os.PathLike[str],
                 fmt: FileFormat = "csv") -> list[Path]:
    """Write contract tables as ``<table>.<fmt>`` files, each atomically (temp file, then rename)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, frame in tables.items():
        path = out / f"{name}.{fmt}"
        tmp = path.with_name(f".{path.name}.tmp")
        if fmt == "parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False, compression="gzip" if fmt == "csv.gz" else None,
                         date_format="%Y-%m-%dT%H:%M:%S.%fZ")
        os.replace(tmp, path)
        for suffix in FILE_SUFFIXES:  # a table given twice would be refused on load
            other = out / f"{name}{suffix}"
            if other != path and other.exists():
                other.unlink()
        written.append(path)
    return written


def write_sql(tables: Mapping[str, pd.DataFrame], url: str) -> None:
    """Replace the contract tables in a database, all in one transaction."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for name, frame in tables.items():
            frame.to_sql(name, conn, if_exists="replace", index=False, chunksize=50_000)
