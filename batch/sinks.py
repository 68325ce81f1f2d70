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
  A database error while writing (the connection lost: a restarted server, a terminated
  backend) is one :class:`UserError` naming the table and the database; the staging table is
  dropped on a fresh connection (the error says so when that fails too). A connection lost
  at the swap is retried once on a fresh connection: the staging table is complete by then
  and the swap is one short transaction that either committed or rolled back.
  No statement waits for ever: every statement and lock wait is bounded by ``timeout_s``
  (``shoprec picks --sql-timeout``, 300 s), and on PostgreSQL TCP keepalives and
  ``tcp_user_timeout`` notice a network cut that sends no reset, so a blocked swap or a dead
  link is the same one-line error with the old table intact, not a hang.
"""

from __future__ import annotations

import io
import os
import re
import time
import uuid
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import sqlalchemy as sa

from batch.schema import PICKS_SCHEMA
from features.errors import UserError
from features.sources import is_database_url, safe_url

_SQL_TYPES: dict[pa.DataType, Callable[[], sa.types.TypeEngine[Any]]] = {
    pa.string(): sa.Text, pa.int32(): sa.Integer, pa.float64(): lambda: sa.Float(precision=53), pa.bool_(): sa.Boolean}
"""The schema's Arrow types as SQL column types."""
FILE_SUFFIXES = (".parquet", ".csv", ".csv.gz")
DEFAULT_TABLE = "email_picks"
DEFAULT_SQL_TIMEOUT_S = 300.0
"""Longest a single statement (one block's COPY, the swap) or lock wait may take."""
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")


class PicksSink(ABC):
    """Write blocks, then commit (swap the new output in) or abort (leave the old one).

    Used as a context manager: a clean exit commits, an exception aborts and propagates.
    """

    description: str
    schema: pa.Schema = PICKS_SCHEMA
    """The output's columns: the email picks' by default (another batch output passes its own)."""
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
        """Append one block (columns as :attr:`schema`)."""
        if len(frame):
            self._write(pa.Table.from_pandas(frame[self.schema.names], schema=self.schema, preserve_index=False))
            self.rows += len(frame)

    @abstractmethod
    def _write(self, table: pa.Table) -> None: ...

    @abstractmethod
    def commit(self) -> None: ...

    @abstractmethod
    def abort(self) -> None: ...


class FileSink(PicksSink):
    """Parquet (one row group per block) or CSV (optionally gzipped), via a temporary file."""

    def __init__(self, path: str | os.PathLike[str], schema: pa.Schema = PICKS_SCHEMA) -> None:
        self.schema = schema
        self.path = Path(path)
        name = self.path.name.lower()
        self.fmt = next((s for s in (".csv.gz", ".parquet", ".csv") if name.endswith(s)), None)
        if self.fmt is None or name == self.fmt:
            raise UserError(f"{path}: output must end in {', '.join(FILE_SUFFIXES)} or be a SQLAlchemy URL")
        if self.path.is_dir():
            raise UserError(f"{path}: is a folder; give a file name ending in {', '.join(FILE_SUFFIXES)}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.description = str(self.path)
        self.tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:12]}.tmp")
        self._stream: pa.NativeFile | None = None
        self._writer: pq.ParquetWriter | pacsv.CSVWriter | None = None

    def _open(self) -> pq.ParquetWriter | pacsv.CSVWriter:
        if self.fmt == ".parquet":
            return pq.ParquetWriter(self.tmp, self.schema, compression="zstd")
        self._stream = (pa.CompressedOutputStream(str(self.tmp), "gzip") if self.fmt == ".csv.gz"
                        else pa.OSFile(str(self.tmp), "wb"))
        return pacsv.CSVWriter(self._stream, self.schema)

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

    swap_retry_delay_s = 1.0
    """Pause before the one retry of a swap whose connection was lost (a restarting server)."""

    def __init__(self, url: str, table: str = DEFAULT_TABLE, timeout_s: float = DEFAULT_SQL_TIMEOUT_S,
                 schema: pa.Schema = PICKS_SCHEMA) -> None:
        self.schema = schema
        if not _IDENTIFIER.fullmatch(table):
            raise UserError(f"--table {table!r}: use letters, digits and _ (at most 40 characters)")
        if not timeout_s > 0:
            raise UserError(f"--sql-timeout {timeout_s}: give a number of seconds > 0")
        self.table = table
        self.staging = f"{table}__staging_{uuid.uuid4().hex[:12]}"
        self.url = safe_url(url)
        self.description = f"{self.url} table {table}"
        try:
            self.engine = sa.create_engine(url, connect_args=_bounded(sa.engine.make_url(url), timeout_s))
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as error:
            raise UserError(f"{self.url}: not a usable SQLAlchemy URL ({error})") from None
        if self.engine.dialect.name == "sqlite":
            _transactional_sqlite_ddl(self.engine)
        self._meta = sa.MetaData()
        self._staging = sa.Table(self.staging, self._meta, *(
            sa.Column(f.name, _SQL_TYPES[f.type](), nullable=f.nullable) for f in self.schema))
        self._created = False
        self._copy = self.engine.dialect.name == "postgresql" and self.engine.dialect.driver == "psycopg"

    def _create(self) -> None:
        try:
            with self.engine.begin() as conn:
                self._staging.create(conn)
        except sa.exc.OperationalError as error:
            raise UserError(f"{self.description}: cannot write ({str(error.orig).splitlines()[0]})") from None
        self._created = True

    def _write(self, table: pa.Table) -> None:
        if not self._created:
            self._create()
        try:
            with self.engine.begin() as conn:
                if self._copy:
                    self._copy_block(conn, table)
                else:
                    conn.execute(self._staging.insert(), table.to_pylist())
        except sa.exc.DBAPIError as error:
            raise self._failed(_reason(error)) from None

    def _copy_block(self, conn: sa.Connection, table: pa.Table) -> None:
        buffer = io.BytesIO()
        pacsv.write_csv(table, buffer, pacsv.WriteOptions(include_header=False))
        driver = conn.connection.driver_connection
        assert driver is not None, "an open connection has a DBAPI connection"
        columns = ", ".join(f'"{c}"' for c in self.schema.names)
        statement = f'COPY "{self.staging}" ({columns}) FROM STDIN (FORMAT csv)'
        dbapi = self.engine.dialect.loaded_dbapi
        try:
            with driver.cursor() as cursor, cursor.copy(statement) as copy:
                copy.write(buffer.getbuffer())
        except dbapi.Error as error:
            # psycopg's own cursor: SQLAlchemy did not see the error, so report it as it would
            # (a lost connection is invalidated, not rolled back, and not returned to the pool)
            lost = bool(driver.closed or driver.broken)
            if lost:
                conn.invalidate(error)
            raise sa.exc.DBAPIError.instance(statement, None, error, dbapi.Error, connection_invalidated=lost,
                                             dialect=self.engine.dialect) from error

    def _swap(self, conn: sa.Connection) -> None:
        """Drop the old table and rename the staging table to it, in ``conn``'s transaction."""
        quote = self.engine.dialect.identifier_preparer.quote
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {quote(self.table)}"))
        conn.execute(sa.text(f"ALTER TABLE {quote(self.staging)} RENAME TO {quote(self.table)}"))

    def _swap_once(self) -> None:
        with self.engine.begin() as conn:
            self._swap(conn)

    def commit(self) -> None:
        if not self._created:
            self._create()
        try:
            self._swap_once()
        except sa.exc.DBAPIError as error:
            if not error.connection_invalidated:
                raise self._failed(f"cannot replace the table, the old one is kept ({_reason(error)})",
                                   intact="") from None
            first = _reason(error)
            time.sleep(self.swap_retry_delay_s)
            self.engine.dispose()
            try:
                with self.engine.connect() as conn:  # a lost COMMIT may have gone through: staging renamed
                    done = not self._exists(conn, self.staging) and self._exists(conn, self.table)
                if not done:
                    self._swap_once()
            except sa.exc.DBAPIError as again:
                raise self._failed(f"{first} at the swap, and the retry on a fresh connection failed too "
                                   f"({_reason(again, lost=False)})") from None
        self._created = False
        self.engine.dispose()

    def abort(self) -> None:
        """Drop the staging table; never raises (the job's own error is what the caller sees)."""
        if self._created:
            left = self._drop_staging()
            if left is not None:
                warnings.warn(f"{self.description}: {left}", RuntimeWarning, stacklevel=2)
        self.engine.dispose()

    def _exists(self, conn: sa.Connection, name: str) -> bool:
        return sa.inspect(conn).has_table(name)

    def _drop_staging(self) -> str | None:
        """Drop the staging table on a fresh connection; None when done, else what is left."""
        self.engine.dispose()  # no pooled connection that died with the server
        try:
            with self.engine.begin() as conn:
                self._staging.drop(conn, checkfirst=True)
        except sa.exc.DBAPIError as error:
            return (f"the staging table {self.staging} could not be dropped ({_reason(error, lost=False)}); "
                    f"drop it by hand")
        finally:
            self.engine.dispose()
        self._created = False
        return None

    def _failed(self, what: str, intact: str = "the previous table is intact") -> UserError:
        """The one error of a failed write (table, database, reason), after dropping the staging table."""
        left = self._drop_staging() if self._created else None
        self._created = False  # reported here: abort has nothing more to do
        return UserError("; ".join(filter(None, [f"picks write to {self.table} at {self.url} failed: {what}",
                                                  intact, left])))


def _bounded(url: sa.engine.URL, timeout_s: float) -> dict[str, object]:
    """Driver options that bound every wait: server-side statement and lock timeouts and TCP
    liveness checks on PostgreSQL (libpq's options, for psycopg), the busy timeout on SQLite."""
    if url.get_backend_name() == "postgresql" and url.get_driver_name() in ("psycopg", "psycopg2"):
        ms = int(timeout_s * 1000)
        return {"connect_timeout": max(1, min(int(timeout_s), 30)),
                "options": f"-c statement_timeout={ms} -c lock_timeout={ms}",
                "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
                "tcp_user_timeout": ms}
    if url.get_backend_name() == "sqlite":
        return {"timeout": timeout_s}
    return {}


def _reason(error: sa.exc.DBAPIError, lost: bool | None = None) -> str:
    """The driver's message, first line; ``connection lost (...)`` when the connection died."""
    text = (str(error.orig).strip().splitlines() or [type(error.orig).__name__])[0]
    lost = error.connection_invalidated if lost is None else lost
    return f"connection lost ({text})" if lost else text


def _transactional_sqlite_ddl(engine: sa.Engine) -> None:
    """pysqlite commits before DDL on its own; let SQLAlchemy issue BEGIN so DROP + RENAME is one
    transaction (the recipe from SQLAlchemy's SQLite dialect documentation)."""

    @sa.event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_connection, _record) -> None:  # noqa: ANN001 - DBAPI types
        dbapi_connection.isolation_level = None

    @sa.event.listens_for(engine, "begin")
    def _begin(conn) -> None:  # noqa: ANN001
        conn.exec_driver_sql("BEGIN")


def open_sink(target: str, table: str = DEFAULT_TABLE, sql_timeout_s: float = DEFAULT_SQL_TIMEOUT_S,
              schema: pa.Schema = PICKS_SCHEMA) -> PicksSink:
    """A sink of ``schema`` rows (the email picks' by default) for a file path (by extension) or a
    SQLAlchemy URL (into ``table``, every statement bounded by ``sql_timeout_s``).

    Any other ``scheme://`` (an object store, HDFS) is a :class:`UserError`: this engine writes
    local files and database tables only; the Spark engine writes to Hadoop filesystems.
    """
    if is_database_url(target):
        return SqlSink(target, table, sql_timeout_s, schema)
    if "://" in target:
        scheme = target.split("://", 1)[0]
        raise UserError(f"{safe_url(target)}: '{scheme}' is not an installed SQLAlchemy dialect, and the local "
                         f"engine writes local files and database tables only; for object stores and HDFS "
                         f"(s3a://, gs://, hdfs://) use --engine spark")
    return FileSink(target, schema)
