"""Where live sessions are kept between requests: in the worker's memory, or in a shared Redis.

A :class:`SessionStore` answers two questions for in-session personalisation: what has this
session done so far (:meth:`~SessionStore.session_events`), and which items has this
customer looked at lately, across sessions (:meth:`~SessionStore.recent_items`). It is a
cache, not a record: entries expire ``ttl_seconds`` after their last event and old events
fall off the end; the durable record is :mod:`serving.event_log`.

- :class:`MemorySessionStore`: one per worker process, thread-safe, bounded in memory
  (least recently touched sessions and customers are evicted beyond ``max_sessions``).
  With several workers a session's events are only seen by the worker that received them,
  so use it for one worker or sticky routing.
- :class:`RedisSessionStore`: shared by every worker and replica; one pipelined round trip
  per ``add`` batch; keys ``<prefix>session:<id>`` and ``<prefix>customer:<id>`` (prefix
  ``shoprec:``) so it can share a Redis with other applications.

:func:`open_session_store` picks one from the environment (see :data:`ENV_DEFAULTS`).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Protocol, cast

from features.errors import ShoprecError, UserError, first_line
from features.sources import safe_url
from serving.live_events import LiveEvent, format_ts
from serving.settings import positive_number

REDIS_URL_ENV = "SHOPREC_REDIS_URL"
TTL_ENV = "SHOPREC_SESSION_TTL_SECONDS"
CUSTOMER_TTL_ENV = "SHOPREC_CUSTOMER_TTL_SECONDS"
MAX_EVENTS_ENV = "SHOPREC_SESSION_MAX_EVENTS"
MAX_SESSIONS_ENV = "SHOPREC_SESSION_MAX_SESSIONS"
ENV_DEFAULTS: dict[str, float] = {
    TTL_ENV: 1800,               # a session is over after 30 minutes without an event
    CUSTOMER_TTL_ENV: 7 * 86400,  # a customer's recently viewed items are kept a week
    MAX_EVENTS_ENV: 200,         # most recent events kept per session (and raw items per customer)
    MAX_SESSIONS_ENV: 100_000,   # memory store only: sessions (and customers) kept per worker
}
MAX_RECENT_ITEMS = 50
"""Unique items :meth:`SessionStore.recent_items` returns at most."""
RECENT_ITEM_TYPES: frozenset[str] = frozenset({"view", "cart", "wishlist"})
"""Event types that make an item "recently viewed/carted" for its customer."""
DEFAULT_PREFIX = "shoprec:"


class SessionStoreError(ShoprecError, RuntimeError):
    """The store cannot be reached or used; the message is one line."""


class SessionStore(Protocol):
    """Recent events per session and recently viewed items per customer."""

    description: str
    max_events: int
    in_process: bool
    """Reads are look-ups in this process that never wait on a network (the service may run them
    on its event loop); False for a store across a network (they run in a worker thread)."""

    def add(self, events: Sequence[LiveEvent]) -> None:
        """Record a batch (any sessions, any customers) and restart the touched entries' TTL."""

    def session_events(self, session_id: str) -> list[LiveEvent]:
        """The session's most recent ``max_events`` events (by arrival), oldest first by ``ts``; [] if unknown/expired."""

    def recent_items(self, customer_id: str, limit: int | None = None) -> list[str]:
        """The customer's recently viewed/carted/wishlisted items, most recent first, unique, at most ``limit``."""

    def ping(self) -> None:
        """Raise :class:`SessionStoreError` if the store cannot answer."""

    def close(self) -> None:
        """Release connections (the memory store forgets everything)."""


def _by_ts(events: Iterable[LiveEvent]) -> list[LiveEvent]:
    return sorted(events, key=lambda e: e.ts)  # stable: equal times keep arrival order


def _recent_by_customer(events: Sequence[LiveEvent]) -> dict[str, list[str]]:
    """Per customer, the batch's recent-item events' items, oldest first (within a batch by ``ts``)."""
    out: dict[str, list[str]] = {}
    for event in _by_ts(events):
        if event.customer_id is not None and event.item_id is not None and event.event_type in RECENT_ITEM_TYPES:
            out.setdefault(event.customer_id, []).append(event.item_id)
    return out


def _unique(items: Iterable[str], limit: int) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        if item not in seen:
            seen[item] = None
            if len(seen) >= limit:
                break
    return list(seen)


class MemorySessionStore:
    """In-process store: thread-safe, TTL-expiring, bounded to ``max_sessions`` sessions and customers.

    Entries are kept in last-touched order, so with one TTL per kind the expired ones are
    always at the front and are swept on every ``add`` (amortised O(1)); a read of an
    expired entry also drops it. Reads do not extend the TTL (as in Redis, where only
    ``add`` sets EXPIRE). Memory: at most ``max_sessions * max_events`` events plus
    ``max_sessions * MAX_RECENT_ITEMS`` item ids.
    """

    def __init__(self, ttl_seconds: float = ENV_DEFAULTS[TTL_ENV], max_sessions: int = int(ENV_DEFAULTS[MAX_SESSIONS_ENV]),
                 max_events: int = int(ENV_DEFAULTS[MAX_EVENTS_ENV]), *, customer_ttl_seconds: float | None = None,
                 max_items: int = MAX_RECENT_ITEMS, clock: Callable[[], float] = time.monotonic) -> None:
        _check_positive(ttl_seconds=ttl_seconds, max_sessions=max_sessions, max_events=max_events, max_items=max_items)
        self.ttl_seconds = float(ttl_seconds)
        self.customer_ttl_seconds = float(customer_ttl_seconds if customer_ttl_seconds is not None else ttl_seconds)
        self.max_sessions = int(max_sessions)
        self.max_events = int(max_events)
        self.max_items = int(max_items)
        self._clock = clock
        self._lock = threading.Lock()
        # key -> (expires_at, payload); dict order is last-touched order.
        self._sessions: OrderedDict[str, tuple[float, deque[LiveEvent]]] = OrderedDict()
        self._customers: OrderedDict[str, tuple[float, OrderedDict[str, None]]] = OrderedDict()
        self.in_process = True
        self.description = (f"memory (ttl {self.ttl_seconds:g} s, {self.max_events} events per session, "
                            f"{self.max_sessions} sessions per worker)")

    def add(self, events: Sequence[LiveEvent]) -> None:
        if not events:
            return
        by_session: dict[str, list[LiveEvent]] = {}
        for event in _by_ts(events):
            by_session.setdefault(event.session_id, []).append(event)
        by_customer = _recent_by_customer(events)
        with self._lock:
            now = self._clock()
            for session_id, new in by_session.items():
                entry = self._sessions.pop(session_id, None)
                kept = entry[1] if entry is not None and entry[0] > now else deque(maxlen=self.max_events)
                kept.extend(new)
                self._sessions[session_id] = (now + self.ttl_seconds, kept)
            for customer_id, items in by_customer.items():
                known = self._customers.pop(customer_id, None)
                recent = known[1] if known is not None and known[0] > now else OrderedDict()
                for item in items:
                    recent.pop(item, None)
                    recent[item] = None  # most recent at the end
                while len(recent) > self.max_items:
                    recent.popitem(last=False)
                self._customers[customer_id] = (now + self.customer_ttl_seconds, recent)
            for table in (self._sessions, self._customers):
                _sweep(table, now, self.max_sessions)

    def session_events(self, session_id: str) -> list[LiveEvent]:
        with self._lock:
            entry = self._get(self._sessions, session_id)
            events = list(entry) if entry is not None else []
        return _by_ts(events)

    def recent_items(self, customer_id: str, limit: int | None = None) -> list[str]:
        limit = self.max_items if limit is None else max(0, min(limit, self.max_items))
        with self._lock:
            entry = self._get(self._customers, customer_id)
            items = list(reversed(entry)) if entry is not None else []
        return items[:limit]

    def _get(self, table: OrderedDict, key: str):  # noqa: ANN202 - the payload type of either table
        entry = table.get(key)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del table[key]
            return None
        return entry[1]

    def __len__(self) -> int:
        """Sessions held (expired ones not yet swept included)."""
        return len(self._sessions)

    def ping(self) -> None:
        return None

    def close(self) -> None:
        with self._lock:
            self._sessions.clear()
            self._customers.clear()


def _sweep(table: OrderedDict, now: float, max_entries: int) -> None:
    """Drop expired entries (all at the front) and the least recently touched beyond the bound."""
    while table:
        expires_at = next(iter(table.values()))[0]
        if expires_at > now and len(table) <= max_entries:
            break
        table.popitem(last=False)


class RedisSessionStore:
    """A store in Redis, shared by workers and replicas.

    A session is a list of compact JSON events (RPUSH, LTRIM to the last ``max_events``,
    PEXPIRE ``ttl``); a customer is a list of item ids, newest at the head (LPUSH, LTRIM to
    ``max_events``, PEXPIRE ``customer_ttl``), de-duplicated when read. Each ``add`` batch
    is one pipeline (``transaction=False``): one round trip whatever the batch holds.
    """

    def __init__(self, url: str, ttl_seconds: float = ENV_DEFAULTS[TTL_ENV],
                 max_events: int = int(ENV_DEFAULTS[MAX_EVENTS_ENV]), *, customer_ttl_seconds: float | None = None,
                 max_items: int = MAX_RECENT_ITEMS, prefix: str = DEFAULT_PREFIX, timeout_seconds: float = 2.0) -> None:
        import redis

        _check_positive(ttl_seconds=ttl_seconds, max_events=max_events, max_items=max_items)
        self.ttl_ms = max(1, round(float(ttl_seconds) * 1000))
        customer_ttl = customer_ttl_seconds if customer_ttl_seconds is not None else ttl_seconds
        self.customer_ttl_ms = max(1, round(float(customer_ttl) * 1000))
        self.max_events = int(max_events)
        self.max_items = int(max_items)
        self.prefix = prefix
        self.url = safe_url(url)
        self.in_process = False
        self.description = f"redis {self.url} (ttl {ttl_seconds:g} s, {self.max_events} events per session)"
        self._errors = (redis.RedisError, OSError)
        try:
            self._client = redis.Redis.from_url(url, socket_timeout=timeout_seconds,
                                                socket_connect_timeout=timeout_seconds, health_check_interval=30)
        except (ValueError, *self._errors) as error:
            raise SessionStoreError(f"{REDIS_URL_ENV}={self.url}: not a usable Redis URL: {first_line(error)}") from None
        self.ping()

    def session_key(self, session_id: str) -> str:
        return f"{self.prefix}session:{session_id}"

    def customer_key(self, customer_id: str) -> str:
        return f"{self.prefix}customer:{customer_id}"

    def add(self, events: Sequence[LiveEvent]) -> None:
        if not events:
            return
        by_session: dict[str, list[str]] = {}
        for event in _by_ts(events):
            by_session.setdefault(event.session_id, []).append(_encode(event))
        pipe = self._client.pipeline(transaction=False)
        for session_id, encoded in by_session.items():
            key = self.session_key(session_id)
            pipe.rpush(key, *encoded)
            pipe.ltrim(key, -self.max_events, -1)
            pipe.pexpire(key, self.ttl_ms)
        for customer_id, items in _recent_by_customer(events).items():
            key = self.customer_key(customer_id)
            pipe.lpush(key, *items)  # the last pushed (the newest) ends at the head
            pipe.ltrim(key, 0, self.max_events - 1)
            pipe.pexpire(key, self.customer_ttl_ms)
        try:
            pipe.execute()
        except self._errors as error:
            raise SessionStoreError(f"{REDIS_URL_ENV}={self.url}: cannot write sessions: {first_line(error)}") from None

    def session_events(self, session_id: str) -> list[LiveEvent]:
        try:
            raw = cast(list[bytes], self._client.lrange(self.session_key(session_id), 0, -1))  # a sync client
        except self._errors as error:
            raise SessionStoreError(f"{REDIS_URL_ENV}={self.url}: cannot read a session: {first_line(error)}") from None
        return _by_ts(_decode(session_id, value) for value in raw)

    def recent_items(self, customer_id: str, limit: int | None = None) -> list[str]:
        limit = self.max_items if limit is None else min(limit, self.max_items)
        try:
            raw = cast(list[bytes], self._client.lrange(self.customer_key(customer_id), 0, -1))
        except self._errors as error:
            raise SessionStoreError(f"{REDIS_URL_ENV}={self.url}: cannot read a customer: {first_line(error)}") from None
        return _unique((v.decode() for v in raw), limit) if limit > 0 else []

    def ping(self) -> None:
        try:
            self._client.ping()
        except self._errors as error:
            raise SessionStoreError(f"{REDIS_URL_ENV}={self.url}: cannot reach Redis: {first_line(error)}") from None

    def close(self) -> None:
        self._client.close()


def _encode(event: LiveEvent) -> str:
    """``[event_type, ts, customer_id, item_id]``: the session id is the key."""
    return json.dumps([event.event_type, format_ts(event.ts), event.customer_id, event.item_id], separators=(",", ":"))


def _decode(session_id: str, value: bytes) -> LiveEvent:
    kind, ts, customer_id, item_id = json.loads(value)
    return LiveEvent(session_id, kind, datetime.fromisoformat(ts), customer_id, item_id)


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise UserError(f"{name} must be > 0, got {value!r}")


def _env_number(env: Mapping[str, str], name: str) -> float:
    return positive_number(env, name, ENV_DEFAULTS[name], SessionStoreError)


def open_session_store(env: Mapping[str, str] | None = None) -> SessionStore:
    """Redis when ``SHOPREC_REDIS_URL`` is set, else memory; TTLs and bounds from :data:`ENV_DEFAULTS`.

    Raises :class:`SessionStoreError` (one line, naming the variable) for an unreachable
    Redis or a bad setting, so a worker fails at start rather than on the first request.
    """
    env = os.environ if env is None else env
    ttl = _env_number(env, TTL_ENV)
    customer_ttl = _env_number(env, CUSTOMER_TTL_ENV)
    max_events = int(_env_number(env, MAX_EVENTS_ENV))
    url = env.get(REDIS_URL_ENV, "").strip()
    if url:
        return RedisSessionStore(url, ttl, max_events, customer_ttl_seconds=customer_ttl)
    return MemorySessionStore(ttl, int(_env_number(env, MAX_SESSIONS_ENV)), max_events,
                              customer_ttl_seconds=customer_ttl)
