"""The experiment statistics against simulated truth: the interval covers a planted lift, an A/A
split finds a lift no more often than its 5% error rate says, and a broken split is flagged."""

from __future__ import annotations

import numpy as np
import pytest

from training.experiment_stats import lift, sample_ratio


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
