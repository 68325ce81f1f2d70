"""The one trained artefact: id maps, catalogue, histories and fitted models, in plain files.

A bundle is a folder of Parquet, .npy and sparse .npz files with a JSON manifest that
records a SHA-256 per file, so a corrupted or tampered download is refused on load.
Nothing is pickled: any process (the service, the batch job, a notebook, Spark) loads
the same files the same way, through the MLflow pyfunc wrapper in :mod:`training.pyfunc`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.dataset import Dataset, IdMap
from training.models import load_model
from training.models.base import Recommender, top_k
from training.propensity_set import PropensitySet, PropensityUnavailable
from training.rules import durable_exclusions, out_of_stock_mask

MANIFEST = "manifest.json"
PRIMARY, POPULARITY, COOCCURRENCE = "primary", "popularity", "cooccurrence"
RECOMMENDATION_COLUMNS = ["customer_id", "canonical_id", "rank", "item_id", "score", "reason"]
ALIASES = "customer_aliases"
"""The profile (``alias_id, customer_id``) mapping each merged duplicate id to its canonical id."""


class BundleError(ValueError):
    """A bundle folder that is incomplete or fails its checksums."""


@dataclass
class Bundle:
    """Everything needed to answer requests, aligned on one pair of id maps.

    ``models`` holds the chosen primary model plus the popularity fallback and the
    co-occurrence model used for cart cross-sells; ``profiles`` the customer profiles
    (RFM, segment, price band, top category), category affinities and repurchase intervals;
    ``propensity`` the purchase / session / email-open models (None when training skipped them all).
    """

    customers: IdMap
    items: IdMap
    catalogue: pd.DataFrame
    interactions: sp.csr_matrix
    purchases: sp.csr_matrix
    models: dict[str, Recommender]
    metadata: dict[str, Any] = field(default_factory=dict)
    profiles: dict[str, pd.DataFrame] = field(default_factory=dict)
    propensity: PropensitySet | None = None

    def __post_init__(self) -> None:
        aliases = self.profiles.get(ALIASES)
        if aliases is None or not len(aliases):
            aliases = pd.DataFrame({"alias_id": pd.Series(dtype=object), "customer_id": pd.Series(dtype=object)})
        self._alias_index = pd.Index(aliases["alias_id"].astype(str).to_numpy(dtype=object), dtype=object)
        self._alias_target = aliases["customer_id"].astype(str).to_numpy(dtype=object)

    @classmethod
    def from_dataset(cls, dataset: Dataset, models: dict[str, Recommender], metadata: dict[str, Any],
                     profiles: dict[str, pd.DataFrame] | None = None,
                     propensity: PropensitySet | None = None) -> Bundle:
        missing = {PRIMARY, POPULARITY} - set(models)
        if missing:
            raise BundleError(f"bundle needs models {sorted(missing)}")
        if propensity is not None:
            metadata = {**metadata, "propensity": propensity.status}
        return cls(dataset.customers, dataset.items, dataset.catalogue, dataset.interactions,
                   dataset.purchases, models, {**metadata, "as_of": dataset.as_of.isoformat()}, profiles or {},
                   propensity)

    # ---- persistence -------------------------------------------------------------------
    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"customer_id": self.customers.external_ids}).to_parquet(folder / "customers.parquet")
        self.catalogue.to_parquet(folder / "catalogue.parquet")
        sp.save_npz(folder / "interactions.npz", self.interactions)
        sp.save_npz(folder / "purchases.npz", self.purchases)
        for role, model in self.models.items():
            model.save(folder / "models" / role)
        (folder / "profiles").mkdir(exist_ok=True)
        for name, frame in self.profiles.items():
            frame.to_parquet(folder / "profiles" / f"{name}.parquet", index=False)
        if self.propensity is not None:
            self.propensity.save(folder / "propensity")
        (folder / "bundle.json").write_text(json.dumps(self.metadata, indent=2, default=str))
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
        manifest = {str(p.relative_to(folder)): _sha256(p) for p in files}
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=2))
        return folder

    @classmethod
    def load(cls, folder: Path) -> Bundle:
        verify(folder)
        catalogue = pd.read_parquet(folder / "catalogue.parquet")
        models = {p.name: load_model(p) for p in sorted((folder / "models").iterdir()) if p.is_dir()}
        return cls(
            customers=IdMap(pd.read_parquet(folder / "customers.parquet")["customer_id"].to_numpy(dtype=object)),
            items=IdMap(catalogue["item_id"].to_numpy(dtype=object)),
            catalogue=catalogue,
            interactions=sp.load_npz(folder / "interactions.npz").tocsr(),
            purchases=sp.load_npz(folder / "purchases.npz").tocsr(),
            models=models,
            metadata=json.loads((folder / "bundle.json").read_text()),
            profiles={p.stem: pd.read_parquet(p) for p in sorted((folder / "profiles").glob("*.parquet"))},
            propensity=PropensitySet.load(folder / "propensity") if (folder / "propensity").is_dir() else None,
        )

    # ---- ids -------------------------------------------------------------------------------
    def canonical_ids(self, customer_ids: Sequence[str] | np.ndarray) -> np.ndarray:
        """The id each customer is known by after training merged duplicates (``customer_aliases``):
        an alias becomes its canonical id, every other id stays as given. A shop's front end
        knows the id it has, not the merged one, so every entry resolves ids through here."""
        ids = np.asarray(customer_ids, dtype=object)
        if not len(self._alias_index) or not len(ids):
            return ids.copy()
        position = self._alias_index.get_indexer(pd.Index(ids, dtype=object))
        out = ids.copy()
        out[position >= 0] = self._alias_target[position[position >= 0]]
        return out

    def customer_index(self, customer_ids: Sequence[str] | np.ndarray) -> np.ndarray:
        """Internal indices of customers given by any of their ids (aliases resolved); -1 if unknown."""
        return self.customers.to_index(self.canonical_ids(customer_ids), unknown="mark")

    # ---- answering -----------------------------------------------------------------------
    @property
    def primary_family(self) -> str:
        return self.models[PRIMARY].family

    def recommend(self, customer_ids: Sequence[str], k: int) -> pd.DataFrame:
        """Top k per customer as ``customer_id, canonical_id, rank, item_id, score, reason``
        (``customer_id`` as given, ``canonical_id`` the merged id it was scored as).

        Known customers get the primary model with durables they bought and out-of-stock
        items removed; unknown customers get the in-stock popularity list.
        """
        ids = np.asarray([str(c) for c in customer_ids], dtype=object)
        idx = self.customer_index(ids)
        known = idx >= 0
        parts = []
        if known.any():
            exclude = (durable_exclusions(self.purchases, self.catalogue["durable"], idx[known])
                       + out_of_stock_mask(self.catalogue["in_stock"], int(known.sum())))
            items, scores = self.models[PRIMARY].recommend(self.interactions, idx[known], k, exclude)
            parts.append(self._frame(ids[known], items, scores, f"model:{self.primary_family}"))
        if (~known).any():
            scores = self.models[POPULARITY].score(np.zeros(1, dtype=np.int64), self.interactions[:0])
            items, top = top_k(scores, k, out_of_stock_mask(self.catalogue["in_stock"], 1))
            n = int((~known).sum())
            parts.append(self._frame(ids[~known], np.repeat(items, n, axis=0), np.repeat(top, n, axis=0),
                                     "popular"))
        frame = (pd.concat(parts, ignore_index=True) if parts else
                 pd.DataFrame(columns=[c for c in RECOMMENDATION_COLUMNS if c != "canonical_id"]))
        order = pd.Series(pd.Categorical(frame["customer_id"], categories=pd.unique(ids)))
        frame = frame.iloc[np.lexsort((frame["rank"].to_numpy(), order.cat.codes.to_numpy()))].reset_index(drop=True)
        frame.insert(1, "canonical_id", self.canonical_ids(frame["customer_id"].to_numpy(dtype=object)))
        return frame

    # ---- propensity -----------------------------------------------------------------------
    def _propensity(self, target: str) -> PropensitySet:
        if self.propensity is None:
            raise PropensityUnavailable(target, "not trained (propensity disabled for this bundle)")
        return self.propensity

    def customer_propensity(self, customer_ids: Sequence[str]) -> pd.DataFrame:
        """P(buys within the horizon) as ``customer_id, probability, known`` (ids as given, scored
        by their canonical id); raises PropensityUnavailable."""
        return self._customer_model("customer", customer_ids)

    def email_open_propensity(self, customer_ids: Sequence[str]) -> pd.DataFrame:
        """P(opens the next email) as ``customer_id, probability, known``; raises PropensityUnavailable."""
        return self._customer_model("email", customer_ids)

    def _customer_model(self, target: str, customer_ids: Sequence[str]) -> pd.DataFrame:
        scored = self._propensity(target).customers(target, self.canonical_ids([str(c) for c in customer_ids]))
        return scored.assign(customer_id=np.asarray([str(c) for c in customer_ids], dtype=object))

    def session_propensity(self, events: pd.DataFrame) -> pd.DataFrame:
        """P(session ends in a purchase) per session of an events frame: ``session_id, probability, events_used``."""
        return self._propensity("session").sessions(events, self.catalogue)

    def live_session_propensity(self, events: Sequence[Mapping[str, Any]]) -> float | None:
        """The same for one live session's events (dicts), in microseconds; None before any usable event."""
        return self._propensity("session").live_session(events, self.catalogue)

    def _frame(self, ids: np.ndarray, items: np.ndarray, scores: np.ndarray, reason: str) -> pd.DataFrame:
        k = items.shape[1]
        valid = (items >= 0).ravel()
        return pd.DataFrame({
            "customer_id": np.repeat(ids, k)[valid],
            "rank": np.tile(np.arange(1, k + 1), len(ids))[valid],
            "item_id": self.items.to_external(items.ravel()[valid]),
            "score": scores.ravel()[valid].astype(np.float64),
            "reason": reason,
        })


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


def verify(folder: Path) -> None:
    """Refuse a bundle whose files are missing or differ from the manifest."""
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
