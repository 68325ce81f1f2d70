"""The `shoprec` command as a user runs it: a real subprocess of the installed entry point."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from features.table_files import write_tables
from tests.features.shop_fixtures import RAW_TABLES

SHOPREC = str(Path(sys.executable).with_name("shoprec"))


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``shoprec ARGS``; ``env``: variables set on top of this process's."""
    return subprocess.run([SHOPREC, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env} if env else None)


@pytest.fixture
def shop_dir(tmp_path: Path) -> Path:
    write_tables(RAW_TABLES, tmp_path / "shop", "csv")
    return tmp_path / "shop"


def test_validate_prints_report_and_writes_quarantine(shop_dir: Path, tmp_path: Path) -> None:
    result = run("validate", str(shop_dir), "--quarantine-dir", str(tmp_path / "q"))
    assert result.returncode == 0, result.stderr
    assert "Load report" in result.stdout
    assert f"quarantined: {shop_dir / 'orders.csv'} row 7 column 'quantity': quantity is 0" in result.stdout
    assert (tmp_path / "q" / "orders.csv").is_file()
    assert (tmp_path / "q" / "load_report.json").is_file()


SPARK = bool(shutil.which("java") and importlib.util.find_spec("pyspark"))


@pytest.mark.skipif(not SPARK, reason="the Spark engine needs pyspark and Java 17+")
def test_validate_on_spark_prints_the_local_engines_report(tmp_path: Path) -> None:
    """Parquet tables: orders and events are checked by Spark tasks, the rest on the driver."""
    write_tables(RAW_TABLES, tmp_path / "shop", "parquet")
    local = run("validate", str(tmp_path / "shop"), "--quarantine-dir", str(tmp_path / "local"))
    spark = run("validate", str(tmp_path / "shop"), "--engine", "spark", "--quarantine-dir", str(tmp_path / "spark"))
    assert spark.returncode == 0, spark.stderr
    assert "validating orders on Spark (1 task)" in spark.stdout + spark.stderr
    assert spark.stdout[spark.stdout.index("Load report"):] == local.stdout[local.stdout.index("Load report"):] \
        .replace(str(tmp_path / "local"), str(tmp_path / "spark"))
    assert (tmp_path / "spark" / "load_report.json").read_text() == (tmp_path / "local" / "load_report.json").read_text()


@pytest.mark.skipif(not importlib.util.find_spec("pyspark"), reason="the Spark engine needs pyspark")
def test_an_unreachable_spark_master_is_one_line_exit_2_without_starting_spark(tmp_path: Path) -> None:
    """Spark itself would retry for a minute and print a Java stack trace."""
    write_tables(RAW_TABLES, tmp_path / "shop", "parquet")
    with socket.socket() as held:  # bound, not listening: connections to it are refused while it is held
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        result = run("validate", str(tmp_path / "shop"), "--engine", "spark",
                     env={"SPARK_MASTER": f"spark://127.0.0.1:{port}"})
    assert result.returncode == 2 and "Traceback" not in result.stderr and "at org.apache" not in result.stderr
    assert result.stderr.strip().splitlines()[1:] == [  # after the progress line "loading SHOP"
        f"error: cannot reach the Spark master spark://127.0.0.1:{port} (from SPARK_MASTER): 127.0.0.1:{port}: "
        "Connection refused"]


def test_an_unknown_engine_is_one_line_exit_2(shop_dir: Path) -> None:
    result = run("validate", str(shop_dir), "--engine", "dask")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "error: --engine dask: use local or spark" in result.stderr


def test_missing_folder_is_one_line_exit_2(tmp_path: Path) -> None:
    result = run("validate", str(tmp_path / "nope"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"error: {tmp_path / 'nope'}: no such data folder" in result.stderr


def test_missing_column_names_file_and_column(shop_dir: Path) -> None:
    RAW_TABLES["orders"].drop(columns=["ts"]).to_csv(shop_dir / "orders.csv", index=False)
    result = run("validate", str(shop_dir))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{shop_dir / 'orders.csv'}: table 'orders' is missing required column 'ts'" in result.stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = run("--debug", "validate", str(tmp_path / "nope"))
    assert result.returncode != 0
    assert "Traceback" in result.stderr


def test_a_bug_is_a_traceback_and_exit_1_not_a_one_line_user_error(shop_dir: Path) -> None:
    """Only UserError (and missing files, bad configs) is bad input; a bare ValueError from inside
    is a bug and must say so, not pass for "bad input" with exit 2."""
    script = textwrap.dedent("""
        import sys
        import app.cli as cli

        def broken(*args, **kwargs):
            raise ValueError("an internal bug")

        cli.load_shop_with = broken
        cli.app(["validate", sys.argv[1]])
    """)
    result = subprocess.run([sys.executable, "-c", script, str(shop_dir)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "ValueError: an internal bug" in result.stderr
    assert "error: an internal bug" not in result.stderr


def test_sample_then_train_then_promote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOPREC_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    shop = tmp_path / "shop"
    made = run("sample", "--out", str(shop), "--customers", "600", "--items", "150", "--days", "90",
               "--format", "parquet")
    assert made.returncode == 0, made.stderr
    assert (shop / "orders.parquet").is_file() and (shop / "_truth" / "pairs.csv").is_file()
    (tmp_path / "config.json").write_text('{"families": ["ease", "cooccurrence"], "split": {"test_days": 14}}')
    engine = ("--engine", "spark") if SPARK else ()  # the data through Spark where it runs; the rest is the same
    trained = run("train", "--data", str(shop), "--config", str(tmp_path / "config.json"), *engine)
    assert trained.returncode == 0, trained.stderr
    assert not SPARK or "validating events on Spark (1 task)" in trained.stderr
    assert "Held-out evaluation" in trained.stdout and "popularity" in trained.stdout
    assert "registered shoprec v1: promoted to @champion" in trained.stdout
    promoted = run("promote", "1")
    assert promoted.returncode == 0 and "shoprec v1 is now @champion" in promoted.stdout
    missing = run("promote", "7")
    assert missing.returncode == 2 and "cannot promote shoprec v7" in missing.stderr
    assert "Traceback" not in missing.stderr


@pytest.mark.parametrize(("content", "message"), [
    ('{"familes": ["als"]}', "familes: Extra inputs"),
    ('{"ranking": {"index_from_items": 0}}', "ranking.index_from_items: Input should be greater than or equal to 1"),
])
def test_bad_config_is_one_line(tmp_path: Path, shop_dir: Path, content: str, message: str) -> None:
    (tmp_path / "config.json").write_text(content)
    result = run("evaluate", "--data", str(shop_dir), "--config", str(tmp_path / "config.json"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: invalid TrainConfig: {message}")


def test_demo_runs_end_to_end_without_serving(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHOPREC_HOME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    result = run("demo", "--out", str(tmp_path / "demo"), "--customers", "800", "--items", "200", "--no-serve")
    assert result.returncode == 0, result.stderr
    assert "Load report" in result.stdout and "promoted to @champion" in result.stdout
    assert "/cross_sell" in result.stdout and "/email_picks" in result.stdout and "/offers" in result.stdout
    assert (tmp_path / "demo" / "home" / "mlflow.db").is_file()


@pytest.mark.parametrize("content", [b"\xff\xfe{\x00}", None])
def test_an_unreadable_config_file_is_one_line_exit_2(tmp_path: Path, shop_dir: Path, content: bytes | None) -> None:
    """Not UTF-8, or a folder where the file should be: one line naming --config, no traceback."""
    config = tmp_path / "config.json"
    if content is None:
        config.mkdir()
    else:
        config.write_bytes(content)
    result = run("evaluate", "--data", str(shop_dir), "--config", str(config))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"error: --config {config}: cannot read it" in result.stderr
