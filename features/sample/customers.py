"""The customers stage: sparse category interests, a personal price tier, activity and conversion rates."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.sample.catalogue import Catalogue
from features.sample.process import (
    CATEGORY_WEIGHT,
    CONVERSION_BETA,
    CONVERSION_RANGE,
    CREATED_BEFORE_SHARE,
    CREATED_LOOKBACK_DAYS,
    DAY_US,
    DOMINANT_CHOICES,
    DOMINANT_MASS,
    DOMINANT_SHAPE,
    DURABLE,
    MINOR_SHAPE,
    N_CATEGORIES,
    N_TIERS,
    NEVER_OPEN_SHARE,
    OPEN_HOUR_SHARE,
    OPEN_HOURS,
    OPEN_RATE_BETA,
    OPT_IN_SHARE,
    ORDERS_PER_MONTH_MEDIAN,
    ORDERS_PER_MONTH_SIGMA,
    TIER_SHARE,
    US,
)


@dataclass(frozen=True)
class Customers:
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
    open_hour: np.ndarray
    """Hour of the day (UTC) the customer opens mail at."""

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


def build_customers(rng: np.random.Generator, n: int, catalogue: Catalogue, start_us: int, end_us: int) -> Customers:
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
    opt_in = rng.random(n) < OPT_IN_SHARE
    open_hour = rng.choice(np.asarray(OPEN_HOURS), size=n, p=OPEN_HOUR_SHARE)
    return Customers(affinity, tier, orders_per_month, conversion, open_rate, opt_in,
                      created, np.maximum(created, start_us), favourite, open_hour)
