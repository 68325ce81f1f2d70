"""One browsing event as it arrives live (``POST /events``), before it joins the ``events`` table.

A :class:`LiveEvent` carries exactly the columns of the data contract's ``events`` table
(:data:`features.schema.TABLES`) and checks the row rules that do not need the catalogue
(event type, item present for an item event, a time zone), so what the session store
and the event log hold is already a valid contract row. ``to_dict``/``from_dict`` give the
JSON form both stores write, and the mapping :class:`features.sessions.LiveSessionFeatures`
reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from features.schema import EVENT_TYPES, FUTURE_TOLERANCE, ITEM_EVENT_TYPES, TABLES

EVENT_COLUMNS: tuple[str, ...] = TABLES["events"].column_names
"""The contract's ``events`` columns, in its order (the event log writes exactly these)."""


@dataclass(frozen=True, slots=True)
class LiveEvent:
    """A contract ``events`` row. ``ts`` is always timezone-aware UTC (a naive value is taken as UTC)."""

    session_id: str
    event_type: str
    ts: datetime
    customer_id: str | None = None
    item_id: str | None = None

    def __post_init__(self) -> None:
        # The same normalisation the schema applies at training time: ids stripped, empty
        # optional ids absent, event types lower case, timestamps UTC.
        if not isinstance(self.session_id, str) or not self.session_id.strip():
            raise ValueError("session_id is empty")
        object.__setattr__(self, "session_id", self.session_id.strip())
        kind = self.event_type.strip().lower() if isinstance(self.event_type, str) else self.event_type
        if kind not in EVENT_TYPES:
            raise ValueError(f"event_type {self.event_type!r} is not one of {', '.join(EVENT_TYPES)}")
        object.__setattr__(self, "event_type", kind)
        if not isinstance(self.ts, datetime):
            raise ValueError(f"ts is not a datetime: {self.ts!r}")
        ts = self.ts.replace(tzinfo=UTC) if self.ts.tzinfo is None else self.ts.astimezone(UTC)
        object.__setattr__(self, "ts", ts)
        for name in ("customer_id", "item_id"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{name} is not a string: {value!r}")
            object.__setattr__(self, name, (value.strip() or None) if value is not None else None)
        if self.item_id is None and self.event_type in ITEM_EVENT_TYPES:
            raise ValueError(f"item_id is empty for an item event ({self.event_type})")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: ``ts`` as ISO 8601 UTC with microseconds and ``Z``."""
        return {
            "session_id": self.session_id,
            "event_type": self.event_type,
            "ts": format_ts(self.ts),
            "customer_id": self.customer_id,
            "item_id": self.item_id,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, now: datetime | None = None) -> LiveEvent:
        """From a mapping as :meth:`to_dict` writes it (or a request body); a missing ``ts`` is ``now``.

        ``ts`` may be a datetime or ISO 8601 text; raises ``ValueError`` naming the bad field.
        """
        ts = data.get("ts")
        if ts is None or ts == "":
            ts = now if now is not None else datetime.now(UTC)
        elif isinstance(ts, str):
            try:
                ts = datetime.fromisoformat(ts)
            except ValueError:
                raise ValueError(f"ts is not an ISO 8601 timestamp: {ts!r}") from None
        return cls(session_id=data.get("session_id"), event_type=data.get("event_type"), ts=ts,  # type: ignore[arg-type]
                   customer_id=data.get("customer_id"), item_id=data.get("item_id"))


def at_the_door(ts: datetime | None, received: datetime) -> tuple[datetime, bool]:
    """The time the service keeps for an event it received at ``received``, and whether it was clamped.

    No time means "now". A time later than ``received`` plus the contract's
    :data:`~features.schema.FUTURE_TOLERANCE` is a client clock or parse error (2099, 9999):
    the loader would quarantine such a row at the next training and the live session
    propensity would read it as the latest event, so it is kept at the receive time instead
    and counted, rather than refused: the event itself (what was viewed, carted) is real.
    """
    if ts is None:
        return received, False
    if ts > received + FUTURE_TOLERANCE.to_pytimedelta():
        return received, True
    return ts, False


def format_ts(ts: datetime) -> str:
    """``2025-03-01T10:02:11.000000Z``: fixed width, sorts as text, parsed by the schema and by ``fromisoformat``."""
    # isoformat, not strftime: it pads years below 1000 to four digits on every platform.
    return ts.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
