"""The documented process of the sample shop (docs/sample.md): its categories, price tiers and every
rate and share the simulation draws with, in one place."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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


ENGAGED_LIFT, LAPSED_LIFT, ENGAGEMENT_DAYS = 2.0, 0.4, 30.0
"""A mail's chance of being opened is the customer's ``open_rate`` times an engagement factor:
``LAPSED_LIFT + (ENGAGED_LIFT - LAPSED_LIFT) * exp(-days since their last order / ENGAGEMENT_DAYS)``
(about 2x the day after an order, 1x some four weeks later, 0.4x for the lapsed and for those who
never ordered): recent buyers read the shop's mail."""


FATIGUE_PER_MAIL, FATIGUE_DAYS = 0.7, 30.0
"""... times ``FATIGUE_PER_MAIL`` for each mail the customer got in the ``FATIGUE_DAYS`` before it:
a customer mailed often opens less (capped at a chance of 0.95)."""


OPEN_HOURS, OPEN_HOUR_SHARE = (7, 8, 12, 13, 19, 20, 21), (0.15, 0.15, 0.15, 0.10, 0.15, 0.20, 0.10)
"""Each customer reads mail at one hour of the day (UTC), drawn from these shares: a mail is opened
at the first such hour after it was sent, or one (p 0.3) or two (p 0.1) days later."""


OPEN_DELAY_DAYS_P = (0.6, 0.3, 0.1)


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
