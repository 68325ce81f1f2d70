"""The Spark engine loads a shop exactly as the local engine does: same tables, quarantine, report and Dataset.

Spark runs in local mode (two cores). The long tables are written as Parquet with many row
groups (and events as a folder of parts), so that their rows are checked by several Spark
tasks whose results must come back in row order; other tables take the driver's path.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features import spark_loading
from features.dataset import build_dataset
from features.loading import ShopData, load_shop
from features.sample import SampleConfig, SampleShop, generate_shop
from features.schema import ContractError
from features.table_files import write_tables
from features.spark_loading import Piece, parquet_pieces
from tests.features.shop_fixtures import PLANTED_REASONS, RAW_TABLES

pytest.importorskip("pyspark", reason="pyspark is not installed (pip install 'shoprec[spark]')")
pytestmark = pytest.mark.skipif(
    not (shutil.which("java") or os.environ.get("JAVA_HOME")),
    reason="Spark needs Java 17+ (no `java` on PATH and no JAVA_HOME)")

NOW = pd.Timestamp("2026-12-07", tz="UTC")


@pytest.fixture(scope="module")
def spark():  # noqa: ANN201 - pyspark's type is imported lazily
    from features.spark_session import spark_session

    session = spark_session("shoprec-load-test", master=os.environ.get("SHOPREC_TEST_SPARK_MASTER", "local[2]"))
    yield session
    session.stop()


@pytest.fixture(scope="module")
def dirty_shop() -> SampleShop:
    """A sample shop with its planted bad rows (1% of orders, events and items)."""
    return generate_shop(SampleConfig(customers=1500, items=240, days=180, seed=5, dirty_share=0.01))


@pytest.fixture
def small_pieces(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tasks of about 5,000 rows, so a file's row groups are shared out over several tasks."""
    monkeypatch.setattr(spark_loading, "PIECE_ROWS", 5_000)
    yield


def _write_parquet(frame: pd.DataFrame, path: Path, row_group_rows: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=row_group_rows)


def _both(folder: Path, spark, progress: list[str] | None = None) -> tuple[ShopData, ShopData]:  # noqa: ANN001
    local = load_shop(folder, now=NOW)
    on_spark = spark_loading.load_shop_spark(folder, now=NOW, spark=spark,
                                             progress=progress.append if progress is not None else None)
    return local, on_spark


def _assert_same(local: ShopData, on_spark: ShopData) -> None:
    assert on_spark.report.to_dict() == local.report.to_dict()
    assert list(on_spark.tables) == list(local.tables)
    for name in local.tables:
        pd.testing.assert_frame_equal(on_spark.tables[name], local.tables[name])
        pd.testing.assert_frame_equal(on_spark.quarantine[name], local.quarantine[name])


def test_the_sample_shop_loads_the_same_on_both_engines(spark, dirty_shop: SampleShop, tmp_path: Path,  # noqa: ANN001
                                                        small_pieces: None) -> None:
    tables = dirty_shop.tables
    folder = tmp_path / "shop"
    write_tables({name: tables[name] for name in ("items", "customers", "customer_aliases")}, folder, "parquet")
    write_tables({"email_events": tables["email_events"]}, folder, "csv")  # a CSV: the driver checks it
    _write_parquet(tables["orders"], folder / "orders.parquet", row_group_rows=1_500)
    thirds = np.array_split(np.arange(len(tables["events"])), 3)
    for number, rows in enumerate(thirds):
        _write_parquet(tables["events"].iloc[rows], folder / "events" / f"part-{number:03d}.parquet", 2_000)
    progress: list[str] = []

    local, on_spark = _both(folder, spark, progress)

    _assert_same(local, on_spark)
    assert local.report.rows_quarantined > 0  # the sample's planted bad rows, in orders and events among others
    assert {"orders", "events"} <= {name for name, frame in local.quarantine.items() if len(frame)}
    on_spark_lines = [line for line in progress if "on Spark" in line]
    assert [line.split(" on ")[0] for line in on_spark_lines] == ["validating orders", "validating events"]
    assert all(int(line.split("(")[1].split()[0]) > 1 for line in on_spark_lines)
    assert "validating email_events" in progress and "validating items" in progress
    expected, built = build_dataset(local), build_dataset(on_spark)
    assert (expected.interactions != built.interactions).nnz == 0
    assert (expected.purchases != built.purchases).nnz == 0
    assert list(built.customers.external_ids) == list(expected.customers.external_ids)
    pd.testing.assert_frame_equal(built.baskets, expected.baskets)


def test_planted_bad_rows_of_text_columns_are_quarantined_alike(spark, tmp_path: Path) -> None:  # noqa: ANN001
    """The hand-written shop, every value text, as Parquet: every rule, aliases and cycles included."""
    write_tables(RAW_TABLES, tmp_path / "shop", "parquet")
    local, on_spark = _both(tmp_path / "shop", spark)
    _assert_same(local, on_spark)
    found = {(name, int(row)): reason for name, frame in on_spark.quarantine.items()
             for row, reason in zip(frame["_row"], frame["_reason"], strict=True)}
    assert found == PLANTED_REASONS


def test_a_part_that_cannot_be_read_is_the_local_engines_error(spark, dirty_shop: SampleShop,  # noqa: ANN001
                                                               tmp_path: Path) -> None:
    """A footer that reads over data pages that do not: the task fails on an executor, and the
    driver tells it in the local engine's words (file named), not as a Spark stack trace."""
    folder = tmp_path / "shop"
    write_tables({name: dirty_shop.tables[name] for name in ("items", "orders")}, folder, "parquet")
    part = folder / "events" / "part-000.parquet"
    _write_parquet(dirty_shop.tables["events"], part, row_group_rows=50_000)
    data = bytearray(part.read_bytes())
    data[4:4 + 4096] = b"\x00" * 4096  # the first data pages; the footer at the end is intact
    part.write_bytes(bytes(data))
    with pytest.raises(ContractError) as local_error:
        load_shop(folder, now=NOW)
    with pytest.raises(ContractError) as spark_error:
        spark_loading.load_shop_spark(folder, now=NOW, spark=spark)
    assert str(spark_error.value) == str(local_error.value)
    assert str(part) in str(spark_error.value)


def test_pieces_are_whole_row_groups_numbered_across_files(tmp_path: Path) -> None:
    frame = pd.DataFrame({"x": np.arange(10)})
    _write_parquet(frame, tmp_path / "a.parquet", row_group_rows=3)  # groups of 3, 3, 3, 1
    _write_parquet(frame.iloc[:0], tmp_path / "empty.parquet", row_group_rows=3)
    _write_parquet(frame.iloc[:5], tmp_path / "b.parquet", row_group_rows=5)
    files = [tmp_path / "a.parquet", tmp_path / "empty.parquet", tmp_path / "b.parquet"]
    pieces = parquet_pieces(files, target_rows=6)
    a, b = str(files[0]), str(files[2])
    assert pieces == [Piece(a, (0, 1), 1, 6), Piece(a, (2, 3), 7, 4), Piece(b, (0,), 11, 5)]
    assert parquet_pieces(files, target_rows=1) == [Piece(a, (0,), 1, 3), Piece(a, (1,), 4, 3), Piece(a, (2,), 7, 3),
                                                    Piece(a, (3,), 10, 1), Piece(b, (0,), 11, 5)]


def test_a_scratch_folder_that_cannot_be_made_is_one_line(spark, dirty_shop: SampleShop, tmp_path: Path,  # noqa: ANN001
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    write_tables({name: dirty_shop.tables[name] for name in ("items", "orders")}, tmp_path / "shop", "parquet")
    monkeypatch.setenv("SHOPREC_SPARK_SCRATCH", str(tmp_path / "no" / "such"))
    with pytest.raises(ContractError, match=r"^SHOPREC_SPARK_SCRATCH=.*/no/such: cannot make a folder there"):
        spark_loading.load_shop_spark(tmp_path / "shop", now=NOW, spark=spark)


def test_a_callers_own_session_is_used_and_left_up(spark, tmp_path: Path) -> None:  # noqa: ANN001
    """A notebook's session (here the module's) is found, used and not stopped by the load."""
    write_tables(RAW_TABLES, tmp_path / "shop", "parquet")
    progress: list[str] = []
    spark_loading.load_shop_spark(tmp_path / "shop", now=NOW, progress=progress.append)
    assert "validating orders on Spark (1 task)" in progress
    assert spark.range(3).count() == 3


def test_an_empty_part_missing_a_column_is_the_local_engines_error(spark, tmp_path: Path) -> None:  # noqa: ANN001
    write_tables({name: RAW_TABLES[name] for name in ("items", "orders")}, tmp_path / "shop", "parquet")
    _write_parquet(RAW_TABLES["events"], tmp_path / "shop" / "events" / "part-0.parquet", 100)
    _write_parquet(RAW_TABLES["events"][["session_id"]].iloc[:0], tmp_path / "shop" / "events" / "part-1.parquet", 100)
    with pytest.raises(ContractError) as local_error:
        load_shop(tmp_path / "shop", now=NOW)
    with pytest.raises(ContractError) as spark_error:
        spark_loading.load_shop_spark(tmp_path / "shop", now=NOW, spark=spark)
    assert str(spark_error.value) == str(local_error.value)
    assert "part-1.parquet" in str(spark_error.value) and "missing" in str(spark_error.value)


def test_every_tables_columns_are_checked_before_any_rows(spark, tmp_path: Path) -> None:  # noqa: ANN001
    """A corrupt orders file and an email_events CSV without a required column: both engines
    tell the column first, as neither reads a row before every table's columns are checked."""
    folder = tmp_path / "shop"
    write_tables({name: RAW_TABLES[name] for name in ("items", "orders")}, folder, "parquet")
    data = bytearray((folder / "orders.parquet").read_bytes())
    data[4:64] = b"\x00" * 60
    (folder / "orders.parquet").write_bytes(bytes(data))
    write_tables({"email_events": RAW_TABLES["email_events"].drop(columns=["opened"])}, folder, "csv")
    with pytest.raises(ContractError) as local_error:
        load_shop(folder, now=NOW)
    with pytest.raises(ContractError) as spark_error:
        spark_loading.load_shop_spark(folder, now=NOW, spark=spark)
    assert str(spark_error.value) == str(local_error.value)
    assert "email_events.csv" in str(spark_error.value) and "'opened'" in str(spark_error.value)


def test_integer_ids_with_nulls_read_alike_however_the_chunks_fall(spark, tmp_path: Path,  # noqa: ANN001
                                                                   small_pieces: None,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Integer customer ids with one null: the chunk holding it must not turn the ids into
    floats ("7.0") where another keeps them whole ("7"). The local engine's chunks (here 3,000
    rows) and Spark's pieces (two row groups of 2,000) fall differently, so row 3,008 is in a
    chunk without the null locally and in the null's piece on Spark."""
    import features.sources

    monkeypatch.setattr(features.sources, "CHUNK_ROWS", 3_000)
    n = 9_000
    orders = pd.DataFrame({"order_id": [f"o{i}" for i in range(n)],
                           "customer_id": pd.array([None if i == 3 else i % 50 for i in range(n)],
                                                   dtype="Int64"),
                           "item_id": ["tv1"] * n, "quantity": [0 if i % 1_000 == 7 else 1 for i in range(n)],
                           "unit_price": [9.5] * n, "ts": pd.Timestamp("2024-03-01T10:00:00Z")})
    write_tables({"items": RAW_TABLES["items"]}, tmp_path / "shop", "parquet")
    plain = pa.Table.from_pandas(orders, preserve_index=False).replace_schema_metadata(None)  # as Spark, DuckDB write
    pq.write_table(plain, tmp_path / "shop" / "orders.parquet", row_group_size=2_000)
    local, on_spark = _both(tmp_path / "shop", spark)
    _assert_same(local, on_spark)
    bad = local.quarantine["orders"].set_index("_row")
    assert bad.loc[3_008, "customer_id"] == str(3_007 % 50) and bad.loc[4, "_reason"] == "customer_id is empty"
