"""The experiment statistics against simulated truth: the interval covers a planted lift, an A/A
split finds a lift no more often than its 5% error rate says, and a broken split is flagged."""

from __future__ import annotations

import numpy as np
import pytest

from training.experiment_stats import lift, sample_ratio, units_needed


def _units(rng: np.random.Generator, n: int, rate: float, mean_basket: float = 40.0) -> np.ndarray:
    """Revenue per unit: converts with ``rate``, then spends a skewed amount (as baskets do)."""
    return rng.binomial(1, rate, n) * rng.gamma(2.0, mean_basket / 2.0, n)


def test_a_planted_lift_is_found_and_covered() -> None:
    rng = np.random.default_rng(7)
    found = lift(_units(rng, 20_000, 0.10), _units(rng, 20_000, 0.12))
    assert found.significant and found.low is not None and found.high is not None
    assert found.low < 0.20 < found.high  # the planted +20%


def test_a_a_tests_find_a_lift_at_the_nominal_rate() -> None:
    """A 95% interval excludes zero in about 5% of A/A tests. 20 runs are too few to check that
    (a correct method has two or more false positives in 26% of sets of 20), so 400 are run and
    the rate must lie within its binomial 99.9% band around 5% (2% to 8.5%)."""
    rng = np.random.default_rng(2026)
    flagged = [lift(_units(rng, 5_000, 0.08), _units(rng, 5_000, 0.08)).significant for _ in range(400)]
    rate = float(np.mean(flagged))
    assert 0.02 <= rate <= 0.085, rate


def test_too_few_outcomes_give_no_interval() -> None:
    few = lift(np.r_[np.ones(5), np.zeros(500)], np.r_[np.ones(8), np.zeros(500)])
    assert few.lift == pytest.approx((8 / 508) / (5 / 505) - 1) and few.low is None and not few.significant
    assert lift(np.zeros(100), np.ones(100)).lift is None


def test_a_broken_split_is_a_sample_ratio_mismatch() -> None:
    assert not sample_ratio([9_020, 980], [0.9, 0.1]).mismatch
    broken = sample_ratio([9_300, 700], [0.9, 0.1])  # a variant losing 30% of its units
    assert broken.mismatch and broken.p_value < 1e-6
    assert not sample_ratio([0, 0], [0.5, 0.5]).mismatch


def _clicks(rng: np.random.Generator, n: int, rate: float) -> tuple[np.ndarray, np.ndarray]:
    """Clicks and exposures per unit: skewed exposure counts, and each unit's own taste for
    clicking (so one unit's exposures are correlated, as real visitors' are)."""
    exposures = 1 + rng.geometric(0.15, n)
    taste = rng.beta(1.0, 1.0 / rate - 1.0, n)
    return rng.binomial(exposures, taste), exposures


def test_click_through_is_a_ratio_of_sums_with_a_planted_lift_covered() -> None:
    rng = np.random.default_rng(11)
    (c_clicks, c_shown), (t_clicks, t_shown) = _clicks(rng, 8_000, 0.05), _clicks(rng, 8_000, 0.06)
    found = lift(c_clicks, t_clicks, c_shown, t_shown)
    assert found.control_mean == pytest.approx(c_clicks.sum() / c_shown.sum())
    assert found.significant and found.low is not None and found.high is not None
    assert found.low < 0.20 < found.high


def test_click_through_a_a_rate_is_nominal_where_counting_exposures_would_not_be() -> None:
    """Units, not exposures, are the draws: the ratio interval keeps the A/A rate near 5%, while
    an interval that took every exposure as independent flags far more (the reason for units)."""
    rng = np.random.default_rng(3)
    flagged, naive = [], []
    for _ in range(300):
        (c_clicks, c_shown), (t_clicks, t_shown) = _clicks(rng, 3_000, 0.05), _clicks(rng, 3_000, 0.05)
        flagged.append(lift(c_clicks, t_clicks, c_shown, t_shown).significant)
        p_c, p_t = c_clicks.sum() / c_shown.sum(), t_clicks.sum() / t_shown.sum()
        se = np.sqrt(p_c * (1 - p_c) / c_shown.sum() + p_t * (1 - p_t) / t_shown.sum())
        naive.append(abs(p_t - p_c) > 1.96 * se)
    assert 0.015 <= float(np.mean(flagged)) <= 0.09, np.mean(flagged)
    assert float(np.mean(naive)) > 0.10, np.mean(naive)  # above the 99.9% band of a 5% rate


def test_units_needed_gives_the_power_it_promises() -> None:
    """Experiments sized by units_needed for a planted +15% find it about 80% of the time."""
    rng = np.random.default_rng(21)
    n = units_needed(_units(rng, 20_000, 0.10), 0.15)
    assert 5_000 < n < 50_000
    found = [lift(_units(rng, n, 0.10), _units(rng, n, 0.115)).significant for _ in range(200)]
    assert 0.70 <= float(np.mean(found)) <= 0.90, (n, np.mean(found))
    with pytest.raises(ValueError, match="positive mean"):
        units_needed(np.zeros(10), 0.1)
