"""The catalogue stage: items per category and price tier, brands, stock, and the planted partner pairs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.sample.draws import U_MAX, allocate, id_width, make_ids, row_offsets
from features.sample.process import (
    BASE_PRICE,
    BRAND_FIRST,
    BRAND_SECOND,
    BRANDS_PER_GROUP,
    CATEGORIES,
    CATEGORY_NAMES,
    CATEGORY_WEIGHT,
    DURABLE,
    N_CATEGORIES,
    N_TIERS,
    OUT_OF_STOCK_SHARE,
    PARTNER_CATEGORY,
    PRICE_NOISE_SIGMA,
    REPURCHASE_DAYS,
    TIER_BOUNDS,
    TIER_CENTRE,
    TIER_SHARE,
    ZIPF_EXPONENT,
)


@dataclass(frozen=True)
class Catalogue:
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
    return np.searchsorted(group_cum, group + rng.random(len(group)) * U_MAX, side="right")


def build_catalogue(rng: np.random.Generator, n_items: int) -> Catalogue:
    per_category = allocate(n_items, CATEGORY_WEIGHT, N_TIERS)
    per_group = np.concatenate([allocate(int(n), TIER_SHARE, 1) for n in per_category])
    group = np.repeat(np.arange(N_CATEGORIES * N_TIERS), per_group)
    starts = row_offsets(per_group)
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
    ids = make_ids("i", number, id_width(n_items, 5))
    brand_names = np.array([a + b for a in BRAND_FIRST for b in BRAND_SECOND], dtype=object)
    brand = brand_names[(group * BRANDS_PER_GROUP + rng.integers(0, BRANDS_PER_GROUP, n_items)) % len(brand_names)]
    nouns = np.array([c.noun for c in CATEGORIES], dtype=object)
    model = make_ids("", rng.integers(100, 1000, n_items), 3)
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
    return Catalogue(category, tier, price, popularity, group_cum, partner, ids, frame)
