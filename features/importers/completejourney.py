"""84.51° Complete Journey (R package ``completejourney`` exported to CSV) -> contract tables.

Mapping (docs/importers.md has the full table):

- ``transactions`` lines -> ``orders``, one row each. ``unit_price = sales_value / quantity``;
  where that is undefined (quantity 0) it is left empty and the line still goes to the
  contract, which quarantines it as ``quantity is 0``. Fuel lines with huge quantities
  go through unchanged and are quarantined by the contract's ``MAX_QUANTITY`` rule.
  ``transaction_timestamp`` has no zone; the contract reads it as UTC.
- ``products`` that were sold -> ``items``; ``price`` is the median unit price paid on
  lines the contract keeps, so neither free (quantity 0) nor fuel lines distort it.
- households in transactions, demographics and campaigns -> ``customers``.
- ``campaigns`` (mail-outs) -> ``email_events`` with ``sent_ts`` = campaign start date and
  ``opened`` = the household redeemed a coupon of that campaign. The data has no opens or
  clicks; a redemption is the closest response signal, so ``opened`` is a proxy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from features.importers.common import ImportNotes, Progress, blank_to_na, read_text_csv
from features.schema import MAX_QUANTITY, ROW_COLUMN, ContractError
from features.sources import RawTable

TRANSACTION_FILES = ("transactions.csv.gz", "transactions.csv", "transactions_sample.csv.gz",
                     "transactions_sample.csv")
"""The full year (``get_transactions()`` in R) is preferred over the shipped sample when both exist."""

TRANSACTION_COLUMNS = ["household_id", "basket_id", "product_id", "quantity", "sales_value",
                       "transaction_timestamp"]
PRODUCT_COLUMNS = ["product_id", "department", "brand", "product_category", "product_type"]
EMAIL_FILES = ("campaigns.csv", "campaign_descriptions.csv", "coupon_redemptions.csv")


def import_completejourney(src_dir: Path, progress: Progress | None = None
                           ) -> tuple[dict[str, RawTable], ImportNotes]:
    """Read a Complete Journey folder into raw contract tables for :func:`validate_tables`.

    Returns ``items``, ``orders``, ``customers`` and, where the campaign files are present,
    ``email_events``, each located at the file its rows come from, plus the notes that
    count every source row that does not become exactly one contract row.
    """
    src_dir = Path(src_dir)
    if not src_dir.is_dir():
        raise ContractError(f"{src_dir}: no such Complete Journey folder")
    notes = ImportNotes("completejourney")
    say = progress or (lambda _message: None)

    tx_path = _required(src_dir, *TRANSACTION_FILES)
    say(f"reading {tx_path.name}")
    transactions = _read(tx_path, TRANSACTION_COLUMNS, notes)
    products_path = _required(src_dir, "products.csv.gz", "products.csv")
    say(f"reading {products_path.name}")
    products = _read(products_path, PRODUCT_COLUMNS, notes)
    orders = _orders(transactions, notes)
    tables = {
        "items": RawTable(_items(products, orders, notes), str(products_path)),
        "orders": RawTable(orders, str(tx_path)),
    }

    households = {tx_path.name: transactions["household_id"]}
    demographics_path = _optional(src_dir, "demographics.csv")
    if demographics_path is not None:
        households[demographics_path.name] = _read(demographics_path, ["household_id"], notes)["household_id"]
    email_paths = _email_paths(src_dir, notes)
    if email_paths is not None:
        say("reading campaigns and coupon redemptions")
        tables["email_events"], households[email_paths[0].name] = _email_table(*email_paths, notes)
    tables["customers"] = RawTable(_customers(households), f"{src_dir} (households in {', '.join(households)})")
    return tables, notes


def _read(path: Path, columns: list[str], notes: ImportNotes) -> pd.DataFrame:
    frame = read_text_csv(path, columns)
    notes.read(path.name, len(frame))
    return frame


def _required(src_dir: Path, *names: str) -> Path:
    found = _optional(src_dir, *names)
    if found is None:
        raise ContractError(f"{src_dir}: no {' or '.join(names)} found")
    return found


def _optional(src_dir: Path, *names: str) -> Path | None:
    return next((src_dir / name for name in names if (src_dir / name).is_file()), None)


def _email_paths(src_dir: Path, notes: ImportNotes) -> tuple[Path, Path, Path] | None:
    """The three campaign files, or None when the folder has none of them.

    A folder with only some of them is refused: email events without send dates or without
    redemptions would be wrong rather than merely incomplete.
    """
    paths = [src_dir / name for name in EMAIL_FILES]
    present = [p.is_file() for p in paths]
    if not any(present):
        notes.remark(f"no email_events: {', '.join(EMAIL_FILES)} absent")
        return None
    if not all(present):
        missing = [p.name for p, here in zip(paths, present, strict=True) if not here]
        raise ContractError(f"{src_dir}: campaign files incomplete, missing {', '.join(missing)}")
    return paths[0], paths[1], paths[2]


def _orders(transactions: pd.DataFrame, notes: ImportNotes) -> pd.DataFrame:
    """One order line per receipt line; unit price left empty where sales/quantity is undefined."""
    quantity = pd.to_numeric(transactions["quantity"], errors="coerce")
    sales = pd.to_numeric(transactions["sales_value"], errors="coerce")
    unit_price = (sales / quantity).where(quantity > 0)
    notes.add("unit_price_undefined", int(unit_price.isna().sum()),
              "receipt lines without a unit price (quantity 0, or a value that is not a number):"
              " left empty, the contract quarantines them")
    return pd.DataFrame({
        "order_id": transactions["basket_id"],
        "customer_id": transactions["household_id"],
        "item_id": transactions["product_id"],
        "quantity": transactions["quantity"],
        "unit_price": unit_price,
        "ts": transactions["transaction_timestamp"],
        ROW_COLUMN: transactions[ROW_COLUMN],
    })


def _items(products: pd.DataFrame, orders: pd.DataFrame, notes: ImportNotes) -> pd.DataFrame:
    """Sold products with the median unit price paid on lines the contract will keep.

    Only sold products become items: the catalogue is what recommendations can draw on,
    and an unsold product has no price in this data set.
    """
    sold = pd.Index(orders["item_id"].dropna().unique())
    is_sold = products["product_id"].isin(sold)
    notes.add("products_never_sold", int((~is_sold).sum()),
              "products never sold in the transactions: not imported as items")
    unknown = ~orders["item_id"].isin(products["product_id"]) & orders["item_id"].notna()
    notes.add("lines_of_unknown_products", int(unknown.sum()),
              f"receipt lines of {orders.loc[unknown, 'item_id'].nunique():,} product ids missing from the"
              " products file: no item, the contract quarantines them")

    quantity = pd.to_numeric(orders["quantity"], errors="coerce")
    keepable = (quantity > 0) & (quantity <= MAX_QUANTITY) & orders["unit_price"].notna()
    median_price = orders.loc[keepable].groupby("item_id")["unit_price"].median()

    sold_products = products.loc[is_sold]
    category = blank_to_na(sold_products["product_category"])
    notes.add("category_from_department", int(category.isna().sum()),
              "items with no product_category: category is the department instead")
    price = sold_products["product_id"].map(median_price)
    notes.add("items_without_price", int(price.isna().sum()),
              "items sold only on lines the contract rejects (quantity 0 or > max): no price,"
              " the contract quarantines them")
    return pd.DataFrame({
        "item_id": sold_products["product_id"],
        "category": category.fillna(blank_to_na(sold_products["department"])),
        "price": price,
        "title": sold_products["product_type"],
        "brand": sold_products["brand"],
        "product_type": blank_to_na(sold_products["product_type"]),
        "durable": False,
        ROW_COLUMN: sold_products[ROW_COLUMN],
    }).reset_index(drop=True)


def _customers(household_sources: dict[str, pd.Series]) -> pd.DataFrame:
    """Every household seen anywhere, once, in order of first appearance."""
    ids = pd.concat(list(household_sources.values()), ignore_index=True).dropna().str.strip()
    unique = pd.unique(ids[ids != ""])
    return pd.DataFrame({"customer_id": unique, ROW_COLUMN: np.arange(1, len(unique) + 1, dtype=np.int64)})


def _email_table(campaigns_path: Path, descriptions_path: Path, redemptions_path: Path,
                 notes: ImportNotes) -> tuple[RawTable, pd.Series]:
    """``email_events`` located at the mail-out file, and the households it names."""
    campaigns = _read(campaigns_path, ["campaign_id", "household_id"], notes)
    descriptions = _read(descriptions_path, ["campaign_id", "start_date"], notes)
    redemptions = _read(redemptions_path, ["household_id", "campaign_id"], notes)
    events = _email_events(campaigns, descriptions, redemptions, notes)
    return RawTable(events, str(campaigns_path)), campaigns["household_id"]


def _email_events(campaigns: pd.DataFrame, descriptions: pd.DataFrame, redemptions: pd.DataFrame,
                  notes: ImportNotes) -> pd.DataFrame:
    """One email event per mail-out; opened when the household redeemed a coupon of that campaign."""
    duplicated = descriptions["campaign_id"].duplicated()
    notes.add("duplicate_campaign_descriptions", int(duplicated.sum()),
              "repeated campaign descriptions: the first one's start_date is used")
    start = descriptions.loc[~duplicated].set_index("campaign_id")["start_date"]

    keys = ["household_id", "campaign_id"]
    redeemed = redemptions[keys].drop_duplicates().assign(_redeemed=True)
    mailed = redemptions.merge(campaigns[keys].drop_duplicates(), on=keys, how="left", indicator=True)
    matched = mailed["_merge"] == "both"
    notes.add("redemptions_without_mailout", int((~matched).sum()),
              "coupon redemptions for a campaign the household was not sent: no email event to mark")
    flags = campaigns[keys].merge(redeemed, on=keys, how="left")["_redeemed"]
    opened = flags.notna().to_numpy()
    notes.add("redemptions_as_opens", int(matched.sum()),
              f"coupon redemptions mark {int(opened.sum()):,} mail-outs as opened"
              " (opened = redeemed a coupon of the campaign; the data has no real opens)")
    return pd.DataFrame({
        "customer_id": campaigns["household_id"],
        "campaign_id": campaigns["campaign_id"],
        "sent_ts": campaigns["campaign_id"].map(start),
        "opened": opened,
        ROW_COLUMN: campaigns[ROW_COLUMN],
    })
