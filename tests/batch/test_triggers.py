"""Lifecycle triggers on a hand-built shop whose every row is there to fire, or not fire, one rule."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from batch.triggers import counts, find_triggers
from features.triggers import FOLLOW_UP, TRIGGERS, TriggerConfig, trigger_facts
from features.loading import ShopData, validate_tables
from features.sample import SampleConfig, SampleShop, generate_shop
from features.sources import RawTable
from features.table_files import write_tables
from serving.answers import UNENGAGED
from serving.config import ServingConfig
from serving.recommender import ShopRecommender
from training.bundle import Bundle
from training.pipeline import TrainConfig, build_bundle

SHOPREC = str(Path(sys.executable).with_name("shoprec"))
TODAY = pd.Timestamp("2025-07-01", tz="UTC")
ITEMS = pd.DataFrame({"item_id": ["coffee", "tv", "mug", "lamp", "gone"],
                      "category": ["coffee", "tvs", "kitchen", "home", "home"],
                      "price": [10.0, 500.0, 8.0, 40.0, 30.0], "durable": [False, True, False, False, False],
                      "repurchase_days": [30.0, None, None, None, None],
                      "in_stock": [True, True, True, True, False]})


def _orders(*rows: tuple[str, str, str]) -> pd.DataFrame:
    return pd.DataFrame([{"order_id": f"o{n}", "customer_id": c, "item_id": i, "quantity": 1, "unit_price": 1.0,
                          "ts": ts} for n, (c, i, ts) in enumerate(rows)])


def tables() -> dict[str, pd.DataFrame]:
    orders = _orders(
        ("a", "coffee", "2025-05-01T09:00:00Z"), ("a", "coffee", "2025-06-03T09:00:00Z"),  # due 07-03: refill
        ("b", "coffee", "2025-01-01T09:00:00Z"),  # due 01-31: lapsed long ago
        ("b", "coffee", "2025-01-02T09:00:00Z"), ("c", "tv", "2025-06-20T09:00:00Z"),  # a durable: never due
        ("e", "tv", "2025-06-29T09:00:00Z"),  # bought after carting it
        ("j", "coffee", "2024-07-01T15:00:00Z"), ("j", "mug", "2025-02-01T10:00:00Z"),  # first order a year ago
        ("k", "mug", "2024-07-02T15:00:00Z"))
    events = pd.DataFrame([{"session_id": f"s{n}", "event_type": kind, "ts": ts, "customer_id": c, "item_id": i}
                           for n, (c, kind, i, ts) in enumerate([
                               ("d", "cart", "mug", "2025-06-28T10:00:00Z"),  # abandoned
                               ("e", "cart", "tv", "2025-06-28T10:00:00Z"),  # bought the next day
                               ("f", "cart", "mug", "2025-06-30T20:00:00Z"),  # 4 hours before today: may still buy
                               ("g", "cart", "lamp", "2025-06-27T10:00:00Z"),
                               ("g", "remove_from_cart", "lamp", "2025-06-27T10:05:00Z"),  # changed their mind
                               ("d", "cart", "gone", "2025-06-28T10:01:00Z"),  # out of stock
                               ("h", "wishlist", "lamp", "2025-06-01T10:00:00Z"),  # a month on the list
                               ("i", "wishlist", "lamp", "2025-06-28T10:00:00Z"),  # three days: too soon
                               ("o", "cart", "mug", "2025-06-28T10:00:00Z"),  # opted out of email
                               ("d", "cart", "lamp", "2025-07-01T08:00:00Z"),  # today: not seen yet
                               ("r", "cart", "mug", "2025-06-27T10:00:00Z"),
                               ("r", "cart", "mug", "2025-06-30T22:00:00Z"),  # put in again 2 hours ago: fresh
                               ("s", "wishlist", "lamp", "2025-06-01T10:00:00Z"),
                               ("s", "wishlist", "lamp", "2025-06-29T10:00:00Z"),  # listed again 2 days ago
                           ])])
    emails = pd.DataFrame([{"customer_id": c, "campaign_id": m, "sent_ts": ts, "opened": opened,
                            "opened_ts": "2025-07-02T19:00:00Z" if c == "q" else ("2025-06-26T20:00:00Z" if opened
                                                                                 else "")}
                           for c, m, ts, opened in [
                               ("l", "m1", "2025-06-26T08:00:00Z", False),  # five days, not opened: follow up
                               ("m", "m1", "2025-06-26T08:00:00Z", True),
                               ("q", "m1", "2025-06-26T08:00:00Z", True),  # opened, but only after today
                               ("n", "m2", "2025-06-30T08:00:00Z", False),  # one day: too soon
                               ("p", "m0", "2025-06-10T08:00:00Z", False)]])  # three weeks: too late
    customers = pd.DataFrame({"customer_id": ["o", "a"], "email_opt_in": [False, True]})
    return {"items": ITEMS, "orders": orders, "events": events, "email_events": emails, "customers": customers}


@pytest.fixture(scope="module")
def tiny() -> ShopData:
    return validate_tables({k: RawTable(v, k) for k, v in tables().items()}, source="tiny")


def fired(frame: pd.DataFrame, trigger: str) -> dict[str, list[tuple[str, str]]]:
    rows = frame[frame["trigger"] == trigger]
    return {c: list(zip(g["item_id"], g["detail"], strict=True)) for c, g in rows.groupby("customer_id")}


def test_each_trigger_fires_for_exactly_its_customers(tiny: ShopData, bundle: Bundle) -> None:
    frame = find_triggers(tiny, TODAY, TriggerConfig(), ShopRecommender(bundle, "v"))
    assert fired(frame, "refill_due") == {"a": [("coffee", "2025-07-03")]}
    assert fired(frame, "abandoned_cart") == {"d": [("mug", "2025-06-28")]}
    assert fired(frame, "wishlist_reminder") == {"h": [("lamp", "2025-06-01")]}
    anniversary = fired(frame, "anniversary")
    assert list(anniversary) == ["j"] and len(anniversary["j"]) == 3 and {d for _, d in anniversary["j"]} == {"1"}
    # the next step from a first coffee: the best coffees among j's picks come first, then the rest in order
    picks = ShopRecommender(bundle, "v").email_picks(["j"], 50)[0].items
    category = bundle.catalogue.set_index("item_id")["category"]
    coffees = [p.item_id for p in picks if category[p.item_id] == "coffee"]
    expected = (coffees + [p.item_id for p in picks if category[p.item_id] != "coffee"])[:3]
    assert coffees and expected != [p.item_id for p in picks[:3]], "the category must reorder j's picks here"
    assert [item for item, _ in anniversary["j"]] == expected
    follow_up = fired(frame, "follow_up_non_openers")
    assert list(follow_up) == ["l", "q"] and {d for _, d in follow_up["l"]} == {"m1"} and len(follow_up["l"]) == 3
    assert counts(frame) == {"refill_due": 1, "abandoned_cart": 1, "wishlist_reminder": 1, "anniversary": 1,
                             "follow_up_non_openers": 2}
    assert (frame.groupby(["customer_id", "trigger"])["rank"].apply(list)
            .map(lambda r: r == list(range(1, len(r) + 1)))).all()


def test_items_low_in_stock_are_marked_where_the_shop_counts_units(tiny: ShopData, bundle: Bundle) -> None:
    """d's abandoned mug has 2 units left: worth a mail now; a's coffee has 40; without a
    stock_qty column nothing is claimed either way; a negative count is quarantined, not used."""
    counted = tables()
    counted["items"] = ITEMS.assign(stock_qty=[40.0, 3.0, 2.0, None, 0.0])
    shop = validate_tables({k: RawTable(v, k) for k, v in counted.items()}, source="counted")
    frame = find_triggers(shop, TODAY, TriggerConfig(), ShopRecommender(bundle, "v")).set_index(["trigger", "item_id"])
    assert bool(frame.loc[("abandoned_cart", "mug"), "low_stock"])
    assert not bool(frame.loc[("refill_due", "coffee"), "low_stock"])
    assert pd.isna(frame.loc[("wishlist_reminder", "lamp"), "low_stock"])  # lamp's count unknown
    raised = find_triggers(shop, TODAY, TriggerConfig(low_stock_units=50), ShopRecommender(bundle, "v"))
    assert bool(raised.set_index(["trigger", "item_id"]).loc[("refill_due", "coffee"), "low_stock"])
    plain = find_triggers(tiny, TODAY, TriggerConfig(), ShopRecommender(bundle, "v"))
    assert len(plain) and plain["low_stock"].isna().all()
    negative = {**counted, "items": counted["items"].assign(stock_qty=[40.0, -1.0, 2.0, None, 0.0])}
    checked = validate_tables({k: RawTable(v, k) for k, v in negative.items()}, source="counted")
    assert checked.report.tables["items"].rows_quarantined == 1
    assert checked.quarantine["items"]["_column"].tolist() == ["stock_qty"]


def test_a_day_before_any_data_fires_nothing(tiny: ShopData, bundle: Bundle) -> None:
    frame = find_triggers(tiny, pd.Timestamp("2020-01-01", tz="UTC"), TriggerConfig(), ShopRecommender(bundle, "v"))
    assert frame.empty and counts(frame) == dict.fromkeys(TRIGGERS, 0)


def test_an_empty_window_is_refused() -> None:
    with pytest.raises(ValueError, match=r"follow_up_days \[7.0, 3.0\]: give \(from, to\) with from <= to"):
        TriggerConfig(follow_up_days=(7, 3))
    with pytest.raises(ValueError, match="cart_after_hours must be below"):
        TriggerConfig(cart_after_hours=200, cart_within_days=7)


def test_windows_are_configurable(tiny: ShopData, bundle: Bundle) -> None:
    wide = TriggerConfig(cart_after_hours=1, wishlist_after_days=1, follow_up_days=(0.5, 30), refill_overdue_days=200,
                         k=1)
    frame = find_triggers(tiny, TODAY, wide, ShopRecommender(bundle, "v"))
    assert set(fired(frame, "abandoned_cart")) == {"d", "f", "r"}
    assert set(fired(frame, "wishlist_reminder")) == {"h", "i", "s"}
    assert set(fired(frame, "follow_up_non_openers")) == {"l", "n", "p", "q"}
    assert set(fired(frame, "refill_due")) == {"a", "b", "j"}  # j's mug of February, k's of 2024 too old
    assert frame.groupby(["customer_id", "trigger"]).size().max() == 1


def test_shoprec_triggers_writes_atomically_and_logs_a_run(tmp_path: Path, bundle: Bundle) -> None:
    write_tables(tables(), tmp_path / "shop", "csv")
    bundle.save(tmp_path / "bundle")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"SHOPREC_HOME": str(tmp_path / "home")}
    out = tmp_path / "triggers.parquet"
    args = [SHOPREC, "triggers", "--data", str(tmp_path / "shop"), "--out", str(out), "--today", "2025-07-01",
            "--model", str(tmp_path / "bundle")]
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    written = pd.read_parquet(out)
    assert list(written.columns) == ["customer_id", "trigger", "rank", "item_id", "detail", "low_stock"]
    assert set(written["trigger"]) == set(TRIGGERS) and "MLflow run" in result.stdout
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}")
    run = mlflow.search_runs(experiment_names=["shoprec-triggers"], output_format="list")[0]
    assert run.data.metrics["customers.abandoned_cart"] == 1 and run.data.params["today"] == "2025-07-01"
    bad = subprocess.run([*args[:-4], "--today", "July", "--model", str(tmp_path / "bundle")], capture_output=True,
                         text=True, env=env, timeout=300)
    assert bad.returncode == 2 and "--today 'July': give a date as YYYY-MM-DD" in bad.stderr, bad.stderr
    unreadable = subprocess.run([*args, "--config", str(tmp_path / "no.json")], capture_output=True, text=True,
                                env=env, timeout=300)
    assert unreadable.returncode == 2 and f"--config {tmp_path / 'no.json'}: cannot read it" in unreadable.stderr
    assert pd.read_parquet(out).equals(written), "a failed run leaves the previous output"


# --- against the sample shop's planted truth (features/sample/triggers.py) --------------------------

LONG = SampleConfig(customers=1500, items=240, days=400, seed=11)
"""Over a year of data, so that first orders have anniversaries; the default share of dirty rows,
so that quarantined copies are part of what the triggers must see through."""


@pytest.fixture(scope="module")
def planted() -> tuple[SampleShop, ShopData, ShopRecommender]:
    sample = generate_shop(LONG)
    shop = validate_tables({k: RawTable(v, k) for k, v in sample.tables.items()}, source="sample")
    return sample, shop, ShopRecommender(build_bundle(shop, TrainConfig(), "ease", {"chosen": "ease"}), "v")


def offered(sample: SampleShop, truth: pd.DataFrame) -> pd.Series:
    """Truth rows a trigger may name: the customer opted in to email and the item (if any) is in stock."""
    customers = sample.truth["customers"]
    items = sample.tables["items"].drop_duplicates("item_id")  # the loader keeps an id's first listing
    in_stock = set(items.loc[items["in_stock"], "item_id"])
    return (truth["customer_id"].isin(set(customers.loc[customers["email_opt_in"], "customer_id"]))
            & (truth["item_id"].isna() | truth["item_id"].isin(in_stock)))


def should_fire(sample: SampleShop, today: pd.Timestamp, config: TriggerConfig) -> dict[str, set[object]]:
    """What the truth says each trigger must name on ``today`` under ``config``: (customer, item)
    pairs for carts and wish lists, customers for anniversaries and follow-ups."""
    truth = sample.truth["triggers"]
    truth = truth[offered(sample, truth)]
    age = today - truth["at"]

    def pairs(trigger: str, after: pd.Timedelta, within: pd.Timedelta) -> set[object]:
        rows = truth[(truth["trigger"] == trigger) & (age >= after) & (age < within)]
        return set(zip(rows["customer_id"], rows["item_id"], strict=True))

    first = truth[truth["trigger"] == "anniversary"]
    day = first["at"].dt
    mails = truth[truth["trigger"] == "follow_up_non_openers"]
    history = mails.groupby("customer_id")["opened"].agg(["size", "any"])
    unengaged = set(history.index[(history["size"] >= ServingConfig().sunset_after_unopened) & ~history["any"]])
    lo, hi = config.follow_up_days
    mail_age = today - mails["at"]
    recent = mails[(mail_age >= pd.Timedelta(days=lo)) & (mail_age <= pd.Timedelta(days=hi))]
    opened = recent.groupby("customer_id")["opened"].any()
    return {
        "abandoned_cart": pairs("abandoned_cart", pd.Timedelta(hours=config.cart_after_hours),
                                pd.Timedelta(days=config.cart_within_days)),
        "wishlist_reminder": pairs("wishlist_reminder", pd.Timedelta(days=config.wishlist_after_days),
                                   pd.Timedelta(days=config.wishlist_within_days)),
        "anniversary": set(first.loc[(day.month == today.month) & (day.day == today.day) & (day.year < today.year),
                                     "customer_id"]),
        "follow_up_non_openers": set(opened.index[~opened]) - unengaged,
    }


@pytest.mark.parametrize("config", [TriggerConfig(), TriggerConfig(cart_after_hours=2, cart_within_days=30,
                                                                   wishlist_after_days=1, follow_up_days=(1, 10))],
                         ids=["default windows", "wide windows"])
def test_triggers_name_what_the_sample_planted(planted: tuple[SampleShop, ShopData, ShopRecommender],
                                               config: TriggerConfig) -> None:
    """On the sample's last day, carts left full, wish lists not bought, anniversaries of the
    first order and mails not opened are found exactly as the simulation left them, through
    aliases, quarantined copies and anonymous sessions."""
    sample, shop, recommender = planted
    today = LONG.end_ts
    frame = find_triggers(shop, today, config.model_copy(update={"k": 100}), recommender)
    expected = should_fire(sample, today, config)
    for trigger in ("abandoned_cart", "wishlist_reminder"):
        rows = frame[frame["trigger"] == trigger]
        assert set(zip(rows["customer_id"], rows["item_id"], strict=True)) == expected[trigger], trigger
        assert expected[trigger], f"the sample plants no {trigger}: the check would be empty"
    for trigger in ("anniversary", "follow_up_non_openers"):
        assert set(frame.loc[frame["trigger"] == trigger, "customer_id"]) == expected[trigger], trigger
        assert expected[trigger], f"the sample plants no {trigger}: the check would be empty"


def test_refills_come_due_where_the_sample_planted_them(planted: tuple[SampleShop, ShopData, ShopRecommender]
                                                        ) -> None:
    """The sample's items declare each category's repurchase days, so a refill is due exactly the
    planted interval after the last purchase; the planted timing of each refill varies by about
    20% (REFILL_SIGMA), so a week's window names most of the refills the simulation would place
    in the coming week, not all, and far more than chance."""
    sample, shop, recommender = planted
    today, config = LONG.end_ts, TriggerConfig()
    fired_rows = find_triggers(shop, today, config, recommender)
    fired_rows = fired_rows[fired_rows["trigger"] == "refill_due"]
    categories = sample.truth["categories"].set_index("category")
    category = fired_rows["item_id"].map(sample.truth["items"].set_index("item_id")["category"])
    assert not categories.loc[category, "durable"].any(), "a durable is never due"
    last = shop["orders"].groupby(["customer_id", "item_id"])["ts"].max()
    bought = last.reindex(pd.MultiIndex.from_frame(fired_rows[["customer_id", "item_id"]])).to_numpy()
    planted_due = pd.to_datetime(bought, utc=True) + pd.to_timedelta(categories.loc[category, "repurchase_days"]
                                                                       .to_numpy(), unit="D")
    assert (planted_due.strftime("%Y-%m-%d") == fired_rows["detail"].to_numpy()).all()

    truth = sample.truth["triggers"]
    coming = truth[(truth["trigger"] == "refill_due") & offered(sample, truth)
                   & (truth["at"] < today + pd.Timedelta(days=config.refill_ahead_days))]
    found = coming["customer_id"].isin(set(fired_rows["customer_id"])).mean()
    consumable_buyers = shop["orders"].loc[~shop["orders"]["item_id"].map(
        sample.truth["items"].set_index("item_id")["category"]).map(categories["durable"]).astype(bool), "customer_id"]
    named = fired_rows["customer_id"].nunique() / consumable_buyers.nunique()
    assert len(coming) >= 50 and found >= 0.6 and found >= 3 * named, (len(coming), found, named)


def test_the_plan_names_each_customers_first_trigger_as_shoprec_triggers_writes_it(
        planted: tuple[SampleShop, ShopData, ShopRecommender]) -> None:
    """The bundle's plan (``trigger`` of /email_picks and shoprec picks) against the command's
    rows on the day after the data ends: the same first trigger for every customer, none for
    everyone else, and no follow-up where the sunset rule holds the customer back."""
    sample, shop, recommender = planted
    rows = find_triggers(shop, LONG.end_ts, TriggerConfig(), recommender)
    first = rows.groupby("customer_id", sort=False)["trigger"].first()  # rows come in TRIGGERS order
    everyone = sorted(set(sample.truth["customers"]["customer_id"]) | set(first.index))
    plan = {p.customer_id: p for p in recommender.email_picks(everyone, 3)}
    assert {c: p.trigger for c, p in plan.items() if p.trigger} == first.to_dict()
    assert set(first) == set(TRIGGERS)
    held_back = trigger_facts(shop, LONG.end_ts, TriggerConfig())
    held_back = set(held_back.loc[held_back["trigger"] == FOLLOW_UP, "customer_id"]) - set(first.index)
    assert held_back and all(plan[c].send_reason == UNENGAGED and plan[c].trigger is None for c in held_back)
