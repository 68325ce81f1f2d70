"""The one trained artefact: id maps, catalogue, histories and fitted models, in plain files.

A bundle is a folder of Parquet, .npy and sparse .npz files with a JSON manifest that
records a SHA-256 per file, so a corrupted or tampered download is refused on load.
Nothing is pickled: any process (the service, the batch job, a notebook, Spark) loads
the same files the same way, through the MLflow pyfunc wrapper in :mod:`training.pyfunc`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.dataset import Dataset, IdMap
from features.ids import positions
from features.errors import UserError, first_line
from training.bundle_files import MANIFEST, BundleError, manifest, verify
from training.bundle_profiles import ALIASES, ITEM_SALES, REBUY_CATEGORIES, REBUY_ITEMS
from training.models import load_model
from training.models.base import Recommender
from training.models.cooccurrence import CooccurrenceModel
from training.propensity_set import PropensitySet, PropensityUnavailable
from training.ranker import History, Personal, Ranker, gather
from training.ranking import (
    Candidates,
    Fallbacks,
    ListBlock,
    RankingConfig,
    Rules,
    build_fallbacks,
    build_rules,
    days_since_last,
    make_lists,
)
from training.retrieval import INDEX_FILE, ItemIndex, item_index, restore_index
from training.top_k import block_rows

PRIMARY, POPULARITY, COOCCURRENCE = "primary", "popularity", "cooccurrence"
RECOMMENDATION_COLUMNS = ["customer_id", "canonical_id", "rank", "item_id", "score", "reason"]
SIMILAR, BUY_AGAIN = "similar_customers", "buy_again"
"""Reasons of personal picks: a new item the models chose, or one the customer bought before
(``buy_again:<due date>``: the last purchase plus the item's re-buy interval)."""
FALLBACK = "popular"
"""Every reason of a pick from a fallback list starts with it: ``popular``,
``popular_in_segment:<segment>``, ``popular_in:<category>``."""


def is_fallback(reasons: np.ndarray) -> np.ndarray:
    """True where a pick came from a fallback list rather than from personal scores."""
    return np.char.startswith(np.asarray(reasons, dtype=str), FALLBACK)


BLOCK_ROWS = 512
"""Most customers per dense scores block when lists are made for many customers (fewer on a
large catalogue: :attr:`Bundle.block_rows`), so memory is bounded whatever a caller passes."""


@dataclass
class Bundle:
    """Everything needed to answer requests, aligned on one pair of id maps.

    ``models`` holds the chosen primary model plus the popularity fallback and the
    co-occurrence model used for cart cross-sells; ``profiles`` the customer profiles
    (RFM, segment, price band, top category), category affinities and repurchase intervals;
    ``propensity`` the purchase / session / email-open models (None when training skipped them all).
    ``bought`` holds each customer's days since the last purchase of each item at ``as_of``
    (plus one) and ``ranker`` the repeat/explore ranker over the primary model (None: the
    primary model's own scores rank, as for a baseline champion).
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
    bought: sp.csr_matrix | None = None
    ranker: Ranker | None = None

    def __post_init__(self) -> None:
        aliases = self.profiles.get(ALIASES)
        if aliases is None or not len(aliases):
            aliases = pd.DataFrame({"alias_id": pd.Series(dtype=object), "customer_id": pd.Series(dtype=object)})
        self._alias_index = pd.Index(aliases["alias_id"].astype(str).to_numpy(dtype=object), dtype=object)
        self._alias_target = aliases["customer_id"].astype(str).to_numpy(dtype=object)

    @classmethod
    def from_dataset(cls, dataset: Dataset, models: dict[str, Recommender], metadata: dict[str, Any],
                     profiles: dict[str, pd.DataFrame] | None = None,
                     propensity: PropensitySet | None = None, ranker: Ranker | None = None) -> Bundle:
        """A bundle of ``dataset`` (the whole history, or a training window in evaluation).

        ``profiles`` must hold the re-buy profiles and item sales (:func:`ranking_profiles`);
        ``metadata["ranking"]`` the list rules (a :class:`RankingConfig` dump, the chosen cap in it).
        """
        missing = {PRIMARY, POPULARITY} - set(models)
        if missing:
            raise BundleError(f"bundle needs models {sorted(missing)}")
        if propensity is not None:
            metadata = {**metadata, "propensity": propensity.status}
        return cls(dataset.customers, dataset.items, dataset.catalogue, dataset.interactions,
                   dataset.purchases, models, {**metadata, "as_of": dataset.as_of.isoformat()}, profiles or {},
                   propensity, days_since_last(dataset.baskets, dataset.as_of, dataset.shape), ranker)

    # ---- persistence -------------------------------------------------------------------
    def save(self, folder: Path) -> Path:
        """Write the bundle into ``folder``, which must be new or empty: every file in it goes
        into the manifest, so another bundle's optional parts (a ranker, a graph) would pass
        for this one's."""
        if folder.is_dir() and any(folder.iterdir()):
            raise BundleError(f"{folder}: not empty; save a bundle into a new or empty folder")
        folder.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"customer_id": self.customers.external_ids}).to_parquet(folder / "customers.parquet")
        self.catalogue.to_parquet(folder / "catalogue.parquet")
        sp.save_npz(folder / "interactions.npz", self.interactions)
        sp.save_npz(folder / "purchases.npz", self.purchases)
        if self.bought is not None:
            sp.save_npz(folder / "bought.npz", self.bought)
        if self.ranker is not None:
            self.ranker.save(folder / "ranker")
        for role, model in self.models.items():
            model.save(folder / "models" / role)
        (folder / "profiles").mkdir(exist_ok=True)
        for name, frame in self.profiles.items():
            frame.to_parquet(folder / "profiles" / f"{name}.parquet", index=False)
        if self.propensity is not None:
            self.propensity.save(folder / "propensity")
        index = self.explore_index(self.models[PRIMARY]) if self.ranker is not None else None
        if index is not None:  # built once here; every worker that loads the bundle reads it
            np.save(folder / INDEX_FILE, index.serialized())
        (folder / "bundle.json").write_text(json.dumps(self.metadata, indent=2, default=str))
        (folder / MANIFEST).write_text(json.dumps(manifest(folder), indent=2))
        return folder

    @classmethod
    def load(cls, folder: Path) -> Bundle:
        listed = verify(folder)
        catalogue = pd.read_parquet(folder / "catalogue.parquet")
        models = {p.name: load_model(p) for p in sorted((folder / "models").iterdir()) if p.is_dir()}
        if INDEX_FILE in listed:
            try:
                restore_index(models[PRIMARY], np.load(folder / INDEX_FILE, allow_pickle=False))
            except (ValueError, RuntimeError) as error:  # faiss tells a bad graph as RuntimeError
                raise BundleError(f"{folder}: {INDEX_FILE} is not this bundle's item index ({first_line(error)})") from None
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
            bought=sp.load_npz(folder / "bought.npz").tocsr() if (folder / "bought.npz").is_file() else None,
            ranker=_load_ranker(folder),
        )

    # ---- ids -------------------------------------------------------------------------------
    def canonical_ids(self, customer_ids: Sequence[str] | np.ndarray) -> np.ndarray:
        """The id each customer is known by after training merged duplicates (``customer_aliases``):
        an alias becomes its canonical id, every other id stays as given. A shop's front end
        knows the id it has, not the merged one, so every entry resolves ids through here."""
        ids = np.asarray(customer_ids, dtype=object)
        if not len(self._alias_index) or not len(ids):
            return ids.copy()
        position = positions(self._alias_index, ids)
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

    @functools.cached_property
    def block_rows(self) -> int:
        """Customers per call of :meth:`lists`: :data:`BLOCK_ROWS`, fewer on a catalogue too large
        for that many dense rows (:func:`training.top_k.block_rows`)."""
        return block_rows(len(self.items), BLOCK_ROWS)

    @functools.cached_property
    def has_history(self) -> np.ndarray:
        """Per customer: any interaction at all (else they are served fallbacks only)."""
        return np.diff(self.interactions.indptr) > 0

    @functools.cached_property
    def item_categories(self) -> tuple[np.ndarray, np.ndarray]:
        """Each item's category code, and the category names in code order (sorted)."""
        codes, names = pd.factorize(self.catalogue["category"].astype(str), sort=True)
        return codes.astype(np.int64), np.asarray(names, dtype=object)

    @functools.cached_property
    def rules(self) -> Rules:
        """The list rules (training/ranking.py) for this catalogue and history."""
        self._require(REBUY_ITEMS, REBUY_CATEGORIES)
        config = RankingConfig(**self.metadata.get("ranking", {}))
        return build_rules(self.catalogue, self.profiles[REBUY_ITEMS], self.profiles[REBUY_CATEGORIES],
                           self._bought(), config)

    @functools.cached_property
    def fallbacks(self) -> Fallbacks:
        popularity = np.asarray(self.models[POPULARITY].score(np.zeros(1, dtype=np.int64), self.interactions[:0]))[0]
        segment = np.full(len(self.customers), None, dtype=object)
        profiles = self.profiles.get("customers")
        if profiles is not None and "segment" in profiles:
            idx = self.customers.to_index(profiles["customer_id"].astype(str).to_numpy(), unknown="mark")
            segment[idx[idx >= 0]] = profiles["segment"].to_numpy(dtype=object)[idx >= 0]
        return build_fallbacks(self.purchases, popularity, segment)

    @functools.cached_property
    def history(self) -> History:
        self._require(REBUY_ITEMS, ITEM_SALES)
        rebuy = self.profiles[REBUY_ITEMS].set_index("item_id").reindex(self.items.external_ids)
        sales = self.profiles[ITEM_SALES].set_index("item_id").reindex(self.items.external_ids).fillna(0)
        return History.from_arrays(self.purchases, self._bought(), sales["sales"].to_numpy(),
                                   sales["recent_sales"].to_numpy(), rebuy, self.rules.horizon_days,
                                   self.rules.group)

    @functools.cached_property
    def cooccurrence(self) -> CooccurrenceModel:
        """The cross-sell model: items bought together (every bundle holds one)."""
        model = self.models[COOCCURRENCE]
        if not isinstance(model, CooccurrenceModel):
            raise BundleError(f"bundle's {COOCCURRENCE} model is a {model.family}: retrain it with this version")
        return model

    @functools.cached_property
    def personal(self) -> Personal:
        """Personal scores: the primary model, through the ranker when the bundle has one (its
        explore scores from an item index on a large catalogue)."""
        model = self.models[PRIMARY]
        return Personal(model, self.interactions, self.history, self.ranker,
                        self.explore_index(model) if self.ranker is not None else None)

    def explore_index(self, model: Recommender) -> ItemIndex | None:
        """``model``'s item index where this bundle's catalogue calls for one (:func:`training.retrieval.item_index`);
        a bundle saved before the index existed was measured on every item's score and keeps it."""
        return item_index(model, len(self.items), self.metadata.get("ranking", {}).get("index_from_items"))

    def _bought(self) -> sp.csr_matrix:
        if self.bought is None:
            raise BundleError("bundle has no purchase recency (bought.npz): retrain it with this version")
        return self.bought

    def _require(self, *names: str) -> None:
        missing = [n for n in names if n not in self.profiles]
        if missing:
            raise BundleError(f"bundle has no {', '.join(missing)} profile: retrain it with this version")

    def lists(self, idx: np.ndarray, k: int, rules: Rules | None = None) -> ListBlock:
        """Lists for customers ``idx`` (internal; -1 unknown) through the one ranking path: personal
        scores for those with history, fallbacks for the rest. At most :attr:`block_rows` rows."""
        warm = np.flatnonzero(idx >= 0)
        warm = warm[self.has_history[idx[warm]]]
        personal: np.ndarray | Candidates | None = None
        if len(warm):
            scored = self.personal.score(idx[warm])
            if isinstance(scored, Candidates):
                personal = Candidates(np.full((len(idx), scored.items.shape[1]), -1, dtype=np.int64),
                                      np.zeros((len(idx), scored.items.shape[1]), dtype=np.float32))
                personal.items[warm], personal.scores[warm] = scored.items, scored.scores
            else:
                personal = np.zeros((len(idx), len(self.items)), dtype=np.float32)
                personal[warm] = scored
        return make_lists(rules or self.rules, self.fallbacks, idx, personal, k)

    def reasons(self, idx: np.ndarray, block: ListBlock) -> np.ndarray:
        """Each pick's reason: ``buy_again:<due date>`` for an item the customer bought before,
        ``similar_customers`` for a new one the models chose, the fallback list's for fills."""
        reasons = np.full(block.items.shape, None, dtype=object)
        fallback = np.asarray(self.fallbacks.reasons, dtype=object)[block.fallback]
        fills = (~block.personal) & (block.items >= 0)
        reasons[fills] = np.broadcast_to(fallback[:, None], block.items.shape)[fills]
        reasons[block.personal] = SIMILAR
        if not block.personal.any():
            return reasons
        rows, cols = np.nonzero(block.personal)
        warm = idx[rows] >= 0
        rows, cols = rows[warm], cols[warm]
        bought = gather(self._bought(), idx[rows], block.items[rows, cols])
        again = bought > 0
        if again.any():
            rows, cols, bought = rows[again], cols[again], bought[again]
            interval = self.history.interval_days[block.items[rows, cols]]
            due_day = np.ceil(np.maximum(interval - (bought - 1.0), 0.0)).astype(np.int64)
            days, which = np.unique(due_day, return_inverse=True)  # a few distinct dates: format each once
            today = np.datetime64(pd.Timestamp(self.metadata["as_of"]).date(), "D")
            dates = np.datetime_as_string(today + days.astype("timedelta64[D]"), unit="D")
            labels = np.array([f"{BUY_AGAIN}:{d}" for d in dates], dtype=object)
            reasons[rows, cols] = labels[which]
        return reasons

    def recommend(self, customer_ids: Sequence[str], k: int) -> pd.DataFrame:
        """Top k per customer as ``customer_id, canonical_id, rank, item_id, score, reason``
        (``customer_id`` as given, ``canonical_id`` the merged id it was scored as), through the
        one ranking path the service and the batch job use (training/ranking.py)."""
        ids = np.asarray([str(c) for c in customer_ids], dtype=object)
        idx = self.customer_index(ids)
        parts = []
        step = self.block_rows
        for start in range(0, len(ids), step):
            rows = idx[start:start + step]
            block = self.lists(rows, k)
            reasons = self.reasons(rows, block)
            parts.append(self._frame(ids[start:start + step], block.items, block.scores, reasons))
        frame = (pd.concat(parts, ignore_index=True) if parts else
                 pd.DataFrame(columns=[c for c in RECOMMENDATION_COLUMNS if c != "canonical_id"]))
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

    @property
    def open_model_beats_baseline(self) -> bool:
        """Whether the email-open model beat its strongest baseline (the customer's own open rate or
        recency of the last open) on the test window when trained: then it replaces the own rate."""
        return self.propensity is not None and self.propensity.beats_baseline.get("email", False)

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

    def _frame(self, ids: np.ndarray, items: np.ndarray, scores: np.ndarray, reasons: np.ndarray) -> pd.DataFrame:
        k = items.shape[1]
        valid = (items >= 0).ravel()
        return pd.DataFrame({
            "customer_id": np.repeat(ids, k)[valid],
            "rank": np.tile(np.arange(1, k + 1), len(ids))[valid],
            "item_id": self.items.to_external(items.ravel()[valid]),
            "score": scores.ravel()[valid].astype(np.float64),
            "reason": reasons.ravel()[valid],
        })


def _load_ranker(folder: Path) -> Ranker | None:
    """The bundle's ranker (None without one); one this version cannot score refuses the bundle,
    so that a service keeps what it serves (a rollback to a version before a feature)."""
    if not (folder / "ranker").is_dir():
        return None
    try:
        return Ranker.load(folder / "ranker")
    except UserError as error:
        raise BundleError(f"{folder}: {error}") from error
