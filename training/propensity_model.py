"""A fitted, calibrated propensity model in plain arrays: scored by numpy, saved without pickle.

scikit-learn fits the candidates and calibrates the chosen one (:mod:`training.propensity_fit`);
the result is *exported* to the few arrays that define it: coefficients, or the boosting
trees' node tables, and the calibration map. This module holds those arrays and scores them,
with numpy and scipy only, so loading a bundle never imports scikit-learn. Why arrays:

- the bundle stays pickle-free (``.npz`` + JSON under the bundle's SHA-256 manifest), so
  loading it never executes code from a file and does not depend on scikit-learn's private
  object layout across versions;
- a live session is scored in microseconds: scikit-learn's per-call validation alone costs
  more than the whole numpy path.
A test holds the exported model equal to the scikit-learn object it came from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy.special import expit

Kind = Literal["logistic", "boosting"]
ROW_BLOCK = 8192


def signed_log1p(x: np.ndarray) -> np.ndarray:
    """Compress counts and money (heavy right tails) so a linear model is not ruled by outliers."""
    return np.sign(x) * np.log1p(np.abs(x))


@dataclass
class PropensityModel:
    """Calibrated P(label = 1 | features): ``kind`` and its arrays, plus the calibration map."""

    target: str
    features: list[str]
    kind: Kind
    arrays: dict[str, np.ndarray]
    calibration: str
    metadata: dict[str, Any] = field(default_factory=dict)

    # ---- scoring ------------------------------------------------------------------------
    def decision(self, X: np.ndarray) -> np.ndarray:
        """The uncalibrated score (log-odds) per row, the quantity the calibrator maps."""
        # row-major, and a row sum rather than a matrix product: a row's score never depends on the
        # rows scored with it (BLAS, or numpy on a column-major frame, sums in another order by
        # batch shape), so a warmed look-up equals a fresh score to the last bit
        X = np.ascontiguousarray(np.atleast_2d(np.asarray(X, dtype=np.float64)))
        if self.kind == "logistic":
            a = self.arrays
            return (((signed_log1p(X) - a["mean"]) / a["scale"]) * a["coef"]).sum(axis=1) + a["intercept"][0]
        return np.concatenate([self._trees(X[i:i + ROW_BLOCK]) for i in range(0, len(X), ROW_BLOCK)]) \
            if len(X) else np.zeros(0)

    def _trees(self, X: np.ndarray) -> np.ndarray:
        """Walk every tree at once: one gather per depth level over a rows x trees position grid."""
        a = self.arrays
        pos = np.broadcast_to(a["roots"], (len(X), len(a["roots"]))).copy()
        rows = np.arange(len(X))[:, None]
        for _ in range(int(a["depth"][0])):
            x = X[rows, a["feature"][pos]]
            left = np.where(np.isnan(x), a["missing_left"][pos], x <= a["threshold"][pos])
            pos = np.where(left, a["left"][pos], a["right"][pos])
        return a["value"][pos].sum(axis=1) + a["baseline"][0]

    def calibrate_scores(self, raw: np.ndarray) -> np.ndarray:
        if self.calibration == "isotonic":
            return np.interp(raw, self.arrays["cal_x"], self.arrays["cal_y"])
        a, b = self.arrays["cal_ab"]
        return expit(-(a * raw + b))

    def predict_proba(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """P(label = 1) per row; a frame is reordered to the model's feature columns."""
        if isinstance(X, pd.DataFrame):
            missing = [f for f in self.features if f not in X.columns]
            if missing:
                raise KeyError(f"{self.target} propensity needs feature columns {missing}")
            X = X[self.features].to_numpy(dtype=np.float64)
        return np.clip(self.calibrate_scores(self.decision(X)), 0.0, 1.0)

    # ---- persistence --------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "arrays.npz", **self.arrays)  # type: ignore[arg-type]  # numpy's stub reads ** as allow_pickle
        (folder / "model.json").write_text(json.dumps(
            {"target": self.target, "features": self.features, "kind": self.kind, "calibration": self.calibration,
             "metadata": self.metadata}, indent=2, default=float))

    @classmethod
    def load(cls, folder: Path) -> PropensityModel:
        spec = json.loads((folder / "model.json").read_text())
        with np.load(folder / "arrays.npz", allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        return cls(spec["target"], spec["features"], spec["kind"], arrays, spec["calibration"], spec["metadata"])
