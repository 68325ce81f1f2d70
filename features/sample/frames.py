"""The contract tables built from the stages' arrays: customers (and their aliases), orders, events
(the email campaigns: :mod:`features.sample.emails`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.sample.browsing import Events, Sessions
from features.sample.catalogue import Catalogue
from features.sample.customers import Customers
from features.sample.draws import id_width, make_ids, take_values, utc_series
from features.sample.orders import Orders
from features.sample.process import (
    ALIAS_LISTED_SHARE,
    ALIAS_SHARE,
    ALIAS_USE_P,
    CONSUMABLE_QUANTITY_P,
    DISCOUNT_SHARE,
    DISCOUNTS,
    DURABLE,
    EVENT_VOCABULARY,
    US,
)


@dataclass(frozen=True)
class Aliases:
    """Customers with a second id. Ids 0..n-1 are canonical, n + slot is a customer's alias."""

    owner: np.ndarray
    listed: np.ndarray
    """Aliases that also have their own row in ``customers``."""
    slot: np.ndarray
    """Alias slot of each customer, -1 for customers without one."""

    def id_index(self, rng: np.random.Generator, customer: np.ndarray) -> np.ndarray:
        """Which id each order/session carries: the alias with :data:`ALIAS_USE_P`, else canonical."""
        slot = np.where(customer >= 0, self.slot[np.maximum(customer, 0)], -1)
        use = (slot >= 0) & (rng.random(len(customer)) < ALIAS_USE_P)
        return np.where(use, len(self.slot) + slot, customer)


def alias_count(n: int) -> int:
    """How many of ``n`` customers get a second id."""
    return round(ALIAS_SHARE * n)


def build_aliases(rng: np.random.Generator, n: int) -> Aliases:
    owner = rng.choice(n, size=alias_count(n), replace=False)
    slot = np.full(n, -1)
    slot[owner] = np.arange(len(owner))
    return Aliases(owner, rng.random(len(owner)) < ALIAS_LISTED_SHARE, slot)


def customer_frames(rng: np.random.Generator, customers: Customers, aliases: Aliases, ids: np.ndarray,
                     end_us: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``customers`` (with a row for listed aliases, signed up later) and ``customer_aliases``."""
    n = len(customers)
    listed = aliases.owner[aliases.listed]
    created = customers.created_us[listed]
    alias_created = (created + rng.random(len(listed)) * (end_us - US - created)).astype(np.int64) // US * US
    table = pd.DataFrame({
        "customer_id": np.concatenate((ids[:n], ids[n + aliases.slot[listed]])),
        "email_opt_in": np.concatenate((customers.opt_in, customers.opt_in[listed])),
        "created_at": utc_series(np.concatenate((customers.created_us, alias_created))),
    })
    alias_table = pd.DataFrame({"alias_id": ids[n + np.arange(len(aliases.owner))], "customer_id": ids[aliases.owner]})
    return table, alias_table


def order_frame(rng: np.random.Generator, orders: Orders, customer_id_index: np.ndarray, ids: np.ndarray,
                 catalogue: Catalogue, first: int = 1) -> pd.DataFrame:
    """Order lines in time order, order ids numbered by time from ``first``: quantity 1 for
    durables, 1-3 for consumables; 12% of lines discounted by 10-30%."""
    n_orders, n_lines = len(orders.ts_us), len(orders.line_item)
    by_time = np.argsort(orders.ts_us, kind="stable")
    number = np.empty(n_orders, dtype=np.int64)
    number[by_time] = np.arange(n_orders)
    lines = np.argsort(number[orders.line_order], kind="stable")
    order, item = orders.line_order[lines], orders.line_item[lines]
    quantity = np.where(DURABLE[catalogue.category[item]], 1.0,
                        rng.choice(len(CONSUMABLE_QUANTITY_P), n_lines, p=CONSUMABLE_QUANTITY_P) + 1.0)
    discount = np.where(rng.random(n_lines) < DISCOUNT_SHARE, rng.choice(DISCOUNTS, n_lines), 0.0)
    return pd.DataFrame({
        "order_id": take_values(make_ids("o", np.arange(first, first + n_orders), id_width(first + n_orders, 7)),
                                number[order]),
        "customer_id": take_values(ids, customer_id_index[order]),
        "item_id": take_values(catalogue.ids, item),
        "quantity": quantity,
        "unit_price": np.round(catalogue.price[item] * (1.0 - discount), 2),
        "ts": utc_series(orders.ts_us[order]),
    })


def event_frame(events: Events, sessions: Sessions, session_id_index: np.ndarray, ids: np.ndarray,
                 catalogue: Catalogue, first: int = 1) -> pd.DataFrame:
    """Events with session ids numbered by session start from ``first``; anonymous and search
    values are NA."""
    number = np.empty(len(sessions.start_us), dtype=np.int64)
    number[np.argsort(sessions.start_us, kind="stable")] = np.arange(len(number))
    return pd.DataFrame({
        "session_id": take_values(make_ids("s", number + first, id_width(len(number) + first, 7)), events.session),
        "event_type": take_values(np.array(EVENT_VOCABULARY, dtype=object), events.code),
        "ts": utc_series(events.ts_us),
        "customer_id": take_values(ids, session_id_index[events.session]),
        "item_id": take_values(catalogue.ids, events.item),
    })
