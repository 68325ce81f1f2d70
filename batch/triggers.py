"""Lifecycle triggers with their picks: who is worth a mail *today*, why, and with which items.

The facts (which customer, which trigger, about which items, as of the start of ``today``) are
:func:`features.triggers.trigger_facts`; this module gives each fired trigger its items and
writes them, one row per customer, trigger and item: ``customer_id, trigger, rank, item_id,
detail, low_stock``. Carts, wish lists and refills name their own items. Anniversary and
follow-up picks come from the served bundle through
:meth:`serving.recommender.ShopRecommender.email_picks_block`, the one ranking path (personal
picks, then fallbacks, under the bundle's rules and stock as trained): for an anniversary the
customer's best picks in the category of that first purchase (the next step from it), then
their other picks; for a follow-up their email picks, and no follow-up for the sunset rule's
``unengaged`` customers. Every row says whether its item is low in stock (``low_stock``: at
most ``low_stock_units`` on hand) where the shop's items carry ``stock_qty``: a cart left with
the last few units is worth a mail today.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from features.loading import ShopData
from features.triggers import FOLLOW_UP, TRIGGERS, TriggerConfig, day_start, trigger_facts
from serving.answers import UNENGAGED
from serving.recommender import ShopRecommender

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


def _next_steps(shop: ShopData, facts: pd.DataFrame, recommender: ShopRecommender) -> pd.DataFrame:
    """Anniversary picks: the best ones in the first purchase's category first, then the rest."""
    picks = _pick_rows(recommender, facts["customer_id"].to_numpy(dtype=object), PICK_DEPTH)
    if not len(picks):
        return picks
    categories = shop["items"].set_index(shop["items"]["item_id"].astype(str))["category"]
    first = facts.assign(first_category=facts["item_id"].map(categories))[["customer_id", "first_category", "detail"]]
    picks = picks.merge(first, on="customer_id")
    picks["other"] = picks["category"] != picks["first_category"]
    return picks.sort_values(["customer_id", "other", "order"])


def _follow_ups(facts: pd.DataFrame, config: TriggerConfig, recommender: ShopRecommender) -> pd.DataFrame:
    """Follow-up picks: the customer's email picks, none for the sunset rule's unengaged."""
    picks = _pick_rows(recommender, facts["customer_id"].to_numpy(dtype=object), config.k)
    picks = picks[picks["send_reason"] != UNENGAGED]  # the sunset rule: never opened any of many mails
    campaign = facts.set_index("customer_id")["detail"]
    return picks.assign(detail=picks["customer_id"].map(campaign)).sort_values(["customer_id", "order"])


def find_triggers(shop: ShopData, today: pd.Timestamp, config: TriggerConfig,
                  recommender: ShopRecommender) -> pd.DataFrame:
    """Every trigger's rows as of the start of ``today`` (UTC), in :data:`TRIGGERS` order, then by customer."""
    today = day_start(today)
    facts = trigger_facts(shop, today, config)
    frames = []
    for trigger in TRIGGERS:
        fired = facts[facts["trigger"] == trigger]
        if trigger == "anniversary":
            fired = _next_steps(shop, fired, recommender)
        elif trigger == FOLLOW_UP:
            fired = _follow_ups(fired, config, recommender)
        frames.append(_rows(fired, trigger, config.k))
    out = pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True)
    return _mark_low_stock(out, shop, config).astype({"rank": np.int32}).reset_index(drop=True)


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
