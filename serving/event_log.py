"""The durable record of live events: what the next ``shoprec train`` reads as its ``events`` table.

Write-ahead: :meth:`EventLog.append` returns only once the batch is durable, so an
acknowledged event survives a crash of the worker or the machine. Delivery is at least
once: a batch that failed (or whose answer was lost) may be durable all the same, and a
client that retries it logs it twice.

- :class:`FileEventLog` (a folder; give training the same folder). Each process appends
  JSON lines to its own write-ahead segment ``wal/<utc-date>-<pid>-<uuid>.jsonl`` (one
  ``write`` and one ``fsync`` per batch; concurrent batches share an ``fsync``). A segment
  is rolled when it passes ``segment_max_bytes`` or ``segment_max_seconds`` and is then
  compacted into ``events/part-<utc-date>-<uuid>.parquet`` (temp file, fsync,
  ``os.replace``, then the segment is deleted): the contract's ``events`` columns, ``ts`` a
  UTC timestamp, so ``shoprec train --data FOLDER`` reads ``events/`` as the table (see
  docs/data.md). Opening the log compacts segments left by dead processes. A segment is
  compacted only by a holder of its ``flock``, which its writer holds from before the
  segment has its name until it rolls and the kernel releases when the writer dies (even
  by SIGKILL), so a live process's active segment is never touched. Whether a writer is
  dead is decided by that lock, not by its pid: pids are reused (a restarted container
  gives its workers the same ones). The part is named after its segment, so a segment
  compacted twice (a crash between the part's rename and the segment's deletion) rewrites
  the same part rather than duplicating events.
- :class:`SqlEventLog` (a SQLAlchemy URL): one ``INSERT`` transaction per batch into the
  contract's ``events`` table (created if missing), which ``SqlSource`` reads.

:func:`open_event_log` picks one from ``SHOPREC_EVENT_LOG``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from features.errors import ShoprecError, UserError, first_line
from features.schema import TABLES
from serving.live_events import EVENT_COLUMNS, LiveEvent
from serving.settings import positive_number

logger = logging.getLogger("shoprec.serving.event_log")

EVENT_LOG_ENV = "SHOPREC_EVENT_LOG"
SEGMENT_BYTES_ENV = "SHOPREC_EVENT_LOG_SEGMENT_BYTES"
SEGMENT_SECONDS_ENV = "SHOPREC_EVENT_LOG_SEGMENT_SECONDS"
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
DEFAULT_SEGMENT_SECONDS = 3600.0
STALE_TEMP_SECONDS = 3600.0
WAL_DIR = "wal"
EVENTS_DIR = "events"
"""The table folder FolderSource reads: ``<folder>/events/part-*.parquet``."""

EVENTS_SCHEMA = pa.schema([(c.name, pa.timestamp("us", tz="UTC") if c.kind == "timestamp" else pa.string())
                           for c in TABLES["events"].columns])
"""The log's Parquet parts: the contract's ``events`` columns, times as UTC microseconds, the rest text."""


class EventLogError(ShoprecError, RuntimeError):
    """The log cannot be opened or written; the message is one line."""


class EventLog(Protocol):
    """A durable, append-only record of live events."""

    description: str

    def append(self, events: Sequence[LiveEvent]) -> None:
        """Record a batch; return only once it is durable. Raises :class:`EventLogError`."""

    def compact(self) -> int:
        """Make everything appended so far readable by training now; returns the events compacted."""

    def close(self) -> None:
        """Flush and compact what this process wrote; the log cannot be appended to afterwards."""


def _encode_batch(events: Sequence[LiveEvent]) -> bytes:
    return "".join(json.dumps(e.to_dict(), separators=(",", ":")) + "\n" for e in events).encode()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def pid_alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie (a killed child its parent has not reaped yet)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2] != "Z"
    except (OSError, ValueError, IndexError):
        return True


class _Segment:
    """The active write-ahead segment of one :class:`FileEventLog`."""

    def __init__(self, wal_dir: Path) -> None:
        self.date = datetime.now(UTC).strftime("%Y-%m-%d")
        self.uid = uuid.uuid4().hex
        self.path = wal_dir / f"{self.date}-{os.getpid()}-{self.uid}.jsonl"
        # Created under a name no reader looks at, locked, then renamed: a segment is never
        # visible unlocked while its writer lives.
        tmp = wal_dir / f".{self.path.name}.new"
        self.fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(tmp, self.path)
            _fsync_dir(wal_dir)  # the name is durable before the first acknowledged batch
        except BaseException:
            os.close(self.fd)
            tmp.unlink(missing_ok=True)
            raise
        self.opened_at = time.monotonic()
        self.bytes = 0
        self.written = 0  # batches written (sequence numbers)
        self.synced = 0   # batches known durable
        self.sync_lock = threading.Lock()
        self.closed = False

    def sync(self, upto: int) -> None:
        """Make batches ``<= upto`` durable; one fsync covers every batch written before it."""
        with self.sync_lock:
            if self.synced >= upto:
                return
            if self.closed:  # closed by a failed roll: never fsync a number that may name another file now
                raise OSError(f"segment {self.path.name} was closed before the batch was durable")
            target = self.written  # every batch numbered <= target has been written
            os.fsync(self.fd)
            self.synced = target

    def close(self) -> None:
        """fsync what is left and close (which releases the lock)."""
        with self.sync_lock:
            if self.closed:
                return
            try:
                if self.synced < self.written:
                    os.fsync(self.fd)
                    self.synced = self.written
            finally:
                os.close(self.fd)
                self.closed = True


class FileEventLog:
    """Write-ahead JSON-lines segments per process, compacted into Parquet parts (module docstring)."""

    def __init__(self, folder: str | os.PathLike[str], *, segment_max_bytes: int = DEFAULT_SEGMENT_BYTES,
                 segment_max_seconds: float = DEFAULT_SEGMENT_SECONDS, background: bool = True,
                 recover: bool = True) -> None:
        if segment_max_bytes <= 0 or segment_max_seconds <= 0:
            raise UserError("segment_max_bytes and segment_max_seconds must be > 0")
        self.folder = Path(folder)
        self.wal_dir = self.folder / WAL_DIR
        self.events_dir = self.folder / EVENTS_DIR
        self.segment_max_bytes = int(segment_max_bytes)
        self.segment_max_seconds = float(segment_max_seconds)
        self.description = f"files {self.folder}"
        try:
            self.wal_dir.mkdir(parents=True, exist_ok=True)
            self.events_dir.mkdir(parents=True, exist_ok=True)
            probe = self.wal_dir / f".probe-{os.getpid()}-{uuid.uuid4().hex}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise EventLogError(f"{self.folder}: cannot write the event log ({EVENT_LOG_ENV}): "
                                f"{error.strerror or error}") from None
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._segment: _Segment | None = None
        self._compact_lock = threading.Lock()  # the background thread and compact() take turns
        self._closed = False
        self._remove_stale_temp_files()
        if recover:
            self.recover()
        self._queue: queue.Queue[Path | None] | None = None
        self._thread: threading.Thread | None = None
        if background:
            self._queue = queue.Queue()
            self._thread = threading.Thread(target=self._background, name="shoprec-event-log", daemon=True)
            self._thread.start()

    # -- writing ------------------------------------------------------------------------

    def append(self, events: Sequence[LiveEvent]) -> None:
        if not events:
            return
        if os.getpid() != self._pid:
            raise EventLogError(f"{self.folder}: event log opened in process {self._pid} used in forked process "
                                f"{os.getpid()}; open it in the process that writes")
        data = _encode_batch(events)
        rolled = None
        with self._lock:
            if self._closed:
                raise EventLogError(f"{self.folder}: event log is closed")
            segment = self._segment
            if segment is not None and (segment.bytes >= self.segment_max_bytes or
                                        time.monotonic() - segment.opened_at >= self.segment_max_seconds):
                rolled = self._roll_locked()
                segment = None
            try:
                if segment is None:
                    segment = self._segment = _Segment(self.wal_dir)
                _write_all(segment.fd, data)
            except OSError as error:
                self._queue_broken(self._roll_locked())  # nothing may follow a torn line
                raise EventLogError(f"{self.folder}: cannot write the event log: {error.strerror or error}") from None
            segment.bytes += len(data)
            segment.written += 1
            sequence = segment.written
        try:
            segment.sync(sequence)
        except OSError as error:
            with self._lock:
                if self._segment is segment:
                    self._queue_broken(self._roll_locked())
            raise EventLogError(f"{self.folder}: cannot make events durable: {error.strerror or error}") from None
        if rolled is not None:
            self._compact_later(rolled)

    def _roll_locked(self) -> Path | None:
        """Close the active segment (caller holds ``_lock``); its path if it holds events."""
        segment, self._segment = self._segment, None
        if segment is None:
            return None
        try:
            segment.close()
        except OSError as error:
            logger.warning("event log: closing %s: %s", segment.path, error)
        if segment.bytes == 0:
            segment.path.unlink(missing_ok=True)
            return None
        return segment.path

    def _queue_broken(self, path: Path | None) -> None:
        """A segment closed after a failed write: compacted by the background thread, else by the next compact."""
        if path is not None and self._queue is not None:
            self._queue.put(path)

    def roll(self) -> Path | None:
        """Close the active segment now (the next append opens a new one); its path if it held events."""
        with self._lock:
            return self._roll_locked()

    def _compact_later(self, path: Path) -> None:
        if self._queue is not None:
            self._queue.put(path)
            return
        try:
            self._compact_segment(path)
        except EventLogError as error:
            logger.warning("event log: %s (the segment is kept and retried on the next compact)", error)

    def _background(self) -> None:
        """Compact rolled segments off the request path; roll a segment that is too old."""
        assert self._queue is not None
        wait = min(max(self.segment_max_seconds / 4, 0.05), 60.0)
        while True:
            try:
                path = self._queue.get(timeout=wait)
            except queue.Empty:
                with self._lock:
                    segment = self._segment
                    old = segment is not None and time.monotonic() - segment.opened_at >= self.segment_max_seconds
                    path = self._roll_locked() if old else None
                if path is None:
                    continue
            if path is None:  # the close() sentinel
                return
            try:
                self._compact_segment(path)
            except EventLogError as error:
                logger.warning("event log: %s (the segment is kept and retried on the next compact)", error)
            except Exception:  # never let the thread die silently
                logger.exception("event log: compacting %s", path)

    # -- compaction ---------------------------------------------------------------------

    def compact(self) -> int:
        """Roll the active segment and compact every segment no live writer holds; events compacted.

        That is this log's segments and those of dead processes (their lock is free); a live
        process's active segment is locked and skipped. Raises :class:`EventLogError` for the
        first segment that could not be compacted (after trying the others); it stays in place.
        """
        self.roll()
        return self._compact_all(raise_errors=True)

    def recover(self) -> int:
        """Compact segments left by dead processes (run at open); events recovered. Errors are logged."""
        return self._compact_all(raise_errors=False)

    def _compact_all(self, *, raise_errors: bool) -> int:
        total = 0
        first_error: EventLogError | None = None
        for path in sorted(self.wal_dir.glob("*.jsonl")):
            try:
                total += self._compact_segment(path) or 0
            except EventLogError as error:
                if raise_errors and first_error is None:
                    first_error = error
                logger.warning("event log: %s (the segment is kept)", error)
        if first_error is not None:
            raise first_error
        return total

    def _compact_segment(self, path: Path) -> int | None:
        """Segment -> Parquet part -> segment deleted, holding the segment's lock; None if someone else has it."""
        with self._compact_lock:
            return self._compact_segment_locked(path)

    def _compact_segment_locked(self, path: Path) -> int | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return None  # its writer is alive, or another process is compacting it
            try:
                if os.stat(path).st_ino != os.fstat(fd).st_ino:
                    return None  # compacted and replaced meanwhile
            except FileNotFoundError:
                return None  # compacted by another process meanwhile
            with os.fdopen(os.dup(fd), "rb") as f:
                data = f.read()
            table = _parse_segment(data, path)
            if table.num_rows:
                self._write_part(table, path)
            path.unlink()
            _fsync_dir(self.wal_dir)
            return table.num_rows
        except OSError as error:
            raise EventLogError(f"{path}: cannot compact: {error.strerror or error}") from None
        finally:
            os.close(fd)

    def _write_part(self, table: pa.Table, segment: Path) -> Path:
        date, _, uid = segment.stem.rsplit("-", 2)
        part = self.events_dir / f"part-{date}-{uid}.parquet"
        tmp = self.events_dir / f".{part.name}.{os.getpid()}.tmp"
        try:
            with open(tmp, "wb") as f:
                pq.write_table(table, f, compression="zstd")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, part)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(self.events_dir)
        return part

    def _remove_stale_temp_files(self) -> None:
        """Temp files of crashed processes: half-written parts and segments that never got their name.

        Readers skip them anyway (hidden names); they are removed when their pid is dead or,
        as pids are reused, when they are older than :data:`STALE_TEMP_SECONDS`.
        """
        for tmp in [*self.events_dir.glob(".part-*.tmp"), *self.wal_dir.glob(".*.jsonl.new")]:
            try:
                pid = int(tmp.name.rsplit(".", 2)[-2]) if tmp.suffix == ".tmp" else _segment_pid(Path(tmp.name[1:-4]))
                stale = not pid_alive(pid) or time.time() - tmp.stat().st_mtime > STALE_TEMP_SECONDS
            except (ValueError, IndexError, OSError):
                continue
            if stale:
                tmp.unlink(missing_ok=True)

    # -- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._roll_locked()
        if self._thread is not None and self._queue is not None:
            self._queue.put(None)
            self._thread.join()
        try:
            self._compact_all(raise_errors=False)
        except Exception:  # closing must not fail a shutdown; what is left is recovered on the next open
            logger.exception("event log: compacting at close")

    def __enter__(self) -> FileEventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _segment_pid(path: Path) -> int:
    try:
        return int(path.stem.rsplit("-", 2)[1])
    except (ValueError, IndexError):
        return -1


def _parse_segment(data: bytes, path: Path) -> pa.Table:
    """JSON lines -> an Arrow table of the contract's columns. A torn last line (a batch whose
    write never finished, so never acknowledged) is dropped; any other bad line is an error."""
    lines = data.split(b"\n")
    if lines[-1]:
        logger.warning("event log: %s ends in an incomplete line (an unacknowledged batch); dropped", path)
    lines = lines[:-1]
    columns: dict[str, list] = {name: [] for name in EVENT_COLUMNS}
    for number, line in enumerate(lines, start=1):
        try:
            row = json.loads(line)
            for name in EVENT_COLUMNS:
                columns[name].append(row[name])
        except (ValueError, KeyError, TypeError) as error:
            raise EventLogError(f"{path} line {number}: not an event ({type(error).__name__}: {error})") from None
    try:  # the JSON lines hold text; the schema casts times
        arrays = [pa.array(columns[f.name], pa.string()).cast(f.type) for f in EVENTS_SCHEMA]
    except pa.ArrowInvalid as error:
        raise EventLogError(f"{path}: a ts is not an ISO 8601 timestamp ({error})") from None
    return pa.Table.from_arrays(arrays, schema=EVENTS_SCHEMA)


class SqlEventLog:
    """One INSERT transaction per batch into the contract's ``events`` table (created if missing)."""

    def __init__(self, url: str, *, table: str = "events") -> None:
        from features.sources import safe_url

        self.description = safe_url(url)
        try:
            self.engine = sa.create_engine(url, pool_pre_ping=True)
            self._table = self._ensure_table(table)
        except (sa.exc.SQLAlchemyError, ImportError) as error:
            raise EventLogError(f"{self.description}: cannot open the event log database ({EVENT_LOG_ENV}): "
                                f"{first_line(error)}") from None
        self._columns = [c.name for c in self._table.columns if c.name in EVENT_COLUMNS]
        missing = [c for c in EVENT_COLUMNS if c not in self._columns]
        if missing:
            raise EventLogError(f"{self.description}: table '{table}' lacks column{'s' if len(missing) > 1 else ''} "
                                f"{', '.join(missing)}; add {'them' if len(missing) > 1 else 'it'} or drop the table")
        ts_type = self._table.columns["ts"].type
        # A typed column gets datetimes (naive UTC where it stores no zone); a text column ISO text.
        self._ts_kind = ("aware" if isinstance(ts_type, sa.DateTime) and ts_type.timezone else
                         "naive" if isinstance(ts_type, (sa.DateTime, sa.Date)) else "text")

    def _ensure_table(self, name: str) -> sa.Table:
        with self.engine.connect() as conn:
            if not sa.inspect(conn).has_table(name):
                metadata = sa.MetaData()
                sa.Table(name, metadata,
                         sa.Column("session_id", sa.Text, nullable=False),
                         sa.Column("event_type", sa.Text, nullable=False),
                         sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
                         sa.Column("customer_id", sa.Text, nullable=True),
                         sa.Column("item_id", sa.Text, nullable=True))
                try:
                    metadata.create_all(conn, checkfirst=True)
                    conn.commit()
                except sa.exc.SQLAlchemyError:  # another worker created it first
                    conn.rollback()
                    if not sa.inspect(conn).has_table(name):
                        raise
        with self.engine.connect() as conn:
            return sa.Table(name, sa.MetaData(), autoload_with=conn)

    def _row(self, event: LiveEvent) -> dict:
        ts: object = event.ts
        if self._ts_kind == "naive":
            ts = event.ts.replace(tzinfo=None)
        elif self._ts_kind == "text":
            ts = event.to_dict()["ts"]
        return {"session_id": event.session_id, "event_type": event.event_type, "ts": ts,
                "customer_id": event.customer_id, "item_id": event.item_id}

    def append(self, events: Sequence[LiveEvent]) -> None:
        if not events:
            return
        rows = [self._row(e) for e in events]
        try:
            with self.engine.begin() as conn:
                conn.execute(self._table.insert(), rows)
        except sa.exc.SQLAlchemyError as error:
            raise EventLogError(f"{self.description}: cannot write events: {first_line(error)}") from None

    def compact(self) -> int:
        return 0  # rows are readable as soon as their transaction commits

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> SqlEventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def default_event_log_location() -> Path:
    from training.tracking import shoprec_home

    return shoprec_home() / "event-log"


def open_event_log(env: Mapping[str, str] | None = None) -> EventLog:
    """``SHOPREC_EVENT_LOG``: a folder (default ``$SHOPREC_HOME/event-log``) or a SQLAlchemy URL.

    For a folder, ``SHOPREC_EVENT_LOG_SEGMENT_BYTES`` (default 64 MiB) and
    ``SHOPREC_EVENT_LOG_SEGMENT_SECONDS`` (default 3600) bound a segment before it is
    compacted into a Parquet part. Raises :class:`EventLogError` (one line) when the log
    cannot be opened.
    """
    from features.sources import is_database_url, safe_url

    env = os.environ if env is None else env
    location = env.get(EVENT_LOG_ENV, "").strip()
    if location and is_database_url(location):
        return SqlEventLog(location)
    if "://" in location:
        raise EventLogError(f"{EVENT_LOG_ENV}={safe_url(location)}: not an installed SQLAlchemy dialect; "
                            f"give a folder or a database URL")
    folder = Path(location).expanduser() if location else default_event_log_location()
    return FileEventLog(folder,
                        segment_max_bytes=int(positive_number(env, SEGMENT_BYTES_ENV, DEFAULT_SEGMENT_BYTES, EventLogError)),
                        segment_max_seconds=positive_number(env, SEGMENT_SECONDS_ENV, DEFAULT_SEGMENT_SECONDS, EventLogError))
