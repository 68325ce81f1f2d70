"""The browsing stage: sessions around orders and without them, and their funnel of events."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.sample.catalogue import Catalogue
from features.sample.customers import Customers
from features.sample.draws import row_offsets, times_in
from features.sample.orders import EventPart, Orders, draw_items, line_tiers
from features.sample.process import (
    ABANDONED_CART_P,
    ALTERNATIVE_VIEWS,
    ANONYMOUS_SESSION_SHARE,
    BOUGHT_EXTRA_VIEWS,
    BROWSE_CART_P,
    BROWSE_EXTRA_VIEWS,
    BROWSE_REMOVE_P,
    BROWSE_WISHLIST_P,
    BROWSING_MINUTES,
    CART,
    CATEGORY_WEIGHT,
    CONVERTING_MINUTES,
    DAY_US,
    N_TIERS,
    PURCHASE,
    REMOVE,
    SEARCH,
    SEARCH_P_BROWSING,
    SEARCH_P_CONVERTING,
    SESSION_SIGMA,
    TIER_SHARE,
    US,
    VIEW,
    WISHLIST,
)


@dataclass(frozen=True)
class Events:
    session: np.ndarray
    code: np.ndarray
    item: np.ndarray
    ts_us: np.ndarray


@dataclass(frozen=True)
class Sessions:
    """Converting sessions first (session s is order s), then browsing and anonymous ones."""

    customer: np.ndarray
    """Customer index, -1 for anonymous sessions."""
    start_us: np.ndarray
    end_us: np.ndarray


def _durations(rng: np.random.Generator, n: int, median_minutes: float) -> np.ndarray:
    return (median_minutes * 60 * US * rng.lognormal(0.0, SESSION_SIGMA, n)).astype(np.int64)


def build_sessions(rng: np.random.Generator, customers: Customers, orders: Orders,
                    start_us: int, end_us: int) -> Sessions:
    """One converting session per order; Poisson browsing sessions so that a customer's
    share of converting sessions is their conversion rate; anonymous sessions on top."""
    n_orders = len(orders.customer)
    conv_start = np.maximum(orders.ts_us - _durations(rng, n_orders, CONVERTING_MINUTES), start_us)

    expected_orders = customers.orders_per_month * (end_us - customers.active_from_us) / (30 * DAY_US)
    conversion = customers.conversion
    n_browse = rng.poisson(expected_orders * (1 - conversion) / conversion)
    browse_customer = np.repeat(np.arange(len(customers)), n_browse)
    n_anonymous = rng.poisson(ANONYMOUS_SESSION_SHARE * len(browse_customer))
    other_customer = np.concatenate((browse_customer, np.full(n_anonymous, -1)))
    lo = np.where(other_customer >= 0, customers.active_from_us[np.maximum(other_customer, 0)], start_us)
    duration = _durations(rng, len(other_customer), BROWSING_MINUTES)
    other_start = np.minimum(times_in(rng, lo, end_us), end_us - duration - US)
    other_start = np.maximum(other_start, start_us)
    return Sessions(
        customer=np.concatenate((orders.customer, other_customer)),
        start_us=np.concatenate((conv_start, other_start)),
        end_us=np.concatenate((orders.ts_us, np.minimum(other_start + duration, end_us - 1))),
    )


def _converting_events(rng: np.random.Generator, orders: Orders, catalogue: Catalogue) -> list[EventPart]:
    """Views and cart adds of the bought items, a few alternatives, purchases at order time."""
    n_orders = len(orders.customer)
    line_session, line_item = orders.line_order, orders.line_item
    views = 1 + rng.poisson(BOUGHT_EXTRA_VIEWS, len(line_item))
    parts: list[EventPart] = [
        (np.repeat(line_session, views), VIEW, np.repeat(line_item, views)),
        (line_session, CART, line_item),
        (line_session, PURCHASE, line_item),
    ]
    first_line = np.searchsorted(line_session, np.arange(n_orders))
    lines_per_order = np.bincount(line_session, minlength=n_orders)
    n_alt = rng.poisson(ALTERNATIVE_VIEWS, n_orders)
    alt_session = np.repeat(np.arange(n_orders), n_alt)
    pick = (rng.random(len(alt_session)) * lines_per_order[alt_session]).astype(np.int64)
    like = line_item[first_line[alt_session] + pick]
    alt_item = catalogue.draw(rng, catalogue.category[like] * N_TIERS + catalogue.tier[like])
    parts.append((alt_session, VIEW, alt_item))
    abandoned = np.flatnonzero(rng.random(n_orders) < ABANDONED_CART_P)
    dropped = line_item[first_line[abandoned]]
    dropped_alt = catalogue.draw(rng, catalogue.category[dropped] * N_TIERS + catalogue.tier[dropped])
    parts += [(abandoned, code, dropped_alt) for code in (VIEW, CART, REMOVE)]
    parts.append((np.flatnonzero(rng.random(n_orders) < SEARCH_P_CONVERTING), SEARCH, None))
    return parts


def _browsing_events(rng: np.random.Generator, sessions: np.ndarray, customer: np.ndarray,
                     customers: Customers, catalogue: Catalogue) -> list[EventPart]:
    """Sessions without a purchase: views by the customer's interests (the shop's category
    mix for anonymous visitors), sometimes a cart add, a removal, a wish-list entry, a search."""
    n = len(sessions)
    views = 1 + rng.poisson(BROWSE_EXTRA_VIEWS, n)
    view_session = np.repeat(np.arange(n), views)
    owner = customer[view_session]
    known = owner >= 0
    items = np.empty(len(owner), dtype=np.int64)
    rows = owner[known]
    items[known] = draw_items(rng, customers.affinity, rows, line_tiers(rng, customers.tier[rows]),
                               catalogue, customers.favourite)
    n_anonymous = int((~known).sum())
    items[~known] = draw_items(rng, CATEGORY_WEIGHT[None, :], np.zeros(n_anonymous, dtype=np.int64),
                                rng.choice(N_TIERS, n_anonymous, p=TIER_SHARE), catalogue, None)
    first_view = items[row_offsets(views)]
    carted = rng.random(n) < BROWSE_CART_P
    removed = carted & (rng.random(n) < BROWSE_REMOVE_P)
    wished = rng.random(n) < BROWSE_WISHLIST_P
    return [
        (sessions[view_session], VIEW, items),
        (sessions[carted], CART, first_view[carted]),
        (sessions[removed], REMOVE, first_view[removed]),
        (sessions[wished], WISHLIST, first_view[wished]),
        (sessions[rng.random(n) < SEARCH_P_BROWSING], SEARCH, None),
    ]


def build_events(rng: np.random.Generator, sessions: Sessions, orders: Orders,
                  customers: Customers, catalogue: Catalogue) -> Events:
    """All events, in time order. Inside a session the order is search, views, cart adds,
    removals/wish-list, purchases; times are sorted uniform draws over the session and
    purchases happen exactly at the order's timestamp."""
    browsing = np.arange(len(orders.customer), len(sessions.customer))
    parts = _converting_events(rng, orders, catalogue)
    parts += _browsing_events(rng, browsing, sessions.customer[browsing], customers, catalogue)
    session = np.concatenate([p[0] for p in parts])
    code = np.concatenate([np.full(len(p[0]), p[1], dtype=np.int8) for p in parts])
    item = np.concatenate([np.full(len(p[0]), -1) if p[2] is None else p[2] for p in parts])

    # One int64 sort key per event: session (high bits), code, then random bits to shuffle views.
    key = (session.astype(np.int64) << 34) | (code.astype(np.int64) << 30) | rng.integers(0, 1 << 30, len(session))
    order = np.argsort(key)
    session, code, item = session[order], code[order], item[order]
    # Sorted offsets in (0, 1] per session, assigned to the events in that order; purchases sit at 1.
    u = np.where(code == PURCHASE, 1 << 30, rng.integers(0, int(0.98 * (1 << 30)), len(session)))
    u = (np.sort((session.astype(np.int64) << 31) | u) & ((1 << 31) - 1)) / (1 << 30)
    start = sessions.start_us[session]
    ts_us = (start + (u * (sessions.end_us[session] - start)).astype(np.int64)) // 1000 * 1000
    by_time = np.argsort(ts_us, kind="stable")
    return Events(session[by_time], code[by_time], item[by_time], ts_us[by_time])
