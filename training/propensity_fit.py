"""Fitting the propensity models with scikit-learn, and exporting the calibrated result to plain
arrays (:class:`training.propensity_model.PropensityModel`). Only training imports this module:
serving scores the exported arrays with numpy."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from training.propensity_model import Kind, PropensityModel, signed_log1p


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


def from_sklearn(target: str, features: list[str], kind: Kind, calibrated: CalibratedClassifierCV,
                 metadata: dict[str, Any] | None = None) -> PropensityModel:
    """The calibrated scikit-learn model exported to :class:`PropensityModel`'s arrays."""
    estimator = calibrated.estimator.estimator
    arrays = _logistic_arrays(estimator) if kind == "logistic" else _tree_arrays(estimator)
    calibrator = calibrated.calibrated_classifiers_[0].calibrators[0]
    if calibrated.method == "isotonic":
        arrays["cal_x"] = np.asarray(calibrator.X_thresholds_, dtype=np.float64)
        arrays["cal_y"] = np.asarray(calibrator.y_thresholds_, dtype=np.float64)
    else:
        arrays["cal_ab"] = np.array([calibrator.a_, calibrator.b_], dtype=np.float64)
    return PropensityModel(target, list(features), kind, arrays, calibrated.method, metadata or {})


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
