"""What every event log shares: its settings' names, the Parquet schema of the ``events`` parts,
its one error, and the protocol the service writes through."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa

from features.errors import ShoprecError
from features.schema import TABLES
from serving.live_events import LiveEvent

EVENT_LOG_ENV = "SHOPREC_EVENT_LOG"
SEGMENT_BYTES_ENV = "SHOPREC_EVENT_LOG_SEGMENT_BYTES"
SEGMENT_SECONDS_ENV = "SHOPREC_EVENT_LOG_SEGMENT_SECONDS"
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
DEFAULT_SEGMENT_SECONDS = 3600.0
STALE_TEMP_SECONDS = 3600.0
WAL_DIR = "wal"

EVENTS_SCHEMA = pa.schema([(c.name, pa.timestamp("us", tz="UTC") if c.kind == "timestamp" else pa.string())
                           for c in TABLES["events"].columns])
"""The log's Parquet parts: the contract's ``events`` columns, times as UTC microseconds, the rest text."""


@dataclass(frozen=True)
class LogTable:
    """What a folder log holds: the name of the folder its Parquet parts go to, and their schema.

    Its records are appended as the JSON of their ``to_dict()`` (timestamps as ISO 8601 text,
    cast by the schema when a segment is compacted)."""

    name: str
    schema: pa.Schema
    row: str
    """What one row is, for an error message: "an event"."""
    wal: str = WAL_DIR
    """The folder of its write-ahead segments: two tables kept in one folder need one each."""


EVENTS_TABLE = LogTable("events", EVENTS_SCHEMA, "an event")
"""The live events: ``<folder>/events/part-*.parquet``, the table FolderSource reads for training."""


class Record(Protocol):
    """A row a log can hold: a JSON-able mapping of its table's columns."""

    def to_dict(self) -> dict[str, Any]: ...


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
