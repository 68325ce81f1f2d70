"""The same shop read from CSV, gzipped CSV, Parquet, SQLite and PostgreSQL gives identical frames."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from features.loading import ShopData, load_shop
from features.schema import TABLES, ContractError
from features import sources
from features.sources import is_database_url, write_sql
from features.table_files import write_tables
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


@pytest.mark.parametrize("target", ["csv", "csv.gz", "parquet", "parts", "sqlite"])
def test_the_chunk_size_changes_nothing(target: str, csv_shop: ShopData, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Read and validated two rows at a time, the shop, its quarantine (rows numbered as in the
    file, a duplicate key claimed in an earlier chunk) and its report are those of one chunk."""
    if target == "sqlite":
        location = f"sqlite:///{tmp_path / 'shop.db'}"
        write_sql(RAW_TABLES, location)
    elif target == "parts":
        location = str(tmp_path / "parts")
        write_tables({k: v for k, v in RAW_TABLES.items() if k != "events"}, location, "parquet")
        _write_parts(tmp_path / "parts", "events", RAW_TABLES["events"], [3])
    else:
        location = str(tmp_path / target)
        write_tables(RAW_TABLES, location, target)  # type: ignore[arg-type]
    whole = load_shop(location, now=NOW)
    monkeypatch.setattr(sources, "CHUNK_ROWS", 2)
    monkeypatch.setattr(sources, "CSV_BLOCK_BYTES", 64)  # several parsed blocks gathered into a chunk
    monkeypatch.setattr(sources, "SQL_CHUNK_ROWS", 3)  # fetches that do not fall on chunk bounds
    chunked = load_shop(location, now=NOW)
    _assert_same_shop(whole, chunked)
    _assert_same_shop(csv_shop, chunked)
    for name in whole.quarantine:
        pd.testing.assert_frame_equal(whole.quarantine[name], chunked.quarantine[name], obj=name)
    assert whole.report.to_dict() == chunked.report.to_dict()
    assert ("items", 7) in {(t, int(r)) for t, q in chunked.quarantine.items() for r in q["_row"]}


def test_only_rows_that_are_not_utf8_are_quarantined_in_any_chunk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_tables({"items": RAW_TABLES["items"].iloc[:5], "orders": RAW_TABLES["orders"].iloc[:5]}, tmp_path, "csv")
    with open(tmp_path / "orders.csv", "ab") as f:
        f.write(b"o9,c\xff\xfe9,beans,1,12,2024-03-01T10:00:00Z\n")
        f.write("o10,c\ufffd10,beans,1,12,2024-03-01T10:00:00Z\n".encode())  # a valid U+FFFD next to it
    monkeypatch.setattr(sources, "CHUNK_ROWS", 2)
    monkeypatch.setattr(sources, "CSV_BLOCK_BYTES", 64)
    shop = load_shop(tmp_path, now=NOW)
    quarantined = shop.quarantine["orders"]
    assert list(zip(quarantined["_row"], quarantined["_reason"], strict=True)) == [(6, "row is not valid UTF-8")]
    assert quarantined["customer_id"].iloc[0] == "c\ufffd\ufffd9"
    assert shop.report.tables["orders"].rows_loaded == 6


def test_a_csv_that_breaks_part_way_names_the_rows_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_tables({"items": RAW_TABLES["items"].iloc[:5], "orders": RAW_TABLES["orders"].iloc[:5]}, tmp_path, "csv")
    with open(tmp_path / "orders.csv", "a") as f:
        f.write("o9,c9,beans,1,12,2024-03-01T10:00:00Z,one field too many\n")
    monkeypatch.setattr(sources, "CSV_BLOCK_BYTES", 64)
    with pytest.raises(ContractError, match=r"orders\.csv: cannot parse CSV after data row [1-5]: .*Expected 6 columns"):
        load_shop(tmp_path, now=NOW)


def test_float_ids_read_the_same_in_any_chunk(tmp_path: Path) -> None:
    """An integral float id loses its '.0' value by value: 2.0 is '2' next to 2.5 or not."""
    write_tables({k: RAW_TABLES[k] for k in ("items", "orders")}, tmp_path, "csv")
    (tmp_path / "events").mkdir()
    events = pd.DataFrame({"event_type": "search", "ts": [f"2024-03-01T10:0{i}:00Z" for i in range(4)]})  # in order
    events.iloc[:2].assign(session_id=[1.0, 2.0]).to_parquet(tmp_path / "events" / "part-0.parquet", index=False)
    events.iloc[2:].assign(session_id=[2.0, 2.5]).to_parquet(tmp_path / "events" / "part-1.parquet", index=False)
    assert list(load_shop(tmp_path, now=NOW)["events"]["session_id"]) == ["1", "2", "2", "2.5"]
    events.iloc[2:].assign(session_id=[float(2**53 + 2), 1.5e18]).to_parquet(tmp_path / "events" / "part-1.parquet",
                                                                            index=False)
    assert list(load_shop(tmp_path, now=NOW)["events"]["session_id"]) == ["1", "2", "9007199254740994",
                                                                          "1500000000000000000"]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts open files through /proc (Linux)")
def test_a_folder_of_parts_holds_one_part_open_at_a_time(tmp_path: Path) -> None:
    """A live event log has thousands of parts: checking them opens none for good, and reading
    holds one at a time, so the open-file limit is never reached."""
    write_tables({k: RAW_TABLES[k] for k in ("items", "orders")}, tmp_path, "csv")
    events = RAW_TABLES["events"]
    _write_parts(tmp_path, "events", events, list(range(1, len(events))))
    open_files = lambda: len(os.listdir("/proc/self/fd"))  # noqa: E731
    before = open_files()
    table = sources.FolderSource(tmp_path).read(TABLES["events"])
    assert open_files() == before
    counts = [open_files() for _ in table.batches()]
    assert max(counts) <= before + 1 and open_files() == before


def test_unreachable_database_is_a_one_line_error() -> None:
    with pytest.raises(ContractError, match="cannot open database"):
        load_shop("postgresql+psycopg://nobody:secret@127.0.0.1:1/none")


def test_database_password_never_appears_in_errors() -> None:
    with pytest.raises(ContractError) as error:
        load_shop("postgresql+psycopg://nobody:s3cr3t@127.0.0.1:1/none")
    assert "s3cr3t" not in str(error.value)


# -- a table given as a folder of Parquet parts (the live event log writes events/ this way) --

def _write_parts(folder: Path, name: str, frame: pd.DataFrame, cuts: list[int]) -> list[Path]:
    """``frame`` split at ``cuts`` into ``folder/name/part-<n>.parquet``."""
    (folder / name).mkdir(parents=True, exist_ok=True)
    bounds = [0, *cuts, len(frame)]
    paths = []
    for n, (start, stop) in enumerate(zip(bounds, bounds[1:], strict=False)):
        path = folder / name / f"part-{n:03d}.parquet"
        frame.iloc[start:stop].reset_index(drop=True).to_parquet(path, index=False)
        paths.append(path)
    return paths


def test_a_folder_of_parquet_parts_loads_like_one_file(tmp_path: Path) -> None:
    write_tables(RAW_TABLES, tmp_path / "one", "parquet")
    parts = {k: v for k, v in RAW_TABLES.items() if k not in ("events", "orders")}
    write_tables(parts, tmp_path / "parts", "parquet")
    _write_parts(tmp_path / "parts", "events", RAW_TABLES["events"], [2, 5])
    _write_parts(tmp_path / "parts", "orders", RAW_TABLES["orders"], [4])
    one, split = load_shop(tmp_path / "one", now=NOW), load_shop(tmp_path / "parts", now=NOW)
    _assert_same_shop(one, split)
    # Row numbers count across the parts in name order: the planted bad events are rows 6 and 7.
    quarantined = split.quarantine["events"]
    assert sorted(quarantined["_row"]) == [6, 7]
    assert set(quarantined["_source"]) == {f"{tmp_path / 'parts' / 'events'}/"}


def test_parts_are_read_in_name_order_and_hidden_files_are_skipped(tmp_path: Path) -> None:
    write_tables({k: RAW_TABLES[k] for k in ("items", "orders")}, tmp_path, "csv")
    events = RAW_TABLES["events"].iloc[:5]
    _write_parts(tmp_path, "events", events, [3])
    (tmp_path / "events" / "part-001.parquet").rename(tmp_path / "events" / "part-b.parquet")
    (tmp_path / "events" / "part-000.parquet").rename(tmp_path / "events" / "part-a.parquet")
    (tmp_path / "events" / "_SUCCESS").write_text("")
    (tmp_path / "events" / ".part-c.parquet.123.tmp").write_bytes(b"half a file")
    shop = load_shop(tmp_path, now=NOW)
    assert list(shop["events"]["ts"].dt.strftime("%d %H:%M")) == ["01 09:50", "01 09:55", "01 10:00",
                                                                  "03 10:00", "03 10:01"]
    assert shop.report.tables["events"].rows_quarantined == 0


def test_parts_may_type_a_column_differently(tmp_path: Path) -> None:
    """Each part is validated on its own, so a part that wrote integer ids next to one that
    wrote text (two writers, two versions) loads as one table of text ids."""
    write_tables({k: RAW_TABLES[k] for k in ("items", "orders")}, tmp_path, "csv")
    (tmp_path / "events").mkdir()
    events = RAW_TABLES["events"].iloc[:2][["session_id", "event_type"]].assign(event_type="search")
    events.assign(session_id=[11, 12], ts=["2024-03-01T10:00:00Z", "2024-03-01T10:01:00Z"]).to_parquet(
        tmp_path / "events" / "part-0.parquet", index=False)
    events.assign(ts=["2024-03-01T10:02:00Z", "2024-03-01T10:03:00Z"]).to_parquet(
        tmp_path / "events" / "part-1.parquet", index=False)
    shop = load_shop(tmp_path, now=NOW)
    assert list(shop["events"]["session_id"]) == ["11", "12", *events["session_id"]]


def test_a_part_missing_a_column_or_unreadable_is_named(tmp_path: Path) -> None:
    write_tables({k: RAW_TABLES[k] for k in ("items", "orders")}, tmp_path, "csv")
    paths = _write_parts(tmp_path, "events", RAW_TABLES["events"], [3])
    RAW_TABLES["events"].drop(columns=["ts"]).to_parquet(paths[1], index=False)
    with pytest.raises(ContractError, match=r"part-001\.parquet: table 'events' is missing required column 'ts'"):
        load_shop(tmp_path, now=NOW)
    paths[1].write_bytes(b"not parquet at all")
    with pytest.raises(ContractError, match=r"part-001\.parquet: not a readable Parquet file"):
        load_shop(tmp_path, now=NOW)


def test_a_file_and_a_folder_for_one_table_is_given_twice(tmp_path: Path) -> None:
    write_tables(RAW_TABLES, tmp_path, "csv")
    _write_parts(tmp_path, "events", RAW_TABLES["events"], [])
    with pytest.raises(ContractError, match=r"table 'events' is given twice \(events\.csv, events/\); "
                                            r"convert events\.csv to Parquet and move it into events/ as one more part"):
        load_shop(tmp_path, now=NOW)
    (tmp_path / "events.csv").unlink()
    RAW_TABLES["events"].to_parquet(tmp_path / "events.parquet", index=False)
    with pytest.raises(ContractError, match=r"move events\.parquet into events/ as one more part"):
        load_shop(tmp_path, now=NOW)
    (tmp_path / "events.parquet").rename(tmp_path / "events" / "part-999.parquet")
    assert load_shop(tmp_path, now=NOW).report.tables["events"].rows_in == 2 * len(RAW_TABLES["events"])


def test_an_empty_table_folder_is_an_absent_table_and_other_files_are_refused(tmp_path: Path) -> None:
    write_tables({k: RAW_TABLES[k] for k in ("items", "orders")}, tmp_path, "csv")
    (tmp_path / "events").mkdir()
    assert "events" in load_shop(tmp_path, now=NOW).report.absent
    RAW_TABLES["events"].to_csv(tmp_path / "events" / "more.csv", index=False)
    with pytest.raises(ContractError, match=r"more\.csv: a table folder holds only Parquet parts"):
        load_shop(tmp_path, now=NOW)


@pytest.mark.parametrize(("location", "database"), [
    ("sqlite:///shop.db", True), ("postgresql+psycopg://u:p@host/db", True), ("shop/data", False),
    ("s3a://bucket/shop", False), ("hdfs:///shop", False), ("file:///tmp/shop", False)])
def test_one_rule_tells_a_database_from_a_filesystem_uri(location: str, database: bool) -> None:
    assert is_database_url(location) is database


def test_a_filesystem_uri_as_data_is_one_clear_error() -> None:
    with pytest.raises(ContractError, match=r"s3a://key:\*\*\*@bucket/shop: 's3a' is not an installed SQLAlchemy "
                                            r"dialect; give a data folder or a database URL"):
        load_shop("s3a://key:secret@bucket/shop")
