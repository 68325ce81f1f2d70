"""A synthetic shop with planted structure: the embedded default and the test fixture.

Real shop data cannot ship with the project, yet every model, rule and test needs data
whose right answers are known. This module simulates a shop from a documented process
(docs/sample.md) and returns the planted structure next to the tables, so tests can
assert that a model recovers it and that a model which ignores it does not:

* complementary item pairs (a coffee machine pulls its beans into the same order),
* sparse category interests, a personal price tier, an activity rate per customer,
* durables that are not bought twice within their repurchase interval, consumables that are,
* a per-customer session conversion rate and email open rate (some never open),
* duplicate customer ids (aliases) and a few deliberately broken rows for the loader.

Everything is vectorised numpy (no per-row Python) so 100k customers and millions of
events take seconds, and every random draw comes from a ``numpy.random.Generator``
seeded by :class:`SampleConfig` (one independent stream per stage, so turning dirty rows
on or off leaves the clean rows identical).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator

from features.errors import UserError

# --- the catalogue --------------------------------------------------------------------


@dataclass(frozen=True)
class Category:
    """One product category: what it costs, whether it lasts, and what it sells with."""

    name: str
    noun: str
    durable: bool
    base_price: float
    repurchase_days: float
    weight: float
    """Share of the catalogue, and how likely a customer is to have it as a main interest."""
    partner: str | None = None
    """Category whose items complete this one's (anchor -> partner pairs)."""


CATEGORIES: tuple[Category, ...] = (
    Category("tvs", "TV", True, 650.0, 1100.0, 0.05, partner="soundbars"),
    Category("laptops", "laptop", True, 950.0, 1000.0, 0.05, partner="computer_accessories"),
    Category("phones", "smartphone", True, 700.0, 800.0, 0.06, partner="phone_accessories"),
    Category("coffee_machines", "coffee machine", True, 280.0, 1200.0, 0.04, partner="coffee"),
    Category("printers", "printer", True, 200.0, 1300.0, 0.03, partner="printer_ink"),
    Category("furniture", "armchair", True, 400.0, 1500.0, 0.06),
    Category("soundbars", "soundbar", True, 250.0, 1200.0, 0.04),
    Category("phone_accessories", "phone case", True, 25.0, 700.0, 0.07),
    Category("computer_accessories", "wireless mouse", True, 35.0, 900.0, 0.05),
    Category("coffee", "coffee beans", False, 14.0, 21.0, 0.09),
    Category("printer_ink", "ink cartridge", False, 35.0, 60.0, 0.05),
    Category("pet_food", "dog food", False, 40.0, 30.0, 0.08),
    Category("cosmetics", "face cream", False, 22.0, 45.0, 0.11),
    Category("snacks", "crisps", False, 6.0, 20.0, 0.10),
    Category("cleaning", "detergent", False, 9.0, 40.0, 0.07),
    Category("baby_care", "nappies", False, 28.0, 25.0, 0.05),
)
N_CATEGORIES = len(CATEGORIES)
CATEGORY_NAMES = np.array([c.name for c in CATEGORIES], dtype=object)
CATEGORY_INDEX = {c.name: i for i, c in enumerate(CATEGORIES)}
DURABLE = np.array([c.durable for c in CATEGORIES])
BASE_PRICE = np.array([c.base_price for c in CATEGORIES])
REPURCHASE_DAYS = np.array([c.repurchase_days for c in CATEGORIES])
CATEGORY_WEIGHT = np.array([c.weight for c in CATEGORIES])
PARTNER_CATEGORY = np.array([CATEGORY_INDEX[c.partner] if c.partner else -1 for c in CATEGORIES])

TIERS: tuple[str, ...] = ("budget", "mid", "premium")
N_TIERS = len(TIERS)
TIER_SHARE = np.array([0.35, 0.45, 0.20])
"""Share of each category's items, and of customers preferring the tier."""
TIER_BOUNDS = np.array([[0.40, 0.75], [0.75, 1.35], [1.35, 2.60]])
"""Price index (price / category base price) range of each tier: the customers' price bands."""
TIER_CENTRE = np.array([0.55, 1.0, 1.85])
PRICE_NOISE_SIGMA = 0.15
"""Items' log price index is normal around the tier centre, truncated to the tier's range."""
ZIPF_EXPONENT = 1.1
"""Popularity of the r-th item of a (category, tier) group is proportional to r ** -1.1."""
OUT_OF_STOCK_SHARE = 0.05
BRANDS_PER_GROUP = 2
BRAND_FIRST = ("Ar", "Bel", "Cor", "Dal", "El", "Fen", "Gal", "Hal", "Ix", "Jor", "Kal", "Lum")
BRAND_SECOND = ("ora", "ex", "io", "ant", "is", "uma", "ek", "on")
MIN_ITEMS = 3 * N_CATEGORIES
"""Every (category, tier) group needs an item."""

# --- customers -----------------------------------------------------------------------

DOMINANT_CHOICES = np.array([2, 3])
DOMINANT_MASS = 0.85
"""A customer's 2 or 3 main categories together get 85% of their interest."""
DOMINANT_SHAPE, MINOR_SHAPE = 2.0, 0.2
ORDERS_PER_MONTH_MEDIAN, ORDERS_PER_MONTH_SIGMA = 0.22, 0.8
CONVERSION_BETA = (3.0, 4.0)
CONVERSION_RANGE = (0.05, 0.95)
OPT_IN_SHARE = 0.85
NEVER_OPEN_SHARE = 0.20
OPEN_RATE_BETA = (2.0, 4.0)
CREATED_BEFORE_SHARE = 0.70
"""The rest sign up during the window and only act after signing up."""
CREATED_LOOKBACK_DAYS = 730

# --- orders --------------------------------------------------------------------------

LINES_PER_ORDER_P = np.array([0.50, 0.28, 0.15, 0.07])
TIER_LOYALTY = 0.85
"""Probability that a drawn line is in the customer's own tier (else one of the other two)."""
DURABLE_ORDER_WEIGHT = 0.3
"""Line categories are drawn from affinity x this for durables: people buy TVs rarely."""
FAVOURITE_SHARE = 0.6
"""Probability that a consumable line is the customer's favourite item of that category."""
ATTACH_PROB = 0.6
"""Probability that buying an anchor item puts its partner item in the same order."""
REFILL_PROB = 0.6
"""Probability that a purchase of a favourite consumable is followed by a refill of that item."""
REFILL_SIGMA = 0.2
"""A refill comes the category's repurchase_days x LogNormal(0, this) after the purchase."""
HABIT_AFFINITY = 0.15
"""A customer has a running refill habit in each consumable category they weigh at least this much."""
PANTRY_SHARE = 0.5
"""Nobody re-buys a consumable within this share of its repurchase_days: such a line becomes
another item of the same category and tier (the pantry is still full)."""
CONSUMABLE_QUANTITY_P = np.array([0.6, 0.3, 0.1])
DISCOUNT_SHARE = 0.12
DISCOUNTS = np.array([0.10, 0.15, 0.20, 0.25, 0.30])
HOUR_WEIGHT = np.array([1, 0.5, 0.3, 0.2, 0.2, 0.4, 1, 2, 3, 4, 4.5, 5, 6, 6, 5, 4.5, 4.5, 5, 6, 7.5, 8, 7, 5, 2.5])
"""Shopping by hour of day (UTC): lunch and evening peaks."""

# --- sessions and emails -------------------------------------------------------------

BOUGHT_EXTRA_VIEWS = 0.5
"""Each bought item is viewed 1 + Poisson(0.5) times before it goes to the cart."""
ALTERNATIVE_VIEWS = 1.2
"""Converting sessions also view Poisson(1.2) alternatives from a bought line's (category, tier)."""
ABANDONED_CART_P = 0.15
SEARCH_P_CONVERTING, SEARCH_P_BROWSING = 0.25, 0.35
BROWSE_EXTRA_VIEWS = 1.4
"""Sessions without a purchase view 1 + Poisson(1.4) items."""
BROWSE_CART_P, BROWSE_REMOVE_P, BROWSE_WISHLIST_P = 0.25, 0.4, 0.08
ANONYMOUS_SESSION_SHARE = 0.3
"""Anonymous sessions, relative to known customers' sessions without a purchase."""
CONVERTING_MINUTES, BROWSING_MINUTES, SESSION_SIGMA = 12.0, 5.0, 0.6
CAMPAIGN_GAP_DAYS = (7, 14)
CAMPAIGN_AUDIENCE = (0.3, 0.7)
CLICK_GIVEN_OPEN = 0.3
SEND_HOUR, SEND_SPREAD_S = 8, 7200

# --- aliases and dirty rows ----------------------------------------------------------

ALIAS_SHARE = 0.01
ALIAS_USE_P = 0.4
"""Each order/session of a customer with an alias carries the alias id with this probability."""
ALIAS_LISTED_SHARE = 0.5
"""Share of aliases that also have their own row in ``customers``."""

REASON_BAD_TS = "ts is not an ISO 8601 timestamp"
REASON_BAD_QUANTITY = "quantity is 0"
REASON_UNKNOWN_ITEM = "item_id not in items"
REASON_NEGATIVE_PRICE = "price < 0"
REASON_DUPLICATE_ITEM = "duplicate item_id"
REASON_BAD_EVENT_TYPE = "event_type is not one of view, cart, remove_from_cart, wishlist, search, purchase"
REASON_MISSING_ITEM = "item_id is empty for an item event"
"""Planted defects, worded as the loader (features.schema / features.loading) reports them."""
BAD_TS_VALUES = np.array(["yesterday", "31/02/2025 10:00", "2025-13-45T25:61:00Z", "n/a"], dtype=object)

EVENT_TYPES: tuple[str, ...] = ("search", "view", "cart", "remove_from_cart", "wishlist", "purchase")
SEARCH, VIEW, CART, REMOVE, WISHLIST, PURCHASE = range(len(EVENT_TYPES))
"""Event codes double as the order of events inside a session (search first, purchase last)."""
EVENT_VOCABULARY: tuple[str, ...] = (*EVENT_TYPES, "click", "pageview", "add_to_basket")
"""Codes past the contract's types are planted bad event types."""

US = 1_000_000
DAY_US = 86_400 * US
STAGES = ("catalogue", "customers", "orders", "sessions", "emails", "aliases", "dirty")


class SampleConfig(BaseModel):
    """Size, seed and window of a sample shop. The window is [end - days, end)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    customers: int = Field(default=5000, ge=10)
    items: int = Field(default=1000, ge=MIN_ITEMS)
    days: int = Field(default=180, ge=14)
    seed: int = Field(default=42, ge=0)
    dirty_share: float = Field(default=0.005, ge=0.0, le=0.2)
    end: str = "2025-06-30"
    """A fixed end keeps the output identical from day to day and never in the future."""

    @field_validator("end")
    @classmethod
    def _parse_end(cls, value: str) -> str:
        try:
            pd.Timestamp(value)
        except ValueError as error:
            raise UserError(f"end must be an ISO 8601 date, not {value!r}") from error
        return value

    @property
    def end_ts(self) -> pd.Timestamp:
        end = pd.Timestamp(self.end)
        return end.tz_localize("UTC") if end.tzinfo is None else end.tz_convert("UTC")

    @property
    def start_ts(self) -> pd.Timestamp:
        return self.end_ts - pd.Timedelta(days=self.days)


@dataclass(frozen=True)
class SampleShop:
    """Contract tables plus the planted truth that generated them (see docs/sample.md)."""

    tables: dict[str, pd.DataFrame]
    truth: dict[str, pd.DataFrame]


# --- vectorised sampling helpers -----------------------------------------------------

_U_MAX = 1.0 - 1e-9
"""Keeps ``row + u`` strictly below ``row + 1`` in float64 for rows up to ~1e6."""


def _draw_rows(rng: np.random.Generator, weights: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """One categorical draw per entry of ``rows``, from the distribution ``weights[row]``.

    Row-normalised cumulative sums shifted by the row number form one increasing array,
    so a single ``searchsorted`` serves millions of draws from different distributions.
    """
    n, k = weights.shape
    cum = np.cumsum(weights, axis=1)
    cum /= cum[:, -1:]
    cum[:, -1] = 1.0
    flat = (cum + np.arange(n)[:, None]).ravel()
    return np.searchsorted(flat, rows + rng.random(len(rows)) * _U_MAX, side="right") - rows * k


def _allocate(total: int, shares: np.ndarray, minimum: int) -> np.ndarray:
    """Split ``total`` into integers proportional to ``shares``, each at least ``minimum``."""
    spare = total - minimum * len(shares)
    exact = spare * shares / shares.sum()
    parts = np.floor(exact).astype(np.int64)
    parts[np.argsort(parts - exact, kind="stable")[: spare - parts.sum()]] += 1
    return parts + minimum


def _ids(prefix: str, numbers: np.ndarray, width: int) -> np.ndarray:
    """Zero-padded string ids ("c000123") for an integer array, without a Python loop."""
    if not len(numbers):  # np.char.zfill cannot size an empty result
        return np.empty(0, dtype=object)
    return np.char.add(prefix, np.char.zfill(numbers.astype(np.int64).astype(str), width)).astype(object)


def _width(count: int, minimum: int) -> int:
    return max(minimum, len(str(max(count - 1, 0))))


def _times_in(rng: np.random.Generator, lo_us: np.ndarray, hi_us: int) -> np.ndarray:
    """Whole-second times in [lo, hi): a uniform day, then an hour from the daily profile."""
    day = ((lo_us + rng.random(len(lo_us)) * (hi_us - lo_us)) // DAY_US).astype(np.int64)
    hour = rng.choice(24, size=len(lo_us), p=HOUR_WEIGHT / HOUR_WEIGHT.sum())
    t = day * DAY_US + hour * 3600 * US + rng.integers(0, 3600, len(lo_us)) * US
    return np.clip(t, -(-lo_us // US) * US, hi_us - US)


def _take(values: np.ndarray, index: np.ndarray) -> pd.Series:
    """``values[index]`` as a string column, NA where ``index`` is -1.

    Arrow's take builds millions of strings without a Python object per row.
    """
    taken = pa.array(values, type=pa.string()).take(pa.array(index, mask=index < 0))
    return pd.Series(taken, dtype="str")


def _utc(us: np.ndarray) -> pd.Series:
    return pd.Series(us.astype("datetime64[us]")).dt.tz_localize("UTC")


def _offsets(counts: np.ndarray) -> np.ndarray:
    """Start position of each group in an array laid out by ``np.repeat(..., counts)``."""
    return np.concatenate(([0], np.cumsum(counts)[:-1]))


# --- catalogue -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Catalogue:
    """Items in internal order (sorted by (category, tier) group, most popular first)."""

    category: np.ndarray
    tier: np.ndarray
    price: np.ndarray
    popularity: np.ndarray
    group_cum: np.ndarray
    """group + normalised cumulative popularity within the group, for :meth:`draw`."""
    partner: np.ndarray
    """Partner item of each anchor item, -1 elsewhere."""
    ids: np.ndarray
    frame: pd.DataFrame

    def draw(self, rng: np.random.Generator, group: np.ndarray) -> np.ndarray:
        """One item per entry of ``group`` (category * 3 + tier), by popularity within it."""
        return _draw_in_groups(rng, self.group_cum, group)


def _draw_in_groups(rng: np.random.Generator, group_cum: np.ndarray, group: np.ndarray) -> np.ndarray:
    return np.searchsorted(group_cum, group + rng.random(len(group)) * _U_MAX, side="right")


def _build_catalogue(rng: np.random.Generator, n_items: int) -> _Catalogue:
    per_category = _allocate(n_items, CATEGORY_WEIGHT, N_TIERS)
    per_group = np.concatenate([_allocate(int(n), TIER_SHARE, 1) for n in per_category])
    group = np.repeat(np.arange(N_CATEGORIES * N_TIERS), per_group)
    starts = _offsets(per_group)
    popularity = (np.arange(n_items) - starts[group] + 1.0) ** -ZIPF_EXPONENT
    cum = np.cumsum(popularity)
    within = (cum - np.concatenate(([0.0], cum))[starts][group]) / np.add.reduceat(popularity, starts)[group]
    within[starts + per_group - 1] = 1.0
    category, tier = group // N_TIERS, group % N_TIERS

    bounds = np.log(TIER_BOUNDS[tier] * [1.01, 0.99])
    log_index = np.clip(np.log(TIER_CENTRE[tier]) + rng.normal(0.0, PRICE_NOISE_SIGMA, n_items), *bounds.T)
    price = np.round(BASE_PRICE[category] * np.exp(log_index), 2)

    group_cum = group + within
    partner = np.full(n_items, -1)
    anchors = np.flatnonzero(PARTNER_CATEGORY[category] >= 0)
    partner[anchors] = _draw_in_groups(rng, group_cum, PARTNER_CATEGORY[category[anchors]] * N_TIERS + tier[anchors])

    number = rng.permutation(n_items)
    ids = _ids("i", number, _width(n_items, 5))
    brand_names = np.array([a + b for a in BRAND_FIRST for b in BRAND_SECOND], dtype=object)
    brand = brand_names[(group * BRANDS_PER_GROUP + rng.integers(0, BRANDS_PER_GROUP, n_items)) % len(brand_names)]
    nouns = np.array([c.noun for c in CATEGORIES], dtype=object)
    model = _ids("", rng.integers(100, 1000, n_items), 3)
    frame = pd.DataFrame({
        "item_id": ids,
        "category": CATEGORY_NAMES[category],
        "price": price,
        "title": brand + " " + nouns[category] + " " + model,
        "brand": brand,
        "in_stock": rng.random(n_items) >= OUT_OF_STOCK_SHARE,
        "durable": DURABLE[category],
        "repurchase_days": REPURCHASE_DAYS[category],
    }).take(np.argsort(number)).reset_index(drop=True)
    return _Catalogue(category, tier, price, popularity, group_cum, partner, ids, frame)


# --- customers -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Customers:
    affinity: np.ndarray
    """(customers, categories) interest weights, rows sum to 1."""
    tier: np.ndarray
    orders_per_month: np.ndarray
    conversion: np.ndarray
    open_rate: np.ndarray
    opt_in: np.ndarray
    created_us: np.ndarray
    active_from_us: np.ndarray
    favourite: np.ndarray
    """(customers, categories) favourite item of each consumable category, -1 for durables."""

    def __len__(self) -> int:
        return len(self.tier)


def _affinity(rng: np.random.Generator, n: int) -> np.ndarray:
    """Sparse interests: 2-3 dominant categories (picked by category weight) hold 85%."""
    gumbel = np.log(CATEGORY_WEIGHT) - np.log(-np.log(rng.random((n, N_CATEGORIES))))
    rank = np.argsort(np.argsort(-gumbel, axis=1), axis=1)
    dominant = rank < rng.choice(DOMINANT_CHOICES, size=n)[:, None]
    raw = rng.gamma(np.where(dominant, DOMINANT_SHAPE, MINOR_SHAPE)) + 1e-12
    major = np.where(dominant, raw, 0.0)
    minor = np.where(dominant, 0.0, raw)
    return (DOMINANT_MASS * major / major.sum(axis=1, keepdims=True)
            + (1 - DOMINANT_MASS) * minor / minor.sum(axis=1, keepdims=True))


def _build_customers(rng: np.random.Generator, n: int, catalogue: _Catalogue, start_us: int, end_us: int) -> _Customers:
    affinity = _affinity(rng, n)
    tier = rng.choice(N_TIERS, size=n, p=TIER_SHARE)
    orders_per_month = np.clip(ORDERS_PER_MONTH_MEDIAN * rng.lognormal(0.0, ORDERS_PER_MONTH_SIGMA, n), 0.02, 6.0)
    conversion = np.clip(rng.beta(*CONVERSION_BETA, n), *CONVERSION_RANGE)
    open_rate = np.where(rng.random(n) < NEVER_OPEN_SHARE, 0.0, rng.beta(*OPEN_RATE_BETA, n))
    before = rng.random(n) < CREATED_BEFORE_SHARE
    created = np.where(before,
                       start_us - rng.random(n) * CREATED_LOOKBACK_DAYS * DAY_US,
                       start_us + rng.random(n) * 0.9 * (end_us - start_us)).astype(np.int64) // US * US
    consumables = np.flatnonzero(~DURABLE)
    favourite = np.full((n, N_CATEGORIES), -1)
    rows = np.repeat(np.arange(n), len(consumables))
    cats = np.tile(consumables, n)
    favourite[rows, cats] = catalogue.draw(rng, cats * N_TIERS + tier[rows])
    return _Customers(affinity, tier, orders_per_month, conversion, open_rate, rng.random(n) < OPT_IN_SHARE,
                      created, np.maximum(created, start_us), favourite)


# --- orders --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Orders:
    customer: np.ndarray
    ts_us: np.ndarray
    line_order: np.ndarray
    line_item: np.ndarray


def _draw_items(rng: np.random.Generator, weights: np.ndarray, rows: np.ndarray, tier: np.ndarray,
                catalogue: _Catalogue, favourite: np.ndarray | None) -> np.ndarray:
    """Items for ``rows``: category from ``weights[row]``, then ``tier``, then popularity.

    With ``favourite`` given, consumable draws are the row's favourite item of the
    category with probability :data:`FAVOURITE_SHARE` (habitual re-buying).
    """
    category = _draw_rows(rng, weights, rows)
    items = catalogue.draw(rng, category * N_TIERS + tier)
    if favourite is not None:
        loyal = ~DURABLE[category] & (rng.random(len(rows)) < FAVOURITE_SHARE)
        items[loyal] = favourite[rows[loyal], category[loyal]]
    return items


def _line_tiers(rng: np.random.Generator, preferred: np.ndarray) -> np.ndarray:
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


def _build_orders(rng: np.random.Generator, customers: _Customers, catalogue: _Catalogue, end_us: int) -> _Orders:
    """Orders at each customer's Poisson rate; lines by affinity, tier and popularity; durables
    not repeated within their interval (such lines are redrawn from consumables); anchors pull
    in their partner with :data:`ATTACH_PROB`."""
    months = (end_us - customers.active_from_us) / (30 * DAY_US)
    n_orders = rng.poisson(customers.orders_per_month * months)
    order_customer = np.repeat(np.arange(len(customers)), n_orders)
    ts_us = _times_in(rng, customers.active_from_us[order_customer], end_us)
    n_lines = rng.choice(len(LINES_PER_ORDER_P), size=len(order_customer), p=LINES_PER_ORDER_P) + 1
    line_order = np.repeat(np.arange(len(order_customer)), n_lines)

    purchase_weights = customers.affinity * np.where(DURABLE, DURABLE_ORDER_WEIGHT, 1.0)
    consumable_weights = customers.affinity * ~DURABLE

    def draw(lines: np.ndarray, weights: np.ndarray) -> np.ndarray:
        cust = order_customer[line_order[lines]]
        return _draw_items(rng, weights, cust, _line_tiers(rng, customers.tier[cust]), catalogue, customers.favourite)

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
    return _with_refills(rng, _Orders(order_customer, ts_us, line_order, items), customers, catalogue, end_us)


def _with_refills(rng: np.random.Generator, orders: _Orders, customers: _Customers, catalogue: _Catalogue,
                  end_us: int) -> _Orders:
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
    while len(seeds_item):
        go = rng.random(len(seeds_item)) < REFILL_PROB
        gap = REPURCHASE_DAYS[catalogue.category[seeds_item[go]]] * rng.lognormal(0.0, REFILL_SIGMA, int(go.sum()))
        at = (seeds_ts[go] + (gap * DAY_US).astype(np.int64)) // US * US  # order times are whole seconds
        inside = at < end_us
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
    return _Orders(customer, ts_us, line_order, items)


def _unique_lines(order: np.ndarray, item: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One line per (order, item), sorted by order, keeping the first occurrence's position."""
    first = np.unique(order.astype(np.int64) * (item.max(initial=0) + 1) + item, return_index=True)[1]
    first.sort()
    keep = first[np.argsort(order[first], kind="stable")]
    return order[keep], item[keep]


# --- sessions and events -------------------------------------------------------------


_Part = tuple[np.ndarray, int, np.ndarray | None]
"""Events of one kind: session of each event, event code, item of each event (None: no item)."""


@dataclass(frozen=True)
class _Events:
    session: np.ndarray
    code: np.ndarray
    item: np.ndarray
    ts_us: np.ndarray


@dataclass(frozen=True)
class _Sessions:
    """Converting sessions first (session s is order s), then browsing and anonymous ones."""

    customer: np.ndarray
    """Customer index, -1 for anonymous sessions."""
    start_us: np.ndarray
    end_us: np.ndarray


def _durations(rng: np.random.Generator, n: int, median_minutes: float) -> np.ndarray:
    return (median_minutes * 60 * US * rng.lognormal(0.0, SESSION_SIGMA, n)).astype(np.int64)


def _build_sessions(rng: np.random.Generator, customers: _Customers, orders: _Orders,
                    start_us: int, end_us: int) -> _Sessions:
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
    other_start = np.minimum(_times_in(rng, lo, end_us), end_us - duration - US)
    other_start = np.maximum(other_start, start_us)
    return _Sessions(
        customer=np.concatenate((orders.customer, other_customer)),
        start_us=np.concatenate((conv_start, other_start)),
        end_us=np.concatenate((orders.ts_us, np.minimum(other_start + duration, end_us - 1))),
    )


def _converting_events(rng: np.random.Generator, orders: _Orders, catalogue: _Catalogue) -> list[_Part]:
    """Views and cart adds of the bought items, a few alternatives, purchases at order time."""
    n_orders = len(orders.customer)
    line_session, line_item = orders.line_order, orders.line_item
    views = 1 + rng.poisson(BOUGHT_EXTRA_VIEWS, len(line_item))
    parts: list[_Part] = [
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
                     customers: _Customers, catalogue: _Catalogue) -> list[_Part]:
    """Sessions without a purchase: views by the customer's interests (the shop's category
    mix for anonymous visitors), sometimes a cart add, a removal, a wish-list entry, a search."""
    n = len(sessions)
    views = 1 + rng.poisson(BROWSE_EXTRA_VIEWS, n)
    view_session = np.repeat(np.arange(n), views)
    owner = customer[view_session]
    known = owner >= 0
    items = np.empty(len(owner), dtype=np.int64)
    rows = owner[known]
    items[known] = _draw_items(rng, customers.affinity, rows, _line_tiers(rng, customers.tier[rows]),
                               catalogue, customers.favourite)
    n_anonymous = int((~known).sum())
    items[~known] = _draw_items(rng, CATEGORY_WEIGHT[None, :], np.zeros(n_anonymous, dtype=np.int64),
                                rng.choice(N_TIERS, n_anonymous, p=TIER_SHARE), catalogue, None)
    first_view = items[_offsets(views)]
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


def _build_events(rng: np.random.Generator, sessions: _Sessions, orders: _Orders,
                  customers: _Customers, catalogue: _Catalogue) -> _Events:
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
    return _Events(session[by_time], code[by_time], item[by_time], ts_us[by_time])


# --- emails and aliases --------------------------------------------------------------


def _email_frame(rng: np.random.Generator, customers: _Customers, ids: np.ndarray,
                 start_us: int, end_us: int) -> pd.DataFrame:
    """Campaigns every 7-14 days, each to a random 30-70% of opted-in customers who had
    signed up by then; opened with the customer's open rate, clicked only when opened."""
    days = (end_us - start_us) // DAY_US
    lo, hi = CAMPAIGN_GAP_DAYS
    day = rng.integers(0, lo) + np.concatenate(([0], np.cumsum(rng.integers(lo, hi + 1, days // lo + 1))))
    send_us = start_us + day[day < days] * DAY_US + SEND_HOUR * 3600 * US
    eligible = np.flatnonzero(customers.opt_in)
    audience = rng.uniform(*CAMPAIGN_AUDIENCE, len(send_us))
    chosen = ((rng.random((len(send_us), len(eligible))) < audience[:, None])
              & (customers.created_us[eligible][None, :] < send_us[:, None]))
    campaign, position = np.nonzero(chosen)
    customer = eligible[position]
    sent = np.minimum(send_us[campaign] + rng.integers(0, SEND_SPREAD_S, len(campaign)) * US, end_us - US)
    opened = rng.random(len(customer)) < customers.open_rate[customer]
    return pd.DataFrame({
        "customer_id": _take(ids, customer),
        "campaign_id": _take(_ids("m", np.arange(1, len(send_us) + 1), _width(len(send_us) + 1, 3)), campaign),
        "sent_ts": _utc(sent),
        "opened": opened,
        "clicked": opened & (rng.random(len(customer)) < CLICK_GIVEN_OPEN),
    })


@dataclass(frozen=True)
class _Aliases:
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


def _build_aliases(rng: np.random.Generator, n: int) -> _Aliases:
    owner = rng.choice(n, size=round(ALIAS_SHARE * n), replace=False)
    slot = np.full(n, -1)
    slot[owner] = np.arange(len(owner))
    return _Aliases(owner, rng.random(len(owner)) < ALIAS_LISTED_SHARE, slot)


def _customer_frames(rng: np.random.Generator, customers: _Customers, aliases: _Aliases, ids: np.ndarray,
                     end_us: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``customers`` (with a row for listed aliases, signed up later) and ``customer_aliases``."""
    n = len(customers)
    listed = aliases.owner[aliases.listed]
    created = customers.created_us[listed]
    alias_created = (created + rng.random(len(listed)) * (end_us - US - created)).astype(np.int64) // US * US
    table = pd.DataFrame({
        "customer_id": np.concatenate((ids[:n], ids[n + aliases.slot[listed]])),
        "email_opt_in": np.concatenate((customers.opt_in, customers.opt_in[listed])),
        "created_at": _utc(np.concatenate((customers.created_us, alias_created))),
    })
    alias_table = pd.DataFrame({"alias_id": ids[n + np.arange(len(aliases.owner))], "customer_id": ids[aliases.owner]})
    return table, alias_table


# --- tables --------------------------------------------------------------------------


def _order_frame(rng: np.random.Generator, orders: _Orders, customer_id_index: np.ndarray, ids: np.ndarray,
                 catalogue: _Catalogue) -> pd.DataFrame:
    """Order lines in time order, order ids numbered by time: quantity 1 for durables, 1-3
    for consumables; 12% of lines discounted by 10-30%."""
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
        "order_id": _take(_ids("o", np.arange(1, n_orders + 1), _width(n_orders + 1, 7)), number[order]),
        "customer_id": _take(ids, customer_id_index[order]),
        "item_id": _take(catalogue.ids, item),
        "quantity": quantity,
        "unit_price": np.round(catalogue.price[item] * (1.0 - discount), 2),
        "ts": _utc(orders.ts_us[order]),
    })


def _event_frame(events: _Events, sessions: _Sessions, session_id_index: np.ndarray, ids: np.ndarray,
                 catalogue: _Catalogue) -> pd.DataFrame:
    """Events with session ids numbered by session start; anonymous and search values are NA."""
    number = np.empty(len(sessions.start_us), dtype=np.int64)
    number[np.argsort(sessions.start_us, kind="stable")] = np.arange(len(number))
    return pd.DataFrame({
        "session_id": _take(_ids("s", number + 1, _width(len(number) + 1, 7)), events.session),
        "event_type": _take(np.array(EVENT_VOCABULARY, dtype=object), events.code),
        "ts": _utc(events.ts_us),
        "customer_id": _take(ids, session_id_index[events.session]),
        "item_id": _take(catalogue.ids, events.item),
    })


def _truth(catalogue: _Catalogue, customers: _Customers, aliases: _Aliases, ids: np.ndarray) -> dict[str, pd.DataFrame]:
    """The planted parameters, keyed by external ids, for tests and docs (docs/sample.md)."""
    n = len(customers)
    anchors = np.flatnonzero(catalogue.partner >= 0)
    partners = catalogue.partner[anchors]
    alias_id = np.full(n, None, dtype=object)
    alias_id[aliases.owner] = ids[n + np.arange(len(aliases.owner))]
    top = np.argsort(-customers.affinity, axis=1)[:, :3]
    tier_names = np.array(TIERS, dtype=object)
    per_category = np.bincount(catalogue.category, minlength=N_CATEGORIES)
    group_total = np.bincount(catalogue.category * N_TIERS + catalogue.tier, weights=catalogue.popularity)
    return {
        "pairs": pd.DataFrame({
            "anchor_item_id": catalogue.ids[anchors],
            "partner_item_id": catalogue.ids[partners],
            "anchor_category": CATEGORY_NAMES[catalogue.category[anchors]],
            "partner_category": CATEGORY_NAMES[catalogue.category[partners]],
            "tier": tier_names[catalogue.tier[anchors]],
            "attach_prob": ATTACH_PROB,
        }),
        "customers": pd.DataFrame({
            "customer_id": ids[:n],
            "alias_id": alias_id,
            "preferred_tier": tier_names[customers.tier],
            "price_lo": TIER_BOUNDS[customers.tier, 0],
            "price_hi": TIER_BOUNDS[customers.tier, 1],
            "orders_per_month": customers.orders_per_month,
            "conversion_rate": customers.conversion,
            "open_rate": customers.open_rate,
            "never_open": customers.open_rate == 0.0,
            "email_opt_in": customers.opt_in,
            "top_category": CATEGORY_NAMES[top[:, 0]],
            "top_categories": pd.Series(CATEGORY_NAMES[top[:, 0]]) + "|" + CATEGORY_NAMES[top[:, 1]]
                              + "|" + CATEGORY_NAMES[top[:, 2]],
        }),
        "categories": pd.DataFrame({
            "category": CATEGORY_NAMES,
            "durable": DURABLE,
            "base_price": BASE_PRICE,
            "repurchase_days": REPURCHASE_DAYS,
            "weight": CATEGORY_WEIGHT,
            "partner_category": [c.partner for c in CATEGORIES],
            "items": per_category,
        }),
        "tiers": pd.DataFrame({"tier": TIERS, "price_lo": TIER_BOUNDS[:, 0], "price_hi": TIER_BOUNDS[:, 1],
                               "share": TIER_SHARE}),
        "items": pd.DataFrame({
            "item_id": catalogue.ids,
            "category": CATEGORY_NAMES[catalogue.category],
            "tier": tier_names[catalogue.tier],
            "price_index": catalogue.price / BASE_PRICE[catalogue.category],
            "popularity": catalogue.popularity / group_total[catalogue.category * N_TIERS + catalogue.tier],
            "partner_item_id": np.where(catalogue.partner >= 0, catalogue.ids[np.maximum(catalogue.partner, 0)], None),
        }),
    }


# --- dirty rows ----------------------------------------------------------------------

_Planted = tuple[str, str, int]
"""(table, loader's quarantine reason, rows planted)."""


def _positions_after(n_rows: int, source_rows: np.ndarray) -> np.ndarray:
    """Row order of ``clean + copies`` that puts each copy right after the row it was copied
    from, as a re-sent record would be."""
    order = np.argsort(source_rows, kind="stable")
    return np.insert(np.arange(n_rows), source_rows[order] + 1, n_rows + order)


def _insert_after(frame: pd.DataFrame, source_rows: np.ndarray, dirty: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with row i of ``dirty`` placed right after row ``source_rows[i]``."""
    positions = _positions_after(len(frame), source_rows)
    return pd.concat([frame, dirty], ignore_index=True).take(positions).reset_index(drop=True)


def _dirty_orders(rng: np.random.Generator, orders: pd.DataFrame, n_dirty: int) -> tuple[pd.DataFrame, list[_Planted]]:
    """Copies of real lines with one defect each: unparseable ts, quantity 0, unknown item.

    ``ts`` becomes ISO 8601 text for every row, since a typed column cannot hold the bad values.
    """
    counts = _allocate(n_dirty, np.ones(3), 1)
    source = rng.choice(len(orders), size=n_dirty, replace=n_dirty > len(orders))
    dirty = orders.iloc[source].reset_index(drop=True)
    kind = np.repeat(np.arange(3), counts)
    seconds = orders["ts"].dt.tz_localize(None).to_numpy().astype("datetime64[s]")
    text_ts = pd.Series(np.datetime_as_string(seconds, unit="s", timezone="UTC"), dtype="str")
    orders = orders.assign(ts=text_ts)
    dirty["ts"] = text_ts.iloc[source].to_numpy()
    bad_ts = kind == 0
    dirty.loc[bad_ts, "ts"] = rng.choice(BAD_TS_VALUES, bad_ts.sum())
    bad_quantity = kind == 1
    dirty.loc[bad_quantity, "quantity"] = rng.choice([0.0, -0.0], bad_quantity.sum())  # a negative one is a return
    unknown = kind == 2
    dirty.loc[unknown, "item_id"] = "x" + dirty.loc[unknown, "item_id"]
    reasons = [("orders", REASON_BAD_TS, counts[0]), ("orders", REASON_BAD_QUANTITY, counts[1]),
               ("orders", REASON_UNKNOWN_ITEM, counts[2])]
    return _insert_after(orders, source, dirty), reasons


def _dirty_events(rng: np.random.Generator, events: _Events, n_dirty: int) -> tuple[_Events, list[_Planted]]:
    """Copies of real events with an unknown event type, or an item event without its item.

    Planted on the arrays, before the frame exists: copying millions of string cells costs
    more than the rest of the event generation.
    """
    counts = _allocate(n_dirty, np.ones(2), 1)
    with_item = np.flatnonzero(events.item >= 0)
    source = np.concatenate((rng.choice(len(events.code), counts[0], replace=counts[0] > len(events.code)),
                             rng.choice(with_item, counts[1], replace=counts[1] > len(with_item))))
    code = events.code[source].copy()
    code[: counts[0]] = rng.integers(len(EVENT_TYPES), len(EVENT_VOCABULARY), counts[0])
    item = events.item[source].copy()
    item[counts[0]:] = -1
    positions = _positions_after(len(events.code), source)
    dirty = _Events(*(np.concatenate((clean, copy))[positions] for clean, copy in (
        (events.session, events.session[source]), (events.code, code), (events.item, item),
        (events.ts_us, events.ts_us[source]))))
    reasons = [("events", REASON_BAD_EVENT_TYPE, counts[0]), ("events", REASON_MISSING_ITEM, counts[1])]
    return dirty, reasons


def _dirty_items(rng: np.random.Generator, items: pd.DataFrame, n_each: int) -> tuple[pd.DataFrame, list[_Planted]]:
    """New items (sold nowhere) with a negative price, and re-listed ids at a new price, appended
    at the end so the loader keeps the first listing."""
    negative = items.iloc[rng.choice(len(items), n_each, replace=False)].reset_index(drop=True)
    negative["item_id"] = "n" + negative["item_id"]
    negative["price"] = -negative["price"]
    duplicate = items.iloc[rng.choice(len(items), n_each, replace=False)].reset_index(drop=True)
    duplicate["price"] = np.round(duplicate["price"] * 1.1, 2)
    reasons = [("items", REASON_NEGATIVE_PRICE, n_each), ("items", REASON_DUPLICATE_ITEM, n_each)]
    return pd.concat([items, negative, duplicate], ignore_index=True), reasons


def _dirty_count(share: float, rows: int, defects: int) -> int:
    """``share`` of ``rows``, at least one per defect; none when no dirt is asked for or nothing can be copied."""
    return max(defects, round(share * rows)) if share > 0 and rows > 0 else 0


# --- entry points --------------------------------------------------------------------


def generate_shop(config: SampleConfig) -> SampleShop:
    """Simulate the shop described in docs/sample.md; identical output for identical config."""
    seeds = np.random.SeedSequence(config.seed).spawn(len(STAGES))
    rng = dict(zip(STAGES, map(np.random.default_rng, seeds), strict=True))
    start_us, end_us = config.start_ts.value // 1000, config.end_ts.value // 1000
    catalogue = _build_catalogue(rng["catalogue"], config.items)
    customers = _build_customers(rng["customers"], config.customers, catalogue, start_us, end_us)
    orders = _build_orders(rng["orders"], customers, catalogue, end_us)
    sessions = _build_sessions(rng["sessions"], customers, orders, start_us, end_us)
    events = _build_events(rng["sessions"], sessions, orders, customers, catalogue)
    aliases = _build_aliases(rng["aliases"], config.customers)
    n_ids = config.customers + len(aliases.owner)
    ids = _ids("c", np.arange(n_ids), _width(n_ids, 6))
    order_id_index = aliases.id_index(rng["aliases"], orders.customer)
    session_id_index = np.concatenate((order_id_index,
                                       aliases.id_index(rng["aliases"], sessions.customer[len(order_id_index):])))
    customer_table, alias_table = _customer_frames(rng["aliases"], customers, aliases, ids, end_us)

    planted: list[_Planted] = []
    share = config.dirty_share
    if n_bad := _dirty_count(share, len(events.code), 2):
        events, found = _dirty_events(rng["dirty"], events, n_bad)
        planted += found
    tables = {
        "items": catalogue.frame,
        "orders": _order_frame(rng["orders"], orders, order_id_index, ids, catalogue),
        "events": _event_frame(events, sessions, session_id_index, ids, catalogue),
        "customers": customer_table,
        "customer_aliases": alias_table,
        "email_events": _email_frame(rng["emails"], customers, ids, start_us, end_us),
    }
    if n_bad := _dirty_count(share, len(tables["orders"]), 3):
        tables["orders"], found = _dirty_orders(rng["dirty"], tables["orders"], n_bad)
        planted += found
    if n_bad := _dirty_count(share, config.items, 1):
        tables["items"], found = _dirty_items(rng["dirty"], tables["items"], n_bad)
        planted += found
    truth = _truth(catalogue, customers, aliases, ids)
    truth["dirty"] = pd.DataFrame(planted, columns=["table", "reason", "count"]).astype({"count": "int64"})
    return SampleShop(tables=tables, truth=truth)


def write_truth(shop: SampleShop, out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write the planted truth as ``<out_dir>/_truth/<name>.csv`` (ignored by the loader)."""
    folder = Path(out_dir) / "_truth"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, frame in shop.truth.items():
        path = folder / f"{name}.csv"
        frame.to_csv(path, index=False)
        written.append(path)
    return written
