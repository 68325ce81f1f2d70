"""Per-customer arrays the serving rules read, aligned to the bundle's internal customer index.

Built once per bundle from its profile tables (RFM and price bands, email opt-outs, open
rates), so a request reads array cells instead of looking ids up in frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from training.bundle import Bundle


@dataclass(frozen=True)
class CustomerProfiles:
    """One cell per customer; ``segment_band`` and ``catalogue_band`` are the price bands for
    customers without one of their own."""

    segment: np.ndarray
    """RFM segment name, or None."""
    band_lo: np.ndarray
    band_hi: np.ndarray
    """The price band the customer buys in (NaN without purchases)."""
    recency_days: np.ndarray
    """Days since the last purchase at training time (inf without any)."""
    opted_out: np.ndarray
    open_rate: np.ndarray
    """Shrunk email open rate (NaN without sends)."""
    open_prior: float
    """The shop's open rate, for customers without sends."""
    segment_band: dict[str, tuple[float, float]]
    catalogue_band: tuple[float, float]

    @classmethod
    def from_bundle(cls, bundle: Bundle, price: np.ndarray, recommendable: np.ndarray,
                    middle_band: tuple[float, float]) -> CustomerProfiles:
        """``price`` and ``recommendable`` per item; ``middle_band``: the catalogue price quantiles
        that make the band of a stranger."""
        n = len(bundle.customers)
        profiles = bundle.profiles.get("customers", pd.DataFrame(columns=["customer_id"]))
        idx = bundle.customers.to_index(profiles["customer_id"].astype(str).to_numpy(), unknown="mark")
        ok = idx >= 0
        profiles, idx = profiles[ok], idx[ok]

        def aligned(column: str, fill: object, dtype: type | str) -> np.ndarray:
            out = np.full(n, fill, dtype=dtype)
            if column in profiles:
                out[idx] = profiles[column].to_numpy()
            return out

        segment = aligned("segment", None, object)
        band_lo, band_hi = aligned("price_lo", np.nan, np.float64), aligned("price_hi", np.nan, np.float64)
        segments = sorted({s for s in segment if isinstance(s, str)})
        member = pd.Index(segments, dtype=object).get_indexer(pd.Index(segment, dtype=object))
        segment_band = {s: (float(np.nanmedian(band_lo[member == i])), float(np.nanmedian(band_hi[member == i])))
                        for i, s in enumerate(segments) if np.isfinite(band_lo[member == i]).any()}
        priced = price[recommendable & (price > 0)]
        q_lo, q_hi = middle_band
        catalogue_band = ((float(np.quantile(priced, q_lo)), float(np.quantile(priced, q_hi)))
                          if len(priced) else (0.0, math.inf))
        opted_out = np.zeros(n, dtype=bool)
        opt_out = bundle.profiles.get("email_opt_out")
        if opt_out is not None and len(opt_out):
            oidx = bundle.customers.to_index(opt_out["customer_id"].astype(str).to_numpy(), unknown="mark")
            opted_out[oidx[oidx >= 0]] = True
        rates = bundle.profiles.get("email_open_rates")
        open_rate, open_prior = np.full(n, np.nan), 0.0
        if rates is not None and len(rates):
            ridx = bundle.customers.to_index(rates["customer_id"].astype(str).to_numpy(), unknown="mark")
            open_rate[ridx[ridx >= 0]] = rates["open_rate"].to_numpy()[ridx >= 0]
            open_prior = float(rates["opens"].sum() / max(rates["sends"].sum(), 1))
        return cls(segment, band_lo, band_hi, aligned("recency_days", np.inf, np.float64), opted_out, open_rate,
                   open_prior, segment_band, catalogue_band)
