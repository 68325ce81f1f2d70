"""The orders stage: baskets from interests and tiers, attached partners, durables never bought twice
within their interval, consumables refilled on their cycle."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.sample.catalogue import Catalogue
from features.sample.customers import Customers
from features.sample.draws import draw_rows, times_in
from features.sample.process import (
    ATTACH_PROB,
    DAY_US,
    DURABLE,
    DURABLE_ORDER_WEIGHT,
    FAVOURITE_SHARE,
    HABIT_AFFINITY,
    LINES_PER_ORDER_P,
    N_CATEGORIES,
    N_TIERS,
    PANTRY_SHARE,
    REFILL_PROB,
    REFILL_SIGMA,
    REPURCHASE_DAYS,
    TIER_LOYALTY,
    US,
)


@dataclass(frozen=True)
class Refills:
    """Refills the simulation would have placed after the end of the data: which customer, which
    item, when. The planted truth of a refill coming due (``_truth/triggers.csv``)."""

    customer: np.ndarray
    item: np.ndarray
    ts_us: np.ndarray


NO_REFILLS = Refills(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))


@dataclass(frozen=True)
class Orders:
    customer: np.ndarray
    ts_us: np.ndarray
    line_order: np.ndarray
    line_item: np.ndarray
    next_refills: Refills = NO_REFILLS


def draw_items(rng: np.random.Generator, weights: np.ndarray, rows: np.ndarray, tier: np.ndarray,
                catalogue: Catalogue, favourite: np.ndarray | None) -> np.ndarray:
    """Items for ``rows``: category from ``weights[row]``, then ``tier``, then popularity.

    With ``favourite`` given, consumable draws are the row's favourite item of the
    category with probability :data:`FAVOURITE_SHARE` (habitual re-buying).
    """
    category = draw_rows(rng, weights, rows)
    items = catalogue.draw(rng, category * N_TIERS + tier)
    if favourite is not None:
        loyal = ~DURABLE[category] & (rng.random(len(rows)) < FAVOURITE_SHARE)
        items[loyal] = favourite[rows[loyal], category[loyal]]
    return items


def line_tiers(rng: np.random.Generator, preferred: np.ndarray) -> np.ndarray:
    """The preferred tier with probability :data:`TIER_LOYALTY`, else one of the other two."""
    other = (preferred + rng.integers(1, N_TIERS, len(preferred))) % N_TIERS
    return np.where(rng.random(len(preferred)) < TIER_LOYALTY, preferred, other)


def _durable_conflicts(customer: np.ndarray, category: np.ndarray, ts_us: np.ndarray) -> np.ndarray:
    """Durable lines bought too soon after a kept purchase of the same category by the same customer."""
    lines = np.flatnonzero(DURABLE[category])
    return _too_soon(lines, customer[lines].astype(np.int64) * N_CATEGORIES + category[lines], ts_us,
                     (REPURCHASE_DAYS[category[lines]] * DAY_US).astype(np.int64), len(customer))


def _too_soon(lines: np.ndarray, key: np.ndarray, ts_us: np.ndarray, gap_us: np.ndarray, n: int) -> np.ndarray:
    """Of ``lines`` (with a history ``key`` and a ``gap_us`` each), those within the gap after the
    last kept line of the same history: a mask over all ``n`` lines.

    Walks each history in time order: the first purchase is kept, purchases within the gap
    after it conflict, the next one after the gap is kept, and so on. Each round keeps one
    purchase per history, so the loop runs at most days / min(gap) + 1 times.
    """
    conflict = np.zeros(n, dtype=bool)
    order = np.lexsort((ts_us[lines], key))
    lines, key, gap_us = lines[order], key[order], gap_us[order]
    pending = np.arange(len(lines))
    while len(pending):
        k = key[pending]
        first = np.concatenate(([True], k[1:] != k[:-1]))
        heads = np.flatnonzero(first)
        head_of = pending[np.repeat(heads, np.diff(np.append(heads, len(pending))))]
        too_soon = ~first & (ts_us[lines[pending]] < ts_us[lines[head_of]] + gap_us[head_of])
        conflict[lines[pending[too_soon]]] = True
        pending = pending[~first & ~too_soon]
    return conflict


def build_orders(rng: np.random.Generator, customers: Customers, catalogue: Catalogue, end_us: int) -> Orders:
    """Orders at each customer's Poisson rate; lines by affinity, tier and popularity; durables
    not repeated within their interval (such lines are redrawn from consumables); anchors pull
    in their partner with :data:`ATTACH_PROB`."""
    months = (end_us - customers.active_from_us) / (30 * DAY_US)
    n_orders = rng.poisson(customers.orders_per_month * months)
    order_customer = np.repeat(np.arange(len(customers)), n_orders)
    ts_us = times_in(rng, customers.active_from_us[order_customer], end_us)
    n_lines = rng.choice(len(LINES_PER_ORDER_P), size=len(order_customer), p=LINES_PER_ORDER_P) + 1
    line_order = np.repeat(np.arange(len(order_customer)), n_lines)

    purchase_weights = customers.affinity * np.where(DURABLE, DURABLE_ORDER_WEIGHT, 1.0)
    consumable_weights = customers.affinity * ~DURABLE

    def draw(lines: np.ndarray, weights: np.ndarray) -> np.ndarray:
        cust = order_customer[line_order[lines]]
        return draw_items(rng, weights, cust, line_tiers(rng, customers.tier[cust]), catalogue, customers.favourite)

    def conflicts(items: np.ndarray, orders: np.ndarray) -> np.ndarray:
        return _durable_conflicts(order_customer[orders], catalogue.category[items], ts_us[orders])

    items = draw(np.arange(len(line_order)), purchase_weights)
    redraw = conflicts(items, line_order)
    items[redraw] = draw(np.flatnonzero(redraw), consumable_weights)

    anchor = (catalogue.partner[items] >= 0) & (rng.random(len(items)) < ATTACH_PROB)
    line_order = np.concatenate((line_order, line_order[anchor]))
    items = np.concatenate((items, catalogue.partner[items[anchor]]))
    attached = np.arange(len(items)) >= len(anchor)
    conflict = conflicts(items, line_order)
    redraw = conflict & ~attached
    items[redraw] = draw(np.flatnonzero(redraw), consumable_weights)
    keep = ~(conflict & attached)
    line_order, items = line_order[keep], items[keep]

    line_order, items = _unique_lines(line_order, items)
    return _with_refills(rng, Orders(order_customer, ts_us, line_order, items), customers, catalogue, end_us)


def _with_refills(rng: np.random.Generator, orders: Orders, customers: Customers, catalogue: Catalogue,
                  end_us: int) -> Orders:
    """Plant refill timing: each purchase of a favourite consumable (and each habit already
    running when the window opens) is followed, with :data:`REFILL_PROB`, by a one-line refill
    order of that item about the category's ``repurchase_days`` later (and so on); then no
    consumable is re-bought within :data:`PANTRY_SHARE` of its interval (such lines become
    another item of the group)."""
    customer, ts_us, line_order, items = orders.customer, orders.ts_us, orders.line_order, orders.line_item
    category = catalogue.category[items]
    favourite = ~DURABLE[category] & (customers.favourite[customer[line_order], category] == items)
    # chains already running when the window opens (a purchase before it, at a random phase of the
    # interval) keep the refill rate steady over the window, as in a shop with a past
    habit_customer, habit_category = np.nonzero((customers.affinity >= HABIT_AFFINITY) & ~DURABLE)
    running = rng.random(len(habit_customer)) < REFILL_PROB
    habit_customer, habit_category = habit_customer[running], habit_category[running]
    phase = rng.random(len(habit_customer)) * REPURCHASE_DAYS[habit_category] * DAY_US
    seeds_item = np.concatenate((items[favourite], customers.favourite[habit_customer, habit_category]))
    seeds_customer = np.concatenate((customer[line_order[favourite]], habit_customer))
    seeds_ts = np.concatenate((ts_us[line_order[favourite]],
                               (customers.active_from_us[habit_customer] - phase).astype(np.int64)))
    new_customer, new_ts, new_item = [], [], []
    after: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    while len(seeds_item):
        go = rng.random(len(seeds_item)) < REFILL_PROB
        gap = REPURCHASE_DAYS[catalogue.category[seeds_item[go]]] * rng.lognormal(0.0, REFILL_SIGMA, int(go.sum()))
        at = (seeds_ts[go] + (gap * DAY_US).astype(np.int64)) // US * US  # order times are whole seconds
        inside = at < end_us
        after.append((seeds_customer[go][~inside], seeds_item[go][~inside], at[~inside]))
        seeds_item, seeds_customer, seeds_ts = seeds_item[go][inside], seeds_customer[go][inside], at[inside]
        shown = seeds_ts >= customers.active_from_us[seeds_customer]  # before sign-up: unseen, still a seed
        new_item.append(seeds_item[shown])
        new_customer.append(seeds_customer[shown])
        new_ts.append(seeds_ts[shown])
    refills = np.concatenate(new_item) if new_item else np.zeros(0, dtype=np.int64)
    customer = np.concatenate((customer, *new_customer))
    line_order = np.concatenate((line_order, len(ts_us) + np.arange(len(refills))))
    ts_us = np.concatenate((ts_us, *new_ts))
    items = np.concatenate((items, refills))
    category = catalogue.category[items]
    consumable = np.flatnonzero(~DURABLE[category])
    cust = customer[line_order]
    early = _too_soon(consumable, cust[consumable].astype(np.int64) * (items.max(initial=0) + 1) + items[consumable],
                      ts_us[line_order], (PANTRY_SHARE * REPURCHASE_DAYS[category[consumable]] * DAY_US).astype(np.int64),
                      len(items))
    for _ in range(5):  # another item of the group; the draw may give the same one back
        same = np.flatnonzero(early)
        redrawn = catalogue.draw(rng, category[same] * N_TIERS + catalogue.tier[items[same]])
        early[same[redrawn != items[same]]] = False
        items[same] = redrawn
    line_order, items = _unique_lines(line_order, items)
    next_refills = Refills(*(np.concatenate(part) for part in zip(*after, strict=True))) if after else NO_REFILLS
    return Orders(customer, ts_us, line_order, items, next_refills)


def _unique_lines(order: np.ndarray, item: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One line per (order, item), sorted by order, keeping the first occurrence's position."""
    first = np.unique(order.astype(np.int64) * (item.max(initial=0) + 1) + item, return_index=True)[1]
    first.sort()
    keep = first[np.argsort(order[first], kind="stable")]
    return order[keep], item[keep]


EventPart = tuple[np.ndarray, int, np.ndarray | None]
"""Events of one kind: session of each event, event code, item of each event (None: no item)."""
