"""Re-buying learned from the orders, without any flag from the shop: the sample's durables are
found to be one-per-customer, its consumables re-bought around their planted interval; a log
where nothing is ever re-bought learns exactly that; the shop's own flags win when given."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.loading import ShopData, validate_tables
from features.repurchase import rebuy_profile
from features.sample import CATEGORIES, SampleConfig, generate_shop
from features.sources import RawTable

DURABLE = {c.name for c in CATEGORIES if c.durable}
INTERVAL = {c.name: c.repurchase_days for c in CATEGORIES}


@pytest.fixture(scope="module")
def unflagged() -> ShopData:
    """The sample shop with its ``durable`` and ``repurchase_days`` columns removed."""
    shop = generate_shop(SampleConfig(customers=3000, items=400, days=180, seed=5, dirty_share=0.0))
    tables = dict(shop.tables)
    tables["items"] = tables["items"].drop(columns=["durable", "repurchase_days"])
    return validate_tables({k: RawTable(v, k) for k, v in tables.items()}, source="sample")


def test_durables_are_learned_as_one_per_customer_and_block_their_category(unflagged: ShopData) -> None:
    items, categories = rebuy_profile(unflagged["orders"], unflagged["items"])
    category = unflagged["items"].set_index("item_id")["category"]
    durable = items["item_id"].map(category).isin(DURABLE).to_numpy()
    assert items.loc[durable, "non_repeat"].all()
    assert not items.loc[~durable, "non_repeat"].any()
    by_name = categories.set_index("category")
    assert by_name.loc[sorted(DURABLE), "non_repeat"].all()
    assert np.isinf(by_name.loc[sorted(DURABLE), "block_days"]).all()  # never seen twice: blocked for ever
    assert (by_name.loc[sorted(set(INTERVAL) - DURABLE), "block_days"] == 0).all()


def test_consumable_intervals_are_learned_near_the_planted_ones(unflagged: ShopData) -> None:
    _, categories = rebuy_profile(unflagged["orders"], unflagged["items"])
    by_name = categories.set_index("category")
    for name in sorted(set(INTERVAL) - DURABLE):
        learned, planted = by_name.loc[name, "interval_days"], INTERVAL[name]
        assert 0.7 * planted <= learned <= 1.4 * planted, (name, learned, planted)
        assert by_name.loc[name, "rebuy_prob"] > 0.05


def test_a_year_of_skipped_refills_does_not_stretch_the_interval() -> None:
    """Over 400 days many customers skip a refill (the sample continues a habit with p 0.6), which
    leaves gaps of two intervals and more; the median gap still finds each consumable category's
    planted interval within 10% (a geometric mean read coffee and snacks 25-35% long)."""
    shop = generate_shop(SampleConfig(customers=1500, items=240, days=400, seed=11, dirty_share=0.0))
    items = shop.tables["items"].drop(columns=["durable", "repurchase_days"])
    _, categories = rebuy_profile(shop.tables["orders"], items)
    learned = categories.set_index("category")["interval_days"]
    for name in sorted(set(INTERVAL) - DURABLE):
        assert learned[name] == pytest.approx(INTERVAL[name], rel=0.10), name


def test_a_log_where_nothing_is_rebought_learns_that_every_item_is_non_repeat() -> None:
    rng = np.random.default_rng(0)
    pairs = pd.DataFrame({"customer_id": np.repeat([f"u{i}" for i in range(200)], 5),
                          "item_id": [f"m{j}" for j in rng.permutation(np.tile(np.arange(50), 20))]})
    pairs = pairs.drop_duplicates()
    orders = pairs.assign(ts=pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(np.arange(len(pairs)), unit="h"))
    catalogue = pd.DataFrame({"item_id": [f"m{j}" for j in range(50)], "category": "films"})
    items, categories = rebuy_profile(orders, catalogue)
    assert (items["rebuy_prob"] == 0).all() and items["non_repeat"].all()
    # but people watch film after film: the category itself is not one-per-customer
    assert not categories["non_repeat"].any() and (categories["block_days"] == 0).all()


def test_the_shops_own_flags_override_what_is_learned(unflagged: ShopData) -> None:
    catalogue = unflagged["items"].copy()
    coffee = catalogue["category"] == "coffee"
    catalogue["durable"] = coffee  # the shop says coffee is durable
    catalogue["repurchase_days"] = np.where(coffee, 400.0, np.nan)
    items, categories = rebuy_profile(unflagged["orders"], catalogue)
    flagged = items["item_id"].isin(catalogue.loc[coffee, "item_id"])
    assert items.loc[flagged, "non_repeat"].all() and (items.loc[flagged, "rebuy_prob"] == 0).all()
    assert (items.loc[flagged, "interval_days"] == 400.0).all()
    assert categories.set_index("category").loc["coffee", "block_days"] == 400.0
