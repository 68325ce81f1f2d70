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

import os
from collections.abc import Mapping
from pathlib import Path

from serving.event_log.common import (
    DEFAULT_SEGMENT_BYTES,
    DEFAULT_SEGMENT_SECONDS,
    EVENT_LOG_ENV,
    EVENTS_SCHEMA,
    SEGMENT_BYTES_ENV,
    SEGMENT_SECONDS_ENV,
    EventLog,
    EventLogError,
)
from serving.event_log.files import FileEventLog
from serving.event_log.sql import SqlEventLog
from serving.live_events import EVENT_COLUMNS
from serving.settings import positive_number

__all__ = ["EVENTS_SCHEMA", "EVENT_COLUMNS", "EventLog", "EventLogError", "FileEventLog", "SqlEventLog",
           "open_event_log"]


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
