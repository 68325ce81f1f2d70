"""A tiny hand-written shop covering every contract table, with planted bad rows.

Each bad row is listed in PLANTED_REASONS so tests can check that exactly these rows,
for exactly these reasons, end in quarantine.
"""

from __future__ import annotations

import pandas as pd

ITEMS = pd.DataFrame({
    "item_id": ["tv1", "tv2", "hdmi", "beans", "mug", "bad_price", "tv1", "neg", ""],
    "category": ["tv", "tv", "cables", "coffee", "kitchen", "coffee", "tv", "coffee", "coffee"],
    "price": ["499.0", "899.5", "9.99", "12.0", "7.5", "1,299.00", "450", "-3", "5"],
    "durable": ["true", "1", "false", "no", "", "false", "true", "false", "false"],
    "in_stock": ["true", "true", "true", "true", "false", "true", "true", "true", "true"],
    "extra_column": ["x"] * 9,
})
ORDERS = pd.DataFrame({
    "order_id": ["o1", "o1", "o2", "o3", "o4", "o5", "o6", "o7", "o8"],
    "customer_id": ["c1", "c1", "c2", "c2-old", "c3", "c3", "c1", "c2", "c3"],
    "item_id": ["tv1", "hdmi", "beans", "beans", "mug", "ghost", "hdmi", "beans", "beans"],
    "quantity": ["1", "2", "3", "1", "1", "1", "0", "5000", "1"],
    "unit_price": ["499", "9.99", "12", "12", "7.5", "3", "9.99", "12", "12"],
    "ts": ["2024-03-01T10:00:00Z", "2024-03-01T10:00:00Z", "2024-03-02T08:30:00+02:00",
           "2024-03-05 09:00:00", "2024-03-06T12:00:00Z", "2024-03-07T12:00:00Z",
           "2024-03-08T12:00:00Z", "2024-03-09T12:00:00Z", "yesterday"],
})
EVENTS = pd.DataFrame({
    "session_id": ["s1", "s1", "s1", "s2", "s2", "s3", "s3"],
    "event_type": ["view", "cart", "purchase", "search", "view", "teleport", "view"],
    "ts": ["2024-03-01T09:50:00Z", "2024-03-01T09:55:00Z", "2024-03-01T10:00:00Z",
           "2024-03-03T10:00:00Z", "2024-03-03T10:01:00Z", "2024-03-04T10:00:00Z", "2024-03-04T10:01:00Z"],
    "customer_id": ["c1", "c1", "c1", "", "", "c2-old", "c2-old"],
    "item_id": ["tv1", "tv1", "tv1", "", "mug", "beans", ""],
})
CUSTOMERS = pd.DataFrame({
    "customer_id": ["c1", "c2", "c2-old", "c3"],
    "email_opt_in": ["true", "true", "false", "true"],
    "created_at": ["2023-01-01T00:00:00Z", "2023-02-01T00:00:00Z", "2022-06-01T00:00:00Z", ""],
})
CUSTOMER_ALIASES = pd.DataFrame({"alias_id": ["c2-old", "loop-a", "loop-b"],
                                 "customer_id": ["c2", "loop-b", "loop-a"]})
EMAIL_EVENTS = pd.DataFrame({
    "customer_id": ["c1", "c2-old", "c3", "c3"],
    "campaign_id": ["k1", "k1", "k1", "k2"],
    "sent_ts": ["2024-03-01T06:00:00Z"] * 3 + ["2024-03-08T06:00:00Z"],
    "opened": ["true", "false", "maybe", "false"],
})

RAW_TABLES: dict[str, pd.DataFrame] = {
    "items": ITEMS, "orders": ORDERS, "events": EVENTS, "customers": CUSTOMERS,
    "customer_aliases": CUSTOMER_ALIASES, "email_events": EMAIL_EVENTS,
}

# (table, 1-based source row) -> reason
PLANTED_REASONS: dict[tuple[str, int], str] = {
    ("items", 6): "price is not a number",
    ("items", 7): "duplicate item_id",
    ("items", 8): "price < 0",
    ("items", 9): "item_id is empty",
    ("orders", 6): "item_id not in items",
    ("orders", 7): "quantity is 0",
    ("orders", 8): "|quantity| > 1000 (implausible; contract.max_quantity)",
    ("orders", 9): "ts is not an ISO 8601 timestamp",
    ("events", 6): "event_type is not one of view, cart, remove_from_cart, wishlist, search, purchase",
    ("events", 7): "item_id is empty for an item event",
    ("customer_aliases", 2): "alias chain forms a cycle",
    ("customer_aliases", 3): "alias chain forms a cycle",
    ("email_events", 3): "opened is not a boolean",
}
