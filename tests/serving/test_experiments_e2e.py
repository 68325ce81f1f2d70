"""An experiment on the real service over HTTP: each visitor answered by their variant on every
endpoint, the same variant after a restart and across two workers, every answer's exposure in
the log even when the server is killed right after answering, a planted better variant found by
the report with an interval above zero, and everyone back on the champion when it stops."""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from batch.experiment_report import build_report, purchases_from, read_events, read_exposures, read_outcomes
from serving.event_log import FileEventLog
from serving.exposures import EXPOSURES_TABLE
from tests.serving.live_server import TOKEN, TrainedHome, kill_tree, private_copy, serving
from training import experiments, tracking
from training.experiments import Experiment


@pytest.fixture
def home(trained_home: TrainedHome, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TrainedHome]:
    """A private copy whose registry holds v1 (champion) and v2, the same bundle registered again,
    so an answer's model_version tells which arm gave it."""
    copy = private_copy(trained_home, tmp_path)
    monkeypatch.setenv("SHOPREC_HOME", str(copy.home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    client = tracking.configure()
    first = client.get_model_version("shoprec", "1")
    client.create_model_version("shoprec", source=first.source, run_id=first.run_id, tags=first.tags)
    yield copy


def _exposures(folder: Path) -> list[dict]:
    FileEventLog(folder, table=EXPOSURES_TABLE).close()  # recovers what a killed server left in its segments
    return [row for part in sorted((folder / "exposures").glob("part-*.parquet"))
            for row in pq.read_table(part).to_pylist()]


def _ask(url: str, experiment: Experiment, customers: list[str], cart: list[str]) -> list[dict]:
    """A cross-sell per customer, checked against the assignment; the answers."""
    answers = []
    for customer in customers:
        body = httpx.post(f"{url}/cross_sell", json={"cart": cart, "customer_id": customer, "k": 3}, timeout=30).json()
        variant = experiment.assign(customer)
        assert (body["experiment"], body["variant"], body["model_version"]) == \
               (experiment.name, variant.name, f"shoprec/v{variant.version}"), body
        answers.append(body)
    return answers


def _shop_with_a_planted_winner(url: str, customers: list[str]) -> tuple[int, int]:
    """Simulated shoppers: each asks for a cross-sell, clicks the first item shown and buys it with
    chances that depend on the variant that answered (v2's picks are clicked and bought more often:
    the planted lift), reported back through ``POST /events``: a click as the view it leads to,
    with the answer's request_id, and every other purchase with it too (the rest are left to last
    touch). The purchases sent, and those that named their answer."""
    rng = random.Random(18)
    events, purchases, named = [], 0, 0
    with httpx.Client(timeout=30) as client:
        for customer in customers:
            answer = client.post(f"{url}/cross_sell", json={"cart": [], "customer_id": customer, "k": 3}).json()
            if not answer["items"] or rng.random() >= (0.5 if answer["variant"] == "v2" else 0.3):
                continue
            event = {"session_id": f"visit-{customer}", "item_id": answer["items"][0]["item_id"]}
            events.append({**event, "event_type": "view", "request_id": answer["request_id"]})
            if rng.random() < 0.6:
                purchases += 1
                carries = purchases % 2 == 1  # every other purchase names its answer
                named += carries
                events.append({**event, "customer_id": customer, "event_type": "purchase",
                               **({"request_id": answer["request_id"]} if carries else {})})
        for start in range(0, len(events), 500):
            assert client.post(f"{url}/events", json={"events": events[start:start + 500]}).status_code == 200
    return purchases, named


def test_an_experiment_end_to_end(home: TrainedHome, tmp_path: Path) -> None:
    exposure_log = tmp_path / "exposure-log"
    env = {"SHOPREC_EXPOSURE_LOG": str(exposure_log), "SHOPREC_EVENT_LOG": str(tmp_path / "event-log")}
    experiment = experiments.start(tracking.configure(), "shoprec", "ab-1", "champion:50,v2:50")
    bundle = home.trained.bundle
    customers = [str(c) for c in bundle.customers.external_ids[:40]]
    cart = [str(bundle.items.external_ids[0])]
    assert {experiment.assign(c).name for c in customers} == {"champion", "v2"}

    with serving(home.home, tmp_path, env_overrides=env) as (url, proc):
        answers = _ask(url, experiment, customers, cart)
        offers = httpx.post(f"{url}/offers", json={"customer_id": customers[0], "k": 3}, timeout=30).json()
        assert (offers["variant"], offers["model_version"]) == \
               (experiment.assign(customers[0]).name, f"shoprec/v{experiment.assign(customers[0]).version}")
        picks = httpx.post(f"{url}/email_picks", json={"customer_ids": customers[:10], "k": 3}, timeout=30).json()
        assert picks["experiment"] == "ab-1"
        assert [(p["variant"], p["model_version"]) for p in picks["picks"]] == \
               [(experiment.assign(c).name, f"shoprec/v{experiment.assign(c).version}") for c in customers[:10]]
        visitor = httpx.post(f"{url}/cross_sell", json={"cart": cart, "session_id": "visit-1"}, timeout=30).json()
        assert visitor["variant"] == experiment.assign("visit-1").name  # no customer: the session is the unit
        anonymous = httpx.post(f"{url}/cross_sell", json={"cart": cart}, timeout=30).json()
        assert (anonymous["experiment"], anonymous["variant"], anonymous["model_version"]) == \
               (None, None, "shoprec/v1")
        shoppers, named = _shop_with_a_planted_winner(url, [str(c) for c in bundle.customers.external_ids[40:1240]])
        kill_tree(proc)  # no shutdown hook: what was answered must already be durable

    outcomes = read_outcomes(exposure_log)
    report = build_report(experiment, read_exposures(exposure_log), purchases_from(
        read_events(str(tmp_path / "event-log")), None, experiment, outcomes), outcomes=outcomes)
    assert not report.split.mismatch and (report.attributed, report.named) == (shoppers, named)
    for metric in ("click_through", "recommended_bought"):
        found = report.variants[1].lifts[metric]
        assert found.significant and found.low is not None and found.low > 0, report.table().to_dict("records")

    rows = _exposures(exposure_log)
    logged = {row["request_id"]: row for row in rows}  # one row per answer (per customer of an email batch)
    assert len(logged) == len(rows)
    for answer in [*answers, offers, visitor, *picks["picks"]]:
        row = logged[answer["request_id"]]
        assert (row["variant"], row["model_version"]) == (answer["variant"], answer["model_version"])
        assert row["items"] == [i["item_id"] for i in answer["items"]]
    assert [logged[p["request_id"]]["unit"] for p in picks["picks"]] == customers[:10]
    assert anonymous["request_id"] not in logged  # outside the experiment: nothing to count
    assert logged[answers[0]["request_id"]]["endpoint"] == "cross_sell"

    log = tmp_path / "server.log"
    restarted = log.stat().st_size
    with serving(home.home, tmp_path, env_overrides={**env, "SHOPREC_WORKERS": "2"}) as (url, _):
        for _ in range(5):  # a restart, now with two workers, keeps everyone in their variant
            _ask(url, experiment, customers, cart)  # a connection per request: either worker may answer
            if set(re.findall(r"shoprec:(\d+)\] [^\n]*path=/cross_sell", log.read_text()[restarted:])) == {"1", "2"}:
                break
        assert set(re.findall(r"shoprec:(\d+)\] [^\n]*path=/cross_sell", log.read_text()[restarted:])) == {"1", "2"}
        experiments.stop(tracking.configure(), "shoprec", "ab-1")
        reload = httpx.post(f"{url}/admin/reload", json={}, timeout=60, headers={"Authorization": f"Bearer {TOKEN}"})
        assert reload.status_code == 200
        seen: list[tuple] = []
        for _ in range(300):  # the other worker follows the reload within a second or so
            after = httpx.post(f"{url}/cross_sell", json={"cart": cart, "customer_id": customers[0]}, timeout=30)
            seen.append((after.json()["experiment"], after.json()["variant"], after.json()["model_version"]))
            if seen[-20:] == [(None, None, "shoprec/v1")] * 20:
                break
            time.sleep(0.05)
        assert seen[-20:] == [(None, None, "shoprec/v1")] * 20, seen[-5:]
    assert "now running experiment ab-1" in log.read_text()
    assert os.path.isdir(exposure_log / "wal-exposures")
