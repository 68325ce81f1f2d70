"""Several workers behind one port, as `shoprec serve` runs them where Redis shares the live
sessions: a session's events reach every worker, and a champion promoted mid-run reaches every
worker through one bundle cache that the workers fill at once, when an admin reloads one of
them (each worker's poll is the same code as with one worker: tests/app/test_cli_serve.py)."""

from __future__ import annotations

import os
import re
import threading
import uuid
from pathlib import Path

import httpx
import pytest

from features.errors import UserError
from serving.settings import WORKERS_ENV, workers
from tests.serving.live_server import TOKEN, TrainedHome, private_copy, redis_or_skip, serving, train_into

REDIS_URL = os.environ.get("SHOPREC_TEST_REDIS_URL", "redis://127.0.0.1:6379/3")


def test_one_worker_per_cpu_only_where_sessions_are_shared() -> None:
    assert workers({}, shared_sessions=True)[0] == "cpu_count"  # BentoML counts the CPUs, container limits too
    assert workers({}, shared_sessions=False) == (1, "one: live sessions are kept in the worker's memory "
                                                      "(set SHOPREC_REDIS_URL to share them)")
    assert workers({WORKERS_ENV: "3"}, shared_sessions=True) == (3, f"{WORKERS_ENV}=3")  # an explicit count wins
    count, why = workers({WORKERS_ENV: " 2 "}, shared_sessions=False)
    assert count == 2 and "a visitor's events reach one worker only" in why  # allowed, and said why it hurts
    for bad in ("0", "-1", "two", "1.5", "\u00b2"):
        with pytest.raises(UserError, match=f"{WORKERS_ENV}="):
            workers({WORKERS_ENV: bad}, shared_sessions=True)


def test_workers_share_sessions_and_each_takes_a_promotion(trained_home: TrainedHome, tmp_path: Path) -> None:
    """No worker polls within the test; one ``POST /admin/reload`` (which reaches one worker)
    moves both."""
    redis_or_skip(REDIS_URL)
    copy = private_copy(trained_home, tmp_path)
    env = {"SHOPREC_REDIS_URL": REDIS_URL, "SHOPREC_EVENT_LOG": str(tmp_path / "event-log"),
           "SHOPREC_POLL_SECONDS": "3600", WORKERS_ENV: "2"}
    item = str(copy.trained.bundle.items.external_ids[0])
    with serving(copy.home, tmp_path, env_overrides=env) as (url, _):
        for _ in range(100):  # /readyz answers once one worker is up; the other may still be starting
            log = (tmp_path / "server.log").read_text()
            started = set(re.findall(r"shoprec:(\d+)\].*serving shoprec/v1 .*; workers 2: SHOPREC_WORKERS=2", log))
            if len(started) == 2:
                break
            threading.Event().wait(0.2)
        assert started == {"1", "2"}, log[-3000:]

        # a session's events, then its requests on fresh connections (so both workers answer them)
        session = f"visit-{uuid.uuid4().hex[:12]}"
        accepted = httpx.post(f"{url}/events", json={"events": [
            {"session_id": session, "event_type": "view", "item_id": item}]}, timeout=30)
        assert accepted.status_code == 200
        def answered_by() -> set[str]:  # the workers whose access log holds a session cross-sell
            text = (tmp_path / "server.log").read_text()
            return set(re.findall(r"shoprec:(\d+)\] [^\n]*path=/cross_sell", text))

        for _ in range(60):
            answer = httpx.post(f"{url}/cross_sell", json={"cart": [], "session_id": session, "k": 5}, timeout=30)
            assert answer.status_code == 200 and answer.json()["session_items"] == 1, answer.text
            if answered_by() == {"1", "2"}:
                break
        assert answered_by() == {"1", "2"}  # both workers answered it, and each knew the session

        # traffic on fresh connections while v2 is trained and promoted; every worker must move to it
        answers: list[tuple[int, str]] = []
        stop = threading.Event()

        def traffic() -> None:
            while not stop.is_set():
                response = httpx.post(f"{url}/cross_sell", json={"cart": [item], "k": 5}, timeout=30)
                answers.append((response.status_code, response.json().get("model_version", "")))

        thread = threading.Thread(target=traffic)
        thread.start()
        try:
            trained = train_into(str(copy.data), copy.home)
            assert trained.gate and trained.gate.passed
            new = f"shoprec/v{trained.model_version}"
            reloaded = httpx.post(f"{url}/admin/reload", json={}, timeout=120,
                                  headers={"Authorization": f"Bearer {TOKEN}"})
            assert reloaded.status_code == 200 and reloaded.json() == {"model_version": new, "changed": True}
            settled = threading.Event()

            def converged() -> bool:
                tail = answers[-40:]
                return len(tail) == 40 and all(version == new for _, version in tail)

            for _ in range(600):  # up to 60 s: each worker watches for a reload every second
                if converged():
                    settled.set()
                    break
                stop.wait(0.1)
        finally:
            stop.set()
            thread.join(timeout=60)
        assert settled.is_set(), answers[-10:]
        assert {status for status, _ in answers} == {200}
        log = (tmp_path / "server.log").read_text()
        swapped = dict(re.findall(rf"shoprec:(\d+)\].*now serving {re.escape(new)} \(([^)]*)\)", log))
        # the worker that took the call, then the other from its token in the cache
        assert sorted(swapped.values()) == ["admin", "admin, another worker"], log[-3000:]
        assert "CORRUPT" not in log and "REJECTED" not in log

    cache = copy.home / "serving-cache"
    copies = sorted(p.name for p in cache.iterdir() if not p.name.startswith("."))
    assert [c.split("-")[1] for c in copies if not c.endswith(".json")] == ["v1", f"v{trained.model_version}"]
    assert not [p.name for p in cache.iterdir() if p.name.startswith(".")]  # nothing half-made left
