"""The bundle's propensity part: the fitted models, why any was skipped, and what scoring needs.

Customer and email scores are computed from a stored feature frame (as of the end of
history), so the service and the batch job score with no data loading. Session scores take
the session's events as they arrive. A skipped model raises :class:`PropensityUnavailable`
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
from features.customer_features import CAP_DAYS
from training.propensity_model import PropensityModel

STATUS_FILE = "status.json"


class PropensityUnavailable(LookupError):
    """The requested propensity model is not in this bundle; ``reason`` says why."""

    def __init__(self, target: str, reason: str) -> None:
        super().__init__(f"{target} propensity unavailable: {reason}")
        self.target, self.reason = target, reason


@dataclass
class PropensitySet:
    models: dict[str, PropensityModel]
    status: dict[str, str]
    customer_features: pd.DataFrame
    session_history: pd.DataFrame | None
    as_of: pd.Timestamp
    beats_baseline: dict[str, bool] = field(default_factory=dict)
    """Per target, whether its model beat its strongest baseline on the test window
    (:meth:`training.propensity.PropensityReport.beats_baseline`); empty when not evaluated."""
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
        model = self.model(target)
        ids = pd.Index([str(c) for c in customer_ids], dtype=object)
        rows = self.customer_features.reindex(ids)
        known = rows.notna().all(axis=1).to_numpy()
        if not known.all():
            rows.loc[~known] = self.newcomer().to_numpy()
        return pd.DataFrame({"customer_id": ids.to_numpy(), "probability": model.predict_proba(rows),
                             "known": known})

    def newcomer(self) -> pd.Series:
        columns = self.customer_features.columns
        row = pd.Series(0.0, index=columns)
        row[[c for c in columns if c.startswith("days_since") or c in ("recency_days", "tenure_days")]] = CAP_DAYS
        row["never_ordered"] = 1.0
        return row

    def sessions(self, events: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
        """``session_id, probability, events_used`` per session in an events frame (batch path)."""
        model = self.model("session")
        table = sess.sessions(events)
        X = sess.session_features(events, items, sess.past_from_history(table, self._history()))
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
        folder.mkdir(parents=True, exist_ok=True)
        for target, model in self.models.items():
            model.save(folder / target)
        self.customer_features.rename_axis("customer_id").reset_index().to_parquet(
            folder / "customer_features.parquet", index=False)
        if self.session_history is not None:
            self.session_history.rename_axis("customer_id").reset_index().to_parquet(
                folder / "session_history.parquet", index=False)
        (folder / STATUS_FILE).write_text(json.dumps({"status": self.status, "as_of": self.as_of.isoformat(),
                                                      "beats_baseline": self.beats_baseline}, indent=2))

    @classmethod
    def load(cls, folder: Path) -> PropensitySet:
        spec = json.loads((folder / STATUS_FILE).read_text())
        models = {t: PropensityModel.load(folder / t) for t, s in spec["status"].items() if s == "ok"}
        history_path = folder / "session_history.parquet"
        history = pd.read_parquet(history_path).set_index("customer_id") if history_path.is_file() else None
        features = pd.read_parquet(folder / "customer_features.parquet").set_index("customer_id")
        return cls(models, spec["status"], features, history, pd.Timestamp(spec["as_of"]),
                   dict(spec.get("beats_baseline", {})))
