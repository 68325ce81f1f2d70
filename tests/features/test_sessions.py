"""Session features: only pre-purchase events, prefixes, customer history, and live == batch."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features import sessions as sess
from features.loading import ShopData, validate_tables
from features.sample import SampleConfig, generate_shop
from features.sources import RawTable

ITEMS = pd.DataFrame({"item_id": ["x", "y"], "category": ["k1", "k2"], "price": [10.0, 50.0]})


def events(rows: list[tuple[str, str, str, str | None, str | None]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["session_id", "event_type", "ts", "customer_id", "item_id"])
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame


def features_of(log: pd.DataFrame, items: pd.DataFrame, past: pd.DataFrame,
                prefix: pd.Series | None = None) -> pd.DataFrame:
    return sess.ordered(log, items).features(None, past, prefix)


def table_of(log: pd.DataFrame) -> pd.DataFrame:
    return sess.ordered(log).table


SESSION = [("s1", "view", "2024-06-01 10:00", "c", "x"), ("s1", "cart", "2024-06-01 10:02", "c", "x"),
           ("s1", "view", "2024-06-01 10:03", "c", "y")]
AFTER = [("s1", "purchase", "2024-06-01 10:05", "c", "x"), ("s1", "cart", "2024-06-01 10:06", "c", "y")]


@pytest.fixture(scope="module")
def shop() -> ShopData:
    generated = generate_shop(SampleConfig(customers=400, items=150, days=60, seed=9, dirty_share=0))
    return validate_tables({k: RawTable(v, k) for k, v in generated.tables.items()}, source="sample")


def test_purchase_and_later_events_never_reach_the_features() -> None:
    past = pd.DataFrame({"past_sessions": [0.0], "past_converted": [0.0]}, index=["s1"])
    before = features_of(events(SESSION), ITEMS, past)
    with_purchase = events(SESSION + AFTER)
    assert features_of(with_purchase, ITEMS, past).equals(before)
    assert table_of(with_purchase).loc["s1", ["converted", "eligible_events"]].tolist() == [1, 3]
    row = before.loc["s1"]
    assert row["events"] == 3 and row["n_cart"] == 1 and row["cart_value"] == 10.0
    assert row["distinct_items"] == 2 and row["duration_s"] == 180.0


def test_prefix_uses_the_first_n_events() -> None:
    past = pd.DataFrame({"past_sessions": [0.0], "past_converted": [0.0]}, index=["s1"])
    first = features_of(events(SESSION + AFTER), ITEMS, past, pd.Series({"s1": 1}))
    assert first.loc["s1", "events"] == 1 and first.loc["s1", "n_cart"] == 0


def test_history_counts_only_sessions_that_ended_before_the_start() -> None:
    log = events([("a", "view", "2024-06-01 10:00", "c", "x"), ("a", "purchase", "2024-06-01 10:10", "c", "x"),
                  ("b", "view", "2024-06-01 10:05", "c", "y"),  # starts while "a" is still open
                  ("d", "view", "2024-06-02 09:00", "c", "y")])
    past = sess.past_as_of_start(table_of(log))
    assert past.loc["b"].tolist() == [0.0, 0.0]
    assert past.loc["d"].tolist() == [2.0, 1.0]


def test_live_features_equal_batch_features(shop: ShopData) -> None:
    log = shop["events"]
    table = table_of(log)
    history = sess.customer_history(table)
    batch = features_of(log, shop["items"], sess.past_from_history(table, history))
    live = sess.LiveSessionFeatures.build(shop["items"], history)
    sample = batch.index[np.random.default_rng(0).choice(len(batch), 200, replace=False)]
    grouped = {sid: group for sid, group in log[log["session_id"].isin(sample)].groupby("session_id")}
    for sid in sample:
        records = grouped[sid].to_dict("records")
        records = [{**r, "customer_id": None if pd.isna(r["customer_id"]) else r["customer_id"],
                    "item_id": None if pd.isna(r["item_id"]) else r["item_id"]} for r in records]
        np.testing.assert_allclose(live.vector(records), batch.loc[sid].to_numpy(), rtol=1e-9, atol=1e-9)


def test_the_coded_log_reads_edge_cases_as_the_live_path_does() -> None:
    """Sessions given out of order, an anonymous start identified later, an item the catalogue
    does not list (price 0, no category, still a distinct item), a search with no item, two
    items of one category, a session that starts with its purchase: the sorted, coded log gives
    what the plain-Python live path gives, and its table names each session's first identified
    customer."""
    rows = [("s2", "cart", "2024-06-01 12:05", None, "ghost"), ("s2", "view", "2024-06-01 12:00", None, "x"),
            ("s2", "search", "2024-06-01 12:07", "c2", None), ("s2", "cart", "2024-06-01 12:09", "c2", "y"),
            ("s2", "remove_from_cart", "2024-06-01 12:10", "c2", "y"), ("s2", "view", "2024-06-01 12:11", "c9", "z"),
            ("s3", "purchase", "2024-06-02 08:00", "c3", "x"), ("s3", "view", "2024-06-02 08:01", "c3", "y"),
            *SESSION]
    log = events(rows)
    items = pd.concat([ITEMS, pd.DataFrame({"item_id": ["z"], "category": ["k1"], "price": [5.0]})], ignore_index=True)
    history = pd.DataFrame({"past_sessions": [2.0], "past_converted": [1.0]}, index=pd.Index(["c2"]))
    table = table_of(log)
    assert table.loc["s2", "customer_id"] == "c2" and table.loc["s3", ["converted", "eligible_events"]].tolist() == [1, 0]
    assert table.index.tolist() == ["s1", "s2", "s3"]
    batch = features_of(log, items, sess.past_from_history(table, history))
    assert batch.index.tolist() == ["s1", "s2"], "a session that starts with its purchase has nothing to score"
    live = sess.LiveSessionFeatures.build(items, history)
    for sid in batch.index:
        records = [{k: None if pd.isna(v) else v for k, v in r.items()}
                   for r in log[log["session_id"] == sid].to_dict("records")]
        np.testing.assert_allclose(live.vector(records), batch.loc[sid].to_numpy(), rtol=1e-12)
    assert batch.loc["s2", ["distinct_items", "distinct_categories", "cart_value", "n_search"]].tolist() == [4, 2, 0, 1]
    prefix = features_of(log, items, sess.past_from_history(table, history), pd.Series({"s2": 2}))
    assert prefix.index.tolist() == ["s2"] and prefix.loc["s2", ["events", "n_cart", "cart_value"]].tolist() == [2, 1, 0]


def test_nothing_to_score_is_an_empty_frame_not_an_error() -> None:
    """No events, sessions that start with their purchase, ids that match no session: empty
    frames with every column, as a training window with no session must give to be skipped."""
    past = pd.DataFrame({"past_sessions": [], "past_converted": []})
    only_purchases = events([("p", "purchase", "2024-06-01 10:00", "c", "x")])
    for log in (events([]), only_purchases):
        assert list(features_of(log, ITEMS, past).columns) == list(sess.FEATURES)
        assert features_of(log, ITEMS, past).empty
    assert list(table_of(events([])).columns) == ["customer_id", "start", "end", "converted", "eligible_events"]
    assert table_of(only_purchases)["eligible_events"].tolist() == [0]
    coded = sess.ordered(events(SESSION), ITEMS)
    assert coded.features(pd.Index(["nobody"]), past).empty
    assert len(coded.features(pd.Index(["s1", "nobody"]), past)) == 1


def test_an_event_without_a_time_is_left_out() -> None:
    log = events(SESSION + [("s1", "cart", None, "c", "y")])
    past = pd.DataFrame({"past_sessions": [0.0], "past_converted": [0.0]}, index=["s1"])
    assert features_of(log, ITEMS, past).equals(features_of(events(SESSION), ITEMS, past))
