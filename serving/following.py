"""How a worker follows the registry: the champion alias and the running experiment, polled every
``SHOPREC_POLL_SECONDS`` and on ``POST /admin/reload`` (in every worker: the one that takes it
leaves a token in the shared bundle cache that the others watch). A swap builds the new
recommenders completely, then replaces one reference, so a request sees the old set or the new.

:class:`FollowsRegistry` is the service's half that does this; the endpoints are the other
half (serving/service.py).
"""

from __future__ import annotations

import gc
import logging
import os
import threading

import bentoml

from serving.arms import Arms
from serving.config import ServingConfig
from serving.lifecycle import BundleCache, Loaded, RegistryError
from serving.recommender import ShopRecommender
from training.bundle_files import BundleError

logger = logging.getLogger("shoprec.serving")
POLL_SECONDS = float(os.environ.get("SHOPREC_POLL_SECONDS", "60"))
WATCH_SECONDS = 1.0
"""How often a worker looks for another worker's admin reload (one small file read)."""
RELOADS = bentoml.metrics.Counter(name="shoprec_model_reloads_total",
                                  documentation="Champion swaps, by trigger.", labelnames=["trigger"])


def settle() -> None:
    """Put everything alive now (the libraries, the bundle, the recommender) out of the cyclic
    collector's reach. A full collection over them takes about 200 ms in a loaded worker
    (350,000 tracked objects on the demo bundle), and every request in flight waits for it: a
    tail no checkout page should see. Called once the worker is ready and after each swap (which
    unfreezes first, so the old bundle is freed: that one collection is the swap's price)."""
    gc.collect()
    gc.freeze()


class FollowsRegistry:
    """The champion and the experiment's arms a worker serves, kept in step with the registry."""

    config: ServingConfig
    source: BundleCache
    recommender: ShopRecommender
    loaded_key: str
    arms: Arms
    _swap_lock: threading.Lock
    _stop: threading.Event
    _reload_seen: str

    def start_following(self) -> None:
        """Poll the registry every ``SHOPREC_POLL_SECONDS`` (0: never) and watch for another worker's
        admin reload, each in a daemon thread that :attr:`_stop` ends."""
        self._stop = threading.Event()
        if POLL_SECONDS > 0:
            threading.Thread(target=self._poll, name="champion-poll", daemon=True).start()
        self._reload_seen = self.source.reload_request()
        threading.Thread(target=self._watch_reloads, name="reload-watch", daemon=True).start()

    def reload(self, trigger: str) -> tuple[str, bool]:
        """Swap to the registry's champion if it moved (another version, or the same number with other
        content: a recreated registry), then follow the running experiment; one swap at a time."""
        with self._swap_lock:
            changed = self._follow_champion(trigger)
            self._follow_experiment()
            return self.recommender.model_version, changed

    def _follow_champion(self, trigger: str) -> bool:
        """Swap to the registry's champion if it moved (caller holds the swap lock)."""
        champion = self.source.champion()
        if champion.label == self.recommender.model_version and champion.key == self.loaded_key:
            return False
        loaded: Loaded = self.source.fetch(champion, remember=True)
        recommender = ShopRecommender(loaded.bundle, loaded.version, self.config)
        recommender.warm()  # before the swap: no request pays for it
        gc.unfreeze()  # the old bundle must become collectable once the swap drops it
        self.recommender = recommender  # the one atomic swap
        self.loaded_key = loaded.key
        settle()
        RELOADS.labels(trigger=trigger).inc()
        logger.warning("now serving %s (%s)", loaded.version, trigger)
        return True

    def _warmed_version(self, version: str) -> ShopRecommender:
        loaded = self.source.fetch(self.source.version(version))
        recommender = ShopRecommender(loaded.bundle, loaded.version, self.config)
        recommender.warm()
        return recommender

    def _follow_experiment(self) -> None:
        """Start, change or end the experiment this worker serves, as the registry says.

        Each variant's bundle is fetched and warmed before the one swap (:meth:`Arms.of`)."""
        experiment = self.source.experiment()
        current = self.arms.experiment
        if (experiment and experiment.identity) == (current and current.identity):
            return
        if experiment is None:
            self.arms = Arms()
            logger.warning("experiment %s ended: the champion %s answers everyone", current and current.name,
                           self.recommender.model_version)
            return
        arms = Arms.of(experiment, [self.recommender, *self.arms.recommenders.values()], self._warmed_version)
        gc.unfreeze()  # an arm the swap drops must become collectable
        self.arms = arms
        settle()
        logger.warning("now running %s", experiment.describe())

    def _poll(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            try:
                self.reload("poll")
            except (RegistryError, BundleError) as error:  # keep serving the current model; retry next tick
                logger.error("champion poll failed (%s); still serving %s, retrying in %ss",
                             error, self.recommender.model_version, POLL_SECONDS)
            except Exception:  # noqa: BLE001 - keep serving the current model; retry next tick
                logger.exception("champion poll failed; still serving %s", self.recommender.model_version)

    def _watch_reloads(self) -> None:
        """Reload when another worker took ``POST /admin/reload`` (a new token in the cache)."""
        while not self._stop.wait(WATCH_SECONDS):
            token = self.source.reload_request()
            if token == self._reload_seen:
                continue
            self._reload_seen = token
            try:
                self.reload("admin, another worker")
            except (RegistryError, BundleError) as error:  # keep serving; the poll retries
                logger.error("admin reload from another worker failed (%s); still serving %s",
                             error, self.recommender.model_version)
            except Exception:  # noqa: BLE001 - keep serving the current model
                logger.exception("admin reload from another worker failed; still serving %s",
                                 self.recommender.model_version)
