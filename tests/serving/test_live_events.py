"""LiveEvent: the contract's events row, normalised like the schema does, and its JSON form."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from serving.live_events import EVENT_COLUMNS, LiveEvent, at_the_door


def test_round_trip_through_json_form() -> None:
    event = LiveEvent("s1", "cart", datetime(2025, 3, 1, 10, 0, 30, 123456, tzinfo=UTC), "c1", "tv")
    data = event.to_dict()
    assert tuple(data) == EVENT_COLUMNS
    assert data["ts"] == "2025-03-01T10:00:30.123456Z"
    assert LiveEvent.from_dict(data) == event


def test_normalised_like_the_schema() -> None:
    paris = timezone(timedelta(hours=1))
    event = LiveEvent(" s1 ", " View", datetime(2025, 3, 1, 11, 0, tzinfo=paris), "", " tv ")
    assert (event.session_id, event.event_type, event.customer_id, event.item_id) == ("s1", "view", None, "tv")
    assert event.ts == datetime(2025, 3, 1, 10, 0, tzinfo=UTC) and event.ts.tzinfo is UTC
    assert LiveEvent("s", "search", datetime(2025, 3, 1, 10, 0)).ts.tzinfo is UTC  # naive is UTC


def test_missing_ts_is_now() -> None:
    now = datetime(2025, 3, 1, tzinfo=UTC)
    assert LiveEvent.from_dict({"session_id": "s", "event_type": "search"}, now=now).ts == now
    assert LiveEvent.from_dict({"session_id": "s", "event_type": "search"}).ts.tzinfo is UTC


def test_the_door_keeps_a_time_from_a_broken_clock_at_the_receive_time() -> None:
    received = datetime(2025, 3, 1, 12, tzinfo=UTC)
    assert at_the_door(None, received) == (received, False)
    assert at_the_door(datetime(2025, 3, 2, 11, tzinfo=UTC), received) == (datetime(2025, 3, 2, 11, tzinfo=UTC), False)
    assert at_the_door(datetime(2099, 1, 1, tzinfo=UTC), received) == (received, True)
    assert at_the_door(datetime(2025, 2, 1, tzinfo=UTC), received)[1] is False


@pytest.mark.parametrize(("data", "message"), [
    ({"session_id": "", "event_type": "view", "item_id": "a"}, "session_id is empty"),
    ({"session_id": "s", "event_type": "teleport", "item_id": "a"}, "event_type 'teleport' is not one of"),
    ({"session_id": "s", "event_type": "view"}, "item_id is empty for an item event"),
    ({"session_id": "s", "event_type": "view", "item_id": 7}, "item_id is not a string"),
    ({"session_id": "s", "event_type": "search", "ts": "yesterday"}, "ts is not an ISO 8601 timestamp"),
])
def test_bad_events_name_the_field(data: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LiveEvent.from_dict(data)
