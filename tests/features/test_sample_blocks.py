"""A sample shop made a block of customers at a time (features.sample.shop.generate_blocks):
one shop with the whole shop's ids and one campaign calendar, each block drawn afresh, written
block by block to the files the loader reads, every planted defect quarantined.

The blocks here hold 1,000 customers; the default (250,000) only splits shops above it, so the
shops the other tests and the benchmarks use are one block, as before blocks existed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.loading import load_shop
from features.sample import SampleConfig, SampleShop, generate_blocks, generate_shop, write_sample
from features.table_files import write_tables

CONFIG = SampleConfig(customers=3000, items=300, days=90, seed=5, dirty_share=0.01)
BLOCK = 1000


@pytest.fixture(scope="module")
def shop() -> SampleShop:
    return generate_shop(CONFIG, block_customers=BLOCK)


def _canonical(tables: dict[str, pd.DataFrame], ids: pd.Series) -> pd.Series:
    aliases = tables["customer_aliases"].set_index("alias_id")["customer_id"]
    return ids.map(aliases).fillna(ids)


def test_ids_are_the_whole_shops(shop: SampleShop) -> None:
    tables = shop.tables
    customers, aliases = tables["customers"], tables["customer_aliases"]
    assert customers["customer_id"].is_unique and aliases["alias_id"].is_unique
    canonical = sorted(set(customers["customer_id"]) - set(aliases["alias_id"]))
    assert canonical == [f"c{i:06d}" for i in range(CONFIG.customers)]
    assert aliases["alias_id"].min() > canonical[-1], "aliases are numbered after every customer"
    assert aliases["customer_id"].isin(canonical).all()
    for table, key in (("orders", "order_id"), ("events", "session_id")):
        owners = _canonical(tables, tables[table]["customer_id"]).groupby(tables[table][key]).nunique()
        assert owners.max() == 1, f"a {key} of one block is never reused by another"
    assert tables["orders"]["order_id"].nunique() > 3 * tables["orders"]["customer_id"].nunique() / 2


def test_every_block_gets_the_one_campaign_calendar(shop: SampleShop) -> None:
    mails = shop.tables["email_events"]
    block = _canonical(shop.tables, mails["customer_id"]).str[1:].astype(int) // BLOCK
    days = mails.groupby("campaign_id")["sent_ts"].agg(lambda sent: sent.dt.floor("D").nunique())
    assert (days == 1).all(), "a campaign goes out on one day, to every block"
    assert all(set(mails.loc[block == b, "campaign_id"]) == set(mails["campaign_id"]) for b in range(3))


def test_the_first_block_is_the_shop_of_its_size_and_later_blocks_are_drawn_afresh(shop: SampleShop) -> None:
    alone = generate_shop(CONFIG.model_copy(update={"customers": BLOCK}))
    first = next(generate_blocks(CONFIG, block_customers=BLOCK))
    for name in ("items", "orders", "events", "email_events"):
        ours, theirs = first.tables[name].copy(), alone.tables[name].copy()
        if "customer_id" in ours:  # the alias ids differ: aliases are numbered after the whole shop's customers
            ours["customer_id"] = _canonical(first.tables, ours["customer_id"]).astype("str")
            theirs["customer_id"] = _canonical(alone.tables, theirs["customer_id"]).astype("str")
        pd.testing.assert_frame_equal(ours, theirs, obj=name)
    orders = shop.tables["orders"]
    per_block = [orders[_canonical(shop.tables, orders["customer_id"]).str[1:].astype(int) // BLOCK == b]
                 for b in range(3)]
    first_items = [np.sort(part["item_id"].to_numpy())[:50] for part in per_block]
    assert not np.array_equal(first_items[0], first_items[1]) and not np.array_equal(first_items[1], first_items[2])
    assert min(map(len, per_block)) > 0.8 * max(map(len, per_block)), "blocks of one process, not one copy"


def test_written_block_by_block_it_loads_as_the_shop_in_memory_with_every_defect_quarantined(
        shop: SampleShop, tmp_path: Path) -> None:
    rows = write_sample(CONFIG, tmp_path / "blocks", "parquet", block_customers=BLOCK)
    assert rows == {name: len(frame) for name, frame in shop.tables.items()}
    write_tables(shop.tables, tmp_path / "whole", "parquet")
    blocks, whole = load_shop(tmp_path / "blocks"), load_shop(tmp_path / "whole")
    for name, frame in whole.tables.items():
        pd.testing.assert_frame_equal(blocks.tables[name], frame, obj=name)
    planted = {(t, r): c for t, r, c in shop.truth["dirty"].itertuples(index=False)}
    found = {(table, reason): count for table, report in blocks.report.tables.items()
             for reason, count in report.reasons.items()}
    assert found == planted and sum(planted.values()) > 3 * 7, "every block plants its own defects"
    truth = {path.stem: pd.read_csv(path) for path in (tmp_path / "blocks" / "_truth").glob("*.csv")}
    assert sorted(truth) == sorted(shop.truth)
    assert {name: len(frame) for name, frame in truth.items()} == {n: len(f) for n, f in shop.truth.items()}
