"""Session features for live conversion propensity, from the first n events of a session.

A session's label is whether it holds a ``purchase`` event; its features only ever see the
events *before* the first purchase, so the model never learns "a purchase event means a
purchase". Training scores random prefixes (:func:`random_prefixes`) because the service
scores sessions in flight, after 1, 2, ... events. Two implementations compute the same
features: :func:`session_features` (vectorised, for training and batch) and
:class:`LiveSessionFeatures` (plain Python over one session's events, for sub-millisecond
live calls); a test holds them equal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.ids import members, positions

COUNTED = ("view", "cart", "remove_from_cart", "wishlist", "search")
FEATURES = (
    "events", *(f"n_{kind}" for kind in COUNTED), "distinct_items", "distinct_categories", "duration_s",
    "cart_value", "net_cart_items", "identified", "returning", "past_sessions", "past_conversion",
    "hour_sin", "hour_cos", "weekend",
)


def ordered(events: pd.DataFrame) -> pd.DataFrame:
    """Events sorted by session then time, with ``position`` (0-based) and ``eligible``.

    ``eligible`` marks events before the session's first purchase: the only ones a feature
    may use.
    """
    frame = events.sort_values(["session_id", "ts"], kind="stable").reset_index(drop=True)
    frame["position"] = frame.groupby("session_id", sort=False).cumcount()
    is_purchase = (frame["event_type"] == "purchase").to_numpy()
    seen_purchase = pd.Series(is_purchase).groupby(frame["session_id"].to_numpy(), sort=False).cumsum()
    frame["eligible"] = seen_purchase.to_numpy() == 0
    return frame


@dataclass(frozen=True)
class SessionLog:
    """A shop's events in session order (:func:`ordered`) and its session table, sorted once.

    Training reads the sessions many times (fitting, calibration and test rows, the
    full-prefix check, the serving history); sorting millions of events by session and time
    was most of each read, and each sort held another copy of the events. Each session's past
    (the customer's earlier sessions) is found once too.
    """

    events: pd.DataFrame
    table: pd.DataFrame
    past: pd.DataFrame
    """:func:`past_as_of_start` of ``table``."""

    @classmethod
    def of(cls, events: pd.DataFrame) -> SessionLog:
        frame = ordered(events)
        table = _table(frame)
        return cls(frame, table, past_as_of_start(table))

    def features(self, session_ids: pd.Index, items: pd.DataFrame, past: pd.DataFrame,
                 prefix: pd.Series | None = None) -> pd.DataFrame:
        """:func:`session_features` of these sessions (whole sessions, so the order holds)."""
        return _features(self.events[members(self.events["session_id"], session_ids)], items, past, prefix)


def sessions(events: pd.DataFrame) -> pd.DataFrame:
    """One row per session: customer, start, end, converted, and how many events are eligible."""
    return _table(ordered(events))


def _table(frame: pd.DataFrame) -> pd.DataFrame:
    grouped = frame.groupby("session_id", sort=True)
    return pd.DataFrame({
        "customer_id": grouped["customer_id"].first(),
        "start": grouped["ts"].min(),
        "end": grouped["ts"].max(),
        "converted": (frame["event_type"] == "purchase").groupby(frame["session_id"]).any().astype(np.int64),
        "eligible_events": grouped["eligible"].sum().astype(np.int64),
    })


def random_prefixes(table: pd.DataFrame, rng: np.random.Generator) -> pd.Series:
    """A uniform prefix length in 1..eligible_events per session (sessions with none are dropped)."""
    scorable = table[table["eligible_events"] > 0]
    lengths = rng.integers(1, scorable["eligible_events"].to_numpy() + 1)
    return pd.Series(lengths, index=scorable.index, name="prefix")


def past_as_of_start(table: pd.DataFrame) -> pd.DataFrame:
    """Per session: the customer's sessions (and conversions) that *ended* before this one started."""
    known = table[table["customer_id"].notna()]
    ends = known.sort_values("end")[["customer_id", "end", "converted"]].copy()
    ends["past_sessions"] = ends.groupby("customer_id").cumcount() + 1
    ends["past_converted"] = ends.groupby("customer_id")["converted"].cumsum()
    starts = known.reset_index().sort_values("start")
    merged = pd.merge_asof(starts, ends[["customer_id", "end", "past_sessions", "past_converted"]],
                           left_on="start", right_on="end", by="customer_id", allow_exact_matches=False)
    past = merged.set_index("session_id")[["past_sessions", "past_converted"]].reindex(table.index)
    return past.fillna(0.0).astype(np.float64)


def customer_history(table: pd.DataFrame) -> pd.DataFrame:
    """Per identified customer: sessions and converted sessions so far (the serving-time history)."""
    known = table[table["customer_id"].notna()]
    grouped = known.groupby("customer_id", sort=True)["converted"]
    return pd.DataFrame({"past_sessions": grouped.size().astype(np.float64),
                         "past_converted": grouped.sum().astype(np.float64)})


def past_from_history(table: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """Per session: the stored history of its customer (zeros for anonymous or new customers)."""
    return history.reindex(table["customer_id"].astype(object).to_numpy()).set_axis(table.index).fillna(0.0)


def session_features(events: pd.DataFrame, items: pd.DataFrame, past: pd.DataFrame,
                     prefix: pd.Series | None = None) -> pd.DataFrame:
    """Feature rows (columns :data:`FEATURES`) per session from its first ``prefix`` eligible events.

    ``prefix=None`` uses every eligible event (a live session as it stands). ``past`` gives
    ``past_sessions`` and ``past_converted`` per session id. Sessions with no eligible event
    get no row: before the first event there is nothing to score.
    """
    return _features(ordered(events), items, past, prefix)


def _features(frame: pd.DataFrame, items: pd.DataFrame, past: pd.DataFrame, prefix: pd.Series | None) -> pd.DataFrame:
    """:func:`session_features` of events already in :func:`ordered` form."""
    keep = frame["eligible"].to_numpy()
    # By position, not Series.map (which goes value by value on Arrow strings); each array ends
    # in the value for an absent id, which position -1 picks.
    if prefix is not None:
        limits = np.append(prefix.to_numpy(dtype=np.float64), 0.0)
        keep = keep & (frame["position"].to_numpy() < limits[positions(prefix.index, frame["session_id"])])
    frame = frame[keep]
    item = positions(pd.Index(items["item_id"]), frame["item_id"])
    prices = np.append(items["price"].to_numpy(dtype=np.float64), 0.0)
    categories = np.append(pd.factorize(items["category"])[0].astype(np.float64), np.nan)
    frame = frame.assign(price=prices[item], category=categories[item])
    grouped = frame.groupby("session_id", sort=True)
    sizes = grouped.size()
    # not pd.crosstab: on Arrow strings it aggregates session by session in Python
    counts = frame.groupby(["session_id", "event_type"]).size().unstack(fill_value=0) \
        .reindex(index=sizes.index, columns=list(COUNTED), fill_value=0)
    start = grouped["ts"].min()
    sign = pd.Series(np.where(frame["event_type"] == "cart", 1.0, 0.0)
                     - np.where(frame["event_type"] == "remove_from_cart", 1.0, 0.0), index=frame.index)
    out = pd.DataFrame({"events": sizes.astype(np.float64)})
    for kind in COUNTED:
        out[f"n_{kind}"] = counts[kind].astype(np.float64)
    viewed = frame[frame["item_id"].notna()].groupby("session_id", sort=True)
    out["distinct_items"] = viewed["item_id"].nunique()
    out["distinct_categories"] = viewed["category"].nunique()
    out["duration_s"] = (grouped["ts"].max() - start).dt.total_seconds()
    out["cart_value"] = (sign * frame["price"]).groupby(frame["session_id"]).sum().clip(lower=0.0)
    out["net_cart_items"] = sign.groupby(frame["session_id"]).sum().clip(lower=0.0)
    out["identified"] = grouped["customer_id"].first().notna().astype(np.float64)
    aligned = past.reindex(out.index).fillna(0.0)
    out["past_sessions"] = aligned["past_sessions"]
    out["returning"] = (aligned["past_sessions"] > 0).astype(np.float64)
    out["past_conversion"] = (aligned["past_converted"] + 0.5) / (aligned["past_sessions"] + 1.0)
    hour = start.dt.hour + start.dt.minute / 60.0
    out["hour_sin"], out["hour_cos"] = np.sin(2 * np.pi * hour / 24), np.cos(2 * np.pi * hour / 24)
    out["weekend"] = (start.dt.day_of_week >= 5).astype(np.float64)
    return out[list(FEATURES)].fillna(0.0).astype(np.float64)


@dataclass
class LiveSessionFeatures:
    """The features of :func:`session_features` for one session, in plain Python.

    A pandas group-by costs milliseconds even for five events; a live call must cost
    microseconds, so this walks the events once with dict look-ups.
    """

    prices: Mapping[str, float]
    categories: Mapping[str, str]
    history: Mapping[str, tuple[float, float]]

    @classmethod
    def build(cls, items: pd.DataFrame, history: pd.DataFrame) -> LiveSessionFeatures:
        return cls(dict(zip(items["item_id"], items["price"].astype(float), strict=True)),
                   dict(zip(items["item_id"], items["category"], strict=True)),
                   {str(c): (float(s), float(v)) for c, s, v in
                    zip(history.index, history["past_sessions"], history["past_converted"], strict=True)})

    def vector(self, events: Sequence[Mapping]) -> np.ndarray | None:
        """Features of a session's events (dicts with event_type, ts, item_id, customer_id), or None if empty.

        Events are taken in time order and stop at the first purchase, like the training path.
        """
        ordered_events = sorted(events, key=lambda e: pd.Timestamp(e["ts"]))
        counts = dict.fromkeys(COUNTED, 0)
        items: set[str] = set()
        categories: set[str] = set()
        cart_value = net_cart = 0.0
        times: list[pd.Timestamp] = []
        customer = None
        for event in ordered_events:
            kind = event["event_type"]
            if kind == "purchase":
                break
            times.append(pd.Timestamp(event["ts"]))
            if customer is None and event.get("customer_id"):
                customer = str(event["customer_id"])
            if kind in counts:
                counts[kind] += 1
            item = event.get("item_id")
            if item:
                items.add(item)
                category = self.categories.get(item)
                if category is not None:
                    categories.add(category)
                if kind in ("cart", "remove_from_cart"):
                    sign = 1.0 if kind == "cart" else -1.0
                    cart_value += sign * self.prices.get(item, 0.0)
                    net_cart += sign
        if not times:
            return None
        start = times[0] if times[0].tzinfo else times[0].tz_localize("UTC")
        start = start.tz_convert("UTC")
        past_sessions, past_converted = self.history.get(customer, (0.0, 0.0)) if customer else (0.0, 0.0)
        hour = start.hour + start.minute / 60.0
        return np.array([
            len(times), *(counts[k] for k in COUNTED), len(items), len(categories),
            (times[-1] - times[0]).total_seconds(), max(cart_value, 0.0), max(net_cart, 0.0),
            float(customer is not None), float(past_sessions > 0), past_sessions,
            (past_converted + 0.5) / (past_sessions + 1.0),
            np.sin(2 * np.pi * hour / 24), np.cos(2 * np.pi * hour / 24), float(start.day_of_week >= 5),
        ], dtype=np.float64)
