"""Exposures: what each visitor in an experiment was shown, logged before the answer leaves.

An :class:`Exposure` is one answer of a recommendation endpoint to a unit in an experiment:
which variant and model answered, the items in rank order, and the ``request_id`` the client
got back (a click or purchase that carries it is attributed to exactly this answer).

They go to their own folder log (``SHOPREC_EXPOSURE_LOG``, default
``$SHOPREC_HOME/exposure-log``): the same write-ahead segments and Parquet parts as the live
events (:class:`serving.event_log.FileEventLog`), in ``exposures/part-*.parquet``. An answer is
sent only once its exposure is durable, so a server killed after answering has lost nothing
it answered. ``SHOPREC_EXPOSURE_DURABILITY`` says how far: ``write`` (the default) hands the
exposure to the operating system before the answer, so a killed or crashed server loses
nothing it answered (the kernel holds what the process wrote); ``fsync`` puts it on disk first,
the bar of ``/events``, so a machine that loses power loses nothing answered either. ``fsync``
costs 14-25% of ``/cross_sell``'s throughput on a 2-core machine, ``write`` about 3%
(docs/benchmarks.md): a lost second of exposures in a power cut does not move an experiment's
result, a checkout page that waits does.

An :class:`Outcome` is a live event that names the answer it came from (``request_id`` on
``POST /events``: the view a click on a recommendation leads to, a cart, a purchase). The
service writes them to the same folder, ``outcomes/part-*.parquet`` (segments in
``wal-outcomes/``), next to the live event log that has every event.

The page endpoints run on the event loop, where an ``fsync`` per request would hold every
other request. :class:`ExposureWriter` keeps the writing in one thread: a request queues its
exposure and awaits it; the thread writes whatever has queued meanwhile as one batch with one
``fsync`` (group commit), so under load many requests share each flush and the loop keeps
serving while the disk works. At ``write`` durability there is nothing to wait for, and the
request writes its exposure itself (microseconds, less than the hand-off to a thread and back).
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from serving.event_log.common import (
    EventLogError,
    LogTable,
)
from serving.event_log.files import FileEventLog
from serving.live_events import LiveEvent, format_ts
from serving.settings import choice

EXPOSURE_LOG_ENV = "SHOPREC_EXPOSURE_LOG"
DURABILITY_ENV = "SHOPREC_EXPOSURE_DURABILITY"
DURABILITY = ("write", "fsync")
"""Handed to the operating system before the answer (the default), or on disk (module docstring)."""
EXPOSURES_TABLE = LogTable("exposures", pa.schema([
    ("ts", pa.timestamp("us", tz="UTC")),
    ("request_id", pa.string()),
    ("experiment", pa.string()),
    ("variant", pa.string()),
    ("model_version", pa.string()),
    ("unit", pa.string()),
    ("customer_id", pa.string()),
    ("session_id", pa.string()),
    ("endpoint", pa.string()),
    ("items", pa.list_(pa.string())),
]), "an exposure", wal="wal-exposures")
"""One row per answer; ``items`` in the order shown (rank 1 first); ``unit`` the id it was assigned by."""
OUTCOMES_TABLE = LogTable("outcomes", pa.schema([
    ("ts", pa.timestamp("us", tz="UTC")),
    ("request_id", pa.string()),
    ("event_type", pa.string()),
    ("session_id", pa.string()),
    ("customer_id", pa.string()),
    ("item_id", pa.string()),
]), "an outcome", wal="wal-outcomes")
"""One row per live event that carried the ``request_id`` of an answer, as the client sent its ids."""


@dataclass(frozen=True, slots=True)
class Exposure:
    request_id: str
    experiment: str
    variant: str
    model_version: str
    unit: str
    endpoint: str
    items: Sequence[str]
    customer_id: str | None = None
    session_id: str | None = None
    ts: datetime | None = None
    """When it was answered (default: when it is logged)."""

    def to_dict(self) -> dict[str, Any]:
        return {"ts": format_ts(self.ts or datetime.now(UTC)), "request_id": self.request_id,
                "experiment": self.experiment, "variant": self.variant, "model_version": self.model_version,
                "unit": self.unit, "customer_id": self.customer_id, "session_id": self.session_id,
                "endpoint": self.endpoint, "items": list(self.items)}


@dataclass(frozen=True, slots=True)
class Outcome:
    """A live event and the ``request_id`` of the answer it came from: one row of :data:`OUTCOMES_TABLE`."""

    request_id: str
    event: LiveEvent

    def to_dict(self) -> dict[str, Any]:
        return {"request_id": self.request_id, **self.event.to_dict()}


def exposure_log_location(env: Mapping[str, str] | None = None) -> Path:
    """The folder ``SHOPREC_EXPOSURE_LOG`` names, default ``$SHOPREC_HOME/exposure-log``."""
    from training.tracking import shoprec_home

    env = os.environ if env is None else env
    location = env.get(EXPOSURE_LOG_ENV, "").strip()
    if "://" in location:
        raise EventLogError(f"{EXPOSURE_LOG_ENV}={location.split('://')[0]}://...: exposures are kept in a "
                            f"folder; give a path")
    return Path(location).expanduser() if location else shoprec_home() / "exposure-log"


def open_exposure_log(env: Mapping[str, str] | None = None) -> FileEventLog:
    """The exposure log at :func:`exposure_log_location`, with the log's default segment bounds and the
    durability of ``SHOPREC_EXPOSURE_DURABILITY``. Raises :class:`EventLogError` (one line) when it
    cannot be written or the setting is not one of :data:`DURABILITY`."""
    env = os.environ if env is None else env
    durability = choice(env, DURABILITY_ENV, DURABILITY, EventLogError)
    return FileEventLog(exposure_log_location(env), table=EXPOSURES_TABLE, fsync=durability == "fsync")


def open_outcome_log(env: Mapping[str, str] | None = None) -> FileEventLog:
    """The outcome log beside the exposures, always fsynced: ``POST /events`` pays for an ``fsync``
    of its events anyway, and an outcome is the link of a purchase to the answer it came from."""
    return FileEventLog(exposure_log_location(env), table=OUTCOMES_TABLE)


class ExposureWriter:
    """One thread that writes queued exposures in batches, one ``fsync`` each (module docstring);
    at ``write`` durability no thread: each caller writes its own."""

    def __init__(self, log: FileEventLog) -> None:
        self.log = log
        self.description = log.description
        self._queue: queue.SimpleQueue[tuple[Sequence[Exposure], Future[None]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        if log.fsync:
            self._thread = threading.Thread(target=self._run, name="shoprec-exposures", daemon=True)
            self._thread.start()

    def _submit(self, exposures: Sequence[Exposure]) -> Future[None]:
        """Queue ``exposures``; the future is done once they are durable (or holds the EventLogError)."""
        done: Future[None] = Future()
        if self._closed:
            done.set_exception(EventLogError(f"{self.description}: the exposure log is closed"))
        else:
            self._queue.put((exposures, done))
        return done

    async def record(self, exposures: Sequence[Exposure]) -> None:
        """Return once ``exposures`` are durable, without holding the event loop meanwhile."""
        if not self._written_here(exposures):
            await asyncio.wrap_future(self._submit(exposures))

    def record_now(self, exposures: Sequence[Exposure]) -> None:
        """:meth:`record` for a caller in a worker thread (the batch endpoint)."""
        if not self._written_here(exposures):
            self._submit(exposures).result()

    def _written_here(self, exposures: Sequence[Exposure]) -> bool:
        """At ``write`` durability, write in the caller and say so: there is no ``fsync`` to share,
        and handing the write to the thread and back costs more than the write itself."""
        if self.log.fsync:
            return False
        if self._closed:
            raise EventLogError(f"{self.description}: the exposure log is closed")
        self.log.append(exposures)
        return True

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            waiting = [first]
            while True:  # everything queued while the last batch was being written joins this one
                try:
                    following = self._queue.get_nowait()
                except queue.Empty:
                    break
                if following is None:
                    self._queue.put(None)  # stop after this batch
                    break
                waiting.append(following)
            # A request cancelled meanwhile (its client left, the server's timeout) has cancelled its
            # future: write its exposures all the same, but never set that future (it would raise
            # and end this thread); the others cannot be cancelled from now on.
            pending = [done for _, done in waiting if done.set_running_or_notify_cancel()]
            try:
                self.log.append([e for exposures, _ in waiting for e in exposures])
            except Exception as error:  # noqa: BLE001 - every waiter hears why; the thread keeps serving
                failure = error if isinstance(error, EventLogError) else EventLogError(f"exposure log: {error}")
                for done in pending:
                    done.set_exception(failure)
            else:
                for done in pending:
                    done.set_result(None)

    def close(self) -> None:
        """Write what is queued, stop the thread and close the log (compacting this process's segment)."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
        while True:  # a submit that raced the close: tell it, never leave it waiting
            try:
                left = self._queue.get_nowait()
            except queue.Empty:
                break
            if left is not None and left[1].set_running_or_notify_cancel():
                left[1].set_exception(EventLogError(f"{self.description}: the exposure log is closed"))
        self.log.close()
