"""Where the service's bundle comes from: the registry's ``champion``, else the last local copy.

Each champion version is downloaded once into ``SHOPREC_HOME/serving-cache/<name>-v<version>``
and ``current.json`` names the last one loaded, so a restart while the registry is down
still serves the model it served before (and says so loudly in the log).
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
from training.bundle import MANIFEST, Bundle
from training.registry import CHAMPION

logger = logging.getLogger("shoprec.serving")
CURRENT = "current.json"
# A down tracking server should fail the start-up fetch in seconds, not MLflow's minutes of retries.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


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
        """The registry version the alias points at now (raises when unreachable or unset)."""
        client = tracking.configure()
        return str(client.get_model_version_by_alias(self.model_name, CHAMPION).version)

    def fetch(self, version: str) -> Loaded:
        """Download (once) and load one registered version, then record it as current."""
        import mlflow

        target = self.cache_dir / f"{self.model_name}-v{version}"
        if not (target / MANIFEST).is_file():
            staging = self.cache_dir / f".download-{uuid.uuid4().hex}"
            tracking.configure()
            mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{self.model_name}/{version}",
                                                dst_path=str(staging))
            bundle_dir = next(staging.rglob(MANIFEST)).parent
            shutil.rmtree(target, ignore_errors=True)
            bundle_dir.rename(target)
            shutil.rmtree(staging, ignore_errors=True)
        loaded = Loaded(Bundle.load(target), f"{self.model_name}/v{version}")
        tmp = self.cache_dir / f".{CURRENT}.{uuid.uuid4().hex}"
        tmp.write_text(json.dumps({"version": version, "path": str(target)}))
        os.replace(tmp, self.cache_dir / CURRENT)
        return loaded

    def load_cached(self) -> Loaded:
        current = json.loads((self.cache_dir / CURRENT).read_text())
        return Loaded(Bundle.load(Path(current["path"])), f"{self.model_name}/v{current['version']}")

    def load_initial(self) -> Loaded:
        """The champion from the registry; the cached copy when the registry fails."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        try:
            return self.fetch(self.champion_version())
        except Exception as error:  # noqa: BLE001 - any registry failure means: use the cache
            if not (self.cache_dir / CURRENT).is_file():
                raise RuntimeError(f"cannot load {self.model_name}@{CHAMPION} from {tracking.tracking_uri()} "
                                   f"and no cached bundle in {self.cache_dir}: {error}") from error
            logger.error("!!! REGISTRY UNREACHABLE (%s): serving the CACHED bundle from %s; "
                         "it may be older than the current champion", error, self.cache_dir)
            return self.load_cached()
