"""Vectorised sampling helpers the stages share: weighted row draws, id strings, times in a window."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from features.sample.process import DAY_US, HOUR_WEIGHT, US

U_MAX = 1.0 - 1e-9
"""Keeps ``row + u`` strictly below ``row + 1`` in float64 for rows up to ~1e6."""


def draw_rows(rng: np.random.Generator, weights: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """One categorical draw per entry of ``rows``, from the distribution ``weights[row]``.

    Row-normalised cumulative sums shifted by the row number form one increasing array,
    so a single ``searchsorted`` serves millions of draws from different distributions.
    """
    n, k = weights.shape
    cum = np.cumsum(weights, axis=1)
    cum /= cum[:, -1:]
    cum[:, -1] = 1.0
    flat = (cum + np.arange(n)[:, None]).ravel()
    return np.searchsorted(flat, rows + rng.random(len(rows)) * U_MAX, side="right") - rows * k


def allocate(total: int, shares: np.ndarray, minimum: int) -> np.ndarray:
    """Split ``total`` into integers proportional to ``shares``, each at least ``minimum``."""
    spare = total - minimum * len(shares)
    exact = spare * shares / shares.sum()
    parts = np.floor(exact).astype(np.int64)
    parts[np.argsort(parts - exact, kind="stable")[: spare - parts.sum()]] += 1
    return parts + minimum


def make_ids(prefix: str, numbers: np.ndarray, width: int) -> np.ndarray:
    """Zero-padded string ids ("c000123") for an integer array, without a Python loop."""
    if not len(numbers):  # np.char.zfill cannot size an empty result
        return np.empty(0, dtype=object)
    return np.char.add(prefix, np.char.zfill(numbers.astype(np.int64).astype(str), width)).astype(object)


def id_width(count: int, minimum: int) -> int:
    return max(minimum, len(str(max(count - 1, 0))))


def times_in(rng: np.random.Generator, lo_us: np.ndarray, hi_us: int) -> np.ndarray:
    """Whole-second times in [lo, hi): a uniform day, then an hour from the daily profile."""
    day = ((lo_us + rng.random(len(lo_us)) * (hi_us - lo_us)) // DAY_US).astype(np.int64)
    hour = rng.choice(24, size=len(lo_us), p=HOUR_WEIGHT / HOUR_WEIGHT.sum())
    t = day * DAY_US + hour * 3600 * US + rng.integers(0, 3600, len(lo_us)) * US
    return np.clip(t, -(-lo_us // US) * US, hi_us - US)


def take_values(values: np.ndarray, index: np.ndarray) -> pd.Series:
    """``values[index]`` as a string column, NA where ``index`` is -1.

    Arrow's take builds millions of strings without a Python object per row.
    """
    taken = pa.array(values, type=pa.string()).take(pa.array(index, mask=index < 0))
    return pd.Series(taken, dtype="str")


def utc_series(us: np.ndarray) -> pd.Series:
    return pd.Series(us.astype("datetime64[us]")).dt.tz_localize("UTC")


def row_offsets(counts: np.ndarray) -> np.ndarray:
    """Start position of each group in an array laid out by ``np.repeat(..., counts)``."""
    return np.concatenate(([0], np.cumsum(counts)[:-1]))
