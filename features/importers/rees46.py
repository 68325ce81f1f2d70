"""REES46 "eCommerce behavior data from multi category store" event log -> contract tables.

One CSV row per event: ``event_time`` (``2019-10-01 00:00:00 UTC``), ``event_type`` (view,
cart, remove_from_cart, purchase), ``product_id``, ``category_id``, ``category_code``,
``brand``, ``price``, ``user_id``, ``user_session``. A monthly file holds tens of millions
of rows, so it is read in chunks and only one row per product is carried between chunks;
the events and orders themselves are as large as the input makes them.

Every row becomes one ``events`` row and every purchase also one ``orders`` row (quantity 1,
the row's price). Values are passed on as text, so a bad price, time or event type is
quarantined by the contract with its reason and source row number, not guessed here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from features.importers.common import ImportNotes, Progress, blank_to_na, require_columns
from features.schema import BAD_ENCODING_COLUMN, ROW_COLUMN, ContractError
from features.sources import RawTable, csv_header

COLUMNS = ["event_time", "event_type", "product_id", "category_id", "category_code", "brand", "price",
           "user_id", "user_session"]
PRODUCT_COLUMNS = ["product_id", "category_id", "category_code", "brand", "price"]
DEFAULT_CHUNK_ROWS = 1_000_000
NO_SESSION_PREFIX = "nosession"
"""Order ids of purchases without a session start with this, so they cannot collide with session ids."""
GOOD = "_good"
"""Marks a product row fit to describe the item: a usable price and valid UTF-8."""
INVALID_UTF8_MARK = "\ufffd"
"""What pandas makes of a byte that is not UTF-8 (``encoding_errors="replace"``)."""


def import_rees46(path: Path, progress: Progress | None = None, *, chunk_rows: int = DEFAULT_CHUNK_ROWS
                  ) -> tuple[dict[str, RawTable], ImportNotes]:
    """Read a REES46 CSV (plain or gzipped) into raw ``items``, ``events`` and ``orders`` tables.

    Memory beyond the output is one chunk of ``chunk_rows`` rows plus one row per product.
    The result does not depend on ``chunk_rows``.
    """
    path = Path(path)
    if not path.is_file():
        raise ContractError(f"{path}: no such REES46 file")
    require_columns(path, csv_header(path), COLUMNS)
    notes = ImportNotes("rees46")
    events: list[pd.DataFrame] = []
    orders: list[pd.DataFrame] = []
    products = pd.DataFrame(columns=[*PRODUCT_COLUMNS, ROW_COLUMN, BAD_ENCODING_COLUMN, GOOD])
    rows = 0
    try:
        for raw in _chunks(path, chunk_rows):  # a header-only file yields one empty chunk
            chunk = _prepare(raw[COLUMNS], first_row=rows + 1)
            rows += len(chunk)
            events.append(_events(chunk))
            orders.append(_orders(chunk, notes))
            products = _latest_product_rows(products, chunk, notes)
            if progress:
                progress(f"read {rows:,} rows from {path.name}")
    except pd.errors.ParserError as error:
        raise ContractError(f"{path}: cannot parse CSV: {str(error).strip().splitlines()[0]}") from None
    notes.read(path.name, rows)
    tables = {
        "items": _items(products, notes),
        "events": pd.concat(events, ignore_index=True),
        "orders": pd.concat(orders, ignore_index=True),
    }
    return {name: RawTable(frame, str(path)) for name, frame in tables.items()}, notes


def _chunks(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """Stream the file as text chunks of every column.

    No ``usecols``: with it pandas' C parser silently cuts a line with too many fields
    down to the first ones (an unquoted comma would shift values into the wrong columns).
    Without it such a line raises, naming its line number.
    """
    yield from pd.read_csv(path, dtype=str, chunksize=chunk_rows, keep_default_na=False, na_values=[""],
                           encoding_errors="replace")


def _prepare(chunk: pd.DataFrame, first_row: int) -> pd.DataFrame:
    """Number the rows, flag bytes that were not UTF-8, and make the time ISO 8601.

    ``2019-10-01 00:00:00 UTC`` becomes ``2019-10-01 00:00:00Z``: the zone stays explicit
    in the text the contract parses and in any quarantined copy.
    """
    chunk = chunk.reset_index(drop=True)
    chunk[ROW_COLUMN] = np.arange(first_row, first_row + len(chunk), dtype=np.int64)
    bad = np.zeros(len(chunk), dtype=bool)
    for name in COLUMNS:
        bad |= chunk[name].str.contains(INVALID_UTF8_MARK, regex=False).fillna(False).to_numpy(dtype=bool)
    chunk[BAD_ENCODING_COLUMN] = bad
    chunk["event_time"] = chunk["event_time"].str.replace(r" UTC$", "Z", regex=True)
    return chunk


def _events(chunk: pd.DataFrame) -> pd.DataFrame:
    """Every row is an event, purchases included (they label session conversion)."""
    return pd.DataFrame({
        "session_id": chunk["user_session"],
        "event_type": chunk["event_type"],
        "ts": chunk["event_time"],
        "customer_id": chunk["user_id"],
        "item_id": chunk["product_id"],
        ROW_COLUMN: chunk[ROW_COLUMN],
        BAD_ENCODING_COLUMN: chunk[BAD_ENCODING_COLUMN],
    })


def _orders(chunk: pd.DataFrame, notes: ImportNotes) -> pd.DataFrame:
    """One order line per purchase; the purchases of one user in one session form one order.

    A purchase without a session is still a purchase (its events row is quarantined for
    the missing session), so its order id is built from the user and the time instead.
    """
    is_purchase = chunk["event_type"].str.strip().str.lower().eq("purchase").fillna(False).to_numpy(dtype=bool)
    purchases = chunk.loc[is_purchase]
    session = blank_to_na(purchases["user_session"])
    user = purchases["user_id"].fillna("")
    fallback = NO_SESSION_PREFIX + ":" + user + ":" + purchases["event_time"]
    notes.add("purchases_without_session", int(session.isna().sum()),
              "purchases without user_session: order_id built from user_id and event_time")
    return pd.DataFrame({
        "order_id": (session + ":" + user).fillna(fallback),
        "customer_id": purchases["user_id"],
        "item_id": purchases["product_id"],
        "quantity": 1,
        "unit_price": purchases["price"],
        "ts": purchases["event_time"],
        ROW_COLUMN: purchases[ROW_COLUMN],
        BAD_ENCODING_COLUMN: purchases[BAD_ENCODING_COLUMN],
    })


def _latest_product_rows(products: pd.DataFrame, chunk: pd.DataFrame, notes: ImportNotes) -> pd.DataFrame:
    """Keep, per product, the last row with a usable price (else simply its last row).

    Prices change over a month; the last one seen is the current one. A row whose price
    cannot be read must not replace a good one, or one bad row would drop the whole item.
    """
    price = pd.to_numeric(chunk["price"].str.strip(), errors="coerce")
    usable = (np.isfinite(price) & (price >= 0)).to_numpy(dtype=bool)
    notes.add("rows_with_unusable_price", int((~usable).sum()),
              "rows whose price is empty, not a number or negative: never used as an item's price"
              " (a purchase among them is quarantined in orders)")
    good = usable & ~chunk[BAD_ENCODING_COLUMN].to_numpy(dtype=bool)
    rows = chunk.loc[chunk["product_id"].notna(), [*PRODUCT_COLUMNS, ROW_COLUMN, BAD_ENCODING_COLUMN]]
    rows[GOOD] = good[chunk["product_id"].notna().to_numpy(dtype=bool)]
    combined = pd.concat([products, rows], ignore_index=True) if len(products) else rows
    # Stable sort: among good rows (or among bad ones) the later row stays later.
    return combined.sort_values(GOOD, kind="stable").drop_duplicates("product_id", keep="last")


def _items(products: pd.DataFrame, notes: ImportNotes) -> pd.DataFrame:
    """The catalogue: one row per product, category from its dotted code or its numeric id."""
    code = blank_to_na(products["category_code"])
    by_id = "category_" + blank_to_na(products["category_id"])
    notes.add("category_from_id", int((code.isna() & by_id.notna()).sum()),
              "items with no category_code: category is category_<category_id>")
    notes.add("items_without_usable_price", int((~products[GOOD].astype(bool)).sum()),
              "items with no usable price on any row: passed on as found, the contract quarantines them")
    return pd.DataFrame({
        "item_id": products["product_id"],
        "category": code.fillna(by_id),
        "brand": products["brand"],
        "price": products["price"],
        ROW_COLUMN: products[ROW_COLUMN],
        BAD_ENCODING_COLUMN: products[BAD_ENCODING_COLUMN],
    }).sort_values(ROW_COLUMN, kind="stable").reset_index(drop=True)
