"""Importers: public data sets become contract tables, and every source row is accounted for.

Complete Journey runs on the real files (../shared/data) where they exist and on a small
hand-made copy everywhere; REES46 runs on a hand-made file in the exact published shape.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from features.importers import ImportNotes, import_completejourney, import_rees46
from features.loading import ShopData, validate_tables, write_shop
from features.schema import ContractError

NOW = pd.Timestamp("2024-06-01T00:00:00Z")
COMPLETEJOURNEY = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "completejourney"


def _load(tables: dict, source: str) -> ShopData:
    return validate_tables(tables, source=source, now=NOW)


def _reasons(shop: ShopData, table: str) -> dict[str, int]:
    return shop.report.tables[table].reasons


def _assert_nothing_lost(shop: ShopData) -> None:
    for name, t in shop.report.tables.items():
        assert t.rows_loaded + t.rows_quarantined == t.rows_in, name
        assert t.rows_loaded == len(shop[name]), name


# --- Complete Journey, real files -----------------------------------------------------------


@pytest.fixture(scope="module")
def real_cj() -> tuple[ShopData, ImportNotes]:
    if not (COMPLETEJOURNEY / "transactions_sample.csv.gz").is_file():
        pytest.skip(f"Complete Journey data not found at {COMPLETEJOURNEY} (see ../shared/data/README.md)")
    tables, notes = import_completejourney(COMPLETEJOURNEY)
    return _load(tables, "completejourney"), notes


@pytest.mark.realdata
def test_real_completejourney_report_figures(real_cj: tuple[ShopData, ImportNotes]) -> None:
    shop, notes = real_cj
    _assert_nothing_lost(shop)
    report = shop.report.tables
    assert notes.rows_read["transactions_sample.csv.gz"] == report["orders"].rows_in == 75_000
    assert _reasons(shop, "orders") == {"quantity is 0": 416, "|quantity| > 1000 (implausible; contract.max_quantity)": 692,
                                        "item_id not in items": 1}
    assert report["orders"].rows_loaded == 73_891
    # Every product row is either an item candidate or counted as never sold.
    assert notes["products_never_sold"] + report["items"].rows_in == notes.rows_read["products.csv.gz"] == 92_331
    assert report["items"].rows_in == 20_897
    assert _reasons(shop, "items") == {"price is empty": notes["items_without_price"]} == {"price is empty": 78}
    assert notes["lines_of_unknown_products"] == 222
    assert notes["category_from_department"] == 52
    assert report["customers"].rows_loaded == 2_379
    assert report["email_events"].rows_loaded == notes.rows_read["campaigns.csv"] == 6_589
    assert int(shop["email_events"]["opened"].sum()) == 792
    assert notes["redemptions_as_opens"] == 2_102 and notes["redemptions_without_mailout"] == 0


@pytest.mark.realdata
def test_real_completejourney_quantity_zero_lines_match_the_file(real_cj: tuple[ShopData, ImportNotes]) -> None:
    shop, _ = real_cj
    raw = pd.read_csv(COMPLETEJOURNEY / "transactions_sample.csv.gz", usecols=["quantity"])
    zero_rows = set((raw.index[raw["quantity"] <= 0] + 1).tolist())
    quarantined = shop.quarantine["orders"]
    assert set(quarantined.loc[quarantined["_reason"] == "quantity is 0", "_row"].astype(int)) == zero_rows
    assert len(zero_rows) == 416


@pytest.mark.realdata
def test_real_completejourney_values(real_cj: tuple[ShopData, ImportNotes]) -> None:
    shop, _ = real_cj
    orders = shop["orders"]
    # 454,295,34291741191,1121865,3.0,1.02,...,2017-07-26 21:48:54
    line = orders[(orders["order_id"] == "34291741191") & (orders["item_id"] == "1121865")]
    assert len(line) == 1
    assert line["unit_price"].iloc[0] == pytest.approx(1.02 / 3)
    assert line["customer_id"].iloc[0] == "454"
    assert line["ts"].iloc[0] == pd.Timestamp("2017-07-26 21:48:54", tz="UTC")
    assert not orders["order_id"].str.endswith(".0").any()
    items = shop["items"].set_index("item_id")
    assert items.loc["1121865", "price"] > 0
    assert not items["durable"].any()


@pytest.mark.realdata
def test_real_completejourney_written_with_quarantine(real_cj: tuple[ShopData, ImportNotes], tmp_path: Path) -> None:
    shop, _ = real_cj
    write_shop(shop, tmp_path)
    assert len(pd.read_csv(tmp_path / "quarantine" / "orders.csv")) == 1_109
    report = json.loads((tmp_path / "quarantine" / "load_report.json").read_text())
    assert report["tables"]["orders"]["reasons"]["quantity is 0"] == 416


# --- Complete Journey, hand-made folder -----------------------------------------------------

TX_HEADER = ("household_id,store_id,basket_id,product_id,quantity,sales_value,retail_disc,coupon_disc,"
             "coupon_match_disc,week,transaction_timestamp")
MINI_CJ = {
    "transactions_sample.csv": [
        TX_HEADER,
        "1,300,90000000001,10,1.0,2.50,0,0,0,1,2017-01-02 10:00:00",
        "1,300,90000000001,11,3.0,5.00,0,0,0,1,2017-01-02 10:00:00",
        "2,300,90000000002,10,2.0,6.00,0,0,0,1,2017-01-03 11:00:00",
        "2,300,90000000002,11,0.0,0.0,0,0,0,1,2017-01-03 11:00:00",  # quantity 0
        "3,300,90000000003,12,15000.0,40.00,0,0,0,1,2017-01-04 12:00:00",  # fuel
        "3,300,90000000003,99,1.0,1.00,0,0,0,1,2017-01-04 12:00:00",  # product not in products
    ],
    "products.csv": [
        "product_id,manufacturer_id,department,brand,product_category,product_type,package_size",
        "10,1,GROCERY,National,EGGS,EGGS - LARGE,12 CT",
        "11,1,PRODUCE,Private,,,",
        "12,1,FUEL,Private,COUPON/MISC ITEMS,GASOLINE-REG UNLEADED,",
        "13,1,GROCERY,National,MILK,MILK,1 GA",  # never sold
    ],
    "demographics.csv": ["household_id,age", "1,45-54", "4,65+"],
    "campaigns.csv": ["campaign_id,household_id", "1,1", "1,2", "2,4"],
    "campaign_descriptions.csv": ["campaign_id,campaign_type,start_date,end_date",
                                  "1,Type A,2017-01-01,2017-02-01", "2,Type B,2017-02-01,2017-03-01"],
    "coupon_redemptions.csv": ["household_id,coupon_upc,campaign_id,redemption_date",
                               "1,555,1,2017-01-05", "1,556,1,2017-01-06", "3,557,1,2017-01-07"],
}


def _write_mini_cj(folder: Path, skip: tuple[str, ...] = ()) -> Path:
    folder.mkdir()
    for name, lines in MINI_CJ.items():
        if name not in skip:
            (folder / name).write_text("\n".join(lines) + "\n")
    return folder


def test_mini_completejourney_mapping(tmp_path: Path) -> None:
    tables, notes = import_completejourney(_write_mini_cj(tmp_path / "cj"))
    shop = _load(tables, "mini")
    _assert_nothing_lost(shop)
    assert {row: reason for row, reason in zip(shop.quarantine["orders"]["_row"].astype(int),
                                               shop.quarantine["orders"]["_reason"], strict=True)} == {
        4: "quantity is 0", 5: "|quantity| > 1000 (implausible; contract.max_quantity)", 6: "item_id not in items"}
    orders = shop["orders"]
    assert orders["unit_price"].tolist() == pytest.approx([2.5, 5 / 3, 3.0])
    assert orders["order_id"].tolist() == ["90000000001", "90000000001", "90000000002"]

    items = shop["items"].set_index("item_id")
    assert items.index.tolist() == ["10", "11"]
    assert items.loc["10", "price"] == pytest.approx(2.75)  # median of 2.50 and 3.00, not the free line
    assert items.loc["11", ["category", "brand"]].tolist() == ["PRODUCE", "Private"]
    assert pd.isna(items.loc["11", "title"])
    assert _reasons(shop, "items") == {"price is empty": 1}  # fuel only: no price the contract keeps

    assert shop["customers"]["customer_id"].tolist() == ["1", "2", "3", "4"]
    email = shop["email_events"]
    assert email[["customer_id", "campaign_id", "opened"]].values.tolist() == [
        ["1", "1", True], ["2", "1", False], ["4", "2", False]]
    assert email["sent_ts"].tolist() == [pd.Timestamp("2017-01-01", tz="UTC")] * 2 + [
        pd.Timestamp("2017-02-01", tz="UTC")]
    assert not email["clicked"].any()

    assert notes.counts == {
        "unit_price_undefined": 1, "products_never_sold": 1, "lines_of_unknown_products": 1,
        "category_from_department": 1, "items_without_price": 1, "duplicate_campaign_descriptions": 0,
        "redemptions_without_mailout": 1, "redemptions_as_opens": 2,
    }
    assert "completejourney: 1 products never sold in the transactions: not imported as items" in notes.lines()
    assert json.loads(json.dumps(notes.to_dict()))["rows_read"]["transactions_sample.csv"] == 6


def test_mini_completejourney_without_campaigns_has_no_email_events(tmp_path: Path) -> None:
    folder = _write_mini_cj(tmp_path / "cj", skip=("campaigns.csv", "campaign_descriptions.csv",
                                                   "coupon_redemptions.csv", "demographics.csv"))
    tables, notes = import_completejourney(folder)
    assert sorted(tables) == ["customers", "items", "orders"]
    assert _load(tables, "mini")["customers"]["customer_id"].tolist() == ["1", "2", "3"]
    assert any("no email_events" in line for line in notes.lines())


@pytest.mark.parametrize(("skip", "message"), [
    (("coupon_redemptions.csv",), "campaign files incomplete, missing coupon_redemptions.csv"),
    (("products.csv",), "no products.csv.gz or products.csv found"),
    (("transactions_sample.csv",), "no transactions.csv.gz or .* or transactions_sample.csv found"),
])
def test_mini_completejourney_refuses_incomplete_folders(tmp_path: Path, skip: tuple[str, ...],
                                                         message: str) -> None:
    with pytest.raises(ContractError, match=message):
        import_completejourney(_write_mini_cj(tmp_path / "cj", skip=skip))


def test_completejourney_missing_column_names_the_file(tmp_path: Path) -> None:
    folder = _write_mini_cj(tmp_path / "cj")
    (folder / "products.csv").write_text("product_id,department\n10,GROCERY\n")
    with pytest.raises(ContractError, match=r"products\.csv: missing columns 'brand', 'product_category'"):
        import_completejourney(folder)


def test_completejourney_corrupt_line_stops_the_import(tmp_path: Path) -> None:
    folder = _write_mini_cj(tmp_path / "cj")
    with (folder / "transactions_sample.csv").open("a") as handle:
        handle.write("4,300,90000000004,10,1.0,2.50,0,0,0,1,2017-01-05 10:00:00,extra\n")
    with pytest.raises(ContractError, match=r"transactions_sample\.csv: cannot parse CSV: .*line 8"):
        import_completejourney(folder)


# --- REES46 ---------------------------------------------------------------------------------

REES46_ROWS = [
    "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session",
    "2019-10-01 00:00:00 UTC,view,1001,2053013555631882655,electronics.smartphone,samsung,489.07,501,s1",
    "2019-10-01 00:00:05 UTC,view,1002,2053013566100866035,,,32.10,501,s1",  # no category_code
    "2019-10-01 00:01:00 UTC,cart,1001,2053013555631882655,electronics.smartphone,samsung,489.07,501,s1",
    "2019-10-01 00:01:30 UTC,remove_from_cart,1001,2053013555631882655,electronics.smartphone,samsung,489.07,501,s1",
    "2019-10-01 00:02:00 UTC,cart,1002,2053013566100866035,,,32.10,501,s1",
    "2019-10-01 00:03:00 UTC,purchase,1002,2053013566100866035,,,32.10,501,s1",
    "2019-10-01 00:03:00 UTC,purchase,1001,2053013555631882655,electronics.smartphone,samsung,479.00,501,s1",
    "2019-10-01 00:04:00 UTC,view,1003,2053013555631882655,electronics.smartphone,apple,abc,502,s2",  # 8
    "2019-10-01 00:05:00 UTC,view,1002,2053013566100866035,,,-1,502,s2",  # 9: negative price
    "2019-10-01 00:06:00 UTC,purchase,1001,2053013555631882655,electronics.smartphone,samsung,oops,503,s3",
    "2019-10-01 00:07:00 UTC,view,1001,2053013555631882655,electronics.smartphone,samsung,479.00,,s4",  # anonymous
    "2019-10-01 00:08:00 UTC,purchase,1002,2053013566100866035,,,32.10,,s4",  # 12: anonymous purchase
    "2019-10-01 00:10:00 UTC,purchase,1001,2053013555631882655,electronics.smartphone,samsung,479.00,504,",
    "yesterday,view,1002,2053013566100866035,,,32.10,505,s5",  # 14
    "2019-10-01 00:12:00 UTC,refund,1002,2053013566100866035,,,n/a,505,s5",  # 15: last row of 1002, bad price
]


@pytest.fixture
def rees46_file(tmp_path: Path) -> Path:
    path = tmp_path / "2019-Oct.csv"
    path.write_text("\n".join(REES46_ROWS) + "\n")
    return path


def _quarantined(shop: ShopData, table: str) -> dict[int, str]:
    frame = shop.quarantine[table]
    return dict(zip(frame["_row"].astype(int), frame["_reason"], strict=True))


def test_rees46_tables_and_quarantine(rees46_file: Path) -> None:
    tables, notes = import_rees46(rees46_file)
    shop = _load(tables, "rees46")
    _assert_nothing_lost(shop)

    items = shop["items"].set_index("item_id")
    assert items.index.tolist() == ["1001", "1002"]
    assert items.loc["1001", ["category", "brand", "price"]].tolist() == ["electronics.smartphone", "samsung", 479.0]
    assert items.loc["1002", "category"] == "category_2053013566100866035"
    assert items.loc["1002", "price"] == 32.10  # rows 9 and 15 have no usable price, row 14 does
    assert _quarantined(shop, "items") == {8: "price is not a number"}

    assert shop.report.tables["events"].rows_in == 15
    assert _quarantined(shop, "events") == {
        8: "item_id not in items", 13: "session_id is empty", 14: "ts is not an ISO 8601 timestamp",
        15: "event_type is not one of view, cart, remove_from_cart, wishlist, search, purchase"}
    events = shop["events"]
    assert events["event_type"].value_counts().to_dict() == {"view": 4, "purchase": 4, "cart": 2,
                                                             "remove_from_cart": 1}
    assert events["ts"].iloc[0] == pd.Timestamp("2019-10-01 00:00:00", tz="UTC")
    assert events["customer_id"].isna().sum() == 2  # anonymous events stay, without a customer

    assert shop.report.tables["orders"].rows_in == 5
    assert _quarantined(shop, "orders") == {10: "unit_price is not a number", 12: "customer_id is empty"}
    orders = shop["orders"]
    assert orders["order_id"].tolist() == ["s1:501", "s1:501", "nosession:504:2019-10-01 00:10:00Z"]
    assert orders["unit_price"].tolist() == [32.10, 479.0, 479.0]
    assert orders["quantity"].tolist() == [1.0, 1.0, 1.0]

    assert notes.rows_read == {"2019-Oct.csv": 15}
    assert notes.counts == {"purchases_without_session": 1, "rows_with_unusable_price": 4,
                            "category_from_id": 1, "items_without_usable_price": 1}


def test_rees46_result_does_not_depend_on_chunk_size(rees46_file: Path, tmp_path: Path) -> None:
    whole, whole_notes = import_rees46(rees46_file)
    gz = tmp_path / "2019-Oct.csv.gz"
    gz.write_bytes(gzip.compress(rees46_file.read_bytes()))
    messages: list[str] = []
    chunked, chunked_notes = import_rees46(gz, progress=messages.append, chunk_rows=4)
    assert messages[-1] == "read 15 rows from 2019-Oct.csv.gz" and len(messages) == 4
    for name in whole:
        pd.testing.assert_frame_equal(whole[name].data, chunked[name].data)
    assert chunked_notes.counts == whole_notes.counts
    assert _load(chunked, "gz").report.to_dict()["tables"]["events"]["reasons"] == \
        _load(whole, "csv").report.to_dict()["tables"]["events"]["reasons"]


def test_rees46_bad_utf8_row_is_quarantined_not_fatal(rees46_file: Path) -> None:
    data = rees46_file.read_bytes().replace(b"apple", b"appl\xe9")
    rees46_file.write_bytes(data)
    shop = _load(import_rees46(rees46_file)[0], "rees46")
    assert _quarantined(shop, "events")[8] == "row is not valid UTF-8"


def test_rees46_missing_column_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("event_time,event_type,product_id\n2019-10-01 00:00:00 UTC,view,1\n")
    with pytest.raises(ContractError, match="missing columns 'category_id'"):
        import_rees46(path)


def test_rees46_line_with_too_many_fields_stops_the_import(rees46_file: Path) -> None:
    with rees46_file.open("a") as handle:  # an unquoted comma in the brand: ten fields
        handle.write("2019-10-01 00:13:00 UTC,view,1001,2053013555631882655,electronics.smartphone,"
                     "samsung, inc,479.00,501,s1\n")
    with pytest.raises(ContractError, match="Expected 9 fields in line 17, saw 10"):
        import_rees46(rees46_file, chunk_rows=4)
