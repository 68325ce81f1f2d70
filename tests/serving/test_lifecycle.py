"""Where the served bundle comes from when things break: a corrupted cache, a corrupted
download, the registry going away at start-up, during a poll or an admin reload.

A real SQLite-backed MLflow registry holds v1 and v2 of the sample bundle; files are
corrupted on disk by flipping a byte. The only stand-in is the unreachable registry:
``MLFLOW_TRACKING_URI`` pointed at a closed loopback port. The service is driven at the
object level (its reload, poll and ``/admin/reload`` methods, no HTTP server).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import pandas as pd
import pytest
from starlette.responses import JSONResponse

import serving.following as following_module
from features.sample import SampleShop
from features.table_files import write_tables
from features.errors import UserError
from serving.config import ServingConfig
from serving.lifecycle import CURRENT, BundleCache
from serving.recommender import ShopRecommender
from serving.arms import Arms
from serving.service import ShoprecService
from tests.serving.live_server import free_port
from training import registry, tracking
from training.bundle import Bundle
from training.bundle_files import MANIFEST, BundleError, verify
from training.pipeline import TrainConfig, run_training
from training.pyfunc import log_bundle

MODEL = "shoprec"
DATA_FILE = "catalogue.parquet"


@pytest.fixture(scope="module")
def registry_home(bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """v1 and v2 of the sample bundle logged and registered in a private SQLite MLflow,
    artefacts inside the same folder."""
    home = tmp_path_factory.mktemp("lifecycle") / "home"
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.setenv("SHOPREC_HOME", str(home))
        client = tracking.configure()
        experiment = client.create_experiment("lifecycle", artifact_location=(home / "mlartifacts").as_uri())
        folder = bundle.save(home / "bundle")
        for _ in range(2):
            with mlflow.start_run(experiment_id=experiment):
                uri = log_bundle(bundle, folder, ["mlflow"])
            registry.register(client, MODEL, uri, "ndcg_at_10", 0.2, 0.1)
    return home


@pytest.fixture
def champion(registry_home: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """The registry up with v1 as champion; call it to move the alias."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("SHOPREC_HOME", str(registry_home))

    def promote(version: str) -> None:
        registry.promote(tracking.configure(), MODEL, version)

    promote("1")
    return promote


def registry_down(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")


def registry_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI")  # back to the SQLite registry under SHOPREC_HOME


def flip_byte(path: Path) -> bytes:
    """Corrupt one byte in the middle of the file; returns the good bytes."""
    good = path.read_bytes()
    data = bytearray(good)
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return good


def stored_bundle(version: str) -> Path:
    """The registry's own copy of a version's bundle (what a download reads)."""
    client = tracking.configure()
    source = client.get_model_version(MODEL, version).source
    location = urlparse(client.get_logged_model(source.removeprefix("models:/")).artifact_location).path
    return next(Path(location).rglob(MANIFEST)).parent


def serving_from(source: BundleCache) -> ShoprecService.inner:
    """The service object as a worker builds it, minus session store, event log and poll thread."""
    service = object.__new__(ShoprecService.inner)
    loaded = source.load_initial()
    service.config = ServingConfig()
    service.source, service.recommender = source, ShopRecommender(loaded.bundle, loaded.version)
    service.loaded_key, service.arms = loaded.key, Arms()
    service._swap_lock, service._stop = threading.Lock(), threading.Event()
    return service


def answers(service: ShoprecService.inner) -> str:
    """A real /cross_sell through the service method; the model version it answered with."""
    response = asyncio.run(service.cross_sell(cart=[str(service.recommender.bundle.items.external_ids[0])], k=3))
    assert len(response.items) == 3
    return response.model_version


def current(cache: Path) -> str:
    return json.loads((cache / "current.json").read_text())["version"]


def copy_of(cache: Path, version: str) -> Path:
    """The one cached copy of a version (folder ``shoprec-v<version>-<content key>``)."""
    copies = sorted(cache.glob(f"{MODEL}-v{version}-*"))
    assert len(copies) == 1, copies
    return copies[0]


def leftovers(cache: Path) -> list[str]:
    return [p.name for p in cache.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("name", [DATA_FILE, MANIFEST])
def test_corrupt_cached_bundle_is_downloaded_again_when_the_registry_is_up(
        name: str, champion: Callable[[str], None], bundle: Bundle, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    cache = tmp_path / "cache"
    assert BundleCache(MODEL, cache).load_initial().version == "shoprec/v1"
    cached = copy_of(cache, "1")
    good = flip_byte(cached / name)
    with pytest.raises(BundleError):
        verify(cached)

    loaded = BundleCache(MODEL, cache).load_initial()  # a restarted worker, registry fine
    assert loaded.version == "shoprec/v1"
    assert "!!! CACHED BUNDLE CORRUPT" in caplog.text and "downloading shoprec/v1 again" in caplog.text
    assert (cached / name).read_bytes() == good
    verify(cached)
    assert current(cache) == "1" and leftovers(cache) == []
    customers = bundle.customers.external_ids[:20].tolist() + ["ghost"]
    assert loaded.bundle.recommend(customers, 5).equals(bundle.recommend(customers, 5))


FETCHER = """
import os, sys, time
from pathlib import Path
from serving.lifecycle import BundleCache
cache, go, rounds = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
source = BundleCache("shoprec", cache)
for n in range(rounds):
    while not (go / str(n)).exists():
        time.sleep(0.005)
    for _ in range(3):  # download together, then read what the others placed
        loaded = source.fetch(source.champion(), remember=True)
        assert loaded.version == "shoprec/v1", loaded.version
    (go / f"done-{n}-{os.getpid()}").touch()
"""


def test_several_workers_share_one_cache_safely(champion: Callable[[str], None], tmp_path: Path) -> None:
    """Workers of one service start together on an empty cache: each downloads the champion and
    places its copy while the others read; every fetch must load a verified bundle, the cache
    must end with the one copy and nothing half-made, and nothing may be called corrupt."""
    cache, go, workers, rounds = tmp_path / "cache", tmp_path / "go", 4, 2
    go.mkdir()
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", FETCHER, str(cache), str(go), str(rounds)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(workers)]
    try:
        for n in range(rounds):
            shutil.rmtree(cache, ignore_errors=True)  # a fresh cache each round: every worker downloads
            (go / str(n)).touch()
            deadline = time.monotonic() + 120
            while len(list(go.glob(f"done-{n}-*"))) < workers and all(p.poll() is None for p in procs):
                assert time.monotonic() < deadline, "workers did not finish"
                time.sleep(0.05)
            assert copy_of(cache, "1") and leftovers(cache) == [] and (cache / CURRENT).is_file()
        outputs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-2000:]
        assert "CORRUPT" not in err and "REJECTED" not in err, err[-2000:]
    verify(copy_of(cache, "1"))


def test_registry_down_and_a_corrupt_cache_refuses_to_start_in_one_line(
        champion: Callable[[str], None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    cache = tmp_path / "cache"
    BundleCache(MODEL, cache).load_initial()
    flip_byte(copy_of(cache, "1") / DATA_FILE)
    registry_down(monkeypatch)

    with pytest.raises(RuntimeError) as refused:
        BundleCache(MODEL, cache).load_initial()
    message = str(refused.value)
    assert "\n" not in message and message.startswith("cannot start: shoprec@champion could not be loaded")
    assert "registry: cannot read shoprec@champion" in message and "Connection refused" in message
    assert f"{copy_of(cache, '1').name}: bundle file {DATA_FILE} fails its checksum" in message
    assert "REGISTRY UNREACHABLE" not in caplog.text  # it never claims to serve the cache
    assert copy_of(cache, "1").is_dir()  # nothing to replace it with: left as evidence

    registry_up(monkeypatch)  # the registry back: the next start heals the cache
    assert BundleCache(MODEL, cache).load_initial().version == "shoprec/v1"
    verify(copy_of(cache, "1"))


def test_a_corrupted_download_is_rejected_and_the_old_model_keeps_serving(
        champion: Callable[[str], None], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = tmp_path / "cache"
    service = serving_from(BundleCache(MODEL, cache))
    champion("2")
    stored = stored_bundle("2") / DATA_FILE
    good = flip_byte(stored)
    try:
        response = service.admin_reload()
        assert isinstance(response, JSONResponse) and response.status_code == 503
        body = json.loads(response.body)
        assert body["detail"] == [] and body["error"].startswith("reload failed, still serving shoprec/v1: ")
        assert f"bundle file {DATA_FILE} fails its checksum" in body["error"]
        with pytest.raises(BundleError, match="fails its checksum"):  # the poll's path
            service.reload("poll")
        assert "!!! DOWNLOAD REJECTED: shoprec/v2" in caplog.text
        assert service.recommender.model_version == "shoprec/v1" and answers(service) == "shoprec/v1"
        assert not list(cache.glob("shoprec-v2*")) and current(cache) == "1" and leftovers(cache) == []

        with pytest.raises(RuntimeError, match="fails its checksum"):  # a first start with no cache
            BundleCache(MODEL, tmp_path / "empty").load_initial()
        assert not list((tmp_path / "empty").glob("shoprec-v2*"))
        caplog.clear()
        restarted = BundleCache(MODEL, cache).load_initial()  # a restart with the v1 cache
        assert restarted.version == "shoprec/v1" and "!!! CHAMPION DOWNLOAD REJECTED" in caplog.text
    finally:
        stored.write_bytes(good)

    reloaded = service.admin_reload()
    assert (reloaded.model_version, reloaded.changed) == ("shoprec/v2", True)
    assert answers(service) == "shoprec/v2" and current(cache) == "2"
    verify(copy_of(cache, "2"))


def test_registry_down_during_an_admin_reload_is_a_503_naming_it(
        champion: Callable[[str], None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    service = serving_from(BundleCache(MODEL, tmp_path / "cache"))
    champion("2")
    registry_down(monkeypatch)

    response = service.admin_reload()
    assert isinstance(response, JSONResponse) and response.status_code == 503
    body = json.loads(response.body)
    assert set(body) == {"error", "detail"} and body["detail"] == []
    assert body["error"].startswith("reload failed, still serving shoprec/v1: registry: cannot read shoprec@champion")
    assert "Connection refused" in body["error"] and "\n" not in body["error"]
    assert answers(service) == "shoprec/v1"

    registry_up(monkeypatch)
    reloaded = service.admin_reload()
    assert (reloaded.model_version, reloaded.changed) == ("shoprec/v2", True)
    assert answers(service) == "shoprec/v2"


def test_registry_down_during_polls_keeps_serving_and_the_next_tick_retries(
        champion: Callable[[str], None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    service = serving_from(BundleCache(MODEL, tmp_path / "cache"))
    champion("2")
    registry_down(monkeypatch)
    monkeypatch.setattr(following_module, "POLL_SECONDS", 0.05)

    def failed_polls() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.getMessage().startswith("champion poll failed")]

    poller = threading.Thread(target=service._poll, name="champion-poll", daemon=True)
    poller.start()
    try:
        deadline = time.monotonic() + 30
        while len(failed_polls()) < 3 and time.monotonic() < deadline:
            assert answers(service) == "shoprec/v1"
            time.sleep(0.02)
        assert len(failed_polls()) >= 3
        assert all("registry: cannot read shoprec@champion" in m and "still serving shoprec/v1" in m
                   for m in failed_polls())
        assert not [r for r in caplog.records if r.name == "shoprec.serving" and r.exc_info]  # no traceback

        registry_up(monkeypatch)
        deadline = time.monotonic() + 30
        while service.recommender.model_version != "shoprec/v2" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert answers(service) == "shoprec/v2"
    finally:
        service._stop.set()
        poller.join(10)
    assert not poller.is_alive()


def test_a_recreated_registry_never_serves_an_older_v1_from_the_cache(sample_shop: SampleShop, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Two registries in turn (fresh SQLite databases, each ``MLFLOW_TRACKING_URI``) sharing
    one SHOPREC_HOME, trained with ALS, then co-occurrence: each is v1 and the
    champion. The service and ``shoprec picks --model models:/shoprec/1`` must answer from each
    one's own bundle, never from the copy the first left in the shared cache."""
    data, home = str(tmp_path / "shop"), tmp_path / "home"
    write_tables(sample_shop.tables, data, "parquet")
    monkeypatch.setenv("SHOPREC_HOME", str(home))
    customers = [str(c) for c in sample_shop.tables["orders"]["customer_id"].drop_duplicates()[:40]]
    picks_by_family, keys = {}, set()
    for family in ("als", "cooccurrence"):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / f'registry-{family}' / 'mlflow.db'}")
        (tmp_path / f"registry-{family}").mkdir()
        trained = run_training(data, TrainConfig(families=[family], propensity={"enabled": False}))
        assert trained.model_version == "1" and trained.gate is not None and trained.gate.passed
        expected = ShopRecommender(trained.bundle, "shoprec/v1").email_picks(customers, 5)

        service = serving_from(BundleCache(MODEL))  # the service's champion, through the shared cache
        assert service.recommender.bundle.primary_family == family
        served = service.email_picks(customer_ids=customers, k=5)
        assert [[i.item_id for i in p.items] for p in served.picks] == [[i.item_id for i in p.items] for p in expected]

        out = tmp_path / f"picks-{family}.csv"
        batch = subprocess.run([str(Path(sys.executable).with_name("shoprec")), "picks", "--model", "models:/shoprec/1",
                                "--out", str(out), "--k", "5", "--no-track"], capture_output=True, text=True,
                               timeout=300, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
        assert batch.returncode == 0, batch.stderr
        frame = pd.read_csv(out, dtype={"customer_id": str, "item_id": str})
        mine = frame[frame["customer_id"].isin(customers)]
        assert mine.groupby("customer_id", sort=False)["item_id"].apply(list).to_dict() == \
            {p.customer_id: [i.item_id for i in p.items] for p in expected}
        picks_by_family[family] = frame.to_csv(index=False)
        keys.add(service.loaded_key)
    assert len(set(picks_by_family.values())) == 2 and len(keys) == 2
    assert len(list((home / "serving-cache").glob("shoprec-v1-*"))) == 2


def test_the_serving_config_from_the_environment_reaches_every_worker_and_a_bad_one_refuses_to_start(
        champion: Callable[[str], None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SHOPREC_SERVING_CONFIG is read when a worker starts, kept across a champion swap, and a
    typo in it stops the start in one line naming the field, before the registry is asked."""
    monkeypatch.setattr(following_module, "POLL_SECONDS", 0)
    monkeypatch.setenv("SHOPREC_EVENT_LOG", str(tmp_path / "event-log"))
    monkeypatch.setenv("SHOPREC_SERVING_CONFIG", '{"send_min_open_propensity": 1.0}')
    service = ShoprecService.inner()
    try:
        ids = [str(c) for c in service.recommender.bundle.customers.external_ids[:60]]
        assert service.recommender.config.send_min_open_propensity == 1.0
        assert not any(pick.send for pick in service.recommender.email_picks(ids, 3))
        champion("2")
        assert service.reload("test") == ("shoprec/v2", True)
        assert service.recommender.config.send_min_open_propensity == 1.0
    finally:
        service._shutdown()
    monkeypatch.setenv("SHOPREC_SERVING_CONFIG", '{"send_min_open_propensty": 0.2}')
    registry_down(monkeypatch)
    with pytest.raises(UserError, match=r"SHOPREC_SERVING_CONFIG \(inline JSON\): invalid ServingConfig: "
                                         r"send_min_open_propensty: Extra inputs are not permitted"):
        ShoprecService.inner()


def test_a_worker_freezes_what_it_loaded_and_a_swap_frees_the_old_bundle(
        champion: Callable[[str], None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker takes its loaded state out of the cyclic collector's reach (no 200 ms full
    collections while serving), yet a swap still frees the bundle it replaced, even one caught
    in a reference cycle (frozen objects are never collected unless unfrozen first)."""
    monkeypatch.setattr(following_module, "POLL_SECONDS", 0)
    monkeypatch.setenv("SHOPREC_EVENT_LOG", str(tmp_path / "event-log"))
    gc.unfreeze()
    service = ShoprecService.inner()
    try:
        assert gc.get_freeze_count() > 10_000
        service.recommender.bundle.metadata["held_by"] = service.recommender  # a cycle, as later code may make
        old_recommender, old_bundle = weakref.ref(service.recommender), weakref.ref(service.recommender.bundle)
        champion("2")
        assert service.reload("test") == ("shoprec/v2", True)
        gc.collect()
        assert old_recommender() is None and old_bundle() is None
        assert gc.get_freeze_count() > 10_000
    finally:
        service._shutdown()
        gc.unfreeze()
