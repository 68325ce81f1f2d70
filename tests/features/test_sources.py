"""The same shop read from CSV, gzipped CSV, Parquet, SQLite and PostgreSQL gives identical frames."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from features.loading import ShopData, load_shop
from features.schema import ContractError
from features.sources import write_sql, write_tables
from tests.features.shop_fixtures import RAW_TABLES

NOW = pd.Timestamp("2024-06-01T00:00:00Z")


def _assert_same_shop(a: ShopData, b: ShopData) -> None:
    assert set(a.tables) == set(b.tables)
    for name in a.tables:
        left = a[name].reset_index(drop=True)
        right = b[name].reset_index(drop=True)
        pd.testing.assert_frame_equal(left, right, check_exact=True, obj=name)
        assert a.report.tables[name].reasons == b.report.tables[name].reasons, name


@pytest.fixture
def csv_shop(tmp_path: Path) -> ShopData:
    write_tables(RAW_TABLES, tmp_path / "csv", "csv")
    return load_shop(tmp_path / "csv", now=NOW)


@pytest.mark.parametrize("fmt", ["csv.gz", "parquet"])
def test_text_tables_in_files_load_identically(fmt: str, csv_shop: ShopData, tmp_path: Path) -> None:
    write_tables(RAW_TABLES, tmp_path / fmt, fmt)  # type: ignore[arg-type]
    _assert_same_shop(csv_shop, load_shop(tmp_path / fmt, now=NOW))


def test_sqlite_loads_identically(csv_shop: ShopData, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    write_sql(RAW_TABLES, url)
    _assert_same_shop(csv_shop, load_shop(url, now=NOW))


@pytest.mark.postgres
def test_postgres_loads_identically(csv_shop: ShopData, postgres_url: str) -> None:
    write_sql(RAW_TABLES, postgres_url)
    _assert_same_shop(csv_shop, load_shop(postgres_url, now=NOW))


@pytest.mark.parametrize("target", ["parquet", "sqlite", "postgres"])
def test_typed_columns_round_trip(target: str, csv_shop: ShopData, tmp_path: Path, request) -> None:
    """Typed sources (real timestamps, booleans, floats) give the same frames as text sources."""
    if target == "parquet":
        location = str(tmp_path / "typed")
        write_tables(csv_shop.tables, location, "parquet")
    elif target == "sqlite":
        location = f"sqlite:///{tmp_path / 'typed.db'}"
        write_sql(csv_shop.tables, location)
    else:
        location = request.getfixturevalue("postgres_url")
        write_sql(csv_shop.tables, location)
    again = load_shop(location, now=NOW)
    for name in csv_shop.tables:
        pd.testing.assert_frame_equal(csv_shop[name], again[name], check_exact=True, obj=name)
        assert again.report.tables[name].rows_quarantined == 0


def test_integer_ids_become_strings_without_decimals(tmp_path: Path) -> None:
    items = pd.DataFrame({"item_id": [1001, 1002], "category": ["a", "b"], "price": [1.0, 2.0]})
    orders = pd.DataFrame({"order_id": [1.0, None], "customer_id": [7, 8], "item_id": [1001, 1002],
                           "quantity": [1, 1], "unit_price": [1.0, 2.0],
                           "ts": pd.to_datetime(["2024-01-01", "2024-01-02"])})
    write_tables({"items": items, "orders": orders}, tmp_path, "parquet")
    shop = load_shop(tmp_path, now=NOW)
    assert list(shop["items"]["item_id"]) == ["1001", "1002"]
    assert list(shop["orders"]["order_id"]) == ["1"]
    assert shop.report.tables["orders"].reasons == {"order_id is empty": 1}


def test_unreachable_database_is_a_one_line_error() -> None:
    with pytest.raises(ContractError, match="cannot open database"):
        load_shop("postgresql+psycopg://nobody:secret@127.0.0.1:1/none")


def test_database_password_never_appears_in_errors() -> None:
    with pytest.raises(ContractError) as error:
        load_shop("postgresql+psycopg://nobody:s3cr3t@127.0.0.1:1/none")
    assert "s3cr3t" not in str(error.value)
