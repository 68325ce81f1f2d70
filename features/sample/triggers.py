"""The planted truth of the lifecycle triggers: what the simulation left each customer with when
its data ends, read from its own arrays (true customers, exact times) rather than from the
tables a loader sees, so a trigger that mishandles aliases, quarantined copies, anonymous
sessions or the order of events disagrees with it (``_truth/triggers.csv``, docs/sample.md).

One row per situation a trigger acts on, with the time it began (``at``); the trigger's windows
decide which of them fire on a given day:

- ``refill_due``: the next refill of a running refill habit, which the simulation would have
  placed after the end (``at``: when the customer runs out);
- ``abandoned_cart``: an item still in the customer's cart at the end: put in (``at``), neither
  removed nor bought since;
- ``wishlist_reminder``: an item wish-listed (``at``: the latest time) and not bought since;
- ``anniversary``: the customer's first order (``at``); no item;
- ``follow_up_non_openers``: every mail (``at``: sent, ``detail``: the campaign) and whether
  its open was seen before the end (``opened``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.sample.browsing import Events, Sessions
from features.sample.catalogue import Catalogue
from features.sample.draws import take_values, utc_series
from features.sample.orders import Orders
from features.sample.process import CART, DAY_US, PANTRY_SHARE, PURCHASE, REMOVE, REPURCHASE_DAYS, WISHLIST

COLUMNS = ("customer_id", "trigger", "item_id", "detail", "at", "opened")


def _frame(trigger: str, customer_ids: np.ndarray, item_ids: np.ndarray | None, at_us: np.ndarray,
           detail: np.ndarray | None = None, opened: np.ndarray | None = None) -> pd.DataFrame:
    n = len(customer_ids)
    return pd.DataFrame({
        "customer_id": customer_ids,
        "trigger": trigger,
        "item_id": np.full(n, None, dtype=object) if item_ids is None else item_ids,
        "detail": np.full(n, None, dtype=object) if detail is None else detail,
        "at": utc_series(at_us),
        "opened": pd.array([pd.NA] * n if opened is None else opened, dtype="boolean"),
    })


def _last_of(customer: np.ndarray, item: np.ndarray, code: np.ndarray, ts_us: np.ndarray,
             codes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per (customer, item), the latest event among ``codes``: customer, item, its code and time.
    Inputs in time order; at one instant a later code (a purchase after the cart add) wins."""
    keep = np.isin(code, codes) & (customer >= 0) & (item >= 0)
    customer, item, code, ts_us = customer[keep], item[keep], code[keep], ts_us[keep]
    order = np.lexsort((code, ts_us, item, customer))
    customer, item, code, ts_us = customer[order], item[order], code[order], ts_us[order]
    last = np.append((customer[1:] != customer[:-1]) | (item[1:] != item[:-1]), True)
    return customer[last], item[last], code[last], ts_us[last]


def _due_refills(catalogue: Catalogue, orders: Orders) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per (customer, item), the first refill after the end that the simulation would keep: a
    refill within :data:`PANTRY_SHARE` of the interval after the last purchase of the item is
    another item in the simulation (the pantry is still full), so it is not due."""
    due = orders.next_refills
    n_items = len(catalogue.ids)
    bought = orders.customer[orders.line_order].astype(np.int64) * n_items + orders.line_item
    last = pd.Series(orders.ts_us[orders.line_order]).groupby(bought).max()
    key = due.customer.astype(np.int64) * n_items + due.item
    since = last.reindex(key).to_numpy(dtype=float)
    pantry_us = PANTRY_SHARE * REPURCHASE_DAYS[catalogue.category[due.item]] * DAY_US
    kept = ~(due.ts_us - since < pantry_us)  # never bought in the data: nothing in the pantry
    order = np.lexsort((due.ts_us[kept], key[kept]))
    first = np.unique(key[kept][order], return_index=True)[1]
    chosen = np.flatnonzero(kept)[order][first]
    return due.customer[chosen], due.item[chosen], due.ts_us[chosen]


def trigger_truth(catalogue: Catalogue, orders: Orders, sessions: Sessions, events: Events,
                  emails: pd.DataFrame, ids: np.ndarray) -> pd.DataFrame:
    """The truth table described in the module docstring. ``events`` are the clean ones (before
    planted defects are copied in), ``emails`` the email log as written (true ids, exact times)."""
    owner = sessions.customer[events.session]
    frames = []

    customer, item, ts_us = _due_refills(catalogue, orders)
    frames.append(_frame("refill_due", take_values(ids, customer), take_values(catalogue.ids, item), ts_us))

    # the cart as the customer left it: an add puts the item in, a removal or a purchase takes it out
    customer, item, code, ts_us = _last_of(owner, events.item, events.code, events.ts_us, (CART, REMOVE, PURCHASE))
    held = code == CART
    frames.append(_frame("abandoned_cart", take_values(ids, customer[held]), take_values(catalogue.ids, item[held]),
                         ts_us[held]))

    customer, item, code, ts_us = _last_of(owner, events.item, events.code, events.ts_us, (WISHLIST, PURCHASE))
    wished = code == WISHLIST
    frames.append(_frame("wishlist_reminder", take_values(ids, customer[wished]),
                         take_values(catalogue.ids, item[wished]), ts_us[wished]))

    order_ts = orders.ts_us
    first = np.full(int(orders.customer.max(initial=-1)) + 1, np.iinfo(np.int64).max)
    np.minimum.at(first, orders.customer, order_ts)
    buyers = np.flatnonzero(first < np.iinfo(np.int64).max)
    frames.append(_frame("anniversary", take_values(ids, buyers), None, first[buyers]))

    sent_us = emails["sent_ts"].dt.tz_convert(None).to_numpy().astype("datetime64[us]").astype(np.int64)
    frames.append(_frame("follow_up_non_openers", emails["customer_id"].to_numpy(dtype=object), None, sent_us,
                         detail=emails["campaign_id"].to_numpy(dtype=object),
                         opened=emails["opened"].to_numpy(dtype=bool)))
    out = pd.concat(frames, ignore_index=True)
    return out.sort_values(["trigger", "customer_id", "at"], kind="stable").reset_index(drop=True)[list(COLUMNS)]
