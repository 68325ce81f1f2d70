"""A fitted, calibrated propensity model in plain arrays: scored by numpy, saved without pickle.

scikit-learn fits the candidates (a scaled logistic regression and a histogram gradient
boosting classifier) and calibrates the chosen one with ``CalibratedClassifierCV`` on a
later time window. The result is then *exported* to the few arrays that define it:
coefficients, or the boosting trees' node tables, and the calibration map. Why:

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
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

Kind = Literal["logistic", "boosting"]
ROW_BLOCK = 8192


def signed_log1p(x: np.ndarray) -> np.ndarray:
    """Compress counts and money (heavy right tails) so a linear model is not ruled by outliers."""
    return np.sign(x) * np.log1p(np.abs(x))


def candidate(kind: Kind, seed: int) -> Pipeline | HistGradientBoostingClassifier:
    """The two model families. Neither reweights classes: the product is a calibrated probability,
    and reweighting would bias it; imbalance is reported through PR-AUC and lift instead."""
    if kind == "logistic":
        return make_pipeline(FunctionTransformer(signed_log1p), StandardScaler(),
                             LogisticRegression(C=1.0, max_iter=2000))
    return HistGradientBoostingClassifier(max_iter=150, learning_rate=0.08, max_leaf_nodes=15,
                                          min_samples_leaf=40, l2_regularization=1.0, early_stopping=True,
                                          validation_fraction=0.15, n_iter_no_change=15, random_state=seed)


def calibrate(estimator: Any, X: np.ndarray, y: np.ndarray, method: str) -> CalibratedClassifierCV:
    """Calibrate an already fitted estimator on a later window (the estimator is frozen)."""
    return CalibratedClassifierCV(FrozenEstimator(estimator), method=method).fit(X, y)


@dataclass
class PropensityModel:
    """Calibrated P(label = 1 | features): ``kind`` and its arrays, plus the calibration map."""

    target: str
    features: list[str]
    kind: Kind
    arrays: dict[str, np.ndarray]
    calibration: str
    metadata: dict[str, Any] = field(default_factory=dict)

    # ---- export -------------------------------------------------------------------------
    @classmethod
    def from_sklearn(cls, target: str, features: list[str], kind: Kind, calibrated: CalibratedClassifierCV,
                     metadata: dict[str, Any] | None = None) -> PropensityModel:
        estimator = calibrated.estimator.estimator
        arrays = _logistic_arrays(estimator) if kind == "logistic" else _tree_arrays(estimator)
        calibrator = calibrated.calibrated_classifiers_[0].calibrators[0]
        if calibrated.method == "isotonic":
            arrays["cal_x"] = np.asarray(calibrator.X_thresholds_, dtype=np.float64)
            arrays["cal_y"] = np.asarray(calibrator.y_thresholds_, dtype=np.float64)
        else:
            arrays["cal_ab"] = np.array([calibrator.a_, calibrator.b_], dtype=np.float64)
        return cls(target, list(features), kind, arrays, calibrated.method, metadata or {})

    # ---- scoring ------------------------------------------------------------------------
    def decision(self, X: np.ndarray) -> np.ndarray:
        """The uncalibrated score (log-odds) per row, the quantity the calibrator maps."""
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        if self.kind == "logistic":
            a = self.arrays
            return ((signed_log1p(X) - a["mean"]) / a["scale"]) @ a["coef"] + a["intercept"][0]
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


def _logistic_arrays(pipeline: Pipeline) -> dict[str, np.ndarray]:
    scaler, logistic = pipeline[1], pipeline[2]
    return {"mean": scaler.mean_.astype(np.float64), "scale": scaler.scale_.astype(np.float64),
            "coef": logistic.coef_[0].astype(np.float64), "intercept": logistic.intercept_.astype(np.float64)}


def _tree_arrays(model: HistGradientBoostingClassifier) -> dict[str, np.ndarray]:
    """Concatenate the trees' node tables; leaves point to themselves so extra steps are no-ops."""
    if model.is_categorical_ is not None and np.any(model.is_categorical_):
        raise ValueError("categorical boosting features cannot be exported; encode them numerically")
    nodes = [predictor.nodes for (predictor,) in model._predictors]
    offsets = np.cumsum([0, *(len(n) for n in nodes[:-1])])
    table = np.concatenate(nodes)
    index = np.arange(len(table))
    shift = np.repeat(offsets, [len(n) for n in nodes])
    leaf = table["is_leaf"].astype(bool)
    return {
        "feature": np.where(leaf, 0, table["feature_idx"]).astype(np.int64),
        "threshold": np.where(leaf, np.inf, table["num_threshold"]).astype(np.float64),
        "missing_left": table["missing_go_to_left"].astype(bool),
        "left": np.where(leaf, index, table["left"].astype(np.int64) + shift),
        "right": np.where(leaf, index, table["right"].astype(np.int64) + shift),
        "value": np.where(leaf, table["value"], 0.0).astype(np.float64),
        "roots": offsets.astype(np.int64),
        "depth": np.array([int(table["depth"].max())], dtype=np.int64),
        "baseline": np.asarray(model._baseline_prediction, dtype=np.float64).ravel()[:1],
    }
