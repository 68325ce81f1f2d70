"""The durable event log: acknowledged events survive crashes and come back as the `events` table.

The file backend is read back through features.loading (a folder of Parquet parts) and the
SQL backend through SqlSource, on SQLite and on a real PostgreSQL, so a `shoprec train
--data <the same place>` reads exactly what was logged, with nothing quarantined.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from features.loading import load_shop
from features.sources import write_sql
from features.table_files import write_tables
from serving.event_log import files as event_log_module
from serving.event_log import EVENT_COLUMNS, EventLogError, FileEventLog, SqlEventLog, open_event_log
from serving.live_events import LiveEvent

REPO_ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2025, 1, 1, tzinfo=UTC)  # fixed: the child processes import it too
ITEMS = pd.DataFrame({"item_id": [f"i{n}" for n in range(20)], "category": ["c"] * 20, "price": [1.0] * 20})
ORDERS = pd.DataFrame({"order_id": ["o1"], "customer_id": ["c1"], "item_id": ["i1"], "quantity": [1],
                       "unit_price": [1.0], "ts": [T0]})


def batch(n: int, size: int = 50) -> list[LiveEvent]:
    """Batch ``n``: every event kind, anonymous and known customers, searches without items."""
    kinds = ("view", "cart", "remove_from_cart", "wishlist", "search", "purchase")
    events = []
    for i in range(size):
        kind = kinds[i % len(kinds)]
        events.append(LiveEvent(f"b{n}-s{i % 7}", kind, T0 + timedelta(seconds=n * size + i, microseconds=i),
                                f"c{i % 3}" if i % 4 else None, None if kind == "search" else f"i{i % 20}"))
    return events


def expected(batches: range | list[int]) -> pd.DataFrame:
    rows = [e.to_dict() for n in batches for e in batch(n)]
    frame = pd.DataFrame(rows, columns=list(EVENT_COLUMNS))
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True).dt.as_unit("us")
    return frame


def read_events(folder: Path) -> pd.DataFrame:
    """The events table as training loads it (items and orders next to the log); nothing quarantined."""
    write_tables({"items": ITEMS, "orders": ORDERS}, folder, "csv")
    shop = load_shop(folder)
    assert shop.report.tables["events"].rows_quarantined == 0
    return shop["events"]


def same_events(got: pd.DataFrame, want: pd.DataFrame) -> None:
    order = ["ts", "session_id", "event_type"]
    got = got.sort_values(order).reset_index(drop=True)
    want = want.sort_values(order).reset_index(drop=True)
    pd.testing.assert_frame_equal(got[list(EVENT_COLUMNS)], want, check_dtype=False)


def test_append_compact_and_train_reads_the_events_table(tmp_path: Path) -> None:
    with FileEventLog(tmp_path) as log:
        for n in range(4):
            log.append(batch(n))
        assert len(list((tmp_path / "wal").glob("*.jsonl"))) == 1
        assert log.compact() == 200
        log.append(batch(4))
        assert log.compact() == 50
    assert list((tmp_path / "wal").iterdir()) == []
    parts = sorted((tmp_path / "events").iterdir())
    assert len(parts) == 2 and all(p.name.startswith("part-") and p.suffix == ".parquet" for p in parts)
    schema = pq.read_schema(parts[0])
    assert tuple(schema.names) == EVENT_COLUMNS
    assert str(schema.field("ts").type) == "timestamp[us, tz=UTC]"
    same_events(read_events(tmp_path), expected(range(5)))


def test_segments_roll_by_size_and_age_and_all_get_compacted(tmp_path: Path) -> None:
    with FileEventLog(tmp_path, segment_max_bytes=8_000, background=False) as log:
        for n in range(6):
            log.append(batch(n))  # a batch is ~6 kB: every second append rolls
        assert len(list((tmp_path / "events").glob("part-*.parquet"))) >= 2
    with FileEventLog(tmp_path, segment_max_seconds=0.2) as log:  # the background thread rolls an idle segment
        log.append(batch(6))
        deadline = time.monotonic() + 10
        while list((tmp_path / "wal").glob("*.jsonl")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list((tmp_path / "wal").glob("*.jsonl")) == []
    same_events(read_events(tmp_path), expected(range(7)))


def test_one_fsync_per_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(event_log_module.os, "fsync", lambda fd: calls.append(fd) or real_fsync(fd))
    log = FileEventLog(tmp_path, background=False)
    log.append(batch(0))  # a new segment: its folder entry and its data
    calls.clear()
    for n in range(1, 4):
        log.append(batch(n))
    assert len(calls) == 3
    monkeypatch.undo()
    log.close()


def test_concurrent_appends_lose_nothing(tmp_path: Path) -> None:
    log = FileEventLog(tmp_path)
    errors: list[BaseException] = []

    def worker(w: int) -> None:
        try:
            for n in range(w * 10, w * 10 + 10):
                log.append(batch(n))
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log.close()
    assert errors == []
    same_events(read_events(tmp_path), expected(range(40)))


def test_another_log_on_the_same_folder_never_takes_an_active_segment(tmp_path: Path) -> None:
    """Two workers' logs on one folder (here in one process: the segment lock is per open file)."""
    with FileEventLog(tmp_path, background=False) as first:
        first.append(batch(0))
        with FileEventLog(tmp_path) as second:
            assert second.compact() == 0
            second.append(batch(1))
        assert len(list((tmp_path / "wal").glob("*.jsonl"))) == 1  # first's, still active
        first.append(batch(2))
    same_events(read_events(tmp_path), expected(range(3)))


CHILD = """
import sys, time
from serving.event_log import FileEventLog
from tests.serving.test_event_log import batch
log = FileEventLog(sys.argv[1])
n = 0
while True:
    log.append(batch(n))
    print(n, flush=True)  # acknowledged: durable
    n += 1
    time.sleep(0.005)
"""


def _child(script: str, folder: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen([sys.executable, "-c", script, str(folder)], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, text=True)


def test_a_killed_writer_loses_no_acknowledged_event(tmp_path: Path) -> None:
    child = _child(CHILD, tmp_path)
    try:
        acked = [int(child.stdout.readline()) for _ in range(5)]  # type: ignore[union-attr]
        # A live process's active segment is never touched by another process's open or compact.
        with FileEventLog(tmp_path) as other:
            assert other.compact() == 0
        assert len(list((tmp_path / "wal").glob(f"*-{child.pid}-*.jsonl"))) == 1
        acked += [int(child.stdout.readline()) for _ in range(10)]  # type: ignore[union-attr]
    finally:
        child.send_signal(signal.SIGKILL)
        rest, _ = child.communicate(timeout=30)
    acked += [int(line) for line in rest.split()]
    assert child.returncode == -signal.SIGKILL
    assert len(list((tmp_path / "wal").glob(f"*-{child.pid}-*.jsonl"))) == 1
    assert list((tmp_path / "events").glob("part-*")) == []

    with FileEventLog(tmp_path):  # opening recovers the dead writer's segment
        assert list((tmp_path / "wal").glob("*.jsonl")) == []
    events = read_events(tmp_path)
    logged = sorted({int(s.split("-")[0][1:]) for s in events["session_id"]})
    # Every acknowledged batch, each once; at most the one batch in flight besides.
    assert logged[: len(acked)] == acked and len(logged) <= len(acked) + 1
    same_events(events, expected(logged))


def test_a_failed_compaction_leaves_the_segment_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = FileEventLog(tmp_path, background=False)
    log.append(batch(0))
    real_write_table = pq.write_table

    def disk_full(table, where, **kwargs) -> None:  # noqa: ANN001
        where.write(b"PAR1 half a part")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(event_log_module.pq, "write_table", disk_full)
    with pytest.raises(EventLogError, match=r"\.jsonl: cannot compact: No space left on device"):
        log.compact()
    assert len(list((tmp_path / "wal").glob("*.jsonl"))) == 1
    assert list((tmp_path / "events").iterdir()) == []  # no part and no temp file
    monkeypatch.setattr(event_log_module.pq, "write_table", real_write_table)
    assert log.compact() == 50
    log.close()
    same_events(read_events(tmp_path), expected([0]))


CRASH_IN_COMPACTION = """
import os, signal, sys
import pyarrow.parquet as pq
from serving.event_log import files as event_log
from tests.serving.test_event_log import batch
log = event_log.FileEventLog(sys.argv[1], background=False)
for n in range(3):
    log.append(batch(n))
def crash(table, where, **kwargs):
    where.write(b"PAR1 half a part")
    where.flush()
    os.kill(os.getpid(), signal.SIGKILL)
event_log.pq.write_table = crash
log.compact()
"""


def test_a_crash_while_writing_a_part_leaves_the_segment_for_recovery(tmp_path: Path) -> None:
    child = _child(CRASH_IN_COMPACTION, tmp_path)
    child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL
    assert len(list((tmp_path / "wal").glob("*.jsonl"))) == 1
    assert [p.name.startswith(".part-") for p in (tmp_path / "events").iterdir()] == [True]
    FileEventLog(tmp_path).close()  # recovery: the half part is removed, the segment compacted
    assert [p.name[:5] for p in (tmp_path / "events").iterdir()] == ["part-"]
    same_events(read_events(tmp_path), expected(range(3)))


def test_a_torn_last_line_is_dropped_and_a_corrupt_one_is_reported(tmp_path: Path) -> None:
    with FileEventLog(tmp_path, background=False) as log:
        log.append(batch(0))
        segment = next((tmp_path / "wal").glob("*.jsonl"))
        with open(segment, "ab") as f:
            f.write(b'{"session_id":"torn","event_')  # a write cut short: never acknowledged
        assert log.compact() == 50
        log.append(batch(1))
        segment = next((tmp_path / "wal").glob("*.jsonl"))
        with open(segment, "ab") as f:
            f.write(b"garbage\n")
        log.append(batch(2))
        with pytest.raises(EventLogError, match=r"\.jsonl line 51: not an event"):
            log.compact()
        assert segment.exists()
        segment.unlink()  # an operator's decision, not the log's


def test_an_unwritable_folder_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(EventLogError, match=r"file/log: cannot write the event log \(SHOPREC_EVENT_LOG\)"):
        FileEventLog(tmp_path / "file" / "log")


def test_a_closed_log_refuses_appends(tmp_path: Path) -> None:
    log = FileEventLog(tmp_path)
    log.close()
    log.close()
    with pytest.raises(EventLogError, match="closed"):
        log.append(batch(0))


# -- SQL ------------------------------------------------------------------------------------

def _sql_round_trip(url: str) -> None:
    write_sql({"items": ITEMS, "orders": ORDERS}, url)
    with SqlEventLog(url) as log:
        log.append(batch(0))
        log.append(batch(1))
        assert log.compact() == 0
    with SqlEventLog(url) as log:  # the table exists now
        log.append(batch(2))
    shop = load_shop(url)
    assert shop.report.tables["events"].rows_quarantined == 0
    same_events(shop["events"], expected(range(3)))


def test_sql_log_on_sqlite(tmp_path: Path) -> None:
    _sql_round_trip(f"sqlite:///{tmp_path / 'shop.db'}")


@pytest.mark.postgres
def test_sql_log_on_postgres(postgres_url: str) -> None:
    _sql_round_trip(postgres_url)
    engine = sa.create_engine(postgres_url)
    with engine.connect() as conn:
        kind = conn.execute(sa.text("select data_type from information_schema.columns "
                                    "where table_name = 'events' and column_name = 'ts'")).scalar_one()
    engine.dispose()
    assert kind == "timestamp with time zone"


@pytest.mark.postgres
def test_sql_log_appends_to_an_existing_events_table(postgres_url: str) -> None:
    """A shop already in the database (events written by `shoprec sample`/pandas, ts as text)."""
    earlier = expected([0]).assign(ts=lambda f: f["ts"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    write_sql({"items": ITEMS, "orders": ORDERS, "events": earlier}, postgres_url)
    with SqlEventLog(postgres_url) as log:
        log.append(batch(1))
    shop = load_shop(postgres_url)
    assert shop.report.tables["events"].rows_quarantined == 0
    same_events(shop["events"], expected(range(2)))


def test_unreachable_database_is_a_one_line_error() -> None:
    with pytest.raises(EventLogError) as error:
        SqlEventLog("postgresql+psycopg://nobody:s3cr3t@127.0.0.1:1/none")
    assert "cannot open the event log database (SHOPREC_EVENT_LOG)" in str(error.value)
    assert "s3cr3t" not in str(error.value) and "\n" not in str(error.value)


# -- choosing from the environment -----------------------------------------------------------

def test_open_event_log_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOPREC_HOME", str(tmp_path / "home"))
    log = open_event_log({})
    assert isinstance(log, FileEventLog) and log.folder == tmp_path / "home" / "event-log"
    log.close()
    log = open_event_log({"SHOPREC_EVENT_LOG": str(tmp_path / "shop"), "SHOPREC_EVENT_LOG_SEGMENT_BYTES": "1000"})
    assert isinstance(log, FileEventLog) and log.segment_max_bytes == 1000
    log.close()
    log = open_event_log({"SHOPREC_EVENT_LOG": f"sqlite:///{tmp_path / 'log.db'}"})
    assert isinstance(log, SqlEventLog)
    log.close()
    with pytest.raises(EventLogError, match="SHOPREC_EVENT_LOG_SEGMENT_SECONDS='-1': expected a number > 0"):
        open_event_log({"SHOPREC_EVENT_LOG": str(tmp_path / "shop"), "SHOPREC_EVENT_LOG_SEGMENT_SECONDS": "-1"})


def test_a_filesystem_uri_as_the_event_log_is_refused_not_made_a_local_folder(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(EventLogError, match=r"SHOPREC_EVENT_LOG=s3a://bucket/log: not an installed SQLAlchemy dialect"):
        open_event_log({"SHOPREC_EVENT_LOG": "s3a://bucket/log"})
    assert list(tmp_path.iterdir()) == []
