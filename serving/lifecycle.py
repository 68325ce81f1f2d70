"""Where a registered bundle comes from: the registry, through one local cache that cannot lie.

Version numbers are not unique: recreate the MLflow database, or point
``MLFLOW_TRACKING_URI`` at another server, train again, and ``v1`` comes back. So a cached
copy is keyed by what the registry says the version *is*, not by its number: the tracking
server, the version's training run and source, and the bundle's content hash that training
records on the version (tag ``shoprec.bundle_sha256``, the SHA-256 of the bundle's
manifest, which itself lists a SHA-256 per file). A copy is used only when its key matches
and its manifest hashes to the recorded value; a download that does not is refused.

The service (``champion``), ``shoprec picks`` and the Spark engine all go through
:meth:`BundleCache.fetch`, into ``SHOPREC_HOME/serving-cache/<name>-v<version>-<key>``.
Only the service records ``current.json`` (the last copy it served), so a restart while the
registry is down still serves the model it served before, and says so loudly in the log.

Every copy is verified against its checksums before it is served: a download that fails is
rejected before it enters the cache; a cached copy that fails (corrupted on disk) is
discarded and downloaded again when the registry answers, and refused, with one line
saying why, when it does not.

The workers of one service share the cache and may fill it at the same moment: a copy is
renamed into place whole, a verified copy already in place is kept, and a broken one is
renamed aside before it is removed (:meth:`BundleCache._place`), so no worker ever reads a
copy that another is deleting.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from features.errors import ShoprecError, one_line
from features.sources import safe_url
from training import tracking
from training.bundle import Bundle
from training.bundle_files import MANIFEST, BundleError, content_hash, verify
from training.experiments import Experiment, running
from training.registry import BUNDLE_HASH_TAG, CHAMPION

logger = logging.getLogger("shoprec.serving")
CURRENT = "current.json"
RELOAD_REQUEST = "reload-request.json"
"""Written by a worker that took ``POST /admin/reload``: a new token tells every other worker
sharing the cache to reload too (:meth:`BundleCache.request_reload`)."""
# A down tracking server should fail the start-up fetch in seconds, not MLflow's minutes of retries.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


class RegistryError(ShoprecError, RuntimeError):
    """The registry could not be asked for the champion, or its files could not be downloaded."""


MESSAGE_LIMIT = 600
"""Longest error text a RegistryError quotes from MLflow."""


def _quoted(error: BaseException) -> str:
    return one_line(error, MESSAGE_LIMIT, kind=True)


@dataclass(frozen=True)
class RegisteredVersion:
    """One registry version as the registry describes it: enough to tell it from any other
    version that happens to carry the same number."""

    name: str
    version: str
    run_id: str
    source: str
    bundle_sha256: str | None
    """The content hash training recorded (None for versions registered before it did)."""
    registry: str
    """The tracking server (credentials hidden)."""

    @classmethod
    def from_mlflow(cls, name: str, found: Any, registry: str) -> RegisteredVersion:
        return cls(name, str(found.version), found.run_id or "", found.source or "",
                   (found.tags or {}).get(BUNDLE_HASH_TAG), safe_url(registry))

    @property
    def key(self) -> str:
        """Short, stable identity of this version's content: the cache folder's suffix."""
        identity = "|".join((self.registry, self.run_id, self.source, self.bundle_sha256 or ""))
        return hashlib.sha256(identity.encode()).hexdigest()[:12]

    @property
    def label(self) -> str:
        """``<name>/v<version>``: what every response reports as model_version."""
        return f"{self.name}/v{self.version}"


@dataclass(frozen=True)
class Loaded:
    bundle: Bundle
    version: str
    """``<name>/v<registry version>``: what every response reports as model_version."""
    folder: Path
    key: str = ""
    """:attr:`RegisteredVersion.key` of the copy (empty for a copy read from ``current.json`` alone)."""


class BundleCache:
    """Fetch, verify, cache and load the registered versions of one model name."""

    def __init__(self, model_name: str = "shoprec", cache_dir: Path | None = None) -> None:
        self.model_name = model_name
        self.cache_dir = cache_dir or tracking.shoprec_home() / "serving-cache"

    # ---- asking the registry -------------------------------------------------------------------
    def champion(self) -> RegisteredVersion:
        """The version the ``champion`` alias points at now (RegistryError when unreachable or unset)."""
        return self._ask(lambda client: client.get_model_version_by_alias(self.model_name, CHAMPION),
                         f"{self.model_name}@{CHAMPION}")

    def version(self, version: str) -> RegisteredVersion:
        """One numbered version (RegistryError when unreachable or unknown)."""
        return self._ask(lambda client: client.get_model_version(self.model_name, version),
                         f"{self.model_name}/v{version}")

    def experiment(self) -> Experiment | None:
        """The experiment running on this model now, or None (RegistryError when unreachable)."""
        try:
            return running(tracking.configure(), self.model_name)
        except Exception as error:  # noqa: BLE001 - whatever MLflow raises, the registry did not answer
            raise RegistryError(f"registry: cannot read the experiment of {self.model_name}: "
                                f"{_quoted(error)}") from error

    def _ask(self, question: Any, what: str) -> RegisteredVersion:
        try:
            client = tracking.configure()
            return RegisteredVersion.from_mlflow(self.model_name, question(client), tracking.tracking_uri())
        except Exception as error:  # noqa: BLE001 - whatever MLflow raises, the registry did not answer
            raise RegistryError(f"registry: cannot read {what}: {_quoted(error)}") from error

    # ---- the cache ---------------------------------------------------------------------------------
    def fetch(self, ref: RegisteredVersion, *, remember: bool = False) -> Loaded:
        """Load ``ref`` from the cache, else download it; with ``remember`` record it as current.

        Raises RegistryError when the download fails and BundleError when the downloaded copy
        fails its checksums or is not the content the registry recorded; either way nothing in
        the cache or ``current.json`` changes.
        """
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        target = self.cache_dir / f"{ref.name}-v{ref.version}-{ref.key}"
        bundle = None
        if (target / MANIFEST).is_file():
            try:
                bundle = Bundle.load(target)
                _check_content(target, ref)
            except (BundleError, FileNotFoundError) as error:  # not found: another worker moved a broken copy away
                logger.error("!!! CACHED BUNDLE CORRUPT (%s): downloading %s again", error, ref.label)
                bundle = None
        if bundle is None:
            bundle = self._download(ref, target)
        if remember:
            tmp = self.cache_dir / f".{CURRENT}.{uuid.uuid4().hex}"
            tmp.write_text(json.dumps({"version": ref.version, "path": str(target), "key": ref.key}))
            os.replace(tmp, self.cache_dir / CURRENT)
        return Loaded(bundle, ref.label, target, ref.key)

    def _download(self, ref: RegisteredVersion, target: Path) -> Bundle:
        """Download a version beside the cache and load it (which verifies it), then move it into place."""
        import mlflow

        staging = self.cache_dir / f".download-{uuid.uuid4().hex}"
        try:
            try:
                tracking.configure()
                mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{ref.name}/{ref.version}",
                                                    dst_path=str(staging))
                bundle_dir = next(staging.rglob(MANIFEST)).parent
            except Exception as error:  # noqa: BLE001 - a failed or empty download: the registry's fault
                raise RegistryError(f"registry: cannot download {ref.label}: {_quoted(error)}") from error
            try:
                bundle = Bundle.load(bundle_dir)  # reads every file into memory, so the folder may move
                _check_content(bundle_dir, ref)
            except BundleError as error:
                logger.error("!!! DOWNLOAD REJECTED: %s from the registry fails verification (%s)", ref.label, error)
                raise
            self._place(bundle_dir, target, ref)
            return bundle
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _place(self, copy: Path, target: Path, ref: RegisteredVersion) -> None:
        """Move a verified copy into the cache, safely while other workers read and write it.

        A folder is renamed into place whole, so a reader sees a complete copy or none, never
        a half-deleted one. When the place is taken, a copy that verifies is kept (another
        worker put the same content there first); a broken one is renamed aside, then removed,
        and ours takes its place.
        """
        for _ in range(3):
            try:
                copy.rename(target)
                return
            except OSError as error:
                if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise  # not "the place is taken": a full disk, permissions, another device
            if not target.exists():
                continue  # moved aside meanwhile: try again
            if _intact(target, ref):
                return
            aside = self.cache_dir / f".discarded-{uuid.uuid4().hex}"
            try:
                target.rename(aside)
            except FileNotFoundError:
                pass  # another worker moved it aside first
            shutil.rmtree(aside, ignore_errors=True)
        raise BundleError(f"{target}: could not place {ref.label} in the cache (taken and released three times)")

    # ---- telling the other workers -------------------------------------------------------------
    def request_reload(self) -> str:
        """Record that an admin asked for a reload: a new token, written atomically, which every
        worker sharing this cache watches (:meth:`reload_request`); returns the token ('' when it
        could not be written: this worker reloaded, the others follow at their poll)."""
        token = uuid.uuid4().hex
        staging = self.cache_dir / f".{RELOAD_REQUEST}.{token}"
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            staging.write_text(json.dumps({"token": token}))
            os.replace(staging, self.cache_dir / RELOAD_REQUEST)
        except OSError as error:
            logger.warning("could not tell the other workers to reload (%s); they follow at their poll",
                           one_line(error))
            staging.unlink(missing_ok=True)
            return ""
        return token

    def reload_request(self) -> str:
        """The latest reload request's token ('' when there is none, or none readable yet)."""
        try:
            return str(json.loads((self.cache_dir / RELOAD_REQUEST).read_text())["token"])
        except (OSError, ValueError, KeyError, TypeError):
            return ""

    def load_cached(self) -> Loaded:
        """The copy ``current.json`` names (verified on load), without asking the registry."""
        current = json.loads((self.cache_dir / CURRENT).read_text())
        folder = Path(current["path"])
        return Loaded(Bundle.load(folder), f"{self.model_name}/v{current['version']}", folder, current.get("key", ""))

    def load_initial(self) -> Loaded:
        """The champion from the registry; the cached copy when the registry fails.

        Raises RuntimeError with a one-line message when neither gives a bundle that verifies.
        """
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        try:
            return self.fetch(self.champion(), remember=True)
        except Exception as error:  # noqa: BLE001 - any registry failure means: use the cache
            if not (self.cache_dir / CURRENT).is_file():
                raise RuntimeError(f"cannot load {self.model_name}@{CHAMPION} from {tracking.tracking_uri()} "
                                   f"and no cached bundle in {self.cache_dir}: {_quoted(error)}") from error
            try:
                loaded = self.load_cached()
            except (BundleError, OSError, ValueError, KeyError) as cached_error:
                raise RuntimeError(
                    f"cannot start: {self.model_name}@{CHAMPION} could not be loaded ({_quoted(error)}) "
                    f"and the cached bundle in {self.cache_dir} is unusable ({_quoted(cached_error)}); "
                    f"serving nothing rather than an unverified model") from None
            what = "CHAMPION DOWNLOAD REJECTED" if isinstance(error, BundleError) else "REGISTRY UNREACHABLE"
            logger.error("!!! %s (%s): serving the CACHED bundle %s from %s; it may be older than the "
                         "current champion", what, _quoted(error), loaded.version, loaded.folder)
            return loaded


def _intact(folder: Path, ref: RegisteredVersion) -> bool:
    """Whether a cached copy passes its checksums and is the content the registry recorded."""
    try:
        verify(folder)
        _check_content(folder, ref)
    except (BundleError, FileNotFoundError):  # broken, or moved aside by another worker meanwhile
        return False
    return True


def _check_content(folder: Path, ref: RegisteredVersion) -> None:
    """Refuse a copy whose manifest is not the one the registry recorded for this version."""
    if ref.bundle_sha256 is not None and content_hash(folder) != ref.bundle_sha256:
        raise BundleError(f"{folder}: not the content the registry recorded for {ref.label} "
                          f"({BUNDLE_HASH_TAG} {ref.bundle_sha256[:12]}..., this copy {content_hash(folder)[:12]}...)")
