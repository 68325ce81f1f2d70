"""The picks run's summary: counters and distributions over what was written, summed block by block.

Computed from the bundle alone (no recommender), so the Spark driver summarises without
building the serving state its executors use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np
import pandas as pd

from training.bundle import Bundle, is_fallback

PRICE_QUANTILES = (0.2, 0.4, 0.6, 0.8)


@dataclass
class PicksSummary:
    """Counters over the written picks; blocks add up, so engines can sum partial summaries."""

    k: int
    customers: int = 0
    customers_with_picks: int = 0
    short_customers: int = 0
    """Fewer than k picks (fewer than k items in stock and allowed)."""
    sent: int = 0
    fallback_customers: int = 0
    """At least one pick that is not personal (popular in segment / category / shop)."""
    unknown_customers: int = 0
    """Not in the bundle at all: fallbacks only."""
    cold_customers: int = 0
    """In the bundle without history: fallbacks only."""
    alias_customers: int = 0
    """Listed under a merged duplicate id (customer_aliases): scored as their canonical id."""
    picks: int = 0
    rows_written: int = 0
    item_picks: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    reasons: dict[str, int] = field(default_factory=dict)

    def update(self, bundle: Bundle, customer_ids: Sequence[str] | np.ndarray, frame: pd.DataFrame) -> None:
        """Add one scored block (``frame`` as :func:`score_block` returns it for ``customer_ids``)."""
        self.add_customers(bundle, customer_ids)
        if not len(frame):
            return
        rank = frame["rank"].to_numpy()
        starts = np.flatnonzero(rank == 1)
        counts = np.diff(np.append(starts, len(frame)))
        not_personal = is_fallback(frame["reason"].to_numpy())
        self.customers_with_picks += len(starts)
        self.short_customers += int((counts < self.k).sum()) + len(customer_ids) - len(starts)
        self.sent += int(frame["send"].to_numpy()[starts].sum())
        self.fallback_customers += int(np.logical_or.reduceat(not_personal, starts).sum())
        self.picks += len(frame)
        codes, uniques = pd.factorize(frame["item_id"])
        if len(self.item_picks) != len(bundle.items):
            self.item_picks = np.zeros(len(bundle.items), dtype=np.int64)
        item_idx = bundle.items.to_index(np.asarray(uniques, dtype=object), unknown="mark")
        np.add.at(self.item_picks, item_idx[item_idx >= 0], np.bincount(codes)[item_idx >= 0])
        for reason, count in frame["reason"].value_counts(sort=False).items():
            self.reasons[reason] = self.reasons.get(reason, 0) + int(count)

    def add_customers(self, bundle: Bundle, customer_ids: Sequence[str] | np.ndarray) -> None:
        """Count the scored ids: all, unknown, known without history, given as an alias."""
        ids = np.asarray(customer_ids, dtype=object)
        canonical = bundle.canonical_ids(ids)
        raw = bundle.customers.to_index(canonical, unknown="mark")
        self.customers += len(ids)
        self.unknown_customers += int((raw < 0).sum())
        self.cold_customers += int((~bundle.has_history[raw[raw >= 0]]).sum())
        self.alias_customers += int((canonical != ids).sum())

    def to_dict(self, bundle: Bundle) -> dict[str, Any]:
        """Counts plus the distributions of reasons, price bands and categories in the picks."""
        counts = self.item_picks if len(self.item_picks) else np.zeros(len(bundle.items), dtype=np.int64)
        labels, band = price_bands(bundle)
        by_band = np.bincount(band, weights=counts, minlength=len(labels))
        item_category, names = bundle.item_categories
        by_category = np.bincount(item_category, weights=counts, minlength=len(names))
        categories = sorted(((str(c), int(n)) for c, n in zip(names, by_category, strict=True)
                             if n), key=lambda cn: (-cn[1], cn[0]))
        return {
            "customers": self.customers, "customers_with_picks": self.customers_with_picks,
            "short_customers": self.short_customers, "sent": self.sent,
            "sent_share": self.sent / max(self.customers, 1),
            "fallback_customers": self.fallback_customers, "unknown_customers": self.unknown_customers,
            "cold_customers": self.cold_customers, "alias_customers": self.alias_customers,
            "picks": self.picks, "rows_written": self.rows_written,
            "reasons": _reason_groups(self.reasons),
            "price_bands": {label: int(n) for label, n in zip(labels, by_band, strict=True)},
            "categories": dict(categories),
        }


def price_bands(bundle: Bundle) -> tuple[list[str], np.ndarray]:
    """Catalogue price quintiles (items in stock and recommendable) as labels, and each item's band index."""
    price = bundle.catalogue["price"].to_numpy(dtype=np.float64)
    priced = price[~bundle.rules.blocked & (price > 0)]
    if not len(priced):
        return ["all prices"], np.zeros(len(price), dtype=np.int64)
    edges = np.unique(np.quantile(priced, PRICE_QUANTILES))
    bounds = [f"{e:,.2f}" for e in edges]
    labels = ([f"q1 <= {bounds[0]}"] + [f"q{i + 2} {lo}-{hi}" for i, (lo, hi) in enumerate(pairwise(bounds))]
              + [f"q{len(edges) + 1} > {bounds[-1]}"])
    return labels, np.searchsorted(edges, price, side="left")


def _reason_groups(reasons: dict[str, int]) -> dict[str, int]:
    """Picks per kind of reason (``popular_in:<category>`` -> ``popular_in``), most first."""
    groups: dict[str, int] = {}
    for reason, count in reasons.items():
        kind = reason.split(":", 1)[0]
        groups[kind] = groups.get(kind, 0) + count
    return dict(sorted(groups.items(), key=lambda kv: -kv[1]))
