"""The exposure log: records as typed Parquet rows, many requests sharing one flush, a failure told to
every waiter, nothing acknowledged lost when the process is killed (at either durability), and the
outcome log beside it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from serving.event_log import EventLogError, FileEventLog
from serving.event_log.reading import read_log
from serving.exposures import (
    DURABILITY_ENV,
    EXPOSURE_LOG_ENV,
    EXPOSURES_TABLE,
    OUTCOMES_TABLE,
    Exposure,
    ExposureWriter,
    Outcome,
    open_exposure_log,
    open_outcome_log,
)
from serving.live_events import LiveEvent

REPO = Path(__file__).resolve().parents[2]


def _exposure(number: int) -> Exposure:
    return Exposure(f"req-{number}", "ab", "champion" if number % 2 else "challenger", "shoprec/v1",
                    f"c{number}", "cross_sell", [f"i{number}", f"i{number + 1}"], f"c{number}", None)


def _rows(folder: Path) -> list[dict]:
    parts = sorted((folder / "exposures").glob("part-*.parquet"))
    return [row for part in parts for row in pq.read_table(part).to_pylist()]


class CountingLog(FileEventLog):
    """The real log, counting the batches it is handed (each one write and one fsync)."""

    batches = 0

    def append(self, events) -> None:  # noqa: ANN001
        type(self).batches += 1
        super().append(events)


def test_concurrent_requests_share_flushes_and_every_exposure_lands(tmp_path: Path) -> None:
    log = CountingLog(tmp_path, table=EXPOSURES_TABLE)
    writer = ExposureWriter(log)

    async def requests() -> None:
        await asyncio.gather(*(writer.record([_exposure(n)]) for n in range(200)))

    asyncio.run(requests())
    threads = [threading.Thread(target=writer.record_now, args=([_exposure(n)],)) for n in range(200, 250)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.close()
    rows = _rows(tmp_path)
    assert sorted(r["request_id"] for r in rows) == sorted(f"req-{n}" for n in range(250))
    first = next(r for r in rows if r["request_id"] == "req-7")
    assert first["items"] == ["i7", "i8"] and first["variant"] == "champion" and first["session_id"] is None
    assert first["ts"].tzinfo is not None
    assert CountingLog.batches < 250  # requests queued while a batch was written joined the next one


class SlowLog(FileEventLog):
    """The real log, holding each batch for a moment, as a stalled disk would."""

    def append(self, events) -> None:  # noqa: ANN001
        time.sleep(0.2)
        super().append(events)


def test_a_cancelled_request_neither_loses_its_exposure_nor_stops_the_writer(tmp_path: Path) -> None:
    """A request cancelled while its batch is written (a client that left, the server's timeout)
    must not end the writer thread: every later request would wait forever."""
    writer = ExposureWriter(SlowLog(tmp_path, table=EXPOSURES_TABLE))

    async def requests() -> None:
        first = asyncio.ensure_future(writer.record([_exposure(1)]))
        await asyncio.sleep(0.05)  # the writer holds the first batch
        cancelled = asyncio.ensure_future(writer.record([_exposure(2)]))
        await asyncio.sleep(0.01)
        cancelled.cancel()
        await first
        await asyncio.wait_for(writer.record([_exposure(3)]), timeout=5)

    asyncio.run(requests())
    writer.close()
    assert sorted(r["request_id"] for r in _rows(tmp_path)) == ["req-1", "req-2", "req-3"]


@pytest.mark.parametrize("fsync", [True, False])
def test_a_failed_write_reaches_every_waiter(tmp_path: Path, fsync: bool) -> None:
    log = FileEventLog(tmp_path, table=EXPOSURES_TABLE, fsync=fsync)
    writer = ExposureWriter(log)
    log.close()  # the log refuses appends from now on, as a broken disk would
    with pytest.raises(EventLogError, match="closed"):
        writer.record_now([_exposure(1)])

    async def one() -> None:
        await writer.record([_exposure(2)])

    with pytest.raises(EventLogError, match="closed"):
        asyncio.run(one())
    writer.close()
    with pytest.raises(EventLogError, match="closed"):
        writer.record_now([_exposure(3)])


def test_the_location_comes_from_the_environment(tmp_path: Path) -> None:
    log = open_exposure_log({EXPOSURE_LOG_ENV: str(tmp_path / "exp")})
    try:
        assert log.parts_dir == tmp_path / "exp" / "exposures"
    finally:
        log.close()
    with pytest.raises(EventLogError, match="folder"):
        open_exposure_log({EXPOSURE_LOG_ENV: "postgresql://db/shop"})
    with pytest.raises(EventLogError, match=f"{DURABILITY_ENV}='disk': expected one of write, fsync"):
        open_exposure_log({EXPOSURE_LOG_ENV: str(tmp_path / "exp"), DURABILITY_ENV: "disk"})
    for setting, fsync in (("", False), ("FSYNC", True), ("write", False)):
        log = open_exposure_log({EXPOSURE_LOG_ENV: str(tmp_path / "exp"), DURABILITY_ENV: setting})
        assert log.fsync is fsync
        log.close()


def test_outcomes_and_events_live_beside_the_exposures_in_their_own_segments(tmp_path: Path) -> None:
    env = {EXPOSURE_LOG_ENV: str(tmp_path)}
    exposures, outcomes = open_exposure_log(env), open_outcome_log(env)
    assert outcomes.fsync  # whatever the exposures' durability: /events pays for an fsync anyway
    exposures.append([_exposure(1)])
    view = LiveEvent("s1", "view", datetime(2026, 12, 1, 10, tzinfo=UTC), None, "i1")
    outcomes.append([Outcome("req-1", view)])
    assert read_log(tmp_path, OUTCOMES_TABLE).to_pylist() == [
        {"ts": view.ts, "request_id": "req-1", "event_type": "view", "session_id": "s1", "customer_id": None,
         "item_id": "i1"}]
    assert read_log(tmp_path, EXPOSURES_TABLE).column("request_id").to_pylist() == ["req-1"]
    exposures.close()
    outcomes.close()
    assert (tmp_path / "outcomes").is_dir() and (tmp_path / "wal-outcomes").is_dir()
    with FileEventLog(tmp_path) as events:  # the live events may share the folder: each table has its own segments
        events.append([view])
    assert len(read_log(tmp_path, OUTCOMES_TABLE)) == 1 and len(read_log(tmp_path, EXPOSURES_TABLE)) == 1
    assert len(read_log(tmp_path, OUTCOMES_TABLE)) == 1  # compacted into its own parts, read once


@pytest.mark.parametrize("durability", ["fsync", "write"])
def test_nothing_acknowledged_is_lost_when_the_process_is_killed(tmp_path: Path, durability: str) -> None:
    """A process records exposures, says so, and is SIGKILLed (no shutdown, no compaction): the
    next process to open the log finds every one of them, at either durability (with ``write``
    the operating system holds what the process wrote); only a machine crash separates the two."""
    code = f"""
import sys, time
from serving.exposures import Exposure, ExposureWriter, open_exposure_log
from tests.serving.test_exposures import _exposure
writer = ExposureWriter(open_exposure_log({{"{EXPOSURE_LOG_ENV}": {str(tmp_path)!r},
                                           "{DURABILITY_ENV}": {durability!r}}}))
for n in range(30):
    writer.record_now([_exposure(n)])
print("answered", flush=True)
time.sleep(60)
"""
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "answered"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not _rows(tmp_path)  # nothing compacted yet: it is all in the write-ahead segment
    FileEventLog(tmp_path, table=EXPOSURES_TABLE).close()  # opening recovers a dead writer's segment
    assert sorted(r["request_id"] for r in _rows(tmp_path)) == sorted(f"req-{n}" for n in range(30))
