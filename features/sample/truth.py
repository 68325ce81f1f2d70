"""The planted truth written next to the tables, for tests and docs to check models against."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.sample.catalogue import Catalogue
from features.sample.customers import Customers
from features.sample.frames import Aliases
from features.sample.process import (
    ATTACH_PROB,
    BASE_PRICE,
    CATEGORIES,
    CATEGORY_NAMES,
    CATEGORY_WEIGHT,
    DURABLE,
    N_CATEGORIES,
    N_TIERS,
    REPURCHASE_DAYS,
    TIER_BOUNDS,
    TIER_SHARE,
    TIERS,
)


def planted_truth(catalogue: Catalogue, customers: Customers, aliases: Aliases, ids: np.ndarray) -> dict[str, pd.DataFrame]:
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
            "open_hour": customers.open_hour,
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


Planted = tuple[str, str, int]
"""(table, loader's quarantine reason, rows planted)."""
