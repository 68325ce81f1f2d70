"""Tables written a block of rows at a time: the files read back as the whole table written at
once, appear whole or not at all, and refuse a block whose types differ from the first's."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from features.sources import open_source
from features.schema import TABLES
from features.table_files import TableFiles, write_tables

ORDERS = pd.DataFrame({
    "order_id": pd.Series([f"o{i}" for i in range(9)], dtype="str"),
    "customer_id": pd.Series(["c1", "c2", "c3"] * 3, dtype="str"),
    "item_id": pd.Series(["i1", "i2", "i3"] * 3, dtype="str"),
    "quantity": [1.0, 2.0, 1.0] * 3,
    "unit_price": [9.99, 0.5, 120.0] * 3,
    "ts": pd.to_datetime(["2025-01-01T10:00:00.123456Z", "2025-02-01T00:00:00Z", "2025-03-01T23:59:59Z"] * 3,
                         format="ISO8601"),
})


def _read(folder: Path, name: str) -> pd.DataFrame:
    source = open_source(folder)
    return pd.concat(list(source.read(TABLES[name]).data), ignore_index=True)


@pytest.mark.parametrize("fmt", ["csv", "csv.gz", "parquet"])
def test_blocks_read_back_as_the_table_written_at_once(fmt: str, tmp_path: Path) -> None:
    write_tables({"orders": ORDERS}, tmp_path / "whole", fmt)  # type: ignore[arg-type]
    with TableFiles(tmp_path / "blocks", fmt) as files:  # type: ignore[arg-type]
        for start in (0, 4, 7):
            files.append({"orders": ORDERS.iloc[start:start + (4 if start == 0 else 3)]})
    assert files.rows == {"orders": 9}
    assert [p.name for p in files.written] == [f"orders.{fmt}"]
    pd.testing.assert_frame_equal(_read(tmp_path / "blocks", "orders"), _read(tmp_path / "whole", "orders"))
    assert len(_read(tmp_path / "blocks", "orders")) == 9


def test_a_failed_write_leaves_the_folder_as_it_was(tmp_path: Path) -> None:
    write_tables({"orders": ORDERS.iloc[:2]}, tmp_path, "parquet")
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(RuntimeError), TableFiles(tmp_path, "parquet") as files:
        files.append({"orders": ORDERS, "items": pd.DataFrame({"item_id": ["i1"]})})
        raise RuntimeError("the generator failed half-way")
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no temporary file, no new table
    assert len(_read(tmp_path, "orders")) == 2


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("other", [ORDERS.assign(quantity="two"), ORDERS.assign(extra=1.0),
                                   ORDERS[list(reversed(ORDERS.columns))]], ids=["type", "extra column", "order"])
def test_a_block_unlike_the_first_is_refused_and_nothing_is_written(fmt: str, other: pd.DataFrame,
                                                                    tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="orders: a block with columns"), \
            TableFiles(tmp_path, fmt) as files:  # type: ignore[arg-type]
        files.append({"orders": ORDERS})
        files.append({"orders": other})
    assert list(tmp_path.iterdir()) == []


def test_a_failed_close_surfaces_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    files = TableFiles(tmp_path, "csv.gz")
    files.append({"orders": ORDERS, "items": pd.DataFrame({"item_id": ["i1"]}), "customers": ORDERS.iloc[:1]})
    files._temporary("items").unlink()  # the second rename fails: its file is gone
    with pytest.raises(FileNotFoundError):
        files.close()
    assert [p.name for p in tmp_path.iterdir()] == ["orders.csv.gz"]  # renamed before the failure


def test_a_table_written_in_another_format_is_replaced(tmp_path: Path) -> None:
    write_tables({"orders": ORDERS}, tmp_path, "csv")
    with TableFiles(tmp_path, "parquet") as files:
        files.append({"orders": ORDERS})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["orders.parquet"]
