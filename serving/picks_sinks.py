"""Where the email-picks batch job writes: Parquet or CSV by extension, or a SQL table.

Every sink streams blocks (memory stays bounded whatever the base size) into a temporary
place next to the target and swaps it in only on :meth:`PicksSink.commit`, so a run that
fails or is killed half-way leaves the previous output exactly as it was:

- files: a hidden temporary file in the target's folder, then ``os.replace`` (atomic on
  one filesystem); an aborted run removes it (a killed one may leave it behind, never the
  target half-written);
- SQL: a staging table filled block by block, then, in one transaction, the old table is
  dropped and the staging table renamed to the target (PostgreSQL and SQLite run DDL
  inside transactions, so readers see the old table or the new one, never half of it).
"""

from __future__ import annotations

import io
import os
import re
import uuid
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import Self

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import sqlalchemy as sa

PICKS_SCHEMA = pa.schema([
    ("customer_id", pa.string()),
    ("rank", pa.int32()),
    ("item_id", pa.string()),
    ("score", pa.float64()),
    ("reason", pa.string()),
    ("send", pa.bool_()),
    ("open_propensity", pa.float64()),
    ("model_version", pa.string()),
])
PICKS_COLUMNS = PICKS_SCHEMA.names
FILE_SUFFIXES = (".parquet", ".csv", ".csv.gz")
DEFAULT_TABLE = "email_picks"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")


class PicksSink(ABC):
    """Write blocks, then commit (swap the new output in) or abort (leave the old one).

    Used as a context manager: a clean exit commits, an exception aborts and propagates.
    """

    description: str
    rows: int = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if kind is None:
            self.commit()
        else:
            self.abort()

    def write(self, frame: pd.DataFrame) -> None:
        """Append one block (columns as :data:`PICKS_COLUMNS`)."""
        if len(frame):
            self._write(pa.Table.from_pandas(frame[PICKS_COLUMNS], schema=PICKS_SCHEMA, preserve_index=False))
            self.rows += len(frame)

    @abstractmethod
    def _write(self, table: pa.Table) -> None: ...

    @abstractmethod
    def commit(self) -> None: ...

    @abstractmethod
    def abort(self) -> None: ...


class FileSink(PicksSink):
    """Parquet (one row group per block) or CSV (optionally gzipped), via a temporary file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        name = self.path.name.lower()
        self.fmt = next((s for s in (".csv.gz", ".parquet", ".csv") if name.endswith(s)), None)
        if self.fmt is None or name == self.fmt:
            raise ValueError(f"{path}: output must end in {', '.join(FILE_SUFFIXES)} or be a SQLAlchemy URL")
        if self.path.is_dir():
            raise ValueError(f"{path}: is a folder; give a file name ending in {', '.join(FILE_SUFFIXES)}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.description = str(self.path)
        self.tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:12]}.tmp")
        self._stream: pa.NativeFile | None = None
        self._writer: pq.ParquetWriter | pacsv.CSVWriter | None = None

    def _open(self) -> pq.ParquetWriter | pacsv.CSVWriter:
        if self.fmt == ".parquet":
            return pq.ParquetWriter(self.tmp, PICKS_SCHEMA, compression="zstd")
        self._stream = (pa.CompressedOutputStream(str(self.tmp), "gzip") if self.fmt == ".csv.gz"
                        else pa.OSFile(str(self.tmp), "wb"))
        return pacsv.CSVWriter(self._stream, PICKS_SCHEMA)

    def _write(self, table: pa.Table) -> None:
        if self._writer is None:
            self._writer = self._open()
        self._writer.write_table(table) if self.fmt == ".parquet" else self._writer.write(table)

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def commit(self) -> None:
        if self._writer is None:  # no rows at all: still a valid file with the header / schema
            self._writer = self._open()
        self._close()
        with open(self.tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self._close()
        finally:
            self.tmp.unlink(missing_ok=True)


class SqlSink(PicksSink):
    """A staging table filled block by block, swapped in for ``table`` in one transaction.

    PostgreSQL gets each block by ``COPY`` (psycopg); other databases by batched inserts.
    """

    def __init__(self, url: str, table: str = DEFAULT_TABLE) -> None:
        if not _IDENTIFIER.fullmatch(table):
            raise ValueError(f"--table {table!r}: use letters, digits and _ (at most 40 characters)")
        self.table = table
        self.staging = f"{table}__staging_{uuid.uuid4().hex[:12]}"
        self.description = f"{safe_url(url)} table {table}"
        try:
            self.engine = sa.create_engine(url)
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as error:
            raise ValueError(f"{safe_url(url)}: not a usable SQLAlchemy URL ({error})") from None
        if self.engine.dialect.name == "sqlite":
            _transactional_sqlite_ddl(self.engine)
        self._meta = sa.MetaData()
        self._staging = sa.Table(
            self.staging, self._meta,
            sa.Column("customer_id", sa.Text, nullable=False), sa.Column("rank", sa.Integer, nullable=False),
            sa.Column("item_id", sa.Text, nullable=False), sa.Column("score", sa.Float(precision=53)),
            sa.Column("reason", sa.Text), sa.Column("send", sa.Boolean), sa.Column("open_propensity", sa.Float(53)),
            sa.Column("model_version", sa.Text))
        self._created = False
        self._copy = self.engine.dialect.name == "postgresql" and self.engine.dialect.driver == "psycopg"

    def _create(self) -> None:
        try:
            with self.engine.begin() as conn:
                self._staging.create(conn)
        except sa.exc.OperationalError as error:
            raise ValueError(f"{self.description}: cannot write ({str(error.orig).splitlines()[0]})") from None
        self._created = True

    def _write(self, table: pa.Table) -> None:
        if not self._created:
            self._create()
        with self.engine.begin() as conn:
            if self._copy:
                buffer = io.BytesIO()
                pacsv.write_csv(table, buffer, pacsv.WriteOptions(include_header=False))
                cursor = conn.connection.driver_connection.cursor()
                columns = ", ".join(f'"{c}"' for c in PICKS_COLUMNS)
                with cursor.copy(f'COPY "{self.staging}" ({columns}) FROM STDIN (FORMAT csv)') as copy:
                    copy.write(buffer.getbuffer())
            else:
                conn.execute(self._staging.insert(), table.to_pylist())

    def commit(self) -> None:
        if not self._created:
            self._create()
        quote = self.engine.dialect.identifier_preparer.quote
        try:
            with self.engine.begin() as conn:
                conn.execute(sa.text(f"DROP TABLE IF EXISTS {quote(self.table)}"))
                conn.execute(sa.text(f"ALTER TABLE {quote(self.staging)} RENAME TO {quote(self.table)}"))
        except sa.exc.DBAPIError as error:
            self.abort()
            raise ValueError(f"{self.description}: cannot replace the table, the old one is kept "
                             f"({str(error.orig).splitlines()[0]})") from None
        self.engine.dispose()

    def abort(self) -> None:
        try:
            if self._created:
                with self.engine.begin() as conn:
                    self._staging.drop(conn, checkfirst=True)
        finally:
            self.engine.dispose()


def safe_url(url: str) -> str:
    """The URL with any password hidden, fit for logs, MLflow params and error messages."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url.split("@")[-1]


def _transactional_sqlite_ddl(engine: sa.Engine) -> None:
    """pysqlite commits before DDL on its own; let SQLAlchemy issue BEGIN so DROP + RENAME is one
    transaction (the recipe from SQLAlchemy's SQLite dialect documentation)."""

    @sa.event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_connection, _record) -> None:  # noqa: ANN001 - DBAPI types
        dbapi_connection.isolation_level = None

    @sa.event.listens_for(engine, "begin")
    def _begin(conn) -> None:  # noqa: ANN001
        conn.exec_driver_sql("BEGIN")


def is_database_url(target: str) -> bool:
    """A SQLAlchemy URL whose dialect is installed (``postgresql+psycopg://``, ``sqlite:///``), as
    opposed to a filesystem URI (``s3a://``, ``hdfs://``, ``gs://``, ``file://``) or a path."""
    if "://" not in target:
        return False
    try:
        sa.engine.make_url(target).get_dialect()
    except Exception:  # noqa: BLE001 - not a URL, or no such dialect: a filesystem scheme
        return False
    return True


def open_sink(target: str, table: str = DEFAULT_TABLE) -> PicksSink:
    """A sink for a file path (by extension) or a SQLAlchemy URL (into ``table``).

    Any other ``scheme://`` (an object store, HDFS) is a ``ValueError``: this engine writes
    local files and database tables only; the Spark engine writes to Hadoop filesystems.
    """
    if is_database_url(target):
        return SqlSink(target, table)
    if "://" in target:
        scheme = target.split("://", 1)[0]
        raise ValueError(f"{safe_url(target)}: '{scheme}' is not an installed SQLAlchemy dialect, and the local "
                         f"engine writes local files and database tables only; for object stores and HDFS "
                         f"(s3a://, gs://, hdfs://) use --engine spark")
    return FileSink(target)
