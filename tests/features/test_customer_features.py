"""Customer features as of a cut-off: right figures, finite values, and a strict time cut that catches leaks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.customer_features import (CAP_DAYS, LeakageError, check_time_cut, customer_features, email_labels,
                                        purchase_labels)
from features.loading import ShopData, validate_tables
from features.sample import SampleConfig, generate_shop
from features.sessions import ordered
from features.sources import RawTable

CUTOFF = pd.Timestamp("2024-06-01", tz="UTC")


@pytest.fixture(scope="module")
def shop() -> ShopData:
    generated = generate_shop(SampleConfig(customers=600, items=200, days=120, seed=5, dirty_share=0))
    return validate_tables({k: RawTable(v, k) for k, v in generated.tables.items()}, source="sample")


def tiny_shop() -> ShopData:
    ts = pd.to_datetime(["2024-05-01", "2024-05-25", "2024-06-05", "2024-05-30"], utc=True)
    orders = pd.DataFrame({"order_id": ["o1", "o2", "o3", "o4"], "customer_id": ["a", "a", "b", "c"],
                           "item_id": ["x", "y", "x", "x"], "quantity": [1.0, 2.0, 1.0, 1.0],
                           "unit_price": [10.0, 5.0, 10.0, 10.0], "ts": ts})
    items = pd.DataFrame({"item_id": ["x", "y"], "category": ["k1", "k2"], "price": [10.0, 5.0]})
    emails = pd.DataFrame({"customer_id": ["a", "a", "b"], "campaign_id": ["m1", "m2", "m2"],
                           "sent_ts": pd.to_datetime(["2024-05-10", "2024-05-28", "2024-06-03"], utc=True),
                           "opened": [True, False, True]})
    tables = {"orders": orders, "items": items, "email_events": emails}
    return ShopData(tables, report=None, quarantine={})  # type: ignore[arg-type]


def test_figures_on_a_hand_made_shop() -> None:
    frame = customer_features(tiny_shop(), CUTOFF)
    assert list(frame.index) == ["a", "c"]  # b first appears after the cut-off
    a = frame.loc["a"]
    assert a["frequency"] == 2 and a["monetary"] == 20.0 and a["categories_bought"] == 2
    assert a["recency_days"] == pytest.approx(7.0) and a["tenure_days"] == pytest.approx(31.0)
    assert a["sends"] == 2 and a["days_since_open"] == pytest.approx(22.0)
    assert frame.loc["c", "days_since_open"] == CAP_DAYS  # never mailed: capped, not missing
    assert np.isfinite(frame.to_numpy()).all()
    labels = purchase_labels(tiny_shop(), CUTOFF, 14, frame.index)
    assert labels.to_dict() == {"a": 0, "c": 0}
    assert purchase_labels(tiny_shop(), pd.Timestamp("2024-05-20", tz="UTC"), 14, frame.index).to_dict() == \
        {"a": 1, "c": 1}
    opened = email_labels(tiny_shop(), pd.Timestamp("2024-05-20", tz="UTC"), 14, pd.Index(["a", "b"]))
    assert list(opened.index) == ["a"] and opened.tolist() == [0]


def test_event_features_on_hand_made_sessions() -> None:
    """Sessions of one customer, one begun anonymously, one holding two customers (a's events
    around c's cart), an item the catalogue does not list and an event after the cut-off; the
    same figures from a log of the whole shop (read before the cut-off only) as without one."""
    rows = [("s0", "a", "view", "x", "2024-04-20 10:00"), ("s1", "a", "view", "x", "2024-05-29 10:00"),
            ("s1", "a", "cart", "x", "2024-05-29 10:05"), ("s2", None, "view", "y", "2024-05-30 09:00"),
            ("s2", "a", "view", "y", "2024-05-30 09:01"), ("s2", "a", "view", "z", "2024-05-30 09:02"),
            ("s3", "a", "view", "x", "2024-05-31 08:00"), ("s3", "c", "cart", "y", "2024-05-31 08:01"),
            ("s3", "a", "view", "y", "2024-05-31 08:02"), ("s4", "c", "view", "x", "2024-05-20 12:00"),
            ("s5", "a", "purchase", "x", "2024-06-03 10:00")]
    events = pd.DataFrame(rows, columns=["session_id", "customer_id", "event_type", "item_id", "ts"])
    events["ts"] = pd.to_datetime(events["ts"], utc=True)
    base = tiny_shop()
    shop = ShopData({**base.tables, "events": events}, report=None, quarantine={})  # type: ignore[arg-type]
    frame = customer_features(shop, CUTOFF)
    pd.testing.assert_frame_equal(frame, customer_features(shop, CUTOFF, ordered(events, shop["items"])),
                                  check_exact=True)
    a, c = frame.loc["a"], frame.loc["c"]
    assert a["days_since_event"] == pytest.approx((15 * 60 + 58) / 1440)  # s3 at 08:02 the day before
    assert (a["sessions_all"], a["sessions_7d"], a["views_7d"], a["carts_7d"], a["views_30d"]) == (4, 3, 5, 1, 5)
    assert a["abandoned_carts_30d"] == 2  # s1, and s3 (whose first identified event is a's) with c's cart
    assert a["categories_viewed_30d"] == 2  # x and y; z is not in the catalogue
    # first seen at s0's view, before a's first order (no sign-up date in this shop)
    assert a["seen_days"] == pytest.approx((CUTOFF - pd.Timestamp("2024-04-20 10:00", tz="UTC")).total_seconds() / 86_400)
    assert (c["sessions_all"], c["sessions_7d"], c["sessions_30d"], c["views_7d"], c["views_30d"]) == (2, 1, 2, 0, 1)
    assert (c["carts_7d"], c["abandoned_carts_30d"], c["categories_viewed_30d"]) == (1, 0, 1)


def test_no_identified_event_or_order_before_the_cut_off() -> None:
    """A customer known only by their mails (every event before the cut-off anonymous, every
    order after it), and a cut-off before everything: their rows, or none, with or without a log."""
    events = pd.DataFrame({"session_id": ["s1", "s1", "s2"], "customer_id": [None, None, "a"],
                           "event_type": ["view", "cart", "view"], "item_id": ["x", "x", "y"],
                           "ts": pd.to_datetime(["2024-05-20", "2024-05-21", "2024-06-10"], utc=True)})
    base = tiny_shop()
    orders = base["orders"].assign(ts=pd.to_datetime(["2024-06-05"] * 4, utc=True))
    shop = ShopData({**base.tables, "orders": orders, "events": events}, report=None, quarantine={})  # type: ignore[arg-type]
    for cutoff, known in ((CUTOFF, ["a"]), (pd.Timestamp("2024-01-01", tz="UTC"), [])):
        frame = customer_features(shop, cutoff)
        assert list(frame.index) == known and np.isfinite(frame.to_numpy()).all()
        pd.testing.assert_frame_equal(frame, customer_features(shop, cutoff, ordered(events, shop["items"])),
                                      check_exact=True)
    assert customer_features(shop, CUTOFF).loc["a", "days_since_event"] == CAP_DAYS


def test_real_features_and_labels_pass_the_time_cut(shop: ShopData) -> None:
    cutoff = shop["orders"]["ts"].max() - pd.Timedelta(days=30)
    check_time_cut(customer_features, purchase_labels, shop, cutoff, 14)
    check_time_cut(customer_features, email_labels, shop, cutoff, 14)
    frame = customer_features(shop, cutoff)
    assert {"views_7d", "abandoned_carts_30d", "open_rate", "spend_trend"} <= set(frame.columns)
    assert np.isfinite(frame.to_numpy()).all()


def test_a_planted_feature_leak_is_caught(shop: ShopData) -> None:
    def leaky(data: ShopData, cutoff: pd.Timestamp) -> pd.DataFrame:
        frame = customer_features(data, cutoff)
        lifetime = data["orders"].groupby("customer_id").size()  # every order, including after the cut-off
        return frame.assign(lifetime_orders=lifetime.reindex(frame.index).fillna(0.0))

    cutoff = shop["orders"]["ts"].max() - pd.Timedelta(days=30)
    with pytest.raises(LeakageError, match="a feature reads the future"):
        check_time_cut(leaky, purchase_labels, shop, cutoff, 14)


def test_a_planted_label_leak_is_caught(shop: ShopData) -> None:
    def too_long(data: ShopData, cutoff: pd.Timestamp, horizon: float, ids: pd.Index) -> pd.Series:
        return purchase_labels(data, cutoff, horizon * 2, ids)  # the label window overruns its horizon

    cutoff = shop["orders"]["ts"].max() - pd.Timedelta(days=40)
    with pytest.raises(LeakageError, match="labels"):
        check_time_cut(customer_features, too_long, shop, cutoff, 14)


def test_an_open_the_shop_has_not_seen_by_the_cut_off_is_not_known() -> None:
    """A mail sent before the cut-off but opened (and clicked) after it: neither open nor click is
    in that cut-off's features; and an open more than 3 days after the send is not a label."""
    shop = tiny_shop()
    emails = shop["email_events"].assign(clicked=[True, False, True], opened_ts=pd.to_datetime(
        ["2024-06-02T00:00:00", None, "2024-06-03T09:00:00"], utc=True))  # a's first mail: opened 23 days after it went out
    seen = ShopData({**shop.tables, "email_events": emails}, report=None, quarantine={})  # type: ignore[arg-type]
    a = customer_features(seen, CUTOFF).loc["a"]
    assert a["log_opens"] == 0 and a["clicks"] == 0 and a["days_since_open"] == CAP_DAYS
    assert email_labels(seen, pd.Timestamp("2024-05-09", tz="UTC"), 14, pd.Index(["a"])).tolist() == [0]
    after = customer_features(seen, pd.Timestamp("2024-06-02 12:00", tz="UTC")).loc["a"]
    assert after["clicks"] == 1 and after["log_opens"] > 0


def test_a_customers_features_do_not_depend_on_how_the_ids_sort(shop: ShopData) -> None:
    """The features group customers by their position among the sorted ids: renaming every
    customer so that the ids sort in another order (the reverse, non-ASCII among them) must give
    each customer the same row, whatever the event log or email log holds."""
    ids = pd.Index(np.unique(np.concatenate([shop[t]["customer_id"].dropna().astype(str).to_numpy(dtype=object)
                                             for t in ("orders", "events", "email_events", "customers")])))
    renamed_to = pd.Series([f"ä{len(ids) - n:05d}" if n % 3 else f"Z{len(ids) - n:05d}" for n in range(len(ids))],
                           index=ids)
    renamed = ShopData({name: frame.assign(customer_id=frame["customer_id"].map(renamed_to.to_dict()).astype("str"))
                        if "customer_id" in frame else frame for name, frame in shop.tables.items()},
                       report=shop.report, quarantine=shop.quarantine)
    cutoff = shop["orders"]["ts"].max() - pd.Timedelta(days=20)
    for log in (True, False):
        original = customer_features(shop, cutoff, ordered(shop["events"], shop["items"]) if log else None)
        moved = customer_features(renamed, cutoff, ordered(renamed["events"], renamed["items"]) if log else None)
        assert list(moved.index) == sorted(moved.index)
        back = moved.rename(index=dict(zip(renamed_to, renamed_to.index, strict=True))).loc[original.index]
        pd.testing.assert_frame_equal(back, original, check_exact=True)
