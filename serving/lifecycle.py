"""Where the service's bundle comes from: the registry's ``champion``, else the last local copy.

Each champion version is downloaded once into ``SHOPREC_HOME/serving-cache/<name>-v<version>``
and ``current.json`` names the last one loaded, so a restart while the registry is down
still serves the model it served before (and says so loudly in the log).

Every copy is verified against its checksums before it is served: a download that fails is
rejected before it enters the cache; a cached copy that fails (corrupted on disk) is
discarded and downloaded again when the registry answers, and refused, with one line
saying why, when it does not.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from training import tracking
from training.bundle import MANIFEST, Bundle, BundleError
from training.registry import CHAMPION

logger = logging.getLogger("shoprec.serving")
CURRENT = "current.json"
# A down tracking server should fail the start-up fetch in seconds, not MLflow's minutes of retries.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


class RegistryError(RuntimeError):
    """The registry could not be asked for the champion, or its files could not be downloaded."""


def one_line(error: BaseException, limit: int = 600) -> str:
    """An exception as one line of at most ``limit`` characters, keeping both ends (MLflow's
    messages can span many lines; the cause, such as "Connection refused", comes last)."""
    text = f"{type(error).__name__}: {' '.join(str(error).split())}"
    return text if len(text) <= limit else f"{text[:limit // 2 - 3]} ... {text[-(limit // 2 - 2):]}"


@dataclass(frozen=True)
class Loaded:
    bundle: Bundle
    version: str
    """``<name>/v<registry version>``: what every response reports as model_version."""


class ChampionSource:
    """Fetch, cache and load the champion bundle of one registered model."""

    def __init__(self, model_name: str = "shoprec", cache_dir: Path | None = None) -> None:
        self.model_name = model_name
        self.cache_dir = cache_dir or tracking.shoprec_home() / "serving-cache"

    def champion_version(self) -> str:
        """The registry version the alias points at now (RegistryError when unreachable or unset)."""
        try:
            client = tracking.configure()
            return str(client.get_model_version_by_alias(self.model_name, CHAMPION).version)
        except Exception as error:  # noqa: BLE001 - whatever MLflow raises, the registry did not answer
            raise RegistryError(f"registry: cannot read {self.model_name}@{CHAMPION}: {one_line(error)}") from error

    def fetch(self, version: str) -> Loaded:
        """Load one registered version from the cache, else download it; then record it as current.

        Raises RegistryError when the download fails and BundleError when the downloaded copy
        fails its checksums; either way nothing in the cache or ``current.json`` changes.
        """
        target = self.cache_dir / f"{self.model_name}-v{version}"
        bundle = None
        if (target / MANIFEST).is_file():
            try:
                bundle = Bundle.load(target)
            except BundleError as error:
                logger.error("!!! CACHED BUNDLE CORRUPT (%s): discarding it and downloading %s/v%s again",
                             error, self.model_name, version)
                shutil.rmtree(target)
        if bundle is None:
            bundle = self._download(version, target)
        loaded = Loaded(bundle, f"{self.model_name}/v{version}")
        tmp = self.cache_dir / f".{CURRENT}.{uuid.uuid4().hex}"
        tmp.write_text(json.dumps({"version": version, "path": str(target)}))
        os.replace(tmp, self.cache_dir / CURRENT)
        return loaded

    def _download(self, version: str, target: Path) -> Bundle:
        """Download a version beside the cache and load it (which verifies it), then move it into place."""
        import mlflow

        staging = self.cache_dir / f".download-{uuid.uuid4().hex}"
        try:
            try:
                tracking.configure()
                mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{self.model_name}/{version}",
                                                    dst_path=str(staging))
                bundle_dir = next(staging.rglob(MANIFEST)).parent
            except Exception as error:  # noqa: BLE001 - a failed or empty download: the registry's fault
                raise RegistryError(f"registry: cannot download {self.model_name}/v{version}: "
                                    f"{one_line(error)}") from error
            try:
                bundle = Bundle.load(bundle_dir)  # reads every file into memory, so the folder may move
            except BundleError as error:
                logger.error("!!! DOWNLOAD REJECTED: %s/v%s from the registry fails verification (%s)",
                             self.model_name, version, error)
                raise
            shutil.rmtree(target, ignore_errors=True)
            try:
                bundle_dir.rename(target)
            except OSError:
                if not (target / MANIFEST).is_file():  # else another worker put it there first
                    raise
            return bundle
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def load_cached(self) -> Loaded:
        current = json.loads((self.cache_dir / CURRENT).read_text())
        return Loaded(Bundle.load(Path(current["path"])), f"{self.model_name}/v{current['version']}")

    def load_initial(self) -> Loaded:
        """The champion from the registry; the cached copy when the registry fails.

        Raises RuntimeError with a one-line message when neither gives a bundle that verifies.
        """
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        try:
            return self.fetch(self.champion_version())
        except Exception as error:  # noqa: BLE001 - any registry failure means: use the cache
            if not (self.cache_dir / CURRENT).is_file():
                raise RuntimeError(f"cannot load {self.model_name}@{CHAMPION} from {tracking.tracking_uri()} "
                                   f"and no cached bundle in {self.cache_dir}: {one_line(error)}") from error
            try:
                loaded = self.load_cached()
            except (BundleError, OSError, ValueError, KeyError) as cached_error:
                raise RuntimeError(
                    f"cannot start: {self.model_name}@{CHAMPION} could not be loaded ({one_line(error)}) "
                    f"and the cached bundle in {self.cache_dir} is unusable ({one_line(cached_error)}); "
                    f"serving nothing rather than an unverified model") from None
            what = "CHAMPION DOWNLOAD REJECTED" if isinstance(error, BundleError) else "REGISTRY UNREACHABLE"
            logger.error("!!! %s (%s): serving the CACHED bundle %s from %s; it may be older than the "
                         "current champion", what, one_line(error), loaded.version, self.cache_dir)
            return loaded
