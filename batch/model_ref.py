"""Which model a picks job scores with: a model URI resolved to one bundle, alias pinned, from the shared cache.

Both engines resolve through here, so ``--model`` means the same thing and fails with the same
errors whichever engine runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from features.errors import UserError
from features.sources import safe_url
from serving.lifecycle import BundleCache, Loaded
from training.bundle import Bundle
from training.bundle_files import MANIFEST


@dataclass(frozen=True)
class ModelRef:
    """A model URI resolved to one bundle, without loading it: what both engines report and tag.

    An alias is pinned to the version it points at when resolved, so a promotion during a job
    cannot mix two models.
    """

    uri: str
    """As given: ``models:/shoprec@champion``, ``models:/shoprec/3`` or a folder."""
    version: str
    """What every row reports as model_version: ``<name>/v<version>`` as the service does,
    ``local/<folder>`` for a bundle folder."""
    name: str | None = None
    registry_version: str | None = None
    source_run_id: str | None = None
    """The training run that logged the registered version."""
    model_id: str | None = None
    """The version's MLflow 3 logged model, when there is one."""
    folder: Path | None = None
    """The bundle folder of a local model; None for a registry model (downloaded when loaded)."""

    @property
    def pinned_uri(self) -> str:
        """``models:/NAME/VERSION`` for a registry model (an alias pinned), else the bundle folder."""
        return f"models:/{self.name}/{self.registry_version}" if self.folder is None else str(self.folder)


@dataclass(frozen=True)
class LoadedModel(ModelRef):
    bundle: Bundle = field(kw_only=True)


def resolve_model_uri(uri: str) -> ModelRef:
    """``models:/NAME@ALIAS`` (pinned to its version now), ``models:/NAME/VERSION`` or a bundle
    folder (also a folder holding one, as a downloaded MLflow model does), checked but not loaded.

    A malformed URI, a name, alias or version the registry does not have, or a folder without a
    bundle is a :class:`UserError` / ``FileNotFoundError`` naming ``--model``. Shared by both engines.
    """
    if not uri.startswith("models:/"):
        path = Path(uri)
        return ModelRef(uri, f"local/{path.resolve().name}", folder=find_bundle(path, uri))
    from mlflow.exceptions import MlflowException

    from training import tracking

    name, alias, version = _parse_models_uri(uri)
    client = tracking.configure()
    try:
        found = (client.get_model_version_by_alias(name, alias) if alias is not None
                 else client.get_model_version(name, str(version)))
    except MlflowException as error:
        raise UserError(f"--model {uri}: not found in the registry at {safe_url(tracking.tracking_uri())} "
                         f"({error.message.splitlines()[0]})") from None
    return ModelRef(uri, f"{name}/v{found.version}", name, str(found.version), found.run_id or None,
                    getattr(found, "model_id", None) or None)


def load_model_uri(uri: str, cache_dir: Path | None = None) -> LoadedModel:
    """The bundle :func:`resolve_model_uri` points at, loaded (checksums verified on load).

    Registry versions come through the one bundle cache the service uses
    (:class:`serving.lifecycle.BundleCache`, ``SHOPREC_HOME/serving-cache``), keyed by what the
    registry says the version is, so a recreated registry's ``v1`` is never an older ``v1``.
    The batch never touches the service's record of what it last served.
    """
    ref = resolve_model_uri(uri)
    bundle = Bundle.load(ref.folder) if ref.folder is not None else registry_copy(ref, cache_dir).bundle
    return LoadedModel(**vars(ref), bundle=bundle)


def registry_copy(ref: ModelRef, cache_dir: Path | None = None) -> Loaded:
    """A registry model's verified local copy, from the shared cache (downloaded on first use)."""
    cache = BundleCache(ref.name or "", cache_dir)
    return cache.fetch(cache.version(ref.registry_version or ""))


def find_bundle(path: Path, uri: str) -> Path:
    """The bundle folder at ``path`` or below it (a downloaded MLflow model: artifacts/bundle)."""
    if not path.is_dir():
        raise FileNotFoundError(f"--model {uri}: no such folder (or use models:/NAME@ALIAS)")
    folder = path if (path / MANIFEST).is_file() else next((p.parent for p in sorted(path.rglob(MANIFEST))), None)
    if folder is None:
        raise UserError(f"--model {uri}: no shoprec bundle ({MANIFEST}) in this folder")
    return folder


def _parse_models_uri(uri: str) -> tuple[str, str | None, str | None]:
    rest = uri[len("models:/"):].strip("/")
    if "@" in rest and "/" not in rest:
        name, alias = rest.split("@", 1)
        if name and alias:
            return name, alias, None
    elif rest.count("/") == 1:
        name, version = rest.split("/")
        if name and version.isdigit():
            return name, None, version
    raise UserError(f"--model {uri}: use models:/NAME@ALIAS, models:/NAME/VERSION or a bundle folder")
