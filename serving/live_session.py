"""What a live session says to the recommender: the items a visitor touched, most recent first,
weighted as training weighs the same events (a cart add says more than a view)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features.dataset import IdMap
from serving.answers import NO_SESSION, LiveSession


@dataclass(frozen=True)
class SessionReader:
    """Turns session events (or a logged-in customer's recent items) into a :class:`LiveSession`."""

    items: IdMap
    event_weights: Mapping[str, float]
    """Training's weight per event type (purchase included); searches and removals weigh 0."""
    limit: int
    """Most recent distinct items read (``ServingConfig.session_items``)."""

    def from_events(self, events: Sequence[Mapping[str, Any]]) -> LiveSession:
        """Items of the session's events (dicts with event_type, item_id, ts), most recent
        first, each weighted by the sum of its events' training weights; items the model does
        not know are counted, searches and removals carry no weight."""
        weighted = [(str(e["item_id"]), weight)
                    for e in sorted(events, key=lambda e: utc(e["ts"]), reverse=True)
                    if e.get("item_id") and (weight := self.event_weights.get(e["event_type"], 0.0)) > 0]
        indices = self.items.to_index(np.array([item for item, _ in weighted], dtype=object), unknown="mark")
        weights: dict[int, float] = {}
        unknown: set[str] = set()
        for (item, weight), idx in zip(weighted, indices.tolist(), strict=True):  # one id look-up for all
            if idx < 0:
                unknown.add(str(item))
            elif idx in weights or len(weights) < self.limit:
                weights[idx] = weights.get(idx, 0.0) + weight
        return LiveSession(np.fromiter(weights, dtype=np.int64, count=len(weights)),
                           np.fromiter(weights.values(), dtype=np.float32, count=len(weights)), len(unknown))

    def from_recent(self, items: Sequence[str]) -> LiveSession:
        """A logged-in customer's recent items from earlier visits (most recent first, as the
        session store keeps them), each weighted as one view."""
        weight = self.event_weights.get("view", 0.0)
        idx = self.items.to_index(np.asarray(list(items), dtype=object), unknown="mark")
        known = list(dict.fromkeys(int(i) for i in idx if i >= 0))[:self.limit]
        if weight <= 0 or not known:
            return LiveSession(NO_SESSION.item_idx, NO_SESSION.weights, int((idx < 0).sum()))
        return LiveSession(np.array(known, dtype=np.int64), np.full(len(known), weight, dtype=np.float32),
                           int((idx < 0).sum()))


def utc(ts: Any) -> pd.Timestamp:
    """Event times as UTC; a time without an offset is taken as UTC, as in the data contract."""
    stamp = pd.Timestamp(ts)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def until_purchase(events: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Events in time order up to (not including) the first purchase, as the session model reads them."""
    ordered = sorted(events, key=lambda e: e["ts"])
    for position, event in enumerate(ordered):
        if event["event_type"] == "purchase":
            return ordered[:position]
    return ordered
