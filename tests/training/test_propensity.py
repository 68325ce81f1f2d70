"""Propensity models: exported == scikit-learn, pickle-free round trip, quality on the sample, skips."""

from __future__ import annotations

from dataclasses import replace

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.loading import ShopData, validate_tables
from features.sample import SampleConfig, generate_shop
from features.sources import RawTable
from features.customer_features import OPEN_WINDOW_DAYS
from training.propensity import PropensityConfig, PropensityReport, data_end, evaluate_propensity, fit_propensity
from training.propensity_rows import Snapshots
from training.propensity_fit import calibrate, candidate, from_sklearn
from training.propensity_model import PropensityModel
from training.propensity_set import SCORES_FILE, PropensitySet, PropensityUnavailable, newcomer


def load(config: SampleConfig, drop: tuple[str, ...] = ()) -> ShopData:
    tables = generate_shop(config).tables
    return validate_tables({k: RawTable(v, k) for k, v in tables.items() if k not in drop}, source="sample")


@pytest.fixture(scope="module")
def default_shop() -> ShopData:
    """The sample's default size (5,000 customers, 1,000 items, 180 days)."""
    return load(SampleConfig(dirty_share=0))


@pytest.fixture(scope="module")
def evaluated(default_shop: ShopData) -> tuple[PropensityReport, Snapshots]:
    """The default shop evaluated as a training run does, keeping the snapshots it built."""
    snapshots = Snapshots()
    return evaluate_propensity(default_shop, PropensityConfig(seed=0), snapshots=snapshots), snapshots


@pytest.fixture(scope="module")
def report(evaluated: tuple[PropensityReport, Snapshots]) -> PropensityReport:
    return evaluated[0]


@pytest.fixture(scope="module")
def fitted(default_shop: ShopData) -> PropensitySet:
    """The bundle's part fitted from scratch (read, never changed, by the tests that take it)."""
    return fit_propensity(default_shop, PropensityConfig(seed=0))


def test_the_bundle_fit_reuses_evaluations_snapshots_and_fits_the_same_models(
        default_shop: ShopData, evaluated: tuple[PropensityReport, Snapshots], fitted: PropensitySet,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every customer and email snapshot the bundle's fit needs was built by evaluation (one
    horizon later, the same cut-offs), and the events were sorted into sessions once: nothing
    is built again, and the models are those a fit from scratch gives."""
    from features import sessions
    from training import propensity

    fresh = fitted
    built: list[str] = []
    for module, name in ((propensity, "customer_rows"), (propensity, "email_rows"), (sessions, "ordered")):
        original = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *args, _f=original, _n=name: built.append(_n) or _f(*args))
    shared = fit_propensity(default_shop, PropensityConfig(seed=0), snapshots=replace(evaluated[1], rows=dict(evaluated[1].rows)))
    assert built == []
    assert {"customer", "email"} <= set(shared.models) and set(shared.models) == set(fresh.models)
    ids = list(shared.customer_features.index[:500])
    for target in ("customer", "email"):
        pd.testing.assert_frame_equal(shared.customers(target, ids), fresh.customers(target, ids), check_exact=True)


@pytest.mark.parametrize("kind", ["logistic", "boosting"])
@pytest.mark.parametrize("method", ["isotonic", "sigmoid"])
def test_exported_model_scores_like_scikit_learn_and_round_trips(kind: str, method: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    X = np.abs(rng.normal(size=(5000, 4)))
    y = (X[:, 0] + rng.normal(size=5000) > 1.0).astype(int)
    calibrated = calibrate(candidate(kind, 0).fit(X[:3000], y[:3000]), X[3000:4000], y[3000:4000], method)
    model = from_sklearn("t", ["a", "b", "c", "d"], kind, calibrated)
    expected = calibrated.predict_proba(X[4000:])[:, 1]
    np.testing.assert_allclose(model.predict_proba(X[4000:]), expected, atol=1e-12)
    model.save(tmp_path / "m")
    assert not list(tmp_path.rglob("*.pkl"))
    again = PropensityModel.load(tmp_path / "m")
    frame = pd.DataFrame(X[4000:][:, ::-1], columns=["d", "c", "b", "a"])  # reordered by name
    np.testing.assert_allclose(again.predict_proba(frame), expected, atol=1e-12)


@pytest.mark.parametrize("target", ["customer", "session", "email"])
def test_each_model_beats_its_baseline_on_the_later_window(report: PropensityReport, target: str) -> None:
    assert report.status[target] == "ok"
    m = report.metrics[target]
    assert m["roc_auc"] > m["baseline.roc_auc"] + 0.03, m
    assert m["brier"] < m["base_rate_brier"], m
    assert m["brier"] <= m["baseline.brier"], m
    assert m["max_calibration_gap"] < 0.05, report.deciles[target]
    deciles = report.deciles[target]
    assert deciles["lift"].iloc[0] > 1.5 and deciles["cumulative_gain"].iloc[-1] == pytest.approx(1.0)


def test_session_model_scores_partial_and_complete_sessions(report: PropensityReport) -> None:
    assert report.metrics["session"]["roc_auc"] > 0.8  # random prefixes, as called live
    assert report.metrics["session"]["roc_auc_full_prefix"] > report.metrics["session"]["roc_auc"]


def test_bundle_part_scores_customers_and_live_sessions(default_shop: ShopData, fitted: PropensitySet,
                                                       tmp_path: Path) -> None:
    part = fitted
    part.save(tmp_path / "p")
    again = PropensitySet.load(tmp_path / "p")
    assert again.customer_features is None and not (tmp_path / "p" / "customer_features.parquet").exists()
    ids = [*part.customer_features.index[:50], "never-seen"]
    for target in ("customer", "email"):
        pd.testing.assert_frame_equal(again.customers(target, ids), part.customers(target, ids), check_exact=True)
    scored = again.customers("customer", ids)
    assert scored["known"].tolist() == [True] * 50 + [False]
    assert scored["probability"].between(0, 1).all()
    events = default_shop["events"]
    session_ids = events["session_id"].drop_duplicates().iloc[-30:]
    live_events = events[events["session_id"].isin(session_ids)]
    batch = again.sessions(live_events, default_shop["items"]).set_index("session_id")["probability"]
    for sid, group in live_events.groupby("session_id"):
        records = [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in group.to_dict("records")]
        if sid in batch.index:
            assert again.live_session(records, default_shop["items"]) == pytest.approx(batch[sid], abs=1e-12)


def test_a_row_scores_the_same_alone_or_in_any_batch() -> None:
    """A logistic model of 16 features over a column-major batch (what a frame's to_numpy gives):
    every row's score equals the row scored alone, to the last bit, so a warmed look-up is a
    fresh score."""
    rng = np.random.default_rng(0)
    width = 16
    arrays = {"mean": rng.normal(size=width), "scale": rng.uniform(0.5, 2, size=width), "coef": rng.normal(size=width),
              "intercept": np.array([0.3]), "cal_ab": np.array([-1.0, 0.0])}
    model = PropensityModel("email", [f"f{n}" for n in range(width)], "logistic", arrays, "sigmoid")
    X = np.asfortranarray(rng.lognormal(size=(500, width)))
    together = model.predict_proba(X)
    alone = np.array([model.predict_proba(X[n:n + 1])[0] for n in range(len(X))])
    assert np.array_equal(together, alone)


def test_stored_scores_are_each_customers_own_score(default_shop: ShopData, tmp_path: Path) -> None:
    """The bundle stores every customer's score, made in one batch at save; each is the number
    the model gives that customer's features alone (a row's score does not depend on its batch:
    test_a_row_scores_the_same_alone_or_in_any_batch), a stranger and a customer with a missing
    feature get the newcomer's, and a loaded bundle answers the same, one customer at a time too."""
    part = fit_propensity(default_shop, PropensityConfig())
    features = part.customer_features
    gap = str(features.index[len(features) // 2])
    features.loc[gap, features.columns[0]] = np.nan
    ids = [*features.index[:40], "never-seen", gap, *features.index[-7:]]
    targets = [t for t in ("customer", "email") if t in part.models]
    assert targets
    part.save(tmp_path / "p")
    loaded = PropensitySet.load(tmp_path / "p")
    newcomer_row = newcomer(features.columns).to_frame().T
    for target in targets:
        model = part.models[target]
        expected = [model.predict_proba(features.loc[[c]])[0] if c in features.index and c != gap
                    else model.predict_proba(newcomer_row)[0] for c in ids]
        answered = loaded.customers(target, ids)
        assert answered["probability"].tolist() == expected
        assert answered["known"].tolist() == [c in features.index and c != gap for c in ids]
        alone = loaded.customers(target, [ids[5]])  # one at a time, as the endpoint asks
        assert alone["probability"].iloc[0] == expected[5]


def test_a_bundle_saved_before_scores_were_stored_scores_from_its_features(fitted: PropensitySet,
                                                                          tmp_path: Path) -> None:
    fitted.save(tmp_path / "p")
    (tmp_path / "p" / SCORES_FILE).unlink()
    fitted.customer_features.rename_axis("customer_id").reset_index().to_parquet(
        tmp_path / "p" / "customer_features.parquet", index=False)
    older = PropensitySet.load(tmp_path / "p")
    ids = [*fitted.customer_features.index[:30], "never-seen"]
    older.warm()
    pd.testing.assert_frame_equal(older.customers("email", ids), fitted.customers("email", ids), check_exact=True)


def test_absent_tables_skip_their_models_with_a_reason() -> None:
    shop = load(SampleConfig(customers=800, items=200, days=120, seed=2, dirty_share=0),
                drop=("events", "email_events"))
    report = evaluate_propensity(shop, PropensityConfig(fit_snapshots=2))
    assert report.status == {"customer": "ok", "session": "skipped: no events table",
                             "email": "skipped: no email_events table"}
    part = fit_propensity(shop, PropensityConfig(fit_snapshots=2))
    assert set(part.models) == {"customer"}
    with pytest.raises(PropensityUnavailable, match="no events table") as caught:
        part.live_session([{"event_type": "view", "ts": "2025-01-01T00:00:00Z", "item_id": "x"}], shop["items"])
    assert caught.value.reason == "skipped: no events table"


def test_mails_that_stop_before_a_window_skip_the_email_model_with_a_reason_not_a_crash() -> None:
    """A shop whose campaigns stopped (Complete Journey cut at an earlier month): a window without
    a single send has no email rows, which is a reason to skip the email model, not an error."""
    shop = load(SampleConfig(customers=800, items=200, days=150, seed=2, dirty_share=0))
    emails = shop["email_events"]
    stopped = emails[emails["sent_ts"] < emails["sent_ts"].max() - pd.Timedelta(days=60)]
    shop = replace(shop, tables={**shop.tables, "email_events": stopped.reset_index(drop=True)})
    report = evaluate_propensity(shop, PropensityConfig(fit_snapshots=2))
    assert report.status["customer"] == "ok"
    assert report.status["email"].startswith("skipped: no mails sent in [")
    part = fit_propensity(shop, PropensityConfig(fit_snapshots=2))
    assert "customer" in part.models and part.status["email"].startswith("skipped: no mails sent in [")


def test_a_campaign_pause_leaves_one_window_out_and_the_email_model_is_fitted_on_the_others() -> None:
    """A shop that mails in bursts leaves some 14-day windows without a send: those windows are
    left out (and said so), the email model is fitted on the rest, not skipped."""
    shop = load(SampleConfig(customers=800, items=200, days=150, seed=2, dirty_share=0))
    config = PropensityConfig(fit_snapshots=2)
    end = data_end(shop) - pd.Timedelta(days=OPEN_WINDOW_DAYS)
    # the first fitting window when evaluating (the test window is the last 14 days before end)
    # and, when fitting the bundle (no test window), the second
    pause_from, pause_to = end - pd.Timedelta(days=56), end - pd.Timedelta(days=42)
    emails = shop["email_events"]
    paused = emails[(emails["sent_ts"] < pause_from) | (emails["sent_ts"] >= pause_to)]
    assert len(paused) < len(emails)
    shop = replace(shop, tables={**shop.tables, "email_events": paused.reset_index(drop=True)})
    lines: list[str] = []
    report = evaluate_propensity(shop, config, progress=lines.append)
    assert report.status["email"] == "ok" and report.metrics["email"]["empty_windows"] == 1
    assert any(line.startswith(f"propensity: email: no mail sent in the windows from {pause_from}") for line in lines)
    part = fit_propensity(shop, config)
    assert part.status["email"] == "ok"
    assert part.models["email"].metadata["cutoffs"]["empty_windows"] == str(pause_from)


def test_a_bundle_with_neither_scores_nor_features_reports_the_models_unavailable(fitted: PropensitySet,
                                                                                 tmp_path: Path) -> None:
    fitted.save(tmp_path / "p")
    (tmp_path / "p" / SCORES_FILE).unlink()
    broken = PropensitySet.load(tmp_path / "p")
    broken.warm()  # what a worker does before it serves: no error
    with pytest.raises(PropensityUnavailable, match="holds no scores"):
        broken.customers("email", ["anyone"])
    assert "session" in broken.models
