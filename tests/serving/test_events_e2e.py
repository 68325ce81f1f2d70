"""Live events over real HTTP with Redis as the session store: in-session personalisation,
nothing acknowledged is lost when the service is killed, and a restart keeps the sessions
(Redis) and the durable log that the next training run reads as its `events` table."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import pytest
import redis

from features.loading import load_shop
from features.sample import SampleShop
from features.table_files import write_tables
from tests.serving.live_server import TrainedHome, kill_tree, private_copy, redis_or_skip, serving
from training.bundle import Bundle

REDIS_URL = os.environ.get("SHOPREC_TEST_REDIS_URL", "redis://127.0.0.1:6379/2")


@dataclass
class LiveShop:
    root: Path
    home: Path
    log: Path
    bundle: Bundle
    env: dict[str, str]


@pytest.fixture(scope="module")
def shop(trained_home: TrainedHome, tmp_path_factory: pytest.TempPathFactory) -> LiveShop:
    redis_or_skip(REDIS_URL)
    root = tmp_path_factory.mktemp("events")
    copy = private_copy(trained_home, root)
    log = root / "event-log"
    env = {"SHOPREC_REDIS_URL": REDIS_URL, "SHOPREC_EVENT_LOG": str(log)}
    return LiveShop(root, copy.home, log, copy.trained.bundle, env)


@pytest.fixture
def url(shop: LiveShop) -> Iterator[str]:
    with serving(shop.home, shop.root, env_overrides=shop.env) as (address, _):
        yield address


def _session() -> str:
    return f"visit-{uuid.uuid4().hex[:12]}"


def _post(url: str, path: str, body: object) -> dict:
    response = httpx.post(f"{url}{path}", json=body, timeout=30)
    assert response.status_code == 200, (path, response.text)
    return response.json()


def test_an_anonymous_visitor_gets_the_partners_of_what_they_viewed(url: str, shop: LiveShop,
                                                                    sample_shop: SampleShop) -> None:
    cat = shop.bundle.catalogue.set_index("item_id")
    pairs = sample_shop.truth["pairs"]
    pairs = pairs[pairs["anchor_item_id"].isin(cat.index) & pairs["partner_item_id"].isin(cat.index)]
    pairs = pairs[cat.loc[pairs["partner_item_id"], "in_stock"].to_numpy()]
    category = cat.loc[pairs["anchor_item_id"], "category"].value_counts().index[0]
    pairs = pairs[cat.loc[pairs["anchor_item_id"], "category"].to_numpy() == category].head(3)
    session = _session()
    accepted = _post(url, "/events", {"events": [
        {"session_id": session, "event_type": "view", "item_id": anchor} for anchor in pairs["anchor_item_id"]]
        + [{"session_id": session, "event_type": "view", "item_id": "not-in-the-model"}]})
    assert accepted == {"accepted": len(pairs) + 1, "unknown_items": 1, "sessions": 1, "future_ts_clamped": 0}
    answer = _post(url, "/cross_sell", {"cart": [], "session_id": session, "k": 10})
    assert answer["session_items"] == len(pairs) and not answer["customer_known"]
    got = {i["item_id"]: i["reason"] for i in answer["items"]}
    partners = [(a, p) for a, p in zip(pairs["anchor_item_id"], pairs["partner_item_id"], strict=True)
                if got.get(p) == f"goes_with_viewed:{a}"]
    assert len(partners) >= 2, (pairs.to_dict("records"), answer["items"])
    assert not set(got) & set(pairs["anchor_item_id"])  # what the visit already saw is not pushed again
    blind = _post(url, "/cross_sell", {"cart": [], "k": 10})
    assert {i["reason"] for i in blind["items"]} == {"popular"}


def test_a_logged_in_customer_is_followed_across_visits(url: str, shop: LiveShop, sample_shop: SampleShop) -> None:
    """Without a session id, the customer's recently viewed items from an earlier visit count."""
    customer = str(shop.bundle.profiles["customers"]["customer_id"].iloc[3])
    anchor = str(sample_shop.truth["pairs"]["anchor_item_id"].iloc[0])
    redis.Redis.from_url(REDIS_URL).delete(f"shoprec:customer:{customer}")  # Redis outlives test runs
    before = _post(url, "/cross_sell", {"cart": [], "customer_id": customer, "k": 5})
    assert before["session_items"] == 0
    _post(url, "/events", {"events": [{"session_id": _session(), "customer_id": customer, "event_type": "view",
                                       "item_id": anchor}]})
    later = _post(url, "/cross_sell", {"cart": [], "customer_id": customer, "k": 5})
    assert later["session_items"] == 1 and later["customer_known"]
    assert f"goes_with_viewed:{anchor}" in {i["reason"] for i in later["items"]}
    assert _post(url, "/offers", {"customer_id": customer, "k": 3})["session_items"] == 1


def test_session_propensity_rises_as_the_session_adds_to_cart(url: str, shop: LiveShop) -> None:
    customer = str(shop.bundle.profiles["customers"]["customer_id"].iloc[0])
    items = [str(i) for i in shop.bundle.items.external_ids[:3]]
    session = _session()
    seen = []
    for n, (kind, item) in enumerate([("view", items[0]), ("view", items[1]), ("cart", items[1]),
                                      ("cart", items[2])]):
        _post(url, "/events", {"events": [{"session_id": session, "customer_id": customer, "event_type": kind,
                                           "item_id": item, "ts": f"2025-06-01T10:0{n}:00Z"}]})
        answer = _post(url, "/propensity", {"session_id": session})
        assert answer["session_events_used"] == n + 1  # the next request sees each event
        seen.append(answer["session_propensity"])
    browsing, one_cart, two_carts = seen[1], seen[2], seen[3]  # a second view may well lower it
    assert browsing <= one_cart <= two_carts and two_carts > browsing, seen


def test_nothing_acknowledged_is_lost_and_a_restart_keeps_sessions_and_log(shop: LiveShop) -> None:
    session = _session()
    items = [str(i) for i in shop.bundle.items.external_ids[:5]]
    batch = [{"session_id": session, "event_type": "view", "item_id": item, "ts": f"2025-06-02T09:0{n}:00Z"}
             for n, item in enumerate(items)]
    with serving(shop.home, shop.root, env_overrides=shop.env) as (url, proc):
        assert _post(url, "/events", {"events": batch})["accepted"] == 5
        kill_tree(proc)  # acknowledged, never compacted: only the write-ahead segment holds them
    assert list((shop.log / "wal").glob("*.jsonl"))
    with serving(shop.home, shop.root, env_overrides=shop.env) as (url, _):
        after = _post(url, "/cross_sell", {"cart": [], "session_id": session, "k": 3})
        assert after["session_items"] == 5  # Redis kept the session across the crash
    # the next start recovered the dead segment and a clean stop compacted the rest
    write_tables({"items": shop.bundle.catalogue[["item_id", "category", "price"]],
                  "orders": pd.read_parquet(shop.root / "shop" / "orders.parquet")}, shop.log, "parquet")
    logged = load_shop(shop.log)
    assert set(logged.report.tables["events"].reasons) <= {"item_id not in items"}  # reported, not lost
    mine = logged["events"][logged["events"]["session_id"] == session]
    assert sorted(mine["item_id"]) == sorted(items)
