"""A bundle folder's integrity: a manifest of SHA-256 per file, written with the bundle and
checked before it is loaded, so that a corrupted or tampered download is refused."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from features.errors import UserError

MANIFEST = "manifest.json"


class BundleError(UserError):
    """A bundle folder that is incomplete or fails its checksums."""


def manifest(folder: Path) -> dict[str, str]:
    """Every file of ``folder`` but the manifest itself -> its SHA-256."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    return {str(p.relative_to(folder)): _sha256(p) for p in files}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def content_hash(folder: Path) -> str:
    """SHA-256 of the bundle's manifest: one value for the whole content, since the manifest
    lists a SHA-256 per file. Training records it on the registered version; caches check it."""
    return _sha256(folder / MANIFEST)


def verify(folder: Path) -> set[str]:
    """Refuse a bundle whose files are missing or differ from the manifest; the files it lists
    (a loader reads an optional file only if listed: an unlisted one was never checked)."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{folder}: not a shoprec bundle (no {MANIFEST})")
    try:
        manifest = json.loads(manifest_path.read_text())
    except ValueError as error:  # a damaged manifest: bad JSON or bad UTF-8
        raise BundleError(f"{folder}: {MANIFEST} is unreadable ({error})") from error
    if not isinstance(manifest, dict):
        raise BundleError(f"{folder}: {MANIFEST} is not a file -> checksum map")
    for name, expected in manifest.items():
        path = folder / name
        if not path.is_file():
            raise BundleError(f"{folder}: bundle file {name} is missing")
        if _sha256(path) != expected:
            raise BundleError(f"{folder}: bundle file {name} fails its checksum (corrupted download?)")
    return set(manifest)
