"""A corpus of broken shop exports: each gets a clear one-line error or a quarantine report, never a traceback.

Run through the real `shoprec validate` command, as a data owner would.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

SHOPREC = str(Path(sys.executable).with_name("shoprec"))
ITEMS = "item_id,category,price\ni1,tv,499\ni2,coffee,12.5\n"
ORDERS = "order_id,customer_id,item_id,quantity,unit_price,ts\no1,c1,i1,1,499,2024-01-01T10:00:00Z\n"


def write(folder: Path, items: str | bytes = ITEMS, orders: str | bytes = ORDERS) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in (("items.csv", items), ("orders.csv", orders)):
        mode = "wb" if isinstance(content, bytes) else "w"
        with open(folder / name, mode) as f:
            f.write(content)


def corrupt_parquet_items(folder: Path) -> None:
    """items.parquet whose footer reads but whose data pages are damaged (a torn copy)."""
    import pandas as pd

    write(folder)
    (folder / "items.csv").unlink()
    pd.DataFrame({"item_id": [f"i{n}" for n in range(5000)], "category": "tv",
                  "price": [float(n) for n in range(5000)]}).to_parquet(folder / "items.parquet")
    data = bytearray((folder / "items.parquet").read_bytes())
    for position in range(200, 2000):
        data[position] ^= 0x5A
    (folder / "items.parquet").write_bytes(bytes(data))


def truncated_gzip_orders(folder: Path) -> None:
    import gzip

    write(folder)
    (folder / "orders.csv").unlink()
    (folder / "orders.csv.gz").write_bytes(gzip.compress(ORDERS.encode() * 50)[:25])


Case = tuple[Callable[[Path], None], int, str]
CASES: dict[str, Case] = {
    "empty file": (lambda d: write(d, orders=""), 2, "orders.csv: file is empty"),
    "header only": (lambda d: write(d, orders=ORDERS.splitlines()[0] + "\n"), 2,
                    "orders.csv: required table 'orders' has no rows (a header only, or an empty table)"),
    "semicolon-separated": (lambda d: write(d, items=ITEMS.replace(",", ";")), 2,
                            "(found: item_id;category;price); the file looks semicolon-separated"),
    "tab-separated": (lambda d: write(d, items=ITEMS.replace(",", "\t")), 2, "the file looks tab-separated"),
    "header with case and spaces": (lambda d: write(d, items=ITEMS.replace("item_id,category", "Item_ID, category ")),
                                    2, "'Item_ID' should be 'item_id'"),  # the spaces are stripped on read
    "control characters in ids": (lambda d: write(d, orders=ORDERS + "o2,c\x1b[31m1,i2,1,1,2024-01-02T00:00:00Z\n"
                                                                      "o3,c\u200b1,i2,1,1,2024-01-02T00:00:00Z\n"),
                                  0, "customer_id holds a control or invisible character: 2"),
    "no items table": (lambda d: (write(d), (d / "items.csv").unlink()), 2, "required table 'items' not found"),
    "wrong column names": (lambda d: write(d, items="id,cat,cost\ni1,tv,1\n"), 2,
                           "table 'items' is missing required columns 'item_id', 'category', 'price'"),
    "all rows bad": (lambda d: write(d, orders=ORDERS.splitlines()[0] + "\no1,c1,i1,0,x,never\n"), 0,
                     "quantity is 0: 1"),
    "duplicated ids": (lambda d: write(d, items=ITEMS + "i1,tv,450\n"), 0, "duplicate item_id: 1"),
    "future timestamps": (lambda d: write(d, orders=ORDERS.replace("2024", "2099")), 0, "ts is in the future: 1"),
    "price with comma": (lambda d: write(d, items=ITEMS + 'i3,tv,"1,299.00"\n'), 0, "price is not a number: 1"),
    "unknown items": (lambda d: write(d, orders=ORDERS + "o2,c1,ghost,1,1,2024-01-02T00:00:00Z\n"), 0,
                      "item_id not in items: 1"),
    "huge quantity": (lambda d: write(d, orders=ORDERS + "o2,c1,i2,50000,1,2024-01-02T00:00:00Z\n"), 0,
                      "|quantity| > 1000 (implausible; contract.max_quantity): 1"),
    "non-UTF-8 bytes": (lambda d: write(d, orders=ORDERS.encode() + b"o3,c\xe9,i2,1,1,2024-01-02T00:00:00Z\n"), 0,
                        "row is not valid UTF-8: 1"),
    "ragged row": (lambda d: write(d, orders=ORDERS + "o2,c1,i2,1,1,2024-01-02T00:00:00Z,extra,fields\n"), 2,
                   "orders.csv: cannot parse CSV"),
    "binary garbage": (lambda d: write(d, items=b"\x00\x01\x02\xff\xfe" * 40), 2, "items.csv"),
    "corrupt Parquet data": (corrupt_parquet_items, 2, "items.parquet: not a readable Parquet file"),
    "truncated gzip": (truncated_gzip_orders, 2, "orders.csv.gz: cannot read the CSV header"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_reported_clearly(case: str, tmp_path: Path) -> None:
    build, exit_code, message = CASES[case]
    build(tmp_path / "shop")
    result = subprocess.run([SHOPREC, "validate", str(tmp_path / "shop")], capture_output=True, text=True,
                            timeout=120)
    assert "Traceback" not in result.stderr + result.stdout
    assert result.returncode == exit_code, result.stderr
    assert message in (result.stdout + result.stderr)
