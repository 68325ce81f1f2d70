"""The profile tables a bundle carries, built from the shop as it stood at the dataset's cut-off:
what the ranking path and the serving rules read besides the models (RFM and price bands,
category affinity, learned re-buying, sales, open rates, aliases, opt-outs)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.aliases import resolve_aliases
from features.dataset import Dataset
from features.loading import ShopData
from features.profiles import category_affinity, customer_profiles, email_open_rates, email_timing
from features.repurchase import rebuy_profile
from features.triggers import TriggerConfig, first_triggers, trigger_facts

ALIASES = "customer_aliases"
"""The profile (``alias_id, customer_id``) mapping each merged duplicate id to its canonical id."""
REBUY_ITEMS, REBUY_CATEGORIES, ITEM_SALES = "rebuy_items", "rebuy_categories", "item_sales"
"""Profiles the ranking path reads: learned re-buy statistics (features/repurchase.py) and sales."""
OPEN_HOURS, RECENT_SENDS, SHOP_EMAIL = "email_open_hours", "email_recent_sends", "email_shop"
"""Profiles the campaign plan reads (features.profiles.email_timing): each customer's open hour,
their latest sends (the frequency cap) and the shop's open hour with the time the plan is as of."""
PLAN_TRIGGERS = "plan_triggers"
"""The profile (``customer_id, trigger, detail``) of each customer's first lifecycle trigger
(features.triggers) on the day after the data ends: the plan's ``trigger``."""


def plan_day(shop: ShopData, known_until: pd.Timestamp) -> pd.Timestamp:
    """The day the plan's triggers are for: the day after the last instant the shop recorded
    (``known_until`` is just past it; browsing may run past the last order and mail)."""
    if shop.has("events") and len(shop["events"]):
        known_until = max(known_until, shop["events"]["ts"].max() + pd.Timedelta(microseconds=1))
    return (known_until - pd.Timedelta(microseconds=1)).floor("D") + pd.Timedelta(days=1)


def build_profiles(shop: ShopData, dataset: Dataset, recent_days: float,
                   triggers: TriggerConfig | None = None) -> dict[str, pd.DataFrame]:
    """Every profile a bundle of ``dataset`` carries, from ``shop`` as it stood at ``dataset.as_of``
    (the whole history for the served bundle, a training window's past in evaluation); with
    ``triggers`` (the served bundle's), the plan's triggers too."""
    orders, items = shop["orders"], shop["items"]
    orders = orders[orders["ts"] < dataset.as_of]
    rebuy_items, rebuy_categories = rebuy_profile(orders, items)
    age = (dataset.as_of - orders["ts"]).dt.total_seconds() / 86_400.0
    sales = orders.groupby("item_id").size()
    recent = orders[age <= recent_days].groupby("item_id").size()
    profiles = {
        "customers": customer_profiles(orders, items, dataset.as_of),
        "category_affinity": category_affinity(orders, items, dataset.as_of),
        REBUY_ITEMS: rebuy_items,
        REBUY_CATEGORIES: rebuy_categories,
        ITEM_SALES: pd.DataFrame({"item_id": items["item_id"].to_numpy(dtype=object),
                                  "sales": sales.reindex(items["item_id"]).fillna(0).to_numpy(dtype=np.int64),
                                  "recent_sales": recent.reindex(items["item_id"]).fillna(0).to_numpy(dtype=np.int64)}),
    }
    # the plan is as of the end of what the shop knows: its latest mail may come after its latest order
    plan_end = dataset.as_of
    if shop.has("email_events"):
        profiles["email_open_rates"] = email_open_rates(shop["email_events"])
        emails = shop["email_events"]
        if len(emails):
            plan_end = max(plan_end, emails["sent_ts"].max() + pd.Timedelta(microseconds=1))
        hours, recent, shop_hour = email_timing(emails, plan_end)
        profiles[OPEN_HOURS], profiles[RECENT_SENDS] = hours, recent
        profiles[SHOP_EMAIL] = pd.DataFrame({"open_hour": [shop_hour], "as_of": [plan_end]})
    if triggers is not None:
        profiles[PLAN_TRIGGERS] = first_triggers(trigger_facts(shop, plan_day(shop, plan_end), triggers))
    if shop.has("customer_aliases"):
        resolved, _ = resolve_aliases(shop["customer_aliases"])
        profiles[ALIASES] = pd.DataFrame({"alias_id": resolved.index.to_numpy(dtype=object),
                                          "customer_id": resolved.to_numpy(dtype=object)})
    if shop.has("customers") and "email_opt_in" in shop["customers"]:
        customers = shop["customers"]
        profiles["email_opt_out"] = customers.loc[~customers["email_opt_in"].astype(bool), ["customer_id"]]
    return profiles
