"""The uncertainty behind the evaluation table's gains: the paired bootstrap intervals of
:func:`training.evaluate.relative_gains`."""

from __future__ import annotations

import numpy as np

from training.evaluate import relative_gains


def relative_gain(values: np.ndarray, baseline: np.ndarray, **options: int) -> tuple[float, float, float]:
    return relative_gains({"model": values, "baseline": baseline}, "baseline", **options)["model"]


def test_a_list_against_itself_gains_nothing_with_no_doubt() -> None:
    values = np.random.default_rng(0).random(500)
    assert relative_gain(values, values) == (0.0, 0.0, 0.0)


def test_the_interval_covers_the_true_gain_about_95_times_in_100() -> None:
    """Customers' NDCG-like scores (mostly zero, paired: a better list helps the same customers
    more), the challenger's true mean 10% above the baseline's; fresh customers each time."""
    rng = np.random.default_rng(1)
    covered, widths = 0, []
    trials = 200
    for trial in range(trials):
        active = rng.random(800) < 0.3
        baseline = np.where(active, rng.beta(2, 5, 800), 0.0)
        challenger = np.clip(baseline * 1.1 + np.where(active, rng.normal(0, 0.05, 800), 0.0), 0, None)
        true_gain = 0.1  # E[challenger] = 1.1 E[baseline] up to the clip, negligible here
        gain, low, high = relative_gain(challenger, baseline, replicates=400, seed=trial)
        assert low <= gain <= high
        covered += low <= true_gain <= high
        widths.append(high - low)
    assert 0.88 * trials <= covered <= trials, covered
    assert 0.0 < float(np.median(widths)) < 0.1  # paired: far narrower than two independent means


def test_the_interval_is_reproducible_and_undefined_against_a_zero_baseline() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.random(300), rng.random(300)
    assert relative_gain(a, b, seed=5) == relative_gain(a, b, seed=5)
    assert all(np.isnan(relative_gain(a, np.zeros(300))))


def test_every_row_is_drawn_with_the_same_weights_as_if_alone() -> None:
    """One draw serves every row: a row's interval is the one it gets against the baseline alone."""
    rng = np.random.default_rng(6)
    rows = {name: rng.random(400) * scale for name, scale in (("base", 1.0), ("better", 1.2), ("worse", 0.9))}
    together = relative_gains(rows, "base")
    assert together["base"] == (0.0, 0.0, 0.0)
    for name in ("better", "worse"):
        np.testing.assert_allclose(together[name], relative_gain(rows[name], rows["base"]), rtol=1e-12)
    assert together["better"][1] > 0 > together["worse"][2]
