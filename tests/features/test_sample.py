"""The sample shop: deterministic, on contract, and carrying the structure docs/sample.md promises.

Each structural test measures the planted effect on the generated tables and compares it
with what chance alone would give, so a generator that lost the structure fails.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from features.loading import load_shop
from features.sample import CATEGORIES, SampleConfig, SampleShop, generate_shop, write_sample
from features.sample.process import ATTACH_PROB, MIN_ITEMS, NEVER_OPEN_SHARE, OPT_IN_SHARE, PANTRY_SHARE, TIER_BOUNDS
from features.table_files import write_tables

CONFIG = SampleConfig(customers=4000, items=500, days=180, seed=11, dirty_share=0.0)
START, END = CONFIG.start_ts, CONFIG.end_ts

COLUMNS = {
    "items": ["item_id", "category", "price", "title", "brand", "in_stock", "durable", "repurchase_days"],
    "orders": ["order_id", "customer_id", "item_id", "quantity", "unit_price", "ts"],
    "events": ["session_id", "event_type", "ts", "customer_id", "item_id"],
    "customers": ["customer_id", "email_opt_in", "created_at"],
    "customer_aliases": ["alias_id", "customer_id"],
    "email_events": ["customer_id", "campaign_id", "sent_ts", "opened", "clicked", "opened_ts"],
}
KINDS = {
    "item_id": "id", "category": "id", "title": "id", "brand": "id", "order_id": "id", "customer_id": "id",
    "session_id": "id", "event_type": "id", "alias_id": "id", "campaign_id": "id",
    "price": "float", "repurchase_days": "float", "quantity": "float", "unit_price": "float",
    "in_stock": "bool", "durable": "bool", "email_opt_in": "bool", "opened": "bool", "clicked": "bool",
    "ts": "time", "created_at": "time", "sent_ts": "time", "opened_ts": "time",
}


@pytest.fixture(scope="module")
def shop() -> SampleShop:
    return generate_shop(CONFIG)


@pytest.fixture(scope="module")
def orders(shop: SampleShop) -> pd.DataFrame:
    """Order lines with the canonical customer, the item's category/durability and planted price index."""
    items = shop.tables["items"].set_index("item_id")
    truth_items = shop.truth["items"].set_index("item_id")
    frame = shop.tables["orders"].assign(
        customer=_canonical(shop, shop.tables["orders"]["customer_id"]),
        category=lambda f: f["item_id"].map(items["category"]),
        durable=lambda f: f["item_id"].map(items["durable"]),
        price_index=lambda f: f["item_id"].map(truth_items["price_index"]),
    )
    return frame


def _canonical(shop: SampleShop, ids: pd.Series) -> pd.Series:
    aliases = shop.tables["customer_aliases"].set_index("alias_id")["customer_id"]
    return ids.map(aliases).fillna(ids)


def _assert_kind(series: pd.Series, kind: str, where: str) -> None:
    if kind == "id":
        assert pd.api.types.is_string_dtype(series.dtype), where
    elif kind == "float":
        assert series.dtype == np.float64, where
    elif kind == "bool":
        assert series.dtype == bool, where
    else:
        assert isinstance(series.dtype, pd.DatetimeTZDtype) and str(series.dtype.tz) == "UTC", where


# --- determinism and contract -------------------------------------------------------


def test_same_seed_gives_identical_frames(shop: SampleShop) -> None:
    again = generate_shop(CONFIG)
    for name, frame in shop.tables.items():
        pd.testing.assert_frame_equal(again.tables[name], frame, obj=name)
    for name, frame in shop.truth.items():
        pd.testing.assert_frame_equal(again.truth[name], frame, obj=f"truth {name}")


def test_another_seed_gives_another_shop(shop: SampleShop) -> None:
    other = generate_shop(CONFIG.model_copy(update={"seed": 12}))
    for name in ("orders", "events", "email_events"):
        a, b = shop.tables[name], other.tables[name]
        assert len(a) != len(b) or not a.equals(b), name
    assert not shop.truth["customers"]["preferred_tier"].equals(other.truth["customers"]["preferred_tier"])


def test_columns_and_dtypes_follow_the_contract(shop: SampleShop) -> None:
    assert list(shop.tables) == list(COLUMNS)
    for name, columns in COLUMNS.items():
        frame = shop.tables[name]
        assert list(frame.columns) == columns, name
        for column in columns:
            _assert_kind(frame[column], KINDS[column], f"{name}.{column}")
        assert len(frame) > 0, name
    events = shop.tables["events"]
    assert set(events["event_type"]) == {"view", "cart", "remove_from_cart", "wishlist", "search", "purchase"}
    assert events["item_id"].isna().to_numpy().tolist() == (events["event_type"] == "search").tolist()
    assert events["customer_id"].isna().any(), "anonymous sessions"
    assert shop.tables["items"]["item_id"].is_unique
    assert shop.tables["customers"]["customer_id"].is_unique


def test_dirty_shop_keeps_dtypes_except_order_ts_as_iso_text() -> None:
    dirty = generate_shop(CONFIG.model_copy(update={"customers": 500, "dirty_share": 0.01})).tables
    ts = dirty["orders"]["ts"]
    assert pd.api.types.is_string_dtype(ts.dtype)
    parsed = pd.to_datetime(ts, errors="coerce", utc=True, format="ISO8601")
    assert 0 < parsed.isna().sum() < 0.02 * len(ts)
    assert ts[parsed.notna()].str.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ").all()
    for name, columns in COLUMNS.items():
        for column in columns:
            if (name, column) != ("orders", "ts"):
                _assert_kind(dirty[name][column], KINDS[column], f"{name}.{column}")


def test_config_refuses_unknown_fields_and_impossible_sizes() -> None:
    with pytest.raises(ValidationError):
        SampleConfig(customer=10)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        SampleConfig(items=MIN_ITEMS - 1)
    with pytest.raises(ValidationError):
        SampleConfig(end="not a date")
    assert SampleConfig(items=MIN_ITEMS).items == MIN_ITEMS


def test_timestamps_lie_in_the_window(shop: SampleShop) -> None:
    t = shop.tables
    for name, column in (("orders", "ts"), ("events", "ts"), ("email_events", "sent_ts")):
        values = t[name][column]
        assert values.min() >= START and values.max() < END, f"{name}.{column}"
        assert values.max() - values.min() > pd.Timedelta(days=CONFIG.days - 10), f"{name}.{column} spans the window"
    created = t["customers"]["created_at"]
    assert created.max() < END and (created < START).mean() == pytest.approx(0.7, abs=0.05)


def test_catalogue_has_the_documented_categories(shop: SampleShop) -> None:
    items = shop.tables["items"]
    assert set(items["category"]) == {c.name for c in CATEGORIES}
    durable = items[items["durable"]]["repurchase_days"]
    consumable = items[~items["durable"]]["repurchase_days"]
    assert durable.between(700, 1500).all() and consumable.between(20, 60).all()
    assert (items["price"] > 0).all()
    assert 0.02 < 1 - items["in_stock"].mean() < 0.09
    truth = shop.truth["items"].set_index("item_id")["tier"]
    assert items.groupby("brand")["item_id"].apply(lambda ids: truth[ids].nunique()).max() == 1, \
        "a brand sells one price tier"


# --- planted structure --------------------------------------------------------------


def _pair_lift(orders: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """Per (anchor, partner) pair: orders with the anchor, share of them also holding the
    partner, and that share divided by the partner's share of all orders (the lift)."""
    lines = orders[["order_id", "item_id"]].drop_duplicates()
    n_orders = lines["order_id"].nunique()
    with_anchor = pairs.merge(lines, left_on="anchor_item_id", right_on="item_id")[
        ["anchor_item_id", "partner_item_id", "order_id"]]
    both = with_anchor.merge(lines, left_on=["order_id", "partner_item_id"], right_on=["order_id", "item_id"])
    stats = pd.DataFrame({
        "anchor_orders": with_anchor.groupby(["anchor_item_id", "partner_item_id"]).size(),
        "both": both.groupby(["anchor_item_id", "partner_item_id"]).size(),
    }).fillna(0).reset_index()
    partner_share = stats["partner_item_id"].map(lines["item_id"].value_counts()) / n_orders
    stats["attach"] = stats["both"] / stats["anchor_orders"]
    stats["lift"] = stats["attach"] / partner_share
    return stats[stats["anchor_orders"] >= 5]


def test_complementary_pairs_share_orders_far_above_chance(shop: SampleShop, orders: pd.DataFrame) -> None:
    pairs = shop.truth["pairs"]
    planted = _pair_lift(orders, pairs)
    assert len(planted) >= 30
    assert (planted["lift"] > 10).mean() >= 0.9
    attach = planted["both"].sum() / planted["anchor_orders"].sum()
    assert attach == pytest.approx(ATTACH_PROB, abs=0.08)

    # The same anchors with a random partner from the same category: no such effect.
    rng = np.random.default_rng(0)
    items = shop.tables["items"]
    shuffled = pairs.assign(partner_item_id=[
        rng.choice(items.loc[items["category"] == category, "item_id"].to_numpy())
        for category in pairs["partner_category"]
    ])
    shuffled = shuffled[shuffled["partner_item_id"] != pairs["partner_item_id"]]
    chance = _pair_lift(orders, shuffled)
    assert chance["both"].sum() / chance["anchor_orders"].sum() < 0.1
    assert planted["lift"].median() > 10 * max(chance["lift"].median(), 1.0)


def test_durables_are_not_rebought_while_consumables_are(orders: pd.DataFrame) -> None:
    durable, consumable = orders[orders["durable"]], orders[~orders["durable"]]
    assert len(durable) > 1000 and len(consumable) > 1000
    assert durable.duplicated(["customer", "item_id"]).mean() < 0.02
    assert durable.duplicated(["customer", "category"]).mean() < 0.02, "180 days < every durable's interval"
    repeat = consumable.duplicated(["customer", "item_id"]).mean()
    assert repeat > 0.15
    assert consumable.groupby("customer")["item_id"].agg(lambda s: s.duplicated().any()).mean() > 0.2


def test_bought_items_lie_in_the_customers_price_band(shop: SampleShop, orders: pd.DataFrame) -> None:
    truth_items = shop.truth["items"]
    bounds = truth_items["tier"].map(dict(zip(("budget", "mid", "premium"), TIER_BOUNDS.tolist(), strict=True)))
    assert all(lo <= x < hi for x, (lo, hi) in zip(truth_items["price_index"], bounds, strict=True))

    customers = shop.truth["customers"].set_index("customer_id")
    lo = orders["customer"].map(customers["price_lo"])
    hi = orders["customer"].map(customers["price_hi"])
    inside = ((orders["price_index"] >= lo) & (orders["price_index"] < hi)).mean()
    assert inside >= 0.85

    rng = np.random.default_rng(0)
    shuffled = rng.permutation(len(orders))
    by_chance = ((orders["price_index"] >= lo.to_numpy()[shuffled])
                 & (orders["price_index"] < hi.to_numpy()[shuffled])).mean()
    assert inside > by_chance + 0.4


def test_customers_buy_mostly_from_their_top_categories(shop: SampleShop, orders: pd.DataFrame) -> None:
    customers = shop.truth["customers"].set_index("customer_id")
    top = orders["customer"].map(customers["top_categories"]).str.split("|")
    in_top = np.mean([category in tops for category, tops in zip(orders["category"], top, strict=True)])
    assert in_top > 0.7
    assert in_top > 3 * 3 / len(CATEGORIES)


def test_popular_items_sell_more(shop: SampleShop, orders: pd.DataFrame) -> None:
    truth = shop.truth["items"].set_index("item_id")
    sold = orders["item_id"].value_counts().reindex(truth.index, fill_value=0)
    within_group = truth.assign(sold=sold).groupby(["category", "tier"])[["popularity", "sold"]].corr(
        method="spearman").xs("popularity", level=2)["sold"]
    assert within_group.median() > 0.5


def test_email_opens_follow_the_planted_open_rate(shop: SampleShop) -> None:
    email = shop.tables["email_events"]
    customers = shop.truth["customers"].set_index("customer_id")
    assert customers["never_open"].mean() == pytest.approx(NEVER_OPEN_SHARE, abs=0.03)
    assert customers["email_opt_in"].mean() == pytest.approx(OPT_IN_SHARE, abs=0.03)
    assert email["customer_id"].map(customers["email_opt_in"]).all(), "only opted-in customers get emails"
    never = email["customer_id"].map(customers["never_open"])
    assert never.sum() > 100 and email.loc[never, "opened"].sum() == 0
    assert not (email["clicked"] & ~email["opened"]).any()

    per_customer = email.groupby("customer_id")["opened"].agg(["mean", "size"])
    per_customer = per_customer[per_customer["size"] >= 5]
    planted = customers["open_rate"].reindex(per_customer.index)
    assert np.corrcoef(per_customer["mean"], planted)[0, 1] > 0.6
    assert email["opened_ts"].notna().tolist() == email["opened"].tolist()
    assert (email["opened_ts"] > email["sent_ts"])[email["opened"]].all()
    hours = email.loc[email["opened"], ["customer_id", "opened_ts"]]
    planted_hour = hours["customer_id"].map(customers["open_hour"])
    assert (hours["opened_ts"].dt.hour == planted_hour).all(), "each customer opens at their own hour"
    campaign_days = email.groupby("campaign_id")["sent_ts"].min().dt.floor("D").sort_values()
    campaign_gaps = campaign_days.diff().dropna().dt.days
    assert campaign_gaps.between(7, 14).all()


def test_opens_fall_with_lapsed_buying_and_with_fatigue(shop: SampleShop) -> None:
    """The planted open chance (docs/sample.md) shows in the opens: mails to customers who ordered
    lately are opened more than mails to the lapsed, and mails after a busy month less."""
    email = shop.tables["email_events"].reset_index(drop=True)
    truth = shop.truth["emails"]
    assert truth[["customer_id", "campaign_id"]].equals(email[["customer_id", "campaign_id"]])
    rate = email["customer_id"].map(shop.truth["customers"].set_index("customer_id")["open_rate"])
    assert np.allclose(truth["open_chance"], np.minimum(rate * truth["engagement"] * truth["fatigue"], 0.95))
    openers = rate > 0
    engaged = openers & (truth["engagement"] > 1.2)
    lapsed = openers & (truth["engagement"] < 0.6)
    assert email.loc[engaged, "opened"].mean() > 2 * email.loc[lapsed, "opened"].mean()
    rested, tired = openers & (truth["fatigue"] == 1.0), openers & (truth["fatigue"] < 0.6)
    assert tired.sum() > 100 and email.loc[rested, "opened"].mean() > 1.5 * email.loc[tired, "opened"].mean()


def test_engagement_and_fatigue_are_what_docs_sample_says(shop: SampleShop) -> None:
    """Recomputed mail by mail from the tables: days since the customer's last order before the
    send, and their mails in the 30 days before it."""
    email = shop.tables["email_events"].reset_index(drop=True)
    aliases = shop.tables["customer_aliases"].set_index("alias_id")["customer_id"]
    orders = shop.tables["orders"].assign(customer_id=lambda o: o["customer_id"].map(aliases).fillna(o["customer_id"]))
    truth = shop.truth["emails"]
    for row in np.random.default_rng(0).choice(len(email), 300, replace=False):
        mail = email.iloc[row]
        earlier = orders[(orders["customer_id"] == mail["customer_id"]) & (orders["ts"] < mail["sent_ts"])]
        days = (mail["sent_ts"] - earlier["ts"].max()).total_seconds() / 86_400 if len(earlier) else None
        lift = 0.4 if days is None else 0.4 + 1.6 * np.exp(-days / 30)
        mine = email[email["customer_id"] == mail["customer_id"]]
        n = ((mine["sent_ts"] < mail["sent_ts"]) & (mine["sent_ts"] >= mail["sent_ts"] - pd.Timedelta(days=30))).sum()
        assert truth.loc[row, "engagement"] == pytest.approx(lift) and truth.loc[row, "fatigue"] == pytest.approx(0.7 ** n)


def test_conversion_rate_drives_the_share_of_purchase_sessions(shop: SampleShop) -> None:
    events = shop.tables["events"]
    known = events[events["customer_id"].notna()]
    sessions = known.assign(customer=_canonical(shop, known["customer_id"]),
                            bought=known["event_type"] == "purchase").groupby("session_id").agg(
        customer=("customer", "first"), bought=("bought", "any"))
    per_customer = sessions.groupby("customer")["bought"].agg(["mean", "size"])
    per_customer = per_customer[per_customer["size"] >= 5]
    planted = shop.truth["customers"].set_index("customer_id")["conversion_rate"].reindex(per_customer.index)
    low, high = planted.quantile([0.25, 0.75])
    assert per_customer.loc[planted >= high, "mean"].mean() > per_customer.loc[planted <= low, "mean"].mean() + 0.25
    assert per_customer["mean"].corr(planted, method="spearman") > 0.5


def test_every_order_has_a_session_ending_in_its_purchases(shop: SampleShop) -> None:
    events, orders = shop.tables["events"], shop.tables["orders"]
    purchases = events[events["event_type"] == "purchase"]
    assert len(purchases) == len(orders)
    matched = purchases.merge(orders, on=["customer_id", "item_id", "ts"])
    assert matched[["order_id", "item_id"]].drop_duplicates().shape[0] == len(orders)
    assert (matched.groupby("order_id")["session_id"].nunique() == 1).all()

    in_converting = events[events["session_id"].isin(purchases["session_id"])]
    last_other = in_converting[in_converting["event_type"] != "purchase"].groupby("session_id")["ts"].max()
    first_purchase = purchases.groupby("session_id")["ts"].min()
    assert (last_other <= first_purchase.reindex(last_other.index)).all()
    carted = in_converting[in_converting["event_type"] == "cart"][["session_id", "item_id"]]
    bought = purchases[["session_id", "item_id"]]
    assert len(bought.merge(carted.drop_duplicates())) == len(bought), "every bought item was in the cart"


def test_aliases_appear_in_orders_and_point_at_real_customers(shop: SampleShop) -> None:
    aliases = shop.tables["customer_aliases"]
    customers = shop.tables["customers"]["customer_id"]
    assert len(aliases) == round(0.01 * CONFIG.customers)
    assert aliases["customer_id"].isin(customers).all()
    assert not aliases["alias_id"].isin(shop.truth["customers"]["customer_id"]).any()
    assert shop.tables["orders"]["customer_id"].isin(aliases["alias_id"]).sum() > 10
    assert shop.tables["events"]["customer_id"].isin(aliases["alias_id"]).sum() > 10
    assert 0 < customers.isin(aliases["alias_id"]).sum() < len(aliases)


# --- dirty rows, through the real loader ---------------------------------------------


def _load(shop: SampleShop, folder: Path):  # noqa: ANN202 - ShopData
    write_tables(shop.tables, folder, "csv")
    return load_shop(folder)


def test_clean_sample_loads_without_quarantine(shop: SampleShop, tmp_path: Path) -> None:
    assert shop.truth["dirty"].empty
    loaded = _load(shop, tmp_path)
    assert loaded.report.rows_quarantined == 0
    assert loaded.report.tables["customers"].rows_merged > 0, "listed aliases fold into their customer"


def test_dirty_rows_are_planted_as_recorded_and_leave_clean_rows_untouched(tmp_path: Path) -> None:
    config = CONFIG.model_copy(update={"customers": 800})
    dirty_shop = generate_shop(config.model_copy(update={"dirty_share": 0.01}))
    planted = {(t, r): c for t, r, c in dirty_shop.truth["dirty"].itertuples(index=False)}
    assert {table for table, _ in planted} == {"orders", "events", "items"}
    assert all(count >= 1 for count in planted.values())
    assert sum(c for (t, _), c in planted.items() if t == "orders") == round(0.01 * len(
        generate_shop(config).tables["orders"]))

    dirty = _load(dirty_shop, tmp_path / "dirty")
    found = {(table, reason): count for table, report in dirty.report.tables.items()
             for reason, count in report.reasons.items()}
    assert found == planted
    clean = _load(generate_shop(config), tmp_path / "clean")
    for name, frame in clean.tables.items():
        pd.testing.assert_frame_equal(dirty.tables[name], frame, obj=name)


def test_planted_refills_are_consumables_after_the_end_with_the_pantry_emptied(shop: SampleShop,
                                                                            orders: pd.DataFrame) -> None:
    truth = shop.truth["triggers"]
    due = truth[truth["trigger"] == "refill_due"]
    assert len(due) > 100 and (due["at"] >= END).all() and not due.duplicated(["customer_id", "item_id"]).any()
    categories = shop.truth["categories"].set_index("category")
    category = due["item_id"].map(shop.truth["items"].set_index("item_id")["category"])
    assert not categories.loc[category, "durable"].any()
    last = (orders.groupby(["customer", "item_id"])["ts"].max() - END).dt.total_seconds() / 86_400
    at = (due["at"] - END).dt.total_seconds().to_numpy() / 86_400
    gap_days = at - last.reindex(pd.MultiIndex.from_frame(due[["customer_id", "item_id"]])).to_numpy()
    interval = categories.loc[category, "repurchase_days"].to_numpy()
    bought = np.isfinite(gap_days)
    assert bought.mean() > 0.9 and (gap_days[bought] >= PANTRY_SHARE * interval[bought]).all()
    # the next refill comes about one interval after the last purchase (LogNormal(0, 0.2) around it)
    assert np.median(gap_days[bought] / interval[bought]) == pytest.approx(1.0, abs=0.1)


def test_write_sample_writes_the_tables_and_every_truth_frame(shop: SampleShop, tmp_path: Path) -> None:
    rows = write_sample(CONFIG, tmp_path, "parquet")
    assert rows == {name: len(frame) for name, frame in shop.tables.items()}
    for name, frame in shop.tables.items():
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / f"{name}.parquet"), frame, obj=name)
    assert sorted(p.name for p in (tmp_path / "_truth").iterdir()) == sorted(f"{name}.csv" for name in shop.truth)
    pairs = pd.read_csv(tmp_path / "_truth" / "pairs.csv", dtype=str)
    pd.testing.assert_frame_equal(pairs[["anchor_item_id", "partner_item_id"]],
                                  shop.truth["pairs"][["anchor_item_id", "partner_item_id"]])
