"""Per-customer arrays the serving rules read, aligned to the bundle's internal customer index.

Built once per bundle from its profile tables (RFM and price bands, email opt-outs, open
rates), so a request reads array cells instead of looking ids up in frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.profiles import RECENT_SENDS
from training.bundle import Bundle
from training.bundle_profiles import OPEN_HOURS, PLAN_TRIGGERS, SHOP_EMAIL
from training.bundle_profiles import RECENT_SENDS as RECENT_SENDS_PROFILE


@dataclass(frozen=True)
class PlanTriggers:
    """Each customer's first lifecycle trigger on the day after the bundle's data ends, by id: a
    customer with only a cart or a mail (no purchase) may not be one of the bundle's customers."""

    ids: pd.Index
    trigger: np.ndarray
    detail: np.ndarray

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> PlanTriggers:
        frame = bundle.profiles.get(PLAN_TRIGGERS, pd.DataFrame(columns=["customer_id", "trigger", "detail"]))
        return cls(pd.Index(frame["customer_id"].astype(str).to_numpy(dtype=object)),
                   frame["trigger"].to_numpy(dtype=object), frame["detail"].to_numpy(dtype=object))

    def of(self, canonical_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``trigger`` and ``detail`` per id (None where none fired)."""
        at = self.ids.get_indexer(pd.Index(canonical_ids, dtype=object)) if len(self.ids) \
            else np.full(len(canonical_ids), -1)
        hit = at >= 0
        trigger = np.full(len(canonical_ids), None, dtype=object)
        detail = np.full(len(canonical_ids), None, dtype=object)
        trigger[hit], detail[hit] = self.trigger[at[hit]], self.detail[at[hit]]
        return trigger, detail


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
    unopened_sends: np.ndarray
    """Mails the customer got, when they never opened one (0 for anyone who opened): the sunset rule."""
    open_prior: float
    """The shop's open rate, for customers without sends."""
    segment_band: dict[str, tuple[float, float]]
    catalogue_band: tuple[float, float]
    send_hour: np.ndarray
    """Hour (UTC) to mail the customer at: their own open hour, else the shop's (-1 without email data)."""
    shop_send_hour: int
    send_ages: np.ndarray
    """customers x :data:`~features.profiles.RECENT_SENDS`: days before the bundle's end of each
    of the customer's latest sends, most recent first (inf past the last): the frequency cap."""
    triggers: PlanTriggers

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
        open_rate, open_prior, unopened_sends = np.full(n, np.nan), 0.0, np.zeros(n, dtype=np.int64)
        if rates is not None and len(rates):
            ridx = bundle.customers.to_index(rates["customer_id"].astype(str).to_numpy(), unknown="mark")
            open_rate[ridx[ridx >= 0]] = rates["open_rate"].to_numpy()[ridx >= 0]
            never = np.where(rates["opens"].to_numpy() == 0, rates["sends"].to_numpy(), 0)
            unopened_sends[ridx[ridx >= 0]] = never[ridx >= 0]
            open_prior = float(rates["opens"].sum() / max(rates["sends"].sum(), 1))
        shop_hour, send_hour, send_ages = _email_timing(bundle, n)
        return cls(segment, band_lo, band_hi, aligned("recency_days", np.inf, np.float64), opted_out, open_rate,
                   unopened_sends, open_prior, segment_band, catalogue_band, send_hour, shop_hour, send_ages,
                   PlanTriggers.from_bundle(bundle))


def _email_timing(bundle: Bundle, n: int) -> tuple[int, np.ndarray, np.ndarray]:
    shop = bundle.profiles.get(SHOP_EMAIL)
    shop_hour = int(shop["open_hour"].iloc[0]) if shop is not None and len(shop) else -1
    send_hour = np.full(n, shop_hour, dtype=np.int64)
    hours = bundle.profiles.get(OPEN_HOURS)
    if hours is not None and len(hours):
        idx = bundle.customers.to_index(hours["customer_id"].astype(str).to_numpy(), unknown="mark")
        send_hour[idx[idx >= 0]] = hours["open_hour"].to_numpy(dtype=np.int64)[idx >= 0]
    ages = np.full((n, RECENT_SENDS), np.inf)
    recent = bundle.profiles.get(RECENT_SENDS_PROFILE)
    if recent is not None and len(recent):
        idx = bundle.customers.to_index(recent["customer_id"].astype(str).to_numpy(), unknown="mark")
        keep = idx >= 0
        idx, age = idx[keep], recent["age_days"].to_numpy(dtype=np.float64)[keep]
        order = np.lexsort((age, idx))
        idx, age = idx[order], age[order]
        starts = np.searchsorted(idx, idx, side="left")
        slot = np.arange(len(idx)) - starts
        fits = slot < RECENT_SENDS
        ages[idx[fits], slot[fits]] = age[fits]
    return shop_hour, send_hour, ages
