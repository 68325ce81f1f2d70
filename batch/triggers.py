"""Lifecycle triggers: who is worth a mail *today*, why, and with which items.

A campaign plan says whom to mail; a trigger says what makes a mail worth sending now. Each
trigger reads the shop's own tables as they stood at the start of ``today`` (UTC) and gives
rows ``customer_id, trigger, rank, item_id, detail``:

- ``refill_due``: a consumable the customer buys again is due by its learned interval
  (:mod:`features.repurchase`: last purchase + ``interval_days``) between ``refill_overdue_days``
  ago and ``refill_ahead_days`` ahead; the items are the due ones, soonest first.
- ``abandoned_cart``: items last put in the cart between ``cart_within_days`` and
  ``cart_after_hours`` ago, neither bought nor removed since.
- ``wishlist_reminder``: items last wish-listed between ``wishlist_within_days`` and
  ``wishlist_after_days`` ago and not bought since.
- ``anniversary``: the first purchase was a whole number of years ago today (``detail`` the
  years; a first purchase on 29 February fires on 28 February in other years); the items are
  the customer's best picks in the category of that first purchase (the next step from it),
  then their other picks.
- ``follow_up_non_openers``: mailed ``follow_up_days`` (3-7) days ago and not opened
  (``detail`` the campaign); the items are the customer's email picks.

Refill, cart and wish-list items are in stock in today's ``items``; customers who opted out of
email get no trigger, and the sunset rule's ``unengaged`` customers no follow-up. Anniversary
and follow-up picks come from the served bundle through
:meth:`serving.recommender.ShopRecommender.email_picks_block`, the one ranking path (personal
picks, then fallbacks, under the bundle's rules and stock as trained). Every row says whether
its item is low in stock (``low_stock``: at most ``low_stock_units`` on hand) where the shop's
items carry ``stock_qty``: a cart left with the last few units is worth a mail today.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, model_validator

from features.loading import ShopData
from features.repurchase import rebuy_profile
from serving.answers import UNENGAGED
from serving.recommender import ShopRecommender

TRIGGERS = ("refill_due", "abandoned_cart", "wishlist_reminder", "anniversary", "follow_up_non_openers")
TRIGGERS_SCHEMA = pa.schema([
    pa.field("customer_id", pa.string(), nullable=False),
    pa.field("trigger", pa.string(), nullable=False),
    pa.field("rank", pa.int32(), nullable=False),
    ("item_id", pa.string()),
    ("detail", pa.string()),
    ("low_stock", pa.bool_()),
])
"""One row per customer, trigger and item (rank 1..n); ``detail``: the due date, the cart or
wish-list date, the years since the first purchase, or the campaign not opened; ``low_stock``:
the item has at most ``low_stock_units`` on hand (null where the shop exports no ``stock_qty``)."""
EXPERIMENT = "shoprec-triggers"
PICK_DEPTH = 50
"""Personal picks read per customer to find the best ones in a category (anniversary)."""


class TriggerConfig(BaseModel):
    """The windows of each trigger (``shoprec triggers --config``)."""

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


def _rows(frame: pd.DataFrame, trigger: str, k: int) -> pd.DataFrame:
    """``customer_id, item_id, detail`` (ordered best first per customer) -> the schema's rows."""
    if not len(frame):
        return pd.DataFrame({"customer_id": pd.Series(dtype=object), "trigger": pd.Series(dtype=object),
                             "rank": pd.Series(dtype=np.int32), "item_id": pd.Series(dtype=object),
                             "detail": pd.Series(dtype=object)})
    frame = frame.groupby("customer_id", sort=True, group_keys=False).head(k).reset_index(drop=True)
    rank = frame.groupby("customer_id").cumcount() + 1
    return pd.DataFrame({"customer_id": frame["customer_id"].astype(str), "trigger": trigger,
                         "rank": rank.astype(np.int32), "item_id": frame["item_id"], "detail": frame["detail"]})


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
        return _rows(orders, "refill_due", config.k)
    profile, _ = rebuy_profile(orders, items)
    repeatable = profile[~profile["non_repeat"] & np.isfinite(profile["interval_days"])]
    last = orders.groupby(["customer_id", "item_id"], as_index=False)["ts"].max()
    last = last.merge(repeatable[["item_id", "interval_days"]], on="item_id")
    due = last["ts"] + pd.to_timedelta(last["interval_days"], unit="D")
    window = (due >= today - pd.Timedelta(days=config.refill_overdue_days)) & \
             (due < today + pd.Timedelta(days=config.refill_ahead_days))
    frame = last[window].assign(due=due[window]).sort_values(["customer_id", "due", "item_id"])
    return _rows(_offered(shop, frame.assign(detail=frame["due"].dt.strftime("%Y-%m-%d"))), "refill_due", config.k)


def _browsed(shop: ShopData, today: pd.Timestamp, kind: str, after: pd.Timedelta, within: pd.Timedelta,
             config: TriggerConfig, trigger: str) -> pd.DataFrame:
    """Items whose latest ``kind`` event (cart, wishlist) is aged between ``after`` and ``within``,
    not bought (and, for carts, not removed) since; latest first. The latest add counts: an item
    put in the cart again an hour ago is a fresh cart, not an abandoned one."""
    if not shop.has("events"):
        return _rows(pd.DataFrame(columns=["customer_id", "item_id", "detail"]), trigger, config.k)
    events = shop["events"].dropna(subset=["customer_id", "item_id"])
    latest = events[events["event_type"] == kind].groupby(["customer_id", "item_id"], as_index=False)["ts"].max()
    age = today - latest["ts"]
    chosen = latest[(age >= after) & (age < within)]
    if not len(chosen):
        return _rows(chosen, trigger, config.k)
    if kind == "cart":
        removed = events[events["event_type"] == "remove_from_cart"].groupby(["customer_id", "item_id"])["ts"].max()
        later = chosen.join(removed.rename("removed"), on=["customer_id", "item_id"])["removed"] > chosen["ts"]
        chosen = chosen[~later.fillna(False).to_numpy(dtype=bool)]
    chosen = chosen[~_bought_since(shop, chosen, "ts")].sort_values(["customer_id", "ts", "item_id"],
                                                                    ascending=[True, False, True])
    return _rows(_offered(shop, chosen.assign(detail=chosen["ts"].dt.strftime("%Y-%m-%d"))), trigger, config.k)


def _pick_rows(recommender: ShopRecommender, ids: np.ndarray, depth: int) -> pd.DataFrame:
    """``customer_id, item_id, order, send_reason, category`` of each customer's email picks (best
    first: personal, then the fallbacks), under the bundle's rules; ``category`` from its catalogue."""
    if not len(ids):
        return pd.DataFrame(columns=["customer_id", "item_id", "order", "send_reason", "category"])
    block = recommender.email_picks_block(ids, depth)
    rows, cols = np.nonzero(block.items >= 0)
    items = block.items[rows, cols]
    return pd.DataFrame({"customer_id": block.customer_ids[rows].astype(str), "item_id": recommender.item_ids[items],
                         "order": cols, "send_reason": block.send_reason[rows],
                         "category": recommender.categories[recommender.item_category[items]]})


def anniversaries(shop: ShopData, today: pd.Timestamp, config: TriggerConfig,
                  recommender: ShopRecommender) -> pd.DataFrame:
    orders = shop["orders"].sort_values(["ts", "order_id"], kind="stable")
    first = orders.drop_duplicates("customer_id")[["customer_id", "item_id", "ts"]]
    day = first["ts"].dt
    years = today.year - day.year
    leap_day = (day.month == 2) & (day.day == 29)
    shown_on = np.where(leap_day & ~pd.Timestamp(year=today.year, month=1, day=1).is_leap_year, 28, day.day)
    hit = first[(day.month == today.month) & (shown_on == today.day) & (years >= 1)].assign(years=years)
    categories = shop["items"].set_index("item_id")["category"]
    picks = _pick_rows(recommender, hit["customer_id"].to_numpy(dtype=object), PICK_DEPTH)
    if not len(picks):
        return _rows(picks, "anniversary", config.k)
    picks = picks.merge(hit.assign(first_category=hit["item_id"].map(categories))[
        ["customer_id", "first_category", "years"]], on="customer_id")
    # the next step: picks in the first purchase's category first, then the rest, each best first
    picks["other"] = picks["category"] != picks["first_category"]
    picks = picks.sort_values(["customer_id", "other", "order"])
    return _rows(picks.assign(detail=picks["years"].astype(str)), "anniversary", config.k)


def non_openers(shop: ShopData, today: pd.Timestamp, config: TriggerConfig,
                recommender: ShopRecommender) -> pd.DataFrame:
    if not shop.has("email_events"):
        return _rows(pd.DataFrame(columns=["customer_id", "item_id", "detail"]), "follow_up_non_openers", config.k)
    emails = shop["email_events"]
    lo, hi = config.follow_up_days
    age = today - emails["sent_ts"]
    window = emails[(age >= pd.Timedelta(days=lo)) & (age <= pd.Timedelta(days=hi))]
    window = window.assign(opened=window["opened"] & ~(window["opened_ts"] >= today))  # not seen yet: not opened
    opened = window.groupby("customer_id")["opened"].any()
    latest = window.sort_values("sent_ts").drop_duplicates("customer_id", keep="last").set_index("customer_id")
    unopened = latest.loc[~opened.reindex(latest.index).to_numpy(dtype=bool), "campaign_id"]
    picks = _pick_rows(recommender, unopened.index.to_numpy(dtype=object), config.k)
    picks = picks[picks["send_reason"] != UNENGAGED]  # the sunset rule: never opened any of many mails
    if not len(picks):
        return _rows(picks, "follow_up_non_openers", config.k)
    picks = picks.assign(detail=picks["customer_id"].map(unopened)).sort_values(["customer_id", "order"])
    return _rows(picks, "follow_up_non_openers", config.k)


def find_triggers(shop: ShopData, today: pd.Timestamp, config: TriggerConfig,
                  recommender: ShopRecommender) -> pd.DataFrame:
    """Every trigger's rows as of the start of ``today`` (UTC), in :data:`TRIGGERS` order, then by customer."""
    today = pd.Timestamp(today).tz_convert("UTC") if pd.Timestamp(today).tzinfo else pd.Timestamp(today, tz="UTC")
    today = today.normalize()
    past = shop.before(today)
    frames = [
        refill_due(past, today, config),
        _browsed(past, today, "cart", pd.Timedelta(hours=config.cart_after_hours),
                 pd.Timedelta(days=config.cart_within_days), config, "abandoned_cart"),
        _browsed(past, today, "wishlist", pd.Timedelta(days=config.wishlist_after_days),
                 pd.Timedelta(days=config.wishlist_within_days), config, "wishlist_reminder"),
        anniversaries(past, today, config, recommender),
        non_openers(past, today, config, recommender),
    ]
    out = _mark_low_stock(pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True), past, config)
    if past.has("customers") and "email_opt_in" in past["customers"]:
        customers = past["customers"]
        opted_out = set(customers.loc[~customers["email_opt_in"].astype(bool), "customer_id"].astype(str))
        out = out[~out["customer_id"].isin(opted_out)]
    return out.astype({"rank": np.int32}).reset_index(drop=True)


def _mark_low_stock(frame: pd.DataFrame, shop: ShopData, config: TriggerConfig) -> pd.DataFrame:
    """``low_stock`` per row: the item's units on hand at most ``low_stock_units`` (a reason to mail
    about an abandoned cart now); null where the shop's items carry no ``stock_qty``."""
    items = shop["items"]
    if "stock_qty" not in items:
        return frame.assign(low_stock=pd.Series(pd.NA, index=frame.index, dtype="boolean"))
    units = items.set_index(items["item_id"].astype(str))["stock_qty"]
    on_hand = frame["item_id"].astype(object).map(units).astype("Float64")
    return frame.assign(low_stock=(on_hand <= config.low_stock_units).astype("boolean"))


def counts(frame: pd.DataFrame) -> dict[str, Any]:
    """Customers per trigger (every trigger named, 0 when none fired)."""
    fired = frame.groupby("trigger")["customer_id"].nunique()
    return {trigger: int(fired.get(trigger, 0)) for trigger in TRIGGERS}


def run_triggers(data: str, out: str, *, today: pd.Timestamp, model: str = "models:/shoprec@champion",
                 config: TriggerConfig | None = None, table: str = "triggers", track: bool = True,
                 log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Load the shop, find every trigger as of ``today``, write the rows atomically (a file or a
    SQL table, like the picks job) and, with ``track``, log a ``shoprec-triggers`` MLflow run
    (params, customers per trigger, the summary)."""
    from batch.model_ref import load_model_uri
    from batch.sinks import open_sink
    from features.loading import load_shop
    from serving.config import serving_config

    config = config or TriggerConfig()
    started = time.perf_counter()
    sink = open_sink(out, table, schema=TRIGGERS_SCHEMA)  # a bad target fails before any work
    log(f"loading {data}")
    shop = load_shop(data)
    loaded = load_model_uri(model)
    recommender = ShopRecommender(loaded.bundle, loaded.version, serving_config())
    log(f"finding triggers as of {today:%Y-%m-%d} with {loaded.version}")
    frame = find_triggers(shop, today, config, recommender)
    with sink:
        sink.write(frame)
    summary = {"today": f"{today:%Y-%m-%d}", "customers": counts(frame), "rows": len(frame),
               "model_version": loaded.version, "output": sink.description,
               "seconds": round(time.perf_counter() - started, 3)}
    if track:
        summary["run_id"] = _log_run(summary, config, data, model)
    return summary


def _log_run(summary: dict[str, Any], config: TriggerConfig, data: str, model: str) -> str:
    import mlflow

    from training import tracking

    client = tracking.configure()
    experiment_id = tracking.ensure_experiment(client, EXPERIMENT)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"triggers {summary['today']}",
                          tags={**tracking.process_tags(), "shoprec.kind": "triggers-batch",
                                "shoprec.model_version": summary["model_version"],
                                "shoprec.output": summary["output"]}) as run:
        mlflow.log_params({"today": summary["today"], "data": data, "model_uri": model, **config.model_dump()})
        mlflow.log_metrics({f"customers.{name}": n for name, n in summary["customers"].items()}
                           | {"rows": summary["rows"], "seconds": summary["seconds"]})
        mlflow.log_dict(summary, "triggers_summary.json")
        return str(run.info.run_id)
