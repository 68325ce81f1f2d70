"""Loading a shop: every planted bad row quarantined with its reason, nothing lost, aliases merged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.loading import ShopData, load_shop
from features.sample import SampleConfig, generate_shop
from features.schema import TIMED_TABLES, ContractError
from features.table_files import write_tables
from tests.features.shop_fixtures import PLANTED_REASONS, RAW_TABLES

NOW = pd.Timestamp("2024-06-01T00:00:00Z")


@pytest.fixture
def shop_dir(tmp_path: Path) -> Path:
    write_tables(RAW_TABLES, tmp_path / "shop", "csv")
    return tmp_path / "shop"


def test_every_planted_bad_row_is_quarantined_with_its_reason(shop_dir: Path) -> None:
    shop = load_shop(shop_dir, now=NOW)
    found = {
        (table, int(row)): reason
        for table, frame in shop.quarantine.items()
        for row, reason in zip(frame["_row"], frame["_reason"], strict=True)
    }
    assert found == PLANTED_REASONS


def test_nothing_is_lost(shop_dir: Path) -> None:
    shop = load_shop(shop_dir, now=NOW)
    for name, raw in RAW_TABLES.items():
        t = shop.report.tables[name]
        assert t.rows_in == len(raw)
        assert t.rows_accounted == t.rows_in, name
        assert t.rows_loaded == len(shop[name])
        assert t.rows_quarantined == len(shop.quarantine[name])
    assert shop.report.tables["orders"].reasons == {
        "item_id not in items": 1, "quantity is 0": 1, "|quantity| > 1000 (implausible; contract.max_quantity)": 1,
        "ts is not an ISO 8601 timestamp": 1,
    }


def test_quarantine_names_file_row_column_and_keeps_raw_values(shop_dir: Path, tmp_path: Path) -> None:
    shop = load_shop(shop_dir, now=NOW)
    written = shop.write_quarantine(tmp_path / "quarantine")
    items_q = pd.read_csv(tmp_path / "quarantine" / "items.csv", dtype=str, keep_default_na=False)
    row = items_q[items_q["_row"] == "6"].iloc[0]
    assert row["_source"] == str(shop_dir / "items.csv")
    assert row["_column"] == "price"
    assert row["price"] == "1,299.00"  # the raw text, not a parsed value
    report = json.loads((tmp_path / "quarantine" / "load_report.json").read_text())
    assert report["tables"]["items"]["rows_quarantined"] == 4
    assert {p.name for p in written} >= {"items.csv", "orders.csv", "load_report.json"}


def test_canonical_types_defaults_and_utc(shop_dir: Path) -> None:
    shop = load_shop(shop_dir, now=NOW)
    items = shop["items"].set_index("item_id")
    assert items["durable"].dtype == "bool" and items["in_stock"].dtype == "bool"
    assert items.loc["tv2", "durable"]  # "1"
    assert not items.loc["mug", "durable"]  # empty -> default False
    assert not items.loc["mug", "in_stock"]
    assert items["price"].dtype == "float64"
    assert "extra_column" not in shop["items"].columns
    assert "_row" not in shop["orders"].columns
    orders = shop["orders"]
    assert str(orders["ts"].dtype) == "datetime64[us, UTC]"
    o2 = orders[orders["order_id"] == "o2"].iloc[0]
    assert o2["ts"] == pd.Timestamp("2024-03-02T06:30:00Z")  # +02:00 converted to UTC
    o3 = orders[orders["order_id"] == "o3"].iloc[0]
    assert o3["ts"] == pd.Timestamp("2024-03-05T09:00:00Z")  # naive taken as UTC
    events = shop["events"]
    assert events.loc[events["event_type"] == "search", "item_id"].isna().all()
    assert events.loc[events["session_id"] == "s2", "customer_id"].isna().all()  # anonymous


def test_aliases_merge_ids_before_features(shop_dir: Path) -> None:
    shop = load_shop(shop_dir, now=NOW)
    for name in ("orders", "events", "customers", "email_events"):
        assert "c2-old" not in set(shop[name]["customer_id"].dropna()), name
    assert sorted(shop["orders"].loc[shop["orders"]["customer_id"] == "c2", "order_id"]) == ["o2", "o3"]
    customers = shop["customers"].set_index("customer_id")
    assert len(customers) == 3 and shop.report.tables["customers"].rows_merged == 1
    assert not customers.loc["c2", "email_opt_in"]  # an opt-out on either profile wins
    assert customers.loc["c2", "created_at"] == pd.Timestamp("2022-06-01T00:00:00Z")  # earliest profile
    assert shop.report.tables["orders"].ids_remapped == 1
    assert shop.report.tables["email_events"].ids_remapped == 1


def test_missing_required_table_names_it(tmp_path: Path) -> None:
    write_tables({"items": RAW_TABLES["items"]}, tmp_path, "csv")
    with pytest.raises(ContractError, match=r"required table 'orders' not found"):
        load_shop(tmp_path)


def test_missing_required_column_names_table_column_and_file(tmp_path: Path) -> None:
    write_tables({"items": RAW_TABLES["items"], "orders": RAW_TABLES["orders"].drop(columns=["unit_price"])},
                 tmp_path, "csv")
    with pytest.raises(ContractError) as error:
        load_shop(tmp_path)
    message = str(error.value)
    assert str(tmp_path / "orders.csv") in message
    assert "table 'orders' is missing required column 'unit_price'" in message


def test_timestamps_in_the_future_are_quarantined(tmp_path: Path) -> None:
    orders = RAW_TABLES["orders"].iloc[:2].copy()
    orders.loc[1, "ts"] = "2024-07-01T00:00:00Z"
    write_tables({"items": RAW_TABLES["items"], "orders": orders}, tmp_path, "csv")
    shop = load_shop(tmp_path, now=NOW)
    assert shop.report.tables["orders"].reasons == {"ts is in the future": 1}


def test_a_table_given_twice_is_refused(tmp_path: Path) -> None:
    write_tables(RAW_TABLES, tmp_path, "csv")
    RAW_TABLES["items"].to_parquet(tmp_path / "items.parquet")
    with pytest.raises(ContractError, match="given twice"):
        load_shop(tmp_path)


def test_non_utf8_rows_are_quarantined_not_fatal(tmp_path: Path) -> None:
    write_tables({"items": RAW_TABLES["items"].iloc[:5], "orders": RAW_TABLES["orders"].iloc[:5]}, tmp_path, "csv")
    with open(tmp_path / "orders.csv", "ab") as f:
        f.write(b"o9,c\xff\xfe9,beans,1,12,2024-03-01T10:00:00Z\n")
    shop = load_shop(tmp_path, now=NOW)
    assert shop.report.tables["orders"].reasons == {"row is not valid UTF-8": 1}
    assert shop.report.tables["orders"].rows_loaded == 5


def test_open_times_must_follow_the_send_and_an_open(tmp_path: Path) -> None:
    emails = pd.DataFrame({
        "customer_id": ["c1", "c1", "c1", "c1"], "campaign_id": ["m1", "m2", "m3", "m4"],
        "sent_ts": ["2024-05-01T08:00:00Z"] * 4, "opened": ["true", "true", "false", "false"],
        "opened_ts": ["2024-05-01T19:00:00Z", "2024-04-30T19:00:00Z", "2024-05-02T07:00:00Z", ""]})
    write_tables({"items": RAW_TABLES["items"], "orders": RAW_TABLES["orders"].iloc[:2], "email_events": emails},
                 tmp_path, "csv")
    shop = load_shop(tmp_path, now=NOW)
    assert shop.report.tables["email_events"].reasons == {"opened_ts is before sent_ts": 1,
                                                          "opened_ts is set on a mail that was not opened": 1}
    kept = shop["email_events"]
    assert kept["campaign_id"].tolist() == ["m1", "m4"] and kept["opened_ts"].isna().tolist() == [False, True]


@pytest.mark.parametrize("in_time_order", [True, False])
def test_a_time_cut_keeps_the_rows_a_filter_keeps(shop_dir: Path, in_time_order: bool) -> None:
    """A table in time order is cut by position: the same rows, index and types as the row
    filter that cuts any other table, at cut-offs on, between and outside its timestamps."""
    shop = load_shop(shop_dir, now=NOW)
    tables = dict(shop.tables)
    for name in ("events", "orders"):
        ordered = tables[name].sort_values("ts", kind="stable").reset_index(drop=True)
        tables[name] = ordered if in_time_order else ordered.iloc[::-1].reset_index(drop=True)
        assert tables[name]["ts"].is_monotonic_increasing == in_time_order
    shop = ShopData(tables=tables, report=shop.report, quarantine=shop.quarantine)
    stamps = sorted(tables["events"]["ts"])
    middle = stamps[len(stamps) // 2]
    for cutoff in (stamps[0] - pd.Timedelta(days=1), stamps[0], middle, middle + pd.Timedelta(seconds=1),
                   stamps[-1], stamps[-1] + pd.Timedelta(days=1)):
        for cut, keeps in ((shop.before(cutoff), lambda ts: ts < cutoff), (shop.since(cutoff), lambda ts: ts >= cutoff)):
            for name in ("events", "orders"):
                whole = shop[name]
                pd.testing.assert_frame_equal(cut[name], whole[keeps(whole["ts"])].reset_index(drop=True))


def test_nullable_integer_flags_and_ids_from_parquet_load(tmp_path: Path) -> None:
    """pandas writes a nullable integer column as such, and reads it back as ``Int64``: a 0/1
    opt-in with a gap, and ids with one, are booleans and ids like any other."""
    write_tables({name: RAW_TABLES[name] for name in ("items", "orders")}, tmp_path / "shop", "csv")
    customers = pd.DataFrame({"customer_id": pd.array([1, 2, None], dtype="Int64"),
                              "email_opt_in": pd.array([1, None, 0], dtype="Int64"),
                              "created_at": ["2023-01-01T00:00:00Z"] * 3})
    write_tables({"customers": customers}, tmp_path / "shop", "parquet")
    shop = load_shop(tmp_path / "shop", now=NOW)
    assert shop["customers"]["customer_id"].tolist() == ["1", "2"]
    assert shop["customers"]["email_opt_in"].tolist() == [True, True]  # a gap takes the default
    assert shop.quarantine["customers"]["_reason"].tolist() == ["customer_id is empty"]


def test_timed_tables_are_loaded_in_time_order_so_a_cut_shares_their_rows(tmp_path: Path) -> None:
    """Parts written one after another (two exports, blocks of customers) are not in time order
    as read; the loader sorts each timed table once, stably, so every cut is a slice."""
    shop = generate_shop(SampleConfig(customers=60, items=60, days=30, dirty_share=0.0))
    orders = shop.tables["orders"]
    tied = orders.iloc[[1, 2]].assign(order_id=["o-tie-b", "o-tie-a"], ts=orders["ts"].iloc[0])
    backwards = pd.concat([orders.iloc[len(orders) // 2:], orders.iloc[:len(orders) // 2], tied], ignore_index=True)
    write_tables({**shop.tables, "orders": backwards}, tmp_path, "parquet")
    loaded = load_shop(tmp_path)
    for name, column in TIMED_TABLES.items():
        assert loaded[name][column].is_monotonic_increasing, name
    kept = loaded["orders"]
    assert sorted(kept["order_id"]) == sorted(backwards["order_id"])
    at_first = kept.loc[kept["ts"] == orders["ts"].iloc[0], "order_id"].tolist()
    assert at_first[-2:] == ["o-tie-b", "o-tie-a"], "one instant's rows keep the source's order"
    cut = loaded.before(kept["ts"].iloc[len(kept) // 2])
    assert np.shares_memory(cut["orders"]["quantity"].to_numpy(), kept["quantity"].to_numpy())
