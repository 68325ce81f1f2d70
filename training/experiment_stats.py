"""The statistics of an online experiment: a variant's lift over the control with its interval,
and the check that traffic was split as planned.

**Lift.** Each unit (customer or session) contributes one value per metric (converted 0/1,
revenue, recommended items bought). A variant's lift over the control is the ratio of the two
means minus one; its 95% interval comes from the delta method on the log of that ratio, with
each arm's variance of the mean estimated from its own units (Welch-style, no equal-variance
assumption): ``se(log r) ** 2 = s_t**2 / (n_t * m_t**2) + s_c**2 / (n_c * m_c**2)``. Units, not
exposures, are the independent draws: one customer's exposures are correlated, and treating
them as independent would make the interval too narrow. The delta method needs a few dozen
positive outcomes per arm; below :data:`MIN_POSITIVE` the lift is reported without an interval.

**Sample-ratio mismatch.** When the units counted per variant are unlikely under the planned
shares (chi-square goodness of fit, p below :data:`SRM_ALPHA`), the split itself is broken (a
variant that fails more often, a bot, a logging gap) and no lift from it should be trusted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

Z_95 = 1.959963984540054
MIN_POSITIVE = 10
"""Units with a non-zero value an arm needs before its lift gets an interval."""
SRM_ALPHA = 0.001
"""The usual threshold for a sample-ratio mismatch: a real split fails it once in a thousand."""


@dataclass(frozen=True)
class Lift:
    control_mean: float
    variant_mean: float
    lift: float | None
    """variant / control - 1; None when the control's mean is zero."""
    low: float | None
    high: float | None
    """The 95% interval of the lift; None when an arm has too few positive units."""

    @property
    def significant(self) -> bool:
        """Whether the interval excludes zero."""
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)


def lift(control: np.ndarray, variant: np.ndarray) -> Lift:
    """The relative lift of ``variant``'s mean over ``control``'s, per unit values, with its 95% interval."""
    control, variant = np.asarray(control, dtype=float), np.asarray(variant, dtype=float)
    m_c, m_t = (float(control.mean()) if control.size else 0.0), (float(variant.mean()) if variant.size else 0.0)
    if m_c <= 0:
        return Lift(m_c, m_t, None, None, None)
    ratio = m_t / m_c
    if min(int((control != 0).sum()), int((variant != 0).sum())) < MIN_POSITIVE or m_t <= 0:
        return Lift(m_c, m_t, ratio - 1, None, None)
    var_log = (control.var(ddof=1) / (control.size * m_c**2)) + (variant.var(ddof=1) / (variant.size * m_t**2))
    half = Z_95 * math.sqrt(var_log)
    return Lift(m_c, m_t, ratio - 1, math.exp(math.log(ratio) - half) - 1, math.exp(math.log(ratio) + half) - 1)


@dataclass(frozen=True)
class SampleRatio:
    counts: tuple[int, ...]
    expected_shares: tuple[float, ...]
    p_value: float

    @property
    def mismatch(self) -> bool:
        return self.p_value < SRM_ALPHA


def sample_ratio(counts: list[int], shares: list[float]) -> SampleRatio:
    """Chi-square goodness of fit of the units per variant against the planned shares."""
    total = sum(counts)
    expected = np.asarray(shares, dtype=float) / sum(shares) * total
    p_value = float(stats.chisquare(np.asarray(counts, dtype=float), expected).pvalue) if total else 1.0
    return SampleRatio(tuple(counts), tuple(float(s) for s in np.asarray(shares) / sum(shares)), p_value)
