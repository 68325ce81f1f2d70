"""Propensity targets: who buys in the next H days, which live session converts, who opens the next email.

Each target is fitted on older rows, chosen (logistic vs boosting, by ROC-AUC) and
calibrated on the next, later window, and reported on a test window after that, so the
figures never come from rows that shaped the model:

    customer, email  snapshots every H days: features as of cut-off t, labels in [t, t+H)
                     fit: t0-3H, t0-4H, ...   calibrate: t0-H, t0-2H   test: t0 = end - H
    session          by session start: fit < end-2D <= calibrate < end-D <= test < end

For the bundle the same recipe shifts forward by one window (calibrate on the latest
labelled window, fit on those before it), and features are taken as of the end of history.
A target whose table is absent is skipped, with the reason recorded for the service.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from features import sessions as sess
from features.customer_features import (OPEN_WINDOW_DAYS, check_time_cut, customer_features, email_labels,
                                        purchase_labels)
from features.loading import ShopData
from training.propensity_fit import calibrate, candidate, from_sklearn
from training.propensity_model import Kind, PropensityModel
from training.propensity_rows import EmptyWindow, NotTrainable, Rows, Snapshots, customer_rows, email_rows, session_rows
from training.propensity_set import PropensitySet

Progress = Callable[[str], None]
TARGETS = ("customer", "session", "email")

NEEDS = {"session": "events", "email": "email_events"}


class PropensityConfig(BaseModel):
    """How the propensity models are built and judged; part of ``TrainConfig``."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    horizon_days: int = Field(14, ge=1, description="Customer purchase window after each cut-off.")
    email_horizon_days: int | None = Field(None, ge=1, description="Email window after each cut-off (default: "
                                                                   "horizon_days); longer for sparse campaigns.")
    fit_snapshots: int = Field(4, ge=1, description="Cut-offs (H apart) stacked into the fitting rows.")
    calibration_snapshots: int = Field(2, ge=1, description="Cut-offs after those stacked for calibration "
                                                            "and the candidate choice.")
    session_window_days: int = Field(28, ge=1, description="Length of the session test and calibration windows.")
    candidates: list[Kind] = Field(default_factory=lambda: list[Kind](["logistic", "boosting"]), min_length=1)
    calibration: Literal["auto", "isotonic", "sigmoid"] = "auto"
    max_fit_rows: int = Field(300_000, ge=1000)
    seed: int = 0
    check_leakage: bool = True


@dataclass
class Periods:
    fit: Rows
    calibration: Rows
    test: Rows | None
    cutoffs: dict[str, str]
    empty_windows: tuple[pd.Timestamp, ...] = ()
    """Fitting and calibration cut-offs whose window held no rows (no mail sent), left out."""


@dataclass
class PropensityReport:
    """Per target: status, test metrics (model and baselines), the decile table, the choice made and
    the strongest baseline on the test window (the one ``baseline.*`` metrics describe)."""

    status: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    deciles: dict[str, pd.DataFrame] = field(default_factory=dict)
    chosen: dict[str, str] = field(default_factory=dict)
    baseline: dict[str, str] = field(default_factory=dict)

    def beats_baseline(self, target: str) -> bool:
        """Whether the target's model ranked better than its strongest baseline on the test window
        and was at least as well calibrated (Brier): only then does it replace that baseline at serving."""
        m = self.metrics.get(target)
        return m is not None and m["roc_auc"] > m["baseline.roc_auc"] and m["brier"] <= m["baseline.brier"]


BASELINES = {"customer": {"recency": "recency of the last order"},
             "email": {"open_rate": "the customer's own (shrunk) open rate", "recency": "recency of the last open"},
             "session": {"base_rate": "the base rate"}}
"""Per target, the trivial scores a data scientist tries first; each model is judged against the
strongest of its target's on the test window (``baseline.*``), and each is logged (``baselines.<name>.*``)."""


def data_end(shop: ShopData) -> pd.Timestamp:
    """Just after the last timestamp of any table: where observation stopped."""
    ends = [shop["orders"]["ts"].max()]
    if shop.has("events"):
        ends.append(shop["events"]["ts"].max())
    if shop.has("email_events"):
        ends.append(shop["email_events"]["sent_ts"].max())
    return max(ends) + pd.Timedelta(microseconds=1)


def skip_reason(shop: ShopData, target: str) -> str | None:
    table = NEEDS.get(target)
    if table and (not shop.has(table) or shop[table].empty):
        return f"skipped: no {table} table"
    return None


def periods(shop: ShopData, target: str, config: PropensityConfig, evaluate: bool,
            snapshots: Snapshots | None = None) -> Periods:
    """Fit / calibration / test rows; ``evaluate=False`` shifts forward and has no test rows.
    Customer and email rows are read from and added to ``snapshots`` when given."""
    end = data_end(shop)
    cache = Snapshots() if snapshots is None else snapshots
    if target == "session":
        return _session_periods(shop, config, end, evaluate, cache.session_log(shop))
    days = config.horizon_days if target == "customer" else (config.email_horizon_days or config.horizon_days)
    if target == "email":  # the last mails' opens may still come: no window holds them
        end -= pd.Timedelta(days=OPEN_WINDOW_DAYS)
    H = pd.Timedelta(days=days)
    rows_of = customer_rows if target == "customer" else email_rows

    def build(cutoff: pd.Timestamp, horizon: float) -> Rows:
        key = (target, cutoff, float(horizon))
        if key not in cache.rows:
            cache.rows[key] = rows_of(shop, cutoff, horizon, cache.event_log(shop))
        return cache.rows[key]

    start = shop["orders"]["ts"].min()
    t0 = end - H if evaluate else end
    n_cal = config.calibration_snapshots
    cal_cutoffs = [t0 - k * H for k in range(1, n_cal + 1)]
    fit_cutoffs = [t0 - k * H for k in range(n_cal + 1, n_cal + config.fit_snapshots + 1)]
    fit_cutoffs = [t for t in fit_cutoffs if t - H >= start]
    if not fit_cutoffs:
        raise NotTrainable(f"history too short for {n_cal + config.fit_snapshots} snapshots {days} days apart")
    if evaluate and config.check_leakage:
        labels = purchase_labels if target == "customer" else email_labels
        log = cache.event_log(shop)

        def features(data: ShopData, cutoff: pd.Timestamp) -> pd.DataFrame:
            # the whole shop reads the shared log, the shop cut at the cut-off a log of its own
            # events: so the check also proves that the log is read before the cut-off only
            return customer_features(data, cutoff, log=log if data is shop else None)

        check_time_cut(features, labels, shop, t0, days)
    empty: list[pd.Timestamp] = []

    def pooled(cutoffs: list[pd.Timestamp], name: str) -> Rows:
        """The rows of every window that has some: a shop that pauses its campaigns leaves an
        email window without a send, and the other windows still teach the model."""
        parts = []
        for cutoff in cutoffs:
            try:
                parts.append(build(cutoff, days))
            except EmptyWindow:
                empty.append(cutoff)
        if not parts:
            raise EmptyWindow(f"no mails sent in [{min(cutoffs)}, {max(cutoffs) + H}) (every {name} window)")
        return Rows.concat(parts)

    fit = pooled(fit_cutoffs, "fitting")
    calibration = pooled(cal_cutoffs, "calibration")
    test = build(t0, days) if evaluate else None  # the window that judges must hold rows itself
    return Periods(fit, calibration, test, {"fit": f"{min(fit_cutoffs)}..{max(fit_cutoffs)}",
                                            "calibration": f"{min(cal_cutoffs)}..{max(cal_cutoffs)}",
                                            "test": str(t0) if evaluate else "",
                                            "empty_windows": ", ".join(map(str, sorted(empty)))}, tuple(sorted(empty)))


def _session_periods(shop: ShopData, config: PropensityConfig, end: pd.Timestamp, evaluate: bool,
                     log: sess.SessionLog) -> Periods:
    past = log.past
    D = pd.Timedelta(days=config.session_window_days)
    cal_end = end - D if evaluate else end
    rng = np.random.default_rng(config.seed)
    fit = session_rows(log, past, None, cal_end - D, rng)
    calibration = session_rows(log, past, cal_end - D, cal_end, rng)
    test = session_rows(log, past, cal_end, end, rng) if evaluate else None
    return Periods(fit, calibration, test, {"fit": f"..{cal_end - D}", "calibration": f"{cal_end - D}..{cal_end}",
                                            "test": f"{cal_end}..{end}" if evaluate else ""})


# ---- fit, choose, calibrate -------------------------------------------------------------------
def fit_target(target: str, rows: Periods, config: PropensityConfig) -> PropensityModel:
    """Fit every candidate on the fit rows, keep the best ROC-AUC on the calibration rows, calibrate it."""
    fit, cal = rows.fit, rows.calibration
    for name, part in (("fitting", fit), ("calibration", cal)):
        if len(np.unique(part.y)) < 2:
            raise NotTrainable(f"only one class in the {name} rows ({len(part.y)} rows)")
    keep = np.random.default_rng(config.seed).permutation(len(fit.y))[:config.max_fit_rows]
    X_fit, y_fit = fit.X.to_numpy(dtype=np.float64)[keep], fit.y[keep]
    X_cal = cal.X.to_numpy(dtype=np.float64)
    fitted, validation_auc = {}, {}
    for kind in config.candidates:
        fitted[kind] = candidate(kind, config.seed).fit(X_fit, y_fit)
        validation_auc[kind] = float(roc_auc_score(cal.y, fitted[kind].decision_function(X_cal)))
    chosen = max(validation_auc, key=validation_auc.__getitem__)
    method = config.calibration
    if method == "auto":
        method = "isotonic" if len(cal.y) >= 1000 and min(cal.y.sum(), len(cal.y) - cal.y.sum()) >= 50 else "sigmoid"
    calibrated = calibrate(fitted[chosen], X_cal, cal.y, method)
    return from_sklearn(target, list(fit.X.columns), chosen, calibrated, {
        "validation_roc_auc": validation_auc, "fit_rows": len(y_fit), "calibration_rows": len(cal.y),
        "fit_base_rate": float(fit.y.mean()), "cutoffs": rows.cutoffs})


# ---- evaluation ----------------------------------------------------------------------------
def metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """ROC-AUC, PR-AUC, Brier, log loss and the largest per-decile reliability gap."""
    table = deciles(y, p)
    single = len(np.unique(y)) < 2
    return {
        "roc_auc": float("nan") if single else float(roc_auc_score(y, p)),
        "pr_auc": float("nan") if single else float(average_precision_score(y, p)),
        "brier": float(brier_score_loss(y, p)),
        "log_loss": float(log_loss(y, np.clip(p, 1e-6, 1 - 1e-6), labels=[0, 1])),
        "max_calibration_gap": float((table["mean_predicted"] - table["observed_rate"]).abs().max()),
        "base_rate": float(np.mean(y)), "rows": float(len(y)), "positives": float(np.sum(y)),
    }


def deciles(y: np.ndarray, p: np.ndarray) -> pd.DataFrame:
    """Lift / gain by decile of predicted probability (decile 1 = highest scores), with reliability.

    Rows are ranked (ties broken by position) and cut into ten equal-count groups.
    """
    order = np.argsort(-p, kind="stable")
    group = np.empty(len(p), dtype=np.int64)
    group[order] = np.arange(len(p)) * 10 // max(len(p), 1) + 1
    frame = pd.DataFrame({"decile": group, "y": y, "p": p}).groupby("decile")
    table = pd.DataFrame({"rows": frame.size(), "positives": frame["y"].sum(), "mean_predicted": frame["p"].mean(),
                          "observed_rate": frame["y"].mean()})
    base = max(float(np.mean(y)), 1e-12)
    table["lift"] = table["observed_rate"] / base
    table["cumulative_gain"] = table["positives"].cumsum() / max(float(np.sum(y)), 1.0)
    return table


def baseline_probabilities(rows: Periods) -> dict[str, np.ndarray]:
    """Each trivial baseline's score on the test rows, made a probability the same way as the
    model's (isotonic on the calibration rows)."""
    assert rows.test is not None
    out = {}
    for name, score in rows.calibration.baselines.items():
        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
        iso.fit(score, rows.calibration.y)
        out[name] = iso.predict(rows.test.baselines[name])
    return out


@dataclass
class TargetResult:
    metrics: dict[str, float]
    deciles: pd.DataFrame
    model: PropensityModel
    baseline: str
    """The strongest baseline on the test window (by ROC-AUC), the one ``baseline.*`` describes."""


def evaluate_target(target: str, shop: ShopData, config: PropensityConfig,
                    snapshots: Snapshots | None = None) -> TargetResult:
    snapshots = Snapshots() if snapshots is None else snapshots
    rows = periods(shop, target, config, evaluate=True, snapshots=snapshots)
    model = fit_target(target, rows, config)
    test = rows.test
    assert test is not None, "periods(evaluate=True) always holds a test window"
    p = model.predict_proba(test.X)
    out = metrics(test.y, p)
    judged = {name: metrics(test.y, score) for name, score in baseline_probabilities(rows).items()}
    strongest = max(judged, key=lambda name: np.nan_to_num(judged[name]["roc_auc"], nan=-1.0))
    for name, base in judged.items():
        shown = {k: v for k, v in base.items() if k in ("roc_auc", "pr_auc", "brier")}
        out.update({f"baselines.{name}.{k}": v for k, v in shown.items()})
        if name == strongest:
            out.update({f"baseline.{k}": v for k, v in shown.items()})
    prior = float(np.concatenate([rows.fit.y, rows.calibration.y]).mean())
    out["base_rate_brier"] = float(brier_score_loss(test.y, np.full(len(test.y), prior)))
    if target == "email":  # the one target whose windows can be empty
        out["empty_windows"] = float(len(rows.empty_windows))
    out.update({f"validation_roc_auc.{k}": v for k, v in model.metadata["validation_roc_auc"].items()})
    if target == "session":
        full = _full_prefix_auc(shop, config, model, snapshots.session_log(shop))
        if full is not None:
            out["roc_auc_full_prefix"] = full
    return TargetResult(out, deciles(test.y, p), model, strongest)


def _full_prefix_auc(shop: ShopData, config: PropensityConfig, model: PropensityModel,
                     log: sess.SessionLog) -> float | None:
    """The session model on every pre-purchase event of each test session (the last live call)."""
    table = log.table
    test_ids = table[(table["start"] >= data_end(shop) - pd.Timedelta(days=config.session_window_days))
                     & (table["eligible_events"] > 0)].index
    X = log.features(test_ids, log.past)
    y = table.loc[X.index, "converted"].to_numpy()
    return float(roc_auc_score(y, model.predict_proba(X))) if len(np.unique(y)) == 2 else None


def evaluate_propensity(shop: ShopData, config: PropensityConfig, progress: Progress | None = None,
                        snapshots: Snapshots | None = None) -> PropensityReport:
    """Every target on its later test window, next to its baseline; skipped targets say why.
    ``snapshots`` (filled here) lets :func:`fit_propensity` reuse the rows built."""
    report = PropensityReport()
    for target in TARGETS:
        reason = skip_reason(shop, target)
        if reason is None:
            if progress:
                progress(f"propensity: evaluating {target}")
            try:
                result = evaluate_target(target, shop, config, snapshots)
                report.metrics[target], report.deciles[target] = result.metrics, result.deciles
                report.chosen[target], report.baseline[target] = result.model.kind, result.baseline
                reason = "ok"
                if result.metrics.get("empty_windows") and progress:
                    progress(f"propensity: {target}: no mail sent in the windows from "
                             f"{result.model.metadata['cutoffs']['empty_windows']}: left out, the others pooled")
            except NotTrainable as error:
                reason = f"skipped: {error}"
        if reason != "ok" and progress:
            progress(f"propensity: {target} {reason}")
        report.status[target] = reason
    return report


def fit_propensity(shop: ShopData, config: PropensityConfig, progress: Progress | None = None,
                   snapshots: Snapshots | None = None) -> PropensitySet:
    """The bundle's propensity part: models refitted up to the end of history, with serving
    features; rows already in ``snapshots`` (from :func:`evaluate_propensity`) are not rebuilt."""
    end = data_end(shop)
    snapshots = Snapshots() if snapshots is None else snapshots
    models, status = {}, {}
    for target in TARGETS:
        reason = skip_reason(shop, target)
        if reason is None:
            if progress:
                progress(f"propensity: fitting {target} for the bundle")
            try:
                models[target] = fit_target(target, periods(shop, target, config, evaluate=False, snapshots=snapshots),
                                            config)
                reason = "ok"
            except NotTrainable as error:
                reason = f"skipped: {error}"
        status[target] = reason
    history = sess.customer_history(snapshots.session_log(shop).table) if "session" in models else None
    return PropensitySet(models, status, customer_features(shop, end, log=snapshots.event_log(shop)), history, end)
