"""Session features for live conversion propensity, from the first n events of a session.

A session's label is whether it holds a ``purchase`` event; its features only ever see the
events *before* the first purchase, so the model never learns "a purchase event means a
purchase". Training scores random prefixes (:func:`random_prefixes`) because the service
scores sessions in flight, after 1, 2, ... events. Two implementations compute the same
features: :meth:`SessionLog.features` (vectorised, for training and batch) and
:class:`LiveSessionFeatures` (plain Python over one session's events, for sub-millisecond
live calls); a test holds them equal.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.ids import positions
from features.schema import EVENT_TYPES

COUNTED = ("view", "cart", "remove_from_cart", "wishlist", "search")
FEATURES = (
    "events", *(f"n_{kind}" for kind in COUNTED), "distinct_items", "distinct_categories", "duration_s",
    "cart_value", "net_cart_items", "identified", "returning", "past_sessions", "past_conversion",
    "hour_sin", "hour_cos", "weekend",
)
VIEW, CART, REMOVE, PURCHASE = (EVENT_TYPES.index(kind) for kind in ("view", "cart", "remove_from_cart", "purchase"))


def ordered(events: pd.DataFrame, items: pd.DataFrame | None = None) -> SessionLog:
    """The events sorted by session then time, as a :class:`SessionLog`; item prices and
    categories from ``items`` (without them, only the session table is meaningful). Events
    without a session or a time are left out: neither can be placed in a session."""
    codes, session_ids = pd.factorize(events["session_id"], sort=True)
    stamps = events["ts"].array
    order = np.lexsort((stamps.asi8, codes))
    order = order[(codes[order] >= 0) & ~stamps.isna()[order]]
    session = codes[order].astype(np.int32)
    starts = run_starts(session)
    sizes = _sizes(starts, len(order))
    kind = pd.Categorical(events["event_type"], categories=EVENT_TYPES).codes[order].astype(np.int8)
    purchases = np.cumsum(kind == PURCHASE)
    before_session = np.repeat(purchases[starts] - (kind[starts] == PURCHASE), sizes)
    customer_codes, customer_ids = pd.factorize(events["customer_id"])
    item, prices, categories = _item_codes(events["item_id"], items)
    return SessionLog(
        session_ids=pd.Index(session_ids, name="session_id"), session=session, ts=stamps.take(order),
        kind=kind, customer=customer_codes[order].astype(np.int32), customer_ids=pd.Index(customer_ids),
        item=item[order].astype(np.int32), price=prices, category=categories,
        position=(np.arange(len(order)) - np.repeat(starts, sizes)).astype(np.int32),
        eligible=(purchases - before_session) == 0)


def _item_codes(item_ids: pd.Series, items: pd.DataFrame | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per event, its item's row in ``items`` (an item they do not list gets a code past them,
    no item -1); per code, its price (0 when not listed) and a category code (NaN when not
    listed), each with a last entry for -1."""
    if items is None:
        return np.full(len(item_ids), -1, dtype=np.int64), np.zeros(1), np.full(1, np.nan)
    item = positions(pd.Index(items["item_id"]), item_ids).astype(np.int64)
    unlisted = (item < 0) & item_ids.notna().to_numpy()
    extra, _ = pd.factorize(item_ids[unlisted])
    item[unlisted] = len(items) + extra
    padding = (int(extra.max()) + 1 if len(extra) else 0) + 1
    prices = np.concatenate([items["price"].to_numpy(dtype=np.float64), np.zeros(padding)])
    categories = np.concatenate([pd.factorize(items["category"])[0].astype(np.float64), np.full(padding, np.nan)])
    return item, prices, categories


def run_starts(codes: np.ndarray) -> np.ndarray:
    """Where each run of equal values starts in sorted ``codes``."""
    return np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]]) if len(codes) else np.zeros(0, dtype=np.int64)


def _sizes(starts: np.ndarray, length: int) -> np.ndarray:
    """How long each run that starts at ``starts`` is, in an array of ``length``."""
    return np.diff(np.append(starts, length)) if len(starts) else np.zeros(0, dtype=np.int64)


def _ends(starts: np.ndarray, length: int) -> np.ndarray:
    """Where each run that starts at ``starts`` ends (exclusive), in an array of ``length``."""
    return starts + _sizes(starts, length)


def distinct(group: np.ndarray, values: np.ndarray, groups: int, runs: bool = False) -> np.ndarray:
    """Per group (0..groups-1), how many distinct non-negative ``values`` it holds.

    Pairs that repeat next to each other (a session's events lie together) are dropped before
    the sort. ``runs``: equal values lie next to each other (sessions in a log), so a group can
    repeat a value only inside that value's run, and only the runs that hold more than one group
    need sorting at all."""
    if not len(values):
        return np.zeros(groups, dtype=np.float64)
    group, values = group.astype(np.int64), values.astype(np.int64)
    fresh = np.r_[True, (group[1:] != group[:-1]) | (values[1:] != values[:-1])]
    group, values = group[fresh], values[fresh]
    if runs:
        crowded = np.r_[False, values[1:] == values[:-1]]
        crowded |= np.r_[crowded[1:], False]
    else:
        crowded = np.ones(len(values), dtype=bool)
    width = int(values.max()) + 1
    firsts = np.concatenate([group[~crowded], np.unique(group[crowded] * width + values[crowded]) // width])
    return np.bincount(firsts, minlength=groups).astype(np.float64)


@dataclass(frozen=True, eq=False)
class SessionLog:
    """Events sorted by session then time, held as integer codes, with their session table.

    Training reads the sessions many times (fitting, calibration and test rows, the full-prefix
    check, the serving history): the log sorts them once (:func:`ordered`). It keeps each event
    as codes into its session, event type, customer and item, about 26 bytes an event where the
    sorted frame of strings took about 75, and groups them by code, where grouping Arrow strings
    factorizes them again for every feature.
    """

    session_ids: pd.Index
    """Each session code's id, sorted, so that code order is id order."""
    session: np.ndarray
    """Per event (in session, then time order): its session's code."""
    ts: pd.api.extensions.ExtensionArray
    kind: np.ndarray
    """The event type's place in :data:`EVENT_TYPES`; -1 for any other."""
    customer: np.ndarray
    """The customer's code into ``customer_ids``; -1 for an anonymous event."""
    customer_ids: pd.Index
    item: np.ndarray
    """The item's row in the items given, past them for an item they do not list; -1 for none."""
    price: np.ndarray
    """Per item code: the item's price, 0 for an item not listed; its last entry is for code -1."""
    category: np.ndarray
    """Per item code: a code of its category, NaN for an item not listed; its last entry is for -1."""
    position: np.ndarray
    """Per event: its place in its session, from 0."""
    eligible: np.ndarray
    """Per event: before the session's first purchase, the only events a feature may read."""

    @functools.cached_property
    def table(self) -> pd.DataFrame:
        """One row per session: customer (its first identified event's), start, end, converted,
        and how many events are eligible."""
        starts = run_starts(self.session)
        identified = np.flatnonzero(self.customer >= 0)
        first = identified[run_starts(self.session[identified])]
        customer = np.full(len(self.session_ids), -1, dtype=np.int64)
        customer[self.session[first]] = self.customer[first]
        empty = not len(starts)
        return pd.DataFrame({
            "customer_id": self.customer_ids.array.take(customer, allow_fill=True),
            "start": self.ts.take(starts),
            "end": self.ts.take(_ends(starts, len(self.session)) - 1),
            "converted": np.zeros(0, dtype=np.int64) if empty else
            np.logical_or.reduceat(self.kind == PURCHASE, starts).astype(np.int64),
            "eligible_events": np.zeros(0, dtype=np.int64) if empty else
            np.add.reduceat(self.eligible.astype(np.int64), starts),
        }, index=self.session_ids)

    @functools.cached_property
    def past(self) -> pd.DataFrame:
        """:func:`past_as_of_start` of :attr:`table`."""
        return past_as_of_start(self.table)

    def features(self, session_ids: pd.Index | None, past: pd.DataFrame,
                 prefix: pd.Series | None = None) -> pd.DataFrame:
        """Feature rows (columns :data:`FEATURES`) of these sessions (every session for ``None``)
        from the first ``prefix`` eligible events of each (every eligible event without it, a
        live session as it stands). ``past`` gives ``past_sessions`` and ``past_converted`` per
        session id. A session with no eligible event gets no row: before the first event there is
        nothing to score."""
        keep = self.eligible
        if session_ids is not None:
            keep = keep & self._per_session(session_ids, np.ones(len(session_ids), dtype=bool), False)
        if prefix is not None:
            keep = keep & (self.position < self._per_session(prefix.index, prefix.to_numpy(dtype=np.float64), 0.0))
        return self._features(np.flatnonzero(keep), past)

    def _per_session(self, session_ids: pd.Index, values: np.ndarray, absent: float | bool) -> np.ndarray:
        """Per event, the value given for its session (``absent`` for a session not given)."""
        found = positions(self.session_ids, pd.Series(session_ids, dtype=self.session_ids.dtype))
        per_session = np.full(len(self.session_ids), absent, dtype=values.dtype)
        per_session[found[found >= 0]] = values[found >= 0]
        return per_session[self.session]

    def _features(self, rows: np.ndarray, past: pd.DataFrame) -> pd.DataFrame:
        """The features of the events at ``rows`` (in log order), grouped by session code."""
        session, kind, item = self.session[rows], self.kind[rows], self.item[rows]
        starts = run_starts(session)
        n, sizes = len(starts), _sizes(starts, len(rows))
        group = np.repeat(np.arange(n), sizes)
        start = pd.Series(self.ts.take(rows[starts]))
        end = pd.Series(self.ts.take(rows[_ends(starts, len(rows)) - 1]))
        sign = (kind == CART).astype(np.float64) - (kind == REMOVE).astype(np.float64)
        out = pd.DataFrame({"events": sizes.astype(np.float64)},
                           index=self.session_ids[session[starts]])
        for counted in COUNTED:
            out[f"n_{counted}"] = np.bincount(group[kind == EVENT_TYPES.index(counted)], minlength=n).astype(np.float64)
        listed = item >= 0
        out["distinct_items"] = distinct(group[listed], item[listed], n)
        category = self.category[item]
        known = listed & np.isfinite(category)
        out["distinct_categories"] = distinct(group[known], category[known].astype(np.int64) + 1, n)
        out["duration_s"] = (end - start).dt.total_seconds().to_numpy()
        # pandas' group sums (compensated, in row order): the figures of a sum over the strings' groups
        out["cart_value"] = pd.Series(sign * self.price[item]).groupby(group).sum().clip(lower=0.0).to_numpy()
        out["net_cart_items"] = pd.Series(sign).groupby(group).sum().clip(lower=0.0).to_numpy()
        out["identified"] = np.zeros(0) if not n else \
            np.logical_or.reduceat(self.customer[rows] >= 0, starts).astype(np.float64)
        aligned = past.reindex(out.index).fillna(0.0)
        out["past_sessions"] = aligned["past_sessions"]
        out["returning"] = (aligned["past_sessions"] > 0).astype(np.float64)
        out["past_conversion"] = (aligned["past_converted"] + 0.5) / (aligned["past_sessions"] + 1.0)
        hour = (start.dt.hour + start.dt.minute / 60.0).to_numpy()
        out["hour_sin"], out["hour_cos"] = np.sin(2 * np.pi * hour / 24), np.cos(2 * np.pi * hour / 24)
        out["weekend"] = (start.dt.day_of_week >= 5).to_numpy(dtype=np.float64)
        return out[list(FEATURES)].fillna(0.0).astype(np.float64)


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


@dataclass
class LiveSessionFeatures:
    """The features of :meth:`SessionLog.features` for one session, in plain Python.

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
