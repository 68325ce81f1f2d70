"""Returns in real order exports: negative quantities take back what was bought, never dirt.

The fixture is a small order file in the shape of a wholesaler's invoice export (the Online
Retail layout: invoice numbers, ``C``-prefixed cancellation invoices with negative
quantities, bulk lines of thousands of units), written by the test.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.dataset import InteractionConfig, build_dataset
from features.loading import load_shop
from features.profiles import rfm
from features.returns import net_returns
from features.schema import ContractConfig

SHOPREC = str(Path(sys.executable).with_name("shoprec"))
NOW = pd.Timestamp("2012-01-01", tz="UTC")
ITEMS = """item_id,category,price
85123A,home,2.55
71053,home,3.39
84406B,kitchen,2.75
22423,kitchen,12.75
23166,storage,1.04
"""
# invoice, customer, item, quantity, price, time
ORDERS = """order_id,customer_id,item_id,quantity,unit_price,ts
536365,17850,85123A,6,2.55,2011-12-01T08:26:00Z
536365,17850,71053,6,3.39,2011-12-01T08:26:00Z
536366,17850,84406B,8,2.75,2011-12-01T08:28:00Z
C536379,17850,84406B,-8,2.75,2011-12-01T09:41:00Z
536400,13047,22423,12,12.75,2011-12-01T10:00:00Z
536401,13047,22423,12,12.75,2011-12-02T10:00:00Z
C536402,13047,22423,-4,12.75,2011-12-03T10:00:00Z
C536403,13047,71053,-2,3.39,2011-12-03T11:00:00Z
541431,12346,23166,74215,1.04,2011-12-04T10:01:00Z
C541433,12346,23166,-74215,1.04,2011-12-04T10:17:00Z
541500,14911,85123A,1200,2.30,2011-12-05T09:00:00Z
541501,14911,85123A,0,2.30,2011-12-05T09:05:00Z
"""


@pytest.fixture
def wholesaler(tmp_path: Path) -> Path:
    folder = tmp_path / "wholesaler"
    folder.mkdir()
    (folder / "items.csv").write_text(ITEMS)
    (folder / "orders.csv").write_text(ORDERS)
    return folder


def test_returns_lower_or_cancel_the_purchases_they_take_back(wholesaler: Path) -> None:
    shop = load_shop(wholesaler, now=NOW, config=ContractConfig(max_quantity=None))
    orders = shop["orders"].set_index(["order_id", "item_id"])
    report = shop.report.tables["orders"]
    assert "C536379" not in orders.index.get_level_values(0)  # return lines are never purchases
    assert ("536366", "84406B") not in orders.index  # all 8 units came back: cancelled
    assert ("541431", "23166") not in orders.index  # the bulk line cancelled by its own C-invoice
    # 24 bought in two invoices, 4 returned: taken from the most recent one
    assert orders.loc[("536400", "22423"), "quantity"] == 12 and orders.loc[("536401", "22423"), "quantity"] == 8
    assert orders.loc[("541500", "85123A"), "quantity"] == 1200  # the shop allows bulk lines
    assert report.rows_returned == 4 and report.rows_cancelled == 2
    assert report.returns == {"return_lines": 4, "returned_units": 74229.0, "cancelled_lines": 2,
                              "reduced_lines": 1, "unmatched_lines": 1, "unmatched_units": 2.0}
    assert report.reasons == {"quantity is 0": 1}
    for name, table in shop.report.tables.items():
        assert table.rows_accounted == table.rows_in, name


def test_returns_leave_the_matrix_and_profiles_as_if_the_units_were_never_kept(wholesaler: Path) -> None:
    shop = load_shop(wholesaler, now=NOW, config=ContractConfig(max_quantity=None))
    data = build_dataset(shop, InteractionConfig(half_life_days=None))
    weight = pd.DataFrame(data.interactions.toarray(), index=data.customers.external_ids,
                          columns=data.items.external_ids)
    assert weight.loc["17850", "84406B"] == 0 and weight["23166"].sum() == 0
    assert "12346" not in weight.index  # bought and returned everything: nothing to learn from
    # 12 + 8 units left of 22423, each line weighted 1 + ln(quantity)
    assert weight.loc["13047", "22423"] == pytest.approx((1 + np.log(12)) + (1 + np.log(8)), rel=1e-6)
    # a 1,200-unit line weighs 1 + ln(1200) = 8.1, not 1,200 times a single unit
    assert weight.loc["14911", "85123A"] == pytest.approx(1 + np.log(1200), rel=1e-6)
    spend = rfm(shop["orders"], NOW)["monetary"]
    assert spend["17850"] == pytest.approx(6 * 2.55 + 6 * 3.39)  # the returned 8 x 2.75 is not spend


def test_the_default_bound_quarantines_bulk_lines_and_the_shop_can_lift_it(wholesaler: Path) -> None:
    strict = load_shop(wholesaler, now=NOW)
    reasons = strict.report.tables["orders"].reasons
    assert reasons == {"|quantity| > 1000 (implausible; contract.max_quantity)": 3, "quantity is 0": 1}
    assert strict.report.tables["orders"].rows_accounted == strict.report.tables["orders"].rows_in
    lifted = subprocess.run([SHOPREC, "validate", str(wholesaler), "--max-quantity", "100000"],
                            capture_output=True, text=True, timeout=120)
    assert lifted.returncode == 0 and "implausible" not in lifted.stdout and "quantity is 0: 1" in lifted.stdout
    bad = subprocess.run([SHOPREC, "validate", str(wholesaler), "--max-quantity", "lots"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--max-quantity 'lots': give a positive number or 'none'" in bad.stderr


def test_a_return_takes_from_the_latest_earlier_purchase_only() -> None:
    ts = pd.to_datetime(["2024-01-01", "2024-01-05", "2024-01-10", "2024-01-03"], utc=True)
    orders = pd.DataFrame({"order_id": ["a", "b", "c", "r"], "customer_id": "c1", "item_id": "i1",
                           "quantity": [2.0, 3.0, 5.0, -4.0], "unit_price": 1.0, "ts": ts})
    kept, report = net_returns(orders)
    # the return on Jan 3 can only take from the Jan 1 purchase (2 units); 2 units are unmatched
    assert kept["order_id"].tolist() == ["b", "c"] and kept["quantity"].tolist() == [3.0, 5.0]
    assert (report.cancelled_lines, report.unmatched_lines, report.unmatched_units) == (1, 1, 2.0)
    untouched, nothing = net_returns(orders.iloc[:3])
    assert untouched is orders.iloc[:3] or untouched.equals(orders.iloc[:3])
    assert nothing.return_lines == 0
