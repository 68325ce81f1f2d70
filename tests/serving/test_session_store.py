"""Both session stores through the same tests: order, caps, TTL, recent items, bounds, threads.

The Redis backend uses the server at SHOPREC_TEST_REDIS_URL (default 127.0.0.1:6379, db 0)
with a key prefix unique to each test, deleted afterwards; it skips with the reason when
no Redis answers.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from serving.live_events import LiveEvent
from serving.session_store import (
    MemorySessionStore,
    RedisSessionStore,
    SessionStore,
    SessionStoreError,
    open_session_store,
)
from tests.serving.live_server import redis_or_skip

REDIS_URL = os.environ.get("SHOPREC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
T0 = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)
MakeStore = Callable[..., SessionStore]


def ev(session: str, minute: float, item: str | None = "a", kind: str = "view", customer: str | None = None) -> LiveEvent:
    return LiveEvent(session, kind, T0 + timedelta(minutes=minute), customer, item)


def _factory(backend: str) -> Iterator[MakeStore]:
    """A factory of stores of one backend; Redis ones share a unique key prefix, deleted at the end."""
    made: list[SessionStore] = []
    prefix = f"shoprec-test-{uuid.uuid4().hex[:12]}:"
    if backend == "redis":
        redis_or_skip(REDIS_URL)

    def make(ttl_seconds: float = 60, max_events: int = 200, max_sessions: int = 1000, **kw) -> SessionStore:
        if backend == "memory":
            store: SessionStore = MemorySessionStore(ttl_seconds, max_sessions, max_events, **kw)
        else:
            store = RedisSessionStore(REDIS_URL, ttl_seconds, max_events, prefix=prefix, **kw)
        made.append(store)
        return store

    make.backend = backend  # type: ignore[attr-defined]
    yield make
    if backend == "redis":
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
    for store in made:
        store.close()


@pytest.fixture(params=["memory", "redis"])
def make_store(request: pytest.FixtureRequest) -> Iterator[MakeStore]:
    yield from _factory(request.param)


@pytest.fixture
def make_redis_store() -> Iterator[MakeStore]:
    yield from _factory("redis")


def test_session_events_oldest_first_and_sessions_apart(make_store: MakeStore) -> None:
    store = make_store()
    store.add([ev("s1", 2, "b"), ev("s2", 0, "x"), ev("s1", 1, "a")])
    store.add([ev("s1", 3, "c"), ev("s1", 0.5, None, "search")])
    assert [(e.event_type, e.item_id) for e in store.session_events("s1")] == [
        ("search", None), ("view", "a"), ("view", "b"), ("view", "c")]
    assert store.session_events("s2") == [ev("s2", 0, "x")]
    assert store.session_events("nobody") == []
    store.add([])  # nothing to do, no error


def test_sessions_keep_their_most_recent_events(make_store: MakeStore) -> None:
    store = make_store(max_events=10)
    for batch in range(6):
        store.add([ev("s", batch * 5 + i, f"i{batch * 5 + i}") for i in range(5)])
    assert [e.item_id for e in store.session_events("s")] == [f"i{n}" for n in range(20, 30)]


def test_entries_expire_after_ttl_without_events(make_store: MakeStore) -> None:
    ttl = 1.0 if make_store.backend == "redis" else 0.4  # type: ignore[attr-defined]
    store = make_store(ttl_seconds=ttl)
    store.add([ev("old", 0, customer="c1"), ev("busy", 0, customer="c2")])
    time.sleep(ttl * 0.6)
    store.add([ev("busy", 1, "b")])  # a new event restarts the session's TTL
    time.sleep(ttl * 0.6)
    assert store.session_events("old") == [] and store.recent_items("c1") == []
    assert [e.item_id for e in store.session_events("busy")] == ["a", "b"]
    time.sleep(ttl * 0.6)
    assert store.session_events("busy") == []


def test_recent_items_unique_newest_first_across_sessions(make_store: MakeStore) -> None:
    store = make_store()
    store.add([ev("s1", 0, "tv", customer="c"), ev("s1", 1, "hdmi", "cart", customer="c"),
               ev("s1", 2, "tv", customer="c"), ev("s1", 3, None, "search", customer="c"),
               ev("s1", 4, "ghost", "purchase", customer="c"), ev("s1", 5, "mug", "remove_from_cart", customer="c"),
               ev("anon", 6, "beans")])
    store.add([ev("s2", 10, "lamp", "wishlist", customer="c"), ev("s2", 9, "hdmi", customer="c")])
    assert store.recent_items("c") == ["lamp", "hdmi", "tv"]
    assert store.recent_items("c", limit=2) == ["lamp", "hdmi"]
    assert store.recent_items("c", limit=0) == []
    assert store.recent_items("stranger") == []


def test_recent_items_are_capped(make_store: MakeStore) -> None:
    store = make_store(max_items=5)
    store.add([ev("s", n, f"i{n}", customer="c") for n in range(12)])
    assert store.recent_items("c") == ["i11", "i10", "i9", "i8", "i7"]
    assert store.recent_items("c", limit=99) == ["i11", "i10", "i9", "i8", "i7"]


def test_concurrent_adds_lose_nothing(make_store: MakeStore) -> None:
    store = make_store(max_events=1000)
    errors: list[BaseException] = []

    def worker(w: int) -> None:
        try:
            for batch in range(25):
                store.add([ev(f"s{(batch + i) % 4}", w * 100 + batch, f"w{w}-{batch}-{i}", customer=f"c{w}")
                           for i in range(8)])
                store.session_events(f"s{batch % 4}")
                store.recent_items(f"c{w}")
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    items = [e.item_id for s in range(4) for e in store.session_events(f"s{s}")]
    assert len(items) == len(set(items)) == 4 * 25 * 8
    assert store.recent_items("c0", limit=3) == ["w0-24-7", "w0-24-6", "w0-24-5"]


# -- memory only -----------------------------------------------------------------------

def test_memory_store_evicts_least_recently_touched_beyond_its_bound() -> None:
    store = MemorySessionStore(ttl_seconds=60, max_sessions=3, max_events=10)
    for n in range(3):
        store.add([ev(f"s{n}", n, customer=f"c{n}")])
    store.add([ev("s0", 5, "b", customer="c0")])  # s0 and c0 are touched again
    store.add([ev("s3", 6, customer="c3")])
    assert len(store) == 3
    assert store.session_events("s1") == [] and store.recent_items("c1") == []
    assert [e.item_id for e in store.session_events("s0")] == ["a", "b"]
    assert store.recent_items("c0") == ["b", "a"]
    assert store.session_events("s2") != [] and store.session_events("s3") != []


def test_memory_store_sweeps_expired_entries_on_add() -> None:
    now = [0.0]
    store = MemorySessionStore(ttl_seconds=10, max_sessions=100, max_events=10, clock=lambda: now[0])
    store.add([ev(f"s{n}", 0) for n in range(50)])
    now[0] = 11.0
    store.add([ev("fresh", 0)])
    assert len(store) == 1  # memory goes back without anyone reading the expired sessions


# -- redis only ------------------------------------------------------------------------

def test_redis_add_is_one_round_trip(make_redis_store: MakeStore) -> None:
    store = make_redis_store()
    executed: list[int] = []
    real_pipeline = store._client.pipeline  # type: ignore[attr-defined]

    def counting_pipeline(*args, **kwargs):  # noqa: ANN202
        pipe = real_pipeline(*args, **kwargs)
        real_execute = pipe.execute
        pipe.execute = lambda *a, **k: executed.append(len(pipe.command_stack)) or real_execute(*a, **k)
        return pipe

    store._client.pipeline = counting_pipeline  # type: ignore[attr-defined]
    store._client.execute_command = None  # type: ignore[attr-defined]  # any direct command would fail
    store.add([ev(f"s{n % 10}", n, f"i{n}", customer=f"c{n % 5}") for n in range(50)])
    assert executed == [3 * 10 + 3 * 5]  # RPUSH+LTRIM+PEXPIRE per session, LPUSH+LTRIM+PEXPIRE per customer


def test_redis_keys_are_prefixed_and_expire(make_redis_store: MakeStore) -> None:
    import redis

    store = make_redis_store(ttl_seconds=30, customer_ttl_seconds=90)
    store.add([ev("s1", 0, customer="c1")])
    client = redis.Redis.from_url(REDIS_URL)
    prefix = store.prefix  # type: ignore[attr-defined]
    assert sorted(k.decode() for k in client.scan_iter(match=f"{prefix}*")) == [
        f"{prefix}customer:c1", f"{prefix}session:s1"]
    assert 0 < client.pttl(f"{prefix}session:s1") <= 30_000
    assert 30_000 < client.pttl(f"{prefix}customer:c1") <= 90_000
    client.close()


def test_unreachable_redis_is_a_one_line_error_naming_the_variable() -> None:
    with pytest.raises(SessionStoreError) as error:
        RedisSessionStore("redis://:s3cr3t@127.0.0.1:1/0", timeout_seconds=0.5)
    message = str(error.value)
    assert message.startswith("SHOPREC_REDIS_URL=redis://:***@127.0.0.1:1/0: cannot reach Redis")
    assert "\n" not in message and "s3cr3t" not in message
    with pytest.raises(SessionStoreError, match=r"SHOPREC_REDIS_URL=.*not a usable Redis URL"):
        RedisSessionStore("http://127.0.0.1:6379")


# -- choosing from the environment -----------------------------------------------------

def test_open_session_store_from_the_environment() -> None:
    store = open_session_store({})
    assert isinstance(store, MemorySessionStore)
    assert (store.ttl_seconds, store.max_events, store.max_sessions) == (1800, 200, 100_000)
    assert store.customer_ttl_seconds == 7 * 86400
    store = open_session_store({"SHOPREC_SESSION_TTL_SECONDS": "60", "SHOPREC_SESSION_MAX_EVENTS": "20",
                                "SHOPREC_SESSION_MAX_SESSIONS": "500"})
    assert (store.ttl_seconds, store.max_events, store.max_sessions) == (60, 20, 500)  # type: ignore[attr-defined]
    with pytest.raises(SessionStoreError, match=r"SHOPREC_SESSION_TTL_SECONDS='soon': expected a number > 0"):
        open_session_store({"SHOPREC_SESSION_TTL_SECONDS": "soon"})
    with pytest.raises(SessionStoreError, match="SHOPREC_REDIS_URL"):
        open_session_store({"SHOPREC_REDIS_URL": "redis://127.0.0.1:1/0"})


def test_open_session_store_picks_redis_when_configured() -> None:
    redis_or_skip(REDIS_URL)
    store = open_session_store({"SHOPREC_REDIS_URL": REDIS_URL, "SHOPREC_SESSION_TTL_SECONDS": "5"})
    try:
        assert isinstance(store, RedisSessionStore) and store.ttl_ms == 5000
        store.ping()
    finally:
        store.close()


@pytest.mark.parametrize("in_process", [True, False])
def test_checkout_reads_a_networked_store_off_the_event_loop(in_process: bool) -> None:
    """/cross_sell, /offers and /propensity run on the event loop; a Redis round trip must not
    hold it, so a store that says it is across a network (``in_process`` False, as Redis's) is
    read in a worker thread, the in-process one inline."""
    import asyncio
    import threading

    from serving.answers import NO_SESSION
    from serving.service import ShoprecService

    service = object.__new__(ShoprecService.inner)
    service.sessions = MemorySessionStore(60, 10, 10)
    service.sessions.in_process = in_process
    read_in: list[int] = []

    def session(rec: object, session_id: str | None, customer_id: str | None = None) -> tuple:
        read_in.append(threading.get_ident())
        return NO_SESSION, []

    service._session = session

    async def checkout() -> int:
        await service._session_on_loop(None, "s1", "c1")
        return threading.get_ident()

    loop_thread = asyncio.run(checkout())
    assert (read_in[0] == loop_thread) == in_process
