"""`shoprec picks` as a user runs it: a real subprocess of the installed entry point."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from features.loading import validate_tables
from features.sample import SampleConfig, generate_shop
from features.sources import RawTable
from training.pipeline import TrainConfig, build_bundle

SHOPREC = str(Path(sys.executable).with_name("shoprec"))


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    shop = generate_shop(SampleConfig(customers=400, items=120, days=90, seed=3, dirty_share=0.0))
    data = validate_tables({k: RawTable(v, k) for k, v in shop.tables.items()}, source="sample")
    folder = tmp_path_factory.mktemp("picks-cli") / "bundle"
    build_bundle(data, TrainConfig(), "ease", {"chosen": "ease"}).save(folder)
    return folder


def run(home: Path, *args: str, command: tuple[str, ...] = (SHOPREC,), **env_vars: str | None,
        ) -> subprocess.CompletedProcess[str]:
    """``shoprec picks ARGS``; ``env_vars`` set (or, given None, remove) environment variables."""
    env = {**os.environ, "SHOPREC_HOME": str(home), "OPENBLAS_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    for name, value in env_vars.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return subprocess.run([*command, "picks", *args], capture_output=True, text=True, timeout=300, env=env)


def _summary(stdout: str) -> dict[str, str]:
    """The summary table's rows as {what: value}."""
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.replace("|", "│").split("│") if c.strip()]
        if len(cells) == 2:
            rows[cells[0]] = cells[1]
    return rows


def test_picks_for_every_customer_into_a_csv(bundle_dir: Path, tmp_path: Path) -> None:
    result = run(tmp_path / "home", "--model", str(bundle_dir), "--out", str(tmp_path / "picks.csv"), "--k", "3",
                 "--no-track")
    assert result.returncode == 0, result.stderr
    frame = pd.read_csv(tmp_path / "picks.csv", dtype={"customer_id": str})
    customers = pd.read_parquet(bundle_dir / "customers.parquet")["customer_id"]
    assert frame["customer_id"].nunique() == len(customers) and len(frame) == 3 * len(customers)
    assert set(frame["rank"]) == {1, 2, 3} and set(frame["model_version"]) == {"local/bundle"}
    assert _summary(result.stdout)["customers scored"] == f"{len(customers):,}"
    assert "customers/s" in result.stderr  # progress
    assert "MLflow run" not in result.stdout and not (tmp_path / "home" / "mlflow.db").exists()


def test_a_customer_list_with_unknown_and_repeated_ids_is_reported(bundle_dir: Path, tmp_path: Path) -> None:
    known = pd.read_parquet(bundle_dir / "customers.parquet")["customer_id"].head(20).tolist()
    pd.DataFrame({"customer_id": [*known, known[0], "nobody"]}).to_parquet(tmp_path / "list.parquet")
    result = run(tmp_path / "home", "--model", str(bundle_dir), "--out", str(tmp_path / "picks.parquet"),
                 "--customers", str(tmp_path / "list.parquet"))
    assert result.returncode == 0, result.stderr
    summary = _summary(result.stdout)
    assert summary["customers scored"] == "21" and summary["unknown ids (fallbacks only)"] == "1"
    assert summary["duplicate ids dropped"] == "1" and summary["empty ids skipped"] == "0"
    frame = pd.read_parquet(tmp_path / "picks.parquet")
    assert set(frame["customer_id"]) == {*known, "nobody"}
    assert "MLflow run" in result.stdout and (tmp_path / "home" / "mlflow.db").is_file()


def test_into_a_postgres_table(bundle_dir: Path, tmp_path: Path, postgres_url: str) -> None:
    result = run(tmp_path / "home", "--model", str(bundle_dir), "--out", postgres_url, "--table", "weekly_picks",
                 "--only-send", "--no-track")
    assert result.returncode == 0, result.stderr
    engine = sa.create_engine(postgres_url)
    frame = pd.read_sql_table("weekly_picks", engine)
    engine.dispose()
    assert len(frame) and frame["send"].all() and frame.groupby("customer_id").size().eq(10).all()


TERMINATED_AFTER_FIRST_BLOCK = textwrap.dedent("""
    # `shoprec ARGS`, except that once the first block is in the staging table the server
    # terminates the sink's backend (pg_terminate_backend from a second connection)
    import sys
    import sqlalchemy as sa
    from app.cli import app
    from batch.sinks import SqlSink

    real = SqlSink._write

    def write_then_terminate(sink, table):
        real(sink, table)
        if not getattr(sink, "terminated", False):
            sink.terminated = True
            with sink.engine.connect() as conn:
                pid = conn.connection.driver_connection.info.backend_pid
            other = sa.create_engine(sink.engine.url)
            with other.connect() as conn:
                assert conn.execute(sa.text("select pg_terminate_backend(:pid, 10000)"), {"pid": pid}).scalar()
            other.dispose()
            print("terminated the sink's backend", file=sys.stderr)

    SqlSink._write = write_then_terminate
    app(sys.argv[1:], prog_name="shoprec")
""")


def test_postgres_connection_terminated_mid_write_is_one_line_and_exit_2(bundle_dir: Path, tmp_path: Path,
                                                                        postgres_url: str) -> None:
    url = sa.engine.make_url(postgres_url).set(password="s3cret-pw").render_as_string(hide_password=False)
    args = ["--model", str(bundle_dir), "--out", url, "--k", "3", "--no-track"]
    assert run(tmp_path / "home", *args).returncode == 0  # the previous table
    engine = sa.create_engine(postgres_url)
    before = pd.read_sql_table("email_picks", engine).sort_values(["customer_id", "rank"], ignore_index=True)
    result = run(tmp_path / "home", *args[:4], "--k", "5", "--block", "50", "--no-track",
                 command=(sys.executable, "-c", TERMINATED_AFTER_FIRST_BLOCK))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "terminated the sink's backend" in result.stderr and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    database = sa.engine.make_url(url).render_as_string(hide_password=True)
    assert errors == [f"error: picks write to email_picks at {database} failed: connection lost (terminating "
                      f"connection due to administrator command); the previous table is intact"], result.stderr
    assert "s3cret-pw" not in result.stdout + result.stderr
    after = pd.read_sql_table("email_picks", engine).sort_values(["customer_id", "rank"], ignore_index=True)
    tables = set(sa.inspect(engine).get_table_names())
    engine.dispose()
    pd.testing.assert_frame_equal(after, before)
    assert tables == {"email_picks"}


def test_a_swap_blocked_by_another_session_fails_in_one_line_within_the_timeout(bundle_dir: Path, tmp_path: Path,
                                                                               postgres_url: str) -> None:
    """A session that holds the table (a stuck report, a network cut that left its transaction
    open) blocks the swap's DROP: the job fails after --sql-timeout instead of hanging."""
    args = ["--model", str(bundle_dir), "--out", postgres_url, "--k", "3", "--no-track"]
    assert run(tmp_path / "home", *args).returncode == 0  # the previous table
    engine = sa.create_engine(postgres_url)
    before = pd.read_sql_table("email_picks", engine).sort_values(["customer_id", "rank"], ignore_index=True)
    holder = engine.connect()
    holder.execute(sa.text("LOCK TABLE email_picks IN ACCESS EXCLUSIVE MODE"))  # held until rollback
    try:
        started = time.monotonic()
        result = run(tmp_path / "home", *args[:4], "--k", "5", "--sql-timeout", "2", "--no-track")
        elapsed = time.monotonic() - started
    finally:
        holder.rollback()
        holder.close()
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and re.search(r"canceling statement due to (lock|statement) timeout", errors[0]), \
        result.stderr
    assert "the old one is kept" in errors[0] and elapsed < 60
    after = pd.read_sql_table("email_picks", engine).sort_values(["customer_id", "rank"], ignore_index=True)
    tables = set(sa.inspect(engine).get_table_names())
    engine.dispose()
    pd.testing.assert_frame_equal(after, before)
    assert tables == {"email_picks"}  # the staging table was dropped


def test_the_spark_engine_writes_what_the_local_engine_writes(bundle_dir: Path, tmp_path: Path) -> None:
    """`--engine spark` in Spark local mode (two cores), a customer list with an unknown id."""
    pytest.importorskip("pyspark", reason="pyspark is not installed (pip install 'shoprec[spark]')")
    if not (shutil.which("java") or os.environ.get("JAVA_HOME")):
        pytest.skip("Spark needs Java 17+ (no `java` on PATH and no JAVA_HOME)")
    from batch.schema import conform
    from batch.spark_output import read_picks_folder

    known = pd.read_parquet(bundle_dir / "customers.parquet")["customer_id"].iloc[::3].tolist()
    pd.DataFrame({"customer_id": [*known, "nobody", known[0]]}).to_csv(tmp_path / "list.csv", index=False)
    common = ["--model", str(bundle_dir), "--customers", str(tmp_path / "list.csv"), "--k", "4", "--no-track"]
    spark = run(tmp_path / "home", *common, "--engine", "spark", "--partitions", "2", "--block", "7",
                "--out", str(tmp_path / "spark.parquet"), SPARK_MASTER="local[2]", SPARK_REMOTE=None)
    assert spark.returncode == 0, spark.stderr
    local = run(tmp_path / "home", *common, "--out", str(tmp_path / "local.parquet"))
    assert local.returncode == 0, local.stderr

    def tidy(frame: pd.DataFrame) -> pd.DataFrame:
        return conform(frame).sort_values(["customer_id", "rank"]).reset_index(drop=True)

    got = tidy(read_picks_folder(tmp_path / "spark.parquet"))
    expected = tidy(pd.read_parquet(tmp_path / "local.parquet"))
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    assert got["customer_id"].nunique() == len(known) + 1
    timing = "seconds (scoring + writing)"
    assert {**_summary(spark.stdout), timing: ""} == {**_summary(local.stdout), timing: ""}
    assert _summary(spark.stdout)["unknown ids (fallbacks only)"] == "1"


@pytest.mark.parametrize(("args", "message"), [
    (["--engine", "flink"], "error: --engine flink: use local or spark"),
    (["--out", "s3a://bucket/picks.parquet"], "error: s3a://bucket/picks.parquet: 's3a' is not an installed "
                                               "SQLAlchemy dialect"),
    (["--customers", "{tmp}/ids.csv"], "error: --customers {tmp}/ids.csv: no 'customer_id' column (columns: id)"),
    (["--customers", "{tmp}/none.csv"], "error: --customers {tmp}/none.csv: no such file"),
    (["--out", "{tmp}/picks.xlsx"], "error: {tmp}/picks.xlsx: output must end in .parquet, .csv, .csv.gz"),
    (["--model", "models:/shoprec@champion"], "error: --model models:/shoprec@champion: not found in the registry"),
    (["--model", "models:/shoprec"], "error: --model models:/shoprec: use models:/NAME@ALIAS"),
    (["--model", "{tmp}/nowhere"], "error: --model {tmp}/nowhere: no such folder"),
])
def test_bad_input_is_one_line_and_exit_2(bundle_dir: Path, tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "ids.csv").write_text("id\n1\n")
    args = [a.format(tmp=tmp_path) for a in args]
    defaults = {"--model": str(bundle_dir), "--out": str(tmp_path / "picks.parquet")}
    for option, value in defaults.items():
        if option not in args:
            args += [option, value]
    result = run(tmp_path / "home", *args, "--no-track")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(message.format(tmp=tmp_path)), result.stderr
    assert not (tmp_path / "picks.parquet").exists()
