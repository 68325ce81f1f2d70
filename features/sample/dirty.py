"""Deliberately broken rows for the loader to quarantine, with the reasons it must give."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.sample.browsing import Events
from features.sample.draws import allocate
from features.sample.process import (
    BAD_TS_VALUES,
    EVENT_TYPES,
    EVENT_VOCABULARY,
    REASON_BAD_EVENT_TYPE,
    REASON_BAD_QUANTITY,
    REASON_BAD_TS,
    REASON_DUPLICATE_ITEM,
    REASON_MISSING_ITEM,
    REASON_NEGATIVE_PRICE,
    REASON_UNKNOWN_ITEM,
)
from features.sample.truth import Planted


def _positions_after(n_rows: int, source_rows: np.ndarray) -> np.ndarray:
    """Row order of ``clean + copies`` that puts each copy right after the row it was copied
    from, as a re-sent record would be."""
    order = np.argsort(source_rows, kind="stable")
    return np.insert(np.arange(n_rows), source_rows[order] + 1, n_rows + order)


def _insert_after(frame: pd.DataFrame, source_rows: np.ndarray, dirty: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with row i of ``dirty`` placed right after row ``source_rows[i]``."""
    positions = _positions_after(len(frame), source_rows)
    return pd.concat([frame, dirty], ignore_index=True).take(positions).reset_index(drop=True)


def dirty_orders(rng: np.random.Generator, orders: pd.DataFrame, n_dirty: int) -> tuple[pd.DataFrame, list[Planted]]:
    """Copies of real lines with one defect each: unparseable ts, quantity 0, unknown item.

    ``ts`` becomes ISO 8601 text for every row, since a typed column cannot hold the bad values.
    """
    counts = allocate(n_dirty, np.ones(3), 1)
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


def dirty_events(rng: np.random.Generator, events: Events, n_dirty: int) -> tuple[Events, list[Planted]]:
    """Copies of real events with an unknown event type, or an item event without its item.

    Planted on the arrays, before the frame exists: copying millions of string cells costs
    more than the rest of the event generation.
    """
    counts = allocate(n_dirty, np.ones(2), 1)
    with_item = np.flatnonzero(events.item >= 0)
    source = np.concatenate((rng.choice(len(events.code), counts[0], replace=counts[0] > len(events.code)),
                             rng.choice(with_item, counts[1], replace=counts[1] > len(with_item))))
    code = events.code[source].copy()
    code[: counts[0]] = rng.integers(len(EVENT_TYPES), len(EVENT_VOCABULARY), counts[0])
    item = events.item[source].copy()
    item[counts[0]:] = -1
    positions = _positions_after(len(events.code), source)
    dirty = Events(*(np.concatenate((clean, copy))[positions] for clean, copy in (
        (events.session, events.session[source]), (events.code, code), (events.item, item),
        (events.ts_us, events.ts_us[source]))))
    reasons = [("events", REASON_BAD_EVENT_TYPE, counts[0]), ("events", REASON_MISSING_ITEM, counts[1])]
    return dirty, reasons


def dirty_items(rng: np.random.Generator, items: pd.DataFrame, n_each: int) -> tuple[pd.DataFrame, list[Planted]]:
    """New items (sold nowhere) with a negative price, and re-listed ids at a new price, appended
    at the end so the loader keeps the first listing."""
    negative = items.iloc[rng.choice(len(items), n_each, replace=False)].reset_index(drop=True)
    negative["item_id"] = "n" + negative["item_id"]
    negative["price"] = -negative["price"]
    duplicate = items.iloc[rng.choice(len(items), n_each, replace=False)].reset_index(drop=True)
    duplicate["price"] = np.round(duplicate["price"] * 1.1, 2)
    reasons = [("items", REASON_NEGATIVE_PRICE, n_each), ("items", REASON_DUPLICATE_ITEM, n_each)]
    return pd.concat([items, negative, duplicate], ignore_index=True), reasons


def dirty_count(share: float, rows: int, defects: int) -> int:
    """``share`` of ``rows``, at least one per defect; none when no dirt is asked for or nothing can be copied."""
    return max(defects, round(share * rows)) if share > 0 and rows > 0 else 0
