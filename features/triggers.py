"""Lifecycle triggers as facts: who is worth a mail *today*, why, and about which items.

Each trigger reads the shop's own tables as they stood at the start of ``today`` (UTC) and gives
rows ``customer_id, trigger, item_id, detail``, best first per customer:

- ``abandoned_cart``: items last put in the cart between ``cart_within_days`` and
  ``cart_after_hours`` ago, neither bought nor removed since (``detail``: the day put in).
- ``refill_due``: a consumable the customer buys again is due by its learned interval
  (:mod:`features.repurchase`: last purchase + ``interval_days``) between ``refill_overdue_days``
  ago and ``refill_ahead_days`` ahead; the items are the due ones, soonest first (``detail``: the
  due date).
- ``anniversary``: the first purchase was a whole number of years ago today (``detail`` the
  years; a first purchase on 29 February fires on 28 February in other years); the item is that
  first purchase (the step a next pick follows from).
- ``wishlist_reminder``: items last wish-listed between ``wishlist_within_days`` and
  ``wishlist_after_days`` ago and not bought since (``detail``: the day listed).
- ``follow_up_non_openers``: mailed ``follow_up_days`` (3-7) days ago and not opened
  (``detail`` the campaign); no item.

Refill, cart and wish-list items are in stock in today's ``items``; customers who opted out of
email get no trigger. Items for anniversaries and follow-ups (picks) and the sunset rule come
from a served model: :mod:`batch.triggers`. The campaign plan (``trigger`` in ``shoprec picks``
and ``/email_picks``) names each customer's first trigger in :data:`TRIGGERS` order.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from features.loading import ShopData
from features.repurchase import rebuy_profile

FOLLOW_UP = "follow_up_non_openers"
TRIGGERS = ("abandoned_cart", "refill_due", "anniversary", "wishlist_reminder", FOLLOW_UP)
"""Every trigger, the most perishable first: a cart goes cold in days, a due refill is bought
elsewhere, an anniversary is one day; a wish list waits, and a follow-up is the campaign's own
second try. The plan names a customer's first."""
FACT_COLUMNS = ["customer_id", "trigger", "item_id", "detail"]


class TriggerConfig(BaseModel):
    """The windows of each trigger (``shoprec triggers --config``, ``triggers`` in the training config)."""

    model_config = ConfigDict(extra="forbid")

    refill_ahead_days: float = Field(7.0, ge=0)
    refill_overdue_days: float = Field(7.0, ge=0, description="Longer overdue than this: lapsed, not due.")
    cart_after_hours: float = Field(24.0, ge=0, description="A cart younger than this may still be bought.")
    cart_within_days: float = Field(7.0, gt=0)
    wishlist_after_days: float = Field(7.0, ge=0)
    wishlist_within_days: float = Field(90.0, gt=0)
    follow_up_days: tuple[float, float] = Field((3.0, 7.0), description="Mailed this many days ago (from, to).")
    k: int = Field(3, ge=1, le=100, description="Items per customer and trigger.")
    low_stock_units: float = Field(5.0, ge=0, description="An item with at most this many units on hand "
                                                          "(items.stock_qty) is marked low_stock.")

    @model_validator(mode="after")
    def _windows_open(self) -> TriggerConfig:
        if self.follow_up_days[0] > self.follow_up_days[1]:
            raise ValueError(f"follow_up_days {list(self.follow_up_days)}: give (from, to) with from <= to")
        if self.cart_after_hours >= self.cart_within_days * 24:
            raise ValueError("cart_after_hours must be below cart_within_days x 24: the window would be empty")
        if self.wishlist_after_days >= self.wishlist_within_days:
            raise ValueError("wishlist_after_days must be below wishlist_within_days: the window would be empty")
        return self


def day_start(today: pd.Timestamp | str) -> pd.Timestamp:
    """``today`` as the start of its UTC day (naive times are read as UTC)."""
    stamp = pd.Timestamp(today)
    return (stamp.tz_convert("UTC") if stamp.tzinfo else stamp.tz_localize("UTC")).normalize()


def _facts(frame: pd.DataFrame, trigger: str) -> pd.DataFrame:
    """``customer_id, item_id, detail`` (best first per customer) -> :data:`FACT_COLUMNS` rows."""
    return pd.DataFrame({"customer_id": frame["customer_id"].astype(str).to_numpy(dtype=object), "trigger": trigger,
                         "item_id": frame["item_id"].to_numpy(dtype=object),
                         "detail": frame["detail"].astype(str).to_numpy(dtype=object)}, columns=FACT_COLUMNS)


def no_facts() -> pd.DataFrame:
    """An empty facts frame (a new one each time: callers may add to it)."""
    return pd.DataFrame({c: pd.Series(dtype=object) for c in FACT_COLUMNS})


def _offered(shop: ShopData, frame: pd.DataFrame) -> pd.DataFrame:
    """Rows whose item is in stock."""
    items = shop["items"]
    in_stock = set(items.loc[items["in_stock"].astype(bool), "item_id"].astype(str)) if "in_stock" in items \
        else set(items["item_id"].astype(str))
    return frame[frame["item_id"].astype(str).isin(in_stock)]


def _bought_since(shop: ShopData, frame: pd.DataFrame, ts: str) -> np.ndarray:
    """Per row of ``frame`` (customer_id, item_id, ``ts``): whether the customer ordered the item after ``ts``."""
    orders = shop["orders"][["customer_id", "item_id", "ts"]]
    last = orders.groupby(["customer_id", "item_id"])["ts"].max().rename("last_bought")
    joined = frame.join(last, on=["customer_id", "item_id"])
    return (joined["last_bought"] > joined[ts]).fillna(False).to_numpy(dtype=bool)


def refill_due(shop: ShopData, today: pd.Timestamp, config: TriggerConfig) -> pd.DataFrame:
    orders, items = shop["orders"], shop["items"]
    if not len(orders):
        return no_facts()
    profile, _ = rebuy_profile(orders, items)
    repeatable = profile[~profile["non_repeat"] & np.isfinite(profile["interval_days"])]
    last = orders.groupby(["customer_id", "item_id"], as_index=False)["ts"].max()
    last = last.merge(repeatable[["item_id", "interval_days"]], on="item_id")
    due = last["ts"] + pd.to_timedelta(last["interval_days"], unit="D")
    window = (due >= today - pd.Timedelta(days=config.refill_overdue_days)) & \
             (due < today + pd.Timedelta(days=config.refill_ahead_days))
    frame = last[window].assign(due=due[window]).sort_values(["customer_id", "due", "item_id"])
    return _facts(_offered(shop, frame.assign(detail=frame["due"].dt.strftime("%Y-%m-%d"))), "refill_due")


def browsed(shop: ShopData, today: pd.Timestamp, kind: str, after: pd.Timedelta, within: pd.Timedelta,
            trigger: str) -> pd.DataFrame:
    """Items whose latest ``kind`` event (cart, wishlist) is aged between ``after`` and ``within``,
    not bought (and, for carts, not removed) since; latest first. The latest add counts: an item
    put in the cart again an hour ago is a fresh cart, not an abandoned one."""
    if not shop.has("events"):
        return no_facts()
    events = shop["events"].dropna(subset=["customer_id", "item_id"])
    latest = events[events["event_type"] == kind].groupby(["customer_id", "item_id"], as_index=False)["ts"].max()
    age = today - latest["ts"]
    chosen = latest[(age >= after) & (age < within)]
    if not len(chosen):
        return no_facts()
    if kind == "cart":
        removed = events[events["event_type"] == "remove_from_cart"].groupby(["customer_id", "item_id"])["ts"].max()
        later = chosen.join(removed.rename("removed"), on=["customer_id", "item_id"])["removed"] > chosen["ts"]
        chosen = chosen[~later.fillna(False).to_numpy(dtype=bool)]
    chosen = chosen[~_bought_since(shop, chosen, "ts")].sort_values(["customer_id", "ts", "item_id"],
                                                                    ascending=[True, False, True])
    return _facts(_offered(shop, chosen.assign(detail=chosen["ts"].dt.strftime("%Y-%m-%d"))), trigger)


def anniversaries(shop: ShopData, today: pd.Timestamp) -> pd.DataFrame:
    orders = shop["orders"].sort_values(["ts", "order_id"], kind="stable")
    first = orders.drop_duplicates("customer_id")[["customer_id", "item_id", "ts"]]
    day = first["ts"].dt
    years = today.year - day.year
    leap_day = (day.month == 2) & (day.day == 29)
    shown_on = np.where(leap_day & ~pd.Timestamp(year=today.year, month=1, day=1).is_leap_year, 28, day.day)
    hit = first[(day.month == today.month) & (shown_on == today.day) & (years >= 1)]
    return _facts(hit.assign(detail=years[hit.index]).sort_values("customer_id"), "anniversary")


def non_openers(shop: ShopData, today: pd.Timestamp, config: TriggerConfig) -> pd.DataFrame:
    if not shop.has("email_events"):
        return no_facts()
    emails = shop["email_events"]
    lo, hi = config.follow_up_days
    age = today - emails["sent_ts"]
    window = emails[(age >= pd.Timedelta(days=lo)) & (age <= pd.Timedelta(days=hi))]
    window = window.assign(opened=window["opened"] & ~(window["opened_ts"] >= today))  # not seen yet: not opened
    opened = window.groupby("customer_id")["opened"].any()
    latest = window.sort_values("sent_ts").drop_duplicates("customer_id", keep="last").set_index("customer_id")
    unopened = latest[~opened.reindex(latest.index).to_numpy(dtype=bool)].sort_index()
    return _facts(pd.DataFrame({"customer_id": unopened.index, "item_id": None,
                                "detail": unopened["campaign_id"].to_numpy(dtype=object)}), FOLLOW_UP)


def trigger_facts(shop: ShopData, today: pd.Timestamp | str, config: TriggerConfig) -> pd.DataFrame:
    """Every trigger's facts as of the start of ``today`` (UTC), in :data:`TRIGGERS` order, then by
    customer; customers who opted out of email left out."""
    today = day_start(today)
    past = shop.before(today)
    found = {
        "abandoned_cart": browsed(past, today, "cart", pd.Timedelta(hours=config.cart_after_hours),
                                  pd.Timedelta(days=config.cart_within_days), "abandoned_cart"),
        "refill_due": refill_due(past, today, config),
        "anniversary": anniversaries(past, today),
        "wishlist_reminder": browsed(past, today, "wishlist", pd.Timedelta(days=config.wishlist_after_days),
                                     pd.Timedelta(days=config.wishlist_within_days), "wishlist_reminder"),
        FOLLOW_UP: non_openers(past, today, config),
    }
    out = pd.concat([found[t] for t in TRIGGERS if len(found[t])] or [no_facts()], ignore_index=True)
    if past.has("customers") and "email_opt_in" in past["customers"]:
        customers = past["customers"]
        opted_out = set(customers.loc[~customers["email_opt_in"].astype(bool), "customer_id"].astype(str))
        out = out[~out["customer_id"].isin(opted_out)]
    return out.reset_index(drop=True)


def first_triggers(facts: pd.DataFrame) -> pd.DataFrame:
    """``customer_id, trigger, detail``: each customer's first trigger in :data:`TRIGGERS` order
    and its first fact's detail (what the campaign plan names)."""
    rank = facts["trigger"].map({t: i for i, t in enumerate(TRIGGERS)})
    ordered = facts.assign(_rank=rank).sort_values(["customer_id", "_rank"], kind="stable")
    return ordered.drop_duplicates("customer_id")[["customer_id", "trigger", "detail"]].reset_index(drop=True)
