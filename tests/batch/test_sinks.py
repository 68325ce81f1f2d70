"""The batch job's outputs: every format round-trips, and a run that fails or is killed half-way
leaves the previous output exactly as it was (files, SQLite, real PostgreSQL)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa

import batch.job as picks_module
from batch.job import run_picks, score_block
from batch.schema import PICKS_COLUMNS
from batch.sinks import FileSink, SqlSink, open_sink
from serving.recommender import ShopRecommender
from tests.serving.live_server import REPO
from training.bundle import Bundle

K = 4
BLOCK = 200


@pytest.fixture(scope="module")
def rec(bundle: Bundle) -> ShopRecommender:
    return ShopRecommender(bundle, "shoprec/v7")


@pytest.fixture(scope="module")
def ids(bundle: Bundle) -> list[str]:
    return [str(c) for c in bundle.customers.external_ids[:900]] + ["ghost-1"]


def _read(target: str, table: str = "email_picks") -> pd.DataFrame:
    if "://" in target:
        frame = pd.read_sql_table(table, sa.create_engine(target))
    elif target.endswith(".parquet"):
        frame = pd.read_parquet(target)
    else:
        frame = pd.read_csv(target, dtype={"customer_id": str, "item_id": str})
    return frame.sort_values(["customer_id", "rank"], kind="stable").reset_index(drop=True)


def _expected(rec: ShopRecommender, ids: list[str], k: int) -> pd.DataFrame:
    return score_block(rec, ids, k).sort_values(["customer_id", "rank"], kind="stable").reset_index(drop=True)


def _same(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert list(got.columns) == PICKS_COLUMNS
    pd.testing.assert_frame_equal(got, want, check_dtype=False, check_exact=True)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'picks.db'}"


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


@pytest.mark.parametrize("name", ["picks.parquet", "picks.csv", "picks.csv.gz"])
def test_files_round_trip_and_leave_no_temporary_file(rec: ShopRecommender, ids: list[str], tmp_path: Path,
                                                      name: str) -> None:
    target = tmp_path / "out" / name
    with open_sink(str(target)) as sink:
        summary = run_picks(rec, ids, K, sink, block=BLOCK)
    _same(_read(str(target)), _expected(rec, ids, K))
    assert summary.rows_written == sink.rows == len(ids) * K
    assert sorted(p.name for p in target.parent.iterdir()) == [name]


def test_sql_round_trip_sqlite(rec: ShopRecommender, ids: list[str], sqlite_url: str) -> None:
    with open_sink(sqlite_url, "weekly_picks") as sink:
        run_picks(rec, ids, K, sink, block=BLOCK)
    _same(_read(sqlite_url, "weekly_picks"), _expected(rec, ids, K))
    assert _tables(sqlite_url) == {"weekly_picks"}


def test_only_send_with_nobody_to_send_still_writes_a_valid_empty_output(rec: ShopRecommender, bundle: Bundle,
                                                                          tmp_path: Path) -> None:
    silent = ShopRecommender(bundle, "v", rec.config.model_copy(update={"send_min_open_propensity": 1.0}))
    for name in ("empty.parquet", "empty.csv"):
        with open_sink(str(tmp_path / name)) as sink:
            summary = run_picks(silent, ["ghost", str(bundle.customers.external_ids[0])], K, sink, only_send=True)
        assert summary.customers == 2 and summary.sent == 0 and summary.rows_written == 0
        frame = _read(str(tmp_path / name))
        assert list(frame.columns) == PICKS_COLUMNS and frame.empty


class Interrupted(RuntimeError):
    pass


@pytest.fixture
def fail_after_first_block(monkeypatch: pytest.MonkeyPatch) -> list[pd.DataFrame]:
    """score_block raises on its second call: the job dies with one block already in the sink.

    Before raising it records what the target looked like mid-run (``seen``), so tests
    can show readers still get the old output while the new one is being written.
    """
    calls: list[pd.DataFrame] = []
    real = picks_module.score_block

    def flaky(recommender: ShopRecommender, customer_ids: list[str], k: int) -> pd.DataFrame:
        if calls:
            raise Interrupted("killed after the first block")
        calls.append(real(recommender, customer_ids, k))
        return calls[0]

    monkeypatch.setattr(picks_module, "score_block", flaky)
    return calls


def _run(rec: ShopRecommender, ids: list[str], target: str, k: int, table: str = "email_picks") -> None:
    with open_sink(target, table) as sink:
        run_picks(rec, ids, k, sink, block=BLOCK)


@pytest.mark.parametrize("name", ["picks.parquet", "picks.csv"])
def test_interrupted_file_write_keeps_the_previous_output(rec: ShopRecommender, ids: list[str], tmp_path: Path,
                                                          name: str, fail_after_first_block: list) -> None:
    target = tmp_path / name
    with pytest.MonkeyPatch.context() as patch:  # the previous, complete run
        patch.setattr(picks_module, "score_block", score_block)
        _run(rec, ids, str(target), K)
    before = target.read_bytes()
    with pytest.raises(Interrupted):
        _run(rec, ids, str(target), K + 1)
    assert len(fail_after_first_block) == 1  # one block was written to the temporary file
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def _interrupted_sql(rec: ShopRecommender, ids: list[str], url: str, calls: list) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(picks_module, "score_block", score_block)
        _run(rec, ids, url, K)
    before = _read(url)
    with pytest.raises(Interrupted):
        _run(rec, ids, url, K + 1)
    assert len(calls) == 1
    _same(_read(url), before)
    assert _tables(url) == {"email_picks"}  # the staging table is gone
    # and a complete run afterwards does replace it
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(picks_module, "score_block", score_block)
        _run(rec, ids, url, K + 1)
    _same(_read(url), _expected(rec, ids, K + 1))
    assert _tables(url) == {"email_picks"}


def test_interrupted_sqlite_write_keeps_the_previous_table(rec: ShopRecommender, ids: list[str], sqlite_url: str,
                                                           fail_after_first_block: list) -> None:
    _interrupted_sql(rec, ids, sqlite_url, fail_after_first_block)


def test_postgres_round_trip_and_interrupted_write(rec: ShopRecommender, ids: list[str], postgres_url: str,
                                                   fail_after_first_block: list) -> None:
    _interrupted_sql(rec, ids, postgres_url, fail_after_first_block)


def test_postgres_readers_see_the_old_table_until_the_swap(rec: ShopRecommender, ids: list[str],
                                                           postgres_url: str) -> None:
    _run(rec, ids, postgres_url, K)
    engine = sa.create_engine(postgres_url)
    sink = SqlSink(postgres_url)
    try:
        sink.write(score_block(rec, ids[:50], 2))
        with engine.connect() as reader:  # staging holds a block: readers still see the old, complete table
            assert reader.execute(sa.text("select count(*) from email_picks")).scalar() == len(ids) * K
        sink.commit()
        with engine.connect() as reader:
            assert reader.execute(sa.text("select count(*) from email_picks")).scalar() == 50 * 2
            types = dict(reader.execute(sa.text(
                "select column_name, data_type from information_schema.columns where table_name = 'email_picks'")).all())
        assert types == {"customer_id": "text", "canonical_id": "text", "rank": "integer", "item_id": "text", "score": "double precision",
                         "reason": "text", "send": "boolean", "send_reason": "text", "send_hour": "integer",
                         "trigger": "text", "trigger_detail": "text",
                         "open_propensity": "double precision",
                         "model_version": "text"}
        assert _tables(postgres_url) == {"email_picks"}
    finally:
        engine.dispose()


def test_a_view_on_the_old_table_blocks_the_swap_with_a_clear_error(rec: ShopRecommender, ids: list[str],
                                                                   postgres_url: str) -> None:
    _run(rec, ids, postgres_url, K)
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(sa.text("create view sent_picks as select * from email_picks where send"))
    before = _read(postgres_url)
    with pytest.raises(ValueError, match="cannot replace the table, the old one is kept"):
        _run(rec, ids, postgres_url, K + 1)
    _same(_read(postgres_url), before)
    assert _tables(postgres_url) == {"email_picks"}
    engine.dispose()


def _sink_pid(sink: SqlSink) -> int:
    """The backend of the pooled connection the sink writes with (read client-side, no query)."""
    with sink.engine.connect() as conn:
        return conn.connection.driver_connection.info.backend_pid


def _terminate(url: str, pid: int) -> None:
    """From a second connection, the server ends backend ``pid`` (and we wait until it has)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("select pg_terminate_backend(:pid, 10000)"), {"pid": pid}).scalar()
    finally:
        engine.dispose()


def _with_password(url: str) -> str:
    """The same database with a password in the URL (trust auth ignores it): errors must hide it."""
    return sa.engine.make_url(url).set(password="s3cret-pw").render_as_string(hide_password=False)


def _one_clear_line(error: pytest.ExceptionInfo[ValueError], url: str) -> str:
    message = str(error.value)
    database = sa.engine.make_url(url).render_as_string(hide_password=True)
    assert "\n" not in message and "s3cret-pw" not in message and "***" in database
    assert message.startswith(f"picks write to email_picks at {database} failed: connection lost ("), message
    return message


def _terminate_after_first_block(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """From now on, once a sink's first block is committed to its staging table, the server
    terminates the sink's backend (a real ``pg_terminate_backend`` from a second connection; the
    writer lives on). Returns the staging table's row count at that moment."""
    staged: list[int] = []
    real = SqlSink._write

    def write_then_terminate(sink: SqlSink, table: pa.Table) -> None:
        real(sink, table)
        if not staged:
            engine = sa.create_engine(sink.engine.url)
            with engine.connect() as conn:
                staged.append(conn.execute(sa.text(f'select count(*) from "{sink.staging}"')).scalar())
            engine.dispose()
            _terminate(sink.engine.url, _sink_pid(sink))

    monkeypatch.setattr(SqlSink, "_write", write_then_terminate)
    return staged


def test_postgres_connection_terminated_mid_write_is_one_error_and_keeps_the_old_table(
        rec: ShopRecommender, ids: list[str], postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    url = _with_password(postgres_url)
    _run(rec, ids, url, K)
    before = _read(postgres_url)
    staged = _terminate_after_first_block(monkeypatch)
    with pytest.raises(ValueError) as error:
        _run(rec, ids, url, K + 1)
    message = _one_clear_line(error, url)
    assert "terminating connection due to administrator command" in message
    assert message.endswith("; the previous table is intact")
    assert staged == [BLOCK * (K + 1)]  # the first block was in the staging table when the backend died
    _same(_read(postgres_url), before)
    assert _tables(postgres_url) == {"email_picks"}  # the staging table was dropped on a fresh connection


def test_staging_left_behind_is_named_when_the_cleanup_cannot_connect(
        rec: ShopRecommender, ids: list[str], postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """As a server still down would: the database refuses new connections when the sink's dies."""
    url = _with_password(postgres_url)
    _run(rec, ids, url, K)
    before = _read(postgres_url)
    database = sa.engine.make_url(postgres_url).database
    admin = sa.create_engine(sa.engine.make_url(postgres_url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    real = SqlSink._write

    def write_then_lock_out(sink: SqlSink, table: pa.Table) -> None:
        real(sink, table)
        with admin.connect() as conn:
            conn.execute(sa.text(f'alter database "{database}" allow_connections false'))
        _terminate(sink.engine.url.set(database="postgres"), _sink_pid(sink))

    monkeypatch.setattr(SqlSink, "_write", write_then_lock_out)
    try:
        with pytest.raises(ValueError) as error:
            _run(rec, ids, url, K + 1)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'alter database "{database}" allow_connections true'))
        admin.dispose()
    message = _one_clear_line(error, url)
    left = re.search(r"; the previous table is intact; the staging table (email_picks__staging_\w+) could not be "
                     r"dropped \(.*not currently accepting connections.*\); drop it by hand$", message)
    assert left, message
    _same(_read(postgres_url), before)
    assert _tables(postgres_url) == {"email_picks", left.group(1)}


def _terminate_before_swap(monkeypatch: pytest.MonkeyPatch, times: int) -> list[int]:
    """The first ``times`` swap transactions lose their connection just before they run: the
    server terminates that backend from a second connection. Returns every backend the swap ran on."""
    pids: list[int] = []
    real = SqlSink._swap

    def terminate_then_swap(sink: SqlSink, conn: sa.Connection) -> None:
        pids.append(conn.connection.driver_connection.info.backend_pid)
        if len(pids) <= times:
            _terminate(sink.engine.url, pids[-1])
        real(sink, conn)

    monkeypatch.setattr(SqlSink, "_swap", terminate_then_swap)
    monkeypatch.setattr(SqlSink, "swap_retry_delay_s", 0.0)
    return pids


def test_postgres_connection_terminated_before_the_swap_is_retried_once(
        rec: ShopRecommender, ids: list[str], postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _run(rec, ids, postgres_url, K)
    pids = _terminate_before_swap(monkeypatch, times=1)
    _run(rec, ids, postgres_url, K + 1)  # no error: the staging table was complete, the swap ran again
    assert len(pids) == 2 and pids[0] != pids[1]  # the retry ran on a fresh connection
    _same(_read(postgres_url), _expected(rec, ids, K + 1))
    assert _tables(postgres_url) == {"email_picks"}


def test_postgres_connection_terminated_at_the_swap_and_its_retry_keeps_the_old_table(
        rec: ShopRecommender, ids: list[str], postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    url = _with_password(postgres_url)
    _run(rec, ids, url, K)
    before = _read(postgres_url)
    pids = _terminate_before_swap(monkeypatch, times=2)
    with pytest.raises(ValueError) as error:
        _run(rec, ids, url, K + 1)
    message = _one_clear_line(error, url)
    assert re.search(r"connection lost \(terminating connection due to administrator command\) at the swap, and "
                     r"the retry on a fresh connection failed too \(terminating connection .*\); the previous "
                     r"table is intact$", message), message
    assert len(pids) == 2
    _same(_read(postgres_url), before)
    assert _tables(postgres_url) == {"email_picks"}


KILLED_WRITER = textwrap.dedent("""
    import sys, time
    import pandas as pd
    from batch.sinks import open_sink
    frame = pd.read_parquet(sys.argv[2])
    sink = open_sink(sys.argv[1])
    sink.write(frame)
    print("first block written", flush=True)
    time.sleep(120)
""")


@pytest.fixture
def killed_writer(tmp_path: Path) -> Iterator[callable]:
    procs: list[subprocess.Popen[str]] = []

    def run(target: str, block: pd.DataFrame) -> None:
        block.to_parquet(tmp_path / "block.parquet")
        proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, target, str(tmp_path / "block.parquet")],
                                cwd=REPO, stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "first block written"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    yield run
    for proc in procs:
        if proc.poll() is None:
            proc.kill()


def test_a_killed_writer_leaves_the_previous_file(rec: ShopRecommender, ids: list[str], tmp_path: Path,
                                                  killed_writer: callable) -> None:
    target = tmp_path / "out" / "picks.parquet"
    _run(rec, ids, str(target), K)
    before = target.read_bytes()
    killed_writer(str(target), score_block(rec, ids[:100], K + 1))
    assert target.read_bytes() == before
    leftovers = [p.name for p in target.parent.iterdir() if p.name != "picks.parquet"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".picks.parquet.")  # a kill cannot clean up


def test_a_killed_writer_leaves_the_previous_postgres_table(rec: ShopRecommender, ids: list[str], postgres_url: str,
                                                            killed_writer: callable) -> None:
    _run(rec, ids, postgres_url, K)
    before = _read(postgres_url)
    killed_writer(postgres_url, score_block(rec, ids[:100], K + 1))
    _same(_read(postgres_url), before)


@pytest.mark.parametrize(("target", "table", "message"), [
    ("picks.json", "email_picks", "output must end in .parquet, .csv, .csv.gz or be a SQLAlchemy URL"),
    (".parquet", "email_picks", "output must end in"),
    ("sqlite:///x.db", "drop table x; --", "--table 'drop table x; --': use letters, digits and _"),
    ("nosuchdialect://host/db", "email_picks", "'nosuchdialect' is not an installed SQLAlchemy dialect"),
    ("s3a://key:secret@bucket/picks.parquet", "email_picks",
     "s3a://key:***@bucket/picks.parquet: 's3a' is not an installed SQLAlchemy dialect, and the local engine "
     "writes local files and database tables only; for object stores and HDFS (s3a://, gs://, hdfs://) use "
     "--engine spark"),
])
def test_bad_targets_are_refused_before_any_work(tmp_path: Path, target: str, table: str, message: str) -> None:
    location = target if "://" in target else str(tmp_path / target)
    with pytest.raises(ValueError, match=re.escape(message)):
        open_sink(location, table)


def test_an_unreachable_database_is_one_clear_error(rec: ShopRecommender, ids: list[str]) -> None:
    sink = SqlSink("postgresql+psycopg://nobody@127.0.0.1:9/none?connect_timeout=2")
    with pytest.raises(ValueError, match=r"127\.0\.0\.1:9/none.* table email_picks: cannot write \(connection failed"):
        with sink:
            run_picks(rec, ids[:10], K, sink)


def test_file_sink_refuses_a_folder(tmp_path: Path) -> None:
    (tmp_path / "x.parquet").mkdir()
    with pytest.raises(ValueError, match="is a folder"):
        FileSink(tmp_path / "x.parquet")
