"""The folder event log: per-process write-ahead JSON-lines segments, compacted into Parquet parts
of the contract's ``events`` table (see the package docstring for the guarantees)."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from features.errors import UserError
from serving.event_log.common import (
    DEFAULT_SEGMENT_BYTES,
    DEFAULT_SEGMENT_SECONDS,
    EVENT_LOG_ENV,
    EVENTS_TABLE,
    STALE_TEMP_SECONDS,
    EventLogError,
    LogTable,
    Record,
)
from serving.event_log.reading import parse_segment

logger = logging.getLogger("shoprec.serving.event_log")


def _encode_batch(records: Sequence[Record]) -> bytes:
    return "".join(json.dumps(r.to_dict(), separators=(",", ":")) + "\n" for r in records).encode()


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
    """Write-ahead JSON-lines segments per process, compacted into Parquet parts (module docstring).

    ``table`` says what it holds: the live events by default (``<folder>/events/``), or another
    :class:`LogTable` such as the experiments' exposures, with the same guarantees.

    ``fsync=False`` returns from :meth:`append` once the batch is written to the operating system:
    it survives the process being killed, not the machine crashing (the exposure log's cheaper
    setting, serving/exposures.py); the segment is still fsynced when it is rolled or closed."""

    def __init__(self, folder: str | os.PathLike[str], *, segment_max_bytes: int = DEFAULT_SEGMENT_BYTES,
                 segment_max_seconds: float = DEFAULT_SEGMENT_SECONDS, background: bool = True,
                 recover: bool = True, table: LogTable = EVENTS_TABLE, fsync: bool = True) -> None:
        if segment_max_bytes <= 0 or segment_max_seconds <= 0:
            raise UserError("segment_max_bytes and segment_max_seconds must be > 0")
        self.folder = Path(folder)
        self.wal_dir = self.folder / table.wal
        self.table = table
        self.fsync = fsync
        self.parts_dir = self.folder / table.name
        self.segment_max_bytes = int(segment_max_bytes)
        self.segment_max_seconds = float(segment_max_seconds)
        self.description = f"files {self.folder}"
        try:
            self.wal_dir.mkdir(parents=True, exist_ok=True)
            self.parts_dir.mkdir(parents=True, exist_ok=True)
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

    def append(self, events: Sequence[Record]) -> None:
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
        if self.fsync:
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
            table = parse_segment(data, path, self.table)
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
        part = self.parts_dir / f"part-{date}-{uid}.parquet"
        tmp = self.parts_dir / f".{part.name}.{os.getpid()}.tmp"
        try:
            with open(tmp, "wb") as f:
                pq.write_table(table, f, compression="zstd")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, part)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(self.parts_dir)
        return part

    def _remove_stale_temp_files(self) -> None:
        """Temp files of crashed processes: half-written parts and segments that never got their name.

        Readers skip them anyway (hidden names); they are removed when their pid is dead or,
        as pids are reused, when they are older than :data:`STALE_TEMP_SECONDS`.
        """
        for tmp in [*self.parts_dir.glob(".part-*.tmp"), *self.wal_dir.glob(".*.jsonl.new")]:
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
