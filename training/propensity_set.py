"""The bundle's propensity part: the fitted models, why any was skipped, and what scoring needs.

Customer and email scores are made once, when the bundle is saved, from the customer features
as of the end of history: they cannot change while the bundle serves, so the bundle stores the
scores rather than the features, and the service and the batch job only look them up. Session
scores take the session's events as they arrive. A skipped model raises :class:`PropensityUnavailable`
with its reason (e.g. "skipped: no events table") for the service to answer 503 with,
rather than a number the shop never trained for.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from features import sessions as sess
from features.ids import positions
from features.customer_features import CAP_DAYS
from training.propensity_model import PropensityModel

STATUS_FILE = "status.json"
SCORES_FILE = "customer_scores.parquet"


class PropensityUnavailable(LookupError):
    """The requested propensity model is not in this bundle; ``reason`` says why."""

    def __init__(self, target: str, reason: str) -> None:
        super().__init__(f"{target} propensity unavailable: {reason}")
        self.target, self.reason = target, reason


CUSTOMER_TARGETS = ("customer", "email")
"""The models scored from the stored customer features (the session model reads live events)."""


@dataclass(frozen=True)
class Scored:
    """One customer-level model's answers for every customer of the feature frame."""

    index: pd.Index
    """Customer ids as plain objects (an index of Arrow strings would convert on every look-up)."""
    probability: np.ndarray
    """Per customer; the newcomer's for a customer with a missing feature."""
    known: np.ndarray
    """Per customer: every feature present (else scored, and reported, as a newcomer)."""
    newcomer: float


def newcomer(columns: pd.Index) -> pd.Series:
    """The features of a customer seen for the first time now: no orders, no visits, no mail."""
    row = pd.Series(0.0, index=columns)
    row[[c for c in columns if c.startswith("days_since") or c in ("recency_days", "tenure_days")]] = CAP_DAYS
    row["never_ordered"] = 1.0
    return row


def score_customers(model: PropensityModel, features: pd.DataFrame) -> Scored:
    """Score every customer of ``features`` in one call; a row with a missing feature, like a
    customer not in the frame, gets the newcomer's score (a row's score does not depend on its
    batch: tests/training/test_propensity.py)."""
    known = features.notna().all(axis=1).to_numpy()
    newcomer_probability = float(model.predict_proba(newcomer(features.columns).to_frame().T)[0])
    probability = np.full(len(features), newcomer_probability)
    probability[known] = model.predict_proba(features[known])
    return Scored(pd.Index(np.asarray(features.index, dtype=object), dtype=object), probability, known,
                  newcomer_probability)


@dataclass
class PropensitySet:
    models: dict[str, PropensityModel]
    status: dict[str, str]
    customer_features: pd.DataFrame | None
    """As of the end of history, while training; None in a loaded bundle, which holds ``scored``."""
    session_history: pd.DataFrame | None
    as_of: pd.Timestamp
    beats_baseline: dict[str, bool] = field(default_factory=dict)
    """Per target, whether its model beat its strongest baseline on the test window
    (:meth:`training.propensity.PropensityReport.beats_baseline`); empty when not evaluated."""
    scored: dict[str, Scored] = field(default_factory=dict, repr=False)
    """Per customer-level target with a model, every customer's score (:meth:`scores`)."""
    _live: sess.LiveSessionFeatures | None = field(default=None, repr=False)

    def model(self, target: str) -> PropensityModel:
        if target not in self.models:
            raise PropensityUnavailable(target, self.status.get(target, "not trained"))
        return self.models[target]

    # ---- scoring --------------------------------------------------------------------------
    def customers(self, target: str, customer_ids: Sequence[str] | np.ndarray) -> pd.DataFrame:
        """``customer_id, probability, known`` for the customer (purchase) or email (open) model.

        Unknown customers are scored as newcomers: no orders, no visits, no mail yet, first
        seen now; ``known`` is False for them.
        """
        scored = self.scores(target)
        ids = pd.Index([str(c) for c in customer_ids], dtype=object)
        position = positions(scored.index, ids)  # a request's one customer: no Index built
        found = position >= 0
        known = found & scored.known[np.maximum(position, 0)]
        probability = np.where(found, scored.probability[np.maximum(position, 0)], scored.newcomer)
        return pd.DataFrame({"customer_id": ids.to_numpy(), "probability": probability, "known": known})

    def scores(self, target: str) -> Scored:
        """Every customer's score from ``target``'s model: made on first use while training, read
        from the bundle once saved. Raises PropensityUnavailable for a model that was skipped."""
        model = self.model(target)
        if target not in self.scored:
            if self.customer_features is None:  # not made by training (load says so in the status)
                raise PropensityUnavailable(target, "the bundle holds no scores for it")
            self.scored[target] = score_customers(model, self.customer_features)
        return self.scored[target]

    def warm(self) -> None:
        """Make every customer-level score now (a no-op for a saved bundle, which holds them), so
        no request pays for it."""
        for target in CUSTOMER_TARGETS:
            if target in self.models:
                self.scores(target)

    def sessions(self, events: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
        """``session_id, probability, events_used`` per session in an events frame (batch path)."""
        model = self.model("session")
        log = sess.ordered(events, items)
        X = log.features(None, sess.past_from_history(log.table, self._history()))
        return pd.DataFrame({"session_id": X.index.to_numpy(), "probability": model.predict_proba(X),
                             "events_used": X["events"].to_numpy().astype(np.int64)})

    def live_session(self, events: Sequence[Mapping], items: pd.DataFrame) -> float | None:
        """P(this session ends in a purchase) from its events so far; None before any usable event."""
        model = self.model("session")
        if self._live is None:
            self._live = sess.LiveSessionFeatures.build(items, self._history())
        vector = self._live.vector(events)
        return None if vector is None else float(model.predict_proba(vector[None, :])[0])

    def _history(self) -> pd.DataFrame:
        return self.session_history if self.session_history is not None else \
            pd.DataFrame({"past_sessions": [], "past_converted": []})

    # ---- persistence ----------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        """The models, every customer's scores (``customer_scores.parquet``: ``customer_id``,
        ``known`` and one probability column per customer-level model), the session history."""
        folder.mkdir(parents=True, exist_ok=True)
        for target, model in self.models.items():
            model.save(folder / target)
        scored = {target: self.scores(target) for target in CUSTOMER_TARGETS if target in self.models}
        if scored:
            first = next(iter(scored.values()))
            pd.DataFrame({"customer_id": first.index.to_numpy(), "known": first.known,
                          **{target: s.probability for target, s in scored.items()}}).to_parquet(
                folder / SCORES_FILE, index=False)
        if self.session_history is not None:
            self.session_history.rename_axis("customer_id").reset_index().to_parquet(
                folder / "session_history.parquet", index=False)
        (folder / STATUS_FILE).write_text(json.dumps({
            "status": self.status, "as_of": self.as_of.isoformat(), "beats_baseline": self.beats_baseline,
            "newcomer": {target: s.newcomer for target, s in scored.items()}}, indent=2))

    @classmethod
    def load(cls, folder: Path) -> PropensitySet:
        """The saved part; a bundle saved before scores were stored keeps its features instead
        (scored on first use), and a customer-level model with neither is reported unavailable."""
        spec = json.loads((folder / STATUS_FILE).read_text())
        status = dict(spec["status"])
        history_path = folder / "session_history.parquet"
        history = pd.read_parquet(history_path).set_index("customer_id") if history_path.is_file() else None
        scored: dict[str, Scored] = {}
        features = None
        if (folder / SCORES_FILE).is_file():
            table = pd.read_parquet(folder / SCORES_FILE)
            index = pd.Index(table["customer_id"].to_numpy(dtype=object), dtype=object)
            known = table["known"].to_numpy(dtype=bool)
            scored = {target: Scored(index, table[target].to_numpy(dtype=np.float64), known, float(newcomer))
                      for target, newcomer in spec["newcomer"].items()}
        elif (folder / "customer_features.parquet").is_file():
            features = pd.read_parquet(folder / "customer_features.parquet").set_index("customer_id")
        for target in CUSTOMER_TARGETS:
            if status.get(target) == "ok" and target not in scored and features is None:
                status[target] = "unavailable: the bundle holds no scores for it"
        models = {t: PropensityModel.load(folder / t) for t, s in status.items() if s == "ok"}
        return cls(models, status, features, history, pd.Timestamp(spec["as_of"]),
                   dict(spec.get("beats_baseline", {})), scored)
