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

**Ratio metrics.** Click-through is clicks over exposures, and a unit contributes both: its mean
per variant is ``sum(clicks) / sum(exposures)``, not the mean of per-unit rates (which would give
a unit shown one answer the weight of one shown a hundred). The delta method then takes the
covariance of numerator and denominator into account, per arm:
``var(log(x/y)) = (s_x**2 / m_x**2 + s_y**2 / m_y**2 - 2 s_xy / (m_x m_y)) / n``.

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


def _arm(values: np.ndarray, per: np.ndarray | None) -> tuple[float, float]:
    """An arm's mean (of ``values``, or of ``values`` per ``per``) and the variance of its log."""
    if values.size == 0:
        return 0.0, math.inf
    m_x = float(values.mean())
    if per is None:
        return m_x, (float(values.var(ddof=1)) / (values.size * m_x**2) if m_x > 0 and values.size > 1 else math.inf)
    m_y = float(per.mean())
    if m_y <= 0:
        return 0.0, math.inf
    if m_x <= 0 or values.size < 2:
        return m_x / m_y, math.inf
    covariance = np.cov(values, per, ddof=1)
    var_log = (covariance[0, 0] / m_x**2 + covariance[1, 1] / m_y**2 - 2 * covariance[0, 1] / (m_x * m_y)) / values.size
    return m_x / m_y, float(max(var_log, 0.0))


def lift(control: np.ndarray, variant: np.ndarray, control_per: np.ndarray | None = None,
         variant_per: np.ndarray | None = None) -> Lift:
    """The relative lift of ``variant``'s mean over ``control``'s, per unit values, with its 95% interval.

    With ``control_per`` and ``variant_per`` (each unit's denominator, such as its exposures) the
    means are ratio means, ``sum(values) / sum(per)`` (module docstring)."""
    control, variant = np.asarray(control, dtype=float), np.asarray(variant, dtype=float)
    per_c = None if control_per is None else np.asarray(control_per, dtype=float)
    per_t = None if variant_per is None else np.asarray(variant_per, dtype=float)
    (m_c, var_c), (m_t, var_t) = _arm(control, per_c), _arm(variant, per_t)
    if m_c <= 0:
        return Lift(m_c, m_t, None, None, None)
    ratio = m_t / m_c
    if min(int((control != 0).sum()), int((variant != 0).sum())) < MIN_POSITIVE or m_t <= 0:
        return Lift(m_c, m_t, ratio - 1, None, None)
    half = Z_95 * math.sqrt(var_c + var_t)
    return Lift(m_c, m_t, ratio - 1, math.exp(math.log(ratio) - half) - 1, math.exp(math.log(ratio) + half) - 1)


def units_needed(control: np.ndarray, lift: float, power: float = 0.8) -> int:
    """Units per arm for the 95% interval to exclude zero with chance ``power`` when the true lift is
    ``lift``: the size to plan an experiment for, from the spread of a metric per unit (a past
    experiment's control, or the days before the start). Both arms are taken to spread like
    ``control``; same delta method as :func:`lift`: ``n = 2 cv**2 (z_0.975 + z_power)**2 / log(1 + lift)**2``."""
    values = np.asarray(control, dtype=float)
    mean = float(values.mean()) if values.size else 0.0
    if mean <= 0 or values.size < 2 or lift <= -1 or lift == 0:
        raise ValueError("units_needed: the control needs a positive mean and two units, the lift must be > -1, not 0")
    cv2 = float(values.var(ddof=1)) / mean**2
    return math.ceil(2 * cv2 * (Z_95 + float(stats.norm.ppf(power))) ** 2 / math.log1p(lift) ** 2)


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
