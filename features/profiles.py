"""Customer profiles: RFM with segments, personal price band, category affinity; repurchase intervals.

All computed with grouped pandas operations over the order lines, as of one timestamp, so
the same function gives training features (as of a cut-off) and serving profiles (as of
the end of history).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SEGMENTS = ("champion", "loyal", "new", "at_risk", "hibernating", "regular")
BAND_QUANTILES = (0.2, 0.8)
BAND_WIDENING = 0.5
"""With n priced purchases the band widens by a factor (1 + BAND_WIDENING / sqrt(n)) on each
side: two purchases say little about what a customer will pay, fifty say a lot."""


def rfm(orders: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """Recency (days since last order), frequency (orders), monetary (spend) and a segment per customer.

    Scores are quintiles within the shop (1 = low, 5 = high; recency scored so that recent
    is high), so segments adapt to each shop's rhythm instead of fixed thresholds.
    """
    spend = orders["quantity"] * orders["unit_price"]
    grouped = orders.assign(spend=spend).groupby("customer_id", sort=True)
    frame = pd.DataFrame({
        "recency_days": (as_of - grouped["ts"].max()).dt.total_seconds() / 86_400.0,
        "frequency": grouped["order_id"].nunique().astype(np.int64),
        "monetary": grouped["spend"].sum(),
        "first_order_days": (as_of - grouped["ts"].min()).dt.total_seconds() / 86_400.0,
    })
    r = _quintile(-frame["recency_days"])
    f = _quintile(frame["frequency"])
    m = _quintile(frame["monetary"])
    frame["r_score"], frame["f_score"], frame["m_score"] = r, f, m
    frame["segment"] = np.select(
        [(r >= 4) & (f >= 4) & (m >= 4), (f >= 4) & (r >= 3), (frame["frequency"] <= 1) & (r >= 4),
         (r <= 2) & (f >= 3), (r <= 2)],
        ["champion", "loyal", "new", "at_risk", "hibernating"], default="regular")
    return frame


def _quintile(values: pd.Series) -> pd.Series:
    """1..5 by rank (ties share the average rank), robust to heavy ties in small shops."""
    ranks = values.rank(method="average", pct=True)
    return np.ceil(ranks * 5).clip(1, 5).astype(np.int64)


def price_bands(orders: pd.DataFrame) -> pd.DataFrame:
    """Each customer's band of unit prices paid: robust quantiles, widened when purchases are few."""
    priced = orders[orders["unit_price"] > 0]
    grouped = priced.groupby("customer_id", sort=True)["unit_price"]
    lo = grouped.quantile(BAND_QUANTILES[0])
    hi = grouped.quantile(BAND_QUANTILES[1])
    n = grouped.size()
    widen = 1.0 + BAND_WIDENING / np.sqrt(n)
    return pd.DataFrame({"price_lo": lo / widen, "price_hi": hi * widen, "price_median": grouped.median(),
                         "priced_lines": n.astype(np.int64)})


def category_affinity(orders: pd.DataFrame, items: pd.DataFrame, as_of: pd.Timestamp | None = None) -> pd.DataFrame:
    """Share of each customer's order lines per category (rows sum to 1), long format.

    With ``as_of``, also the days since the customer last bought in the category, which the
    service needs to know whether a durable category was bought within its repurchase interval.
    """
    lines = orders[["customer_id", "item_id", "ts"]].merge(items[["item_id", "category"]], on="item_id")
    grouped = lines.groupby(["customer_id", "category"], sort=True)
    counts = grouped.size().rename("lines").reset_index()
    counts["share"] = counts["lines"] / counts.groupby("customer_id")["lines"].transform("sum")
    if as_of is not None:
        counts["days_since"] = ((as_of - grouped["ts"].max()).dt.total_seconds() / 86_400.0).to_numpy()
    return counts


def repurchase_intervals(orders: pd.DataFrame, items: pd.DataFrame, min_repeats: int = 5) -> pd.DataFrame:
    """Per category: how often a buyer buys the category again, and the median days between buys.

    ``repeat_share`` near 0 marks a category that is durable in practice, whatever the
    catalogue says; categories with fewer than ``min_repeats`` repeat gaps get NaN days.
    """
    lines = orders[["customer_id", "item_id", "ts"]].merge(items[["item_id", "category"]], on="item_id")
    lines = lines.sort_values(["customer_id", "category", "ts"])
    purchase_days = lines.groupby(["customer_id", "category", lines["ts"].dt.floor("D")]).size().reset_index()
    purchase_days.columns = ["customer_id", "category", "day", "lines"]
    gaps = purchase_days.groupby(["customer_id", "category"])["day"].diff().dt.total_seconds() / 86_400.0
    purchase_days["gap_days"] = gaps
    per_category = purchase_days.groupby("category")
    buyers = per_category["customer_id"].nunique()
    repeaters = purchase_days.dropna(subset=["gap_days"]).groupby("category")["customer_id"].nunique()
    median_gap = purchase_days.groupby("category")["gap_days"].median()
    repeats = purchase_days.groupby("category")["gap_days"].count()
    out = pd.DataFrame({"buyers": buyers, "repeat_share": (repeaters.reindex(buyers.index).fillna(0) / buyers),
                        "median_gap_days": median_gap.where(repeats >= min_repeats)})
    return out.reset_index()


def customer_profiles(orders: pd.DataFrame, items: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """One row per customer with orders: RFM, segment, price band and top category."""
    affinity = category_affinity(orders, items)
    top = affinity.sort_values(["customer_id", "share"], ascending=[True, False]).drop_duplicates("customer_id")
    profiles = rfm(orders, as_of).join(price_bands(orders), how="left")
    profiles = profiles.join(top.set_index("customer_id")[["category", "share"]]
                             .rename(columns={"category": "top_category", "share": "top_category_share"}))
    profiles.index.name = "customer_id"
    return profiles.reset_index()


OPEN_RATE_PRIOR_SENDS = 5.0
"""Strength of the shop-wide prior in the shrunk open rate, in pseudo-sends: a customer
with 1 send and 1 open scores (1 + 5p) / 6, not 100%."""


def email_open_rates(email_events: pd.DataFrame, prior_sends: float = OPEN_RATE_PRIOR_SENDS) -> pd.DataFrame:
    """Per customer: sends, opens, the raw rate and a Beta-shrunk rate towards the shop's rate."""
    grouped = email_events.groupby("customer_id", sort=True)["opened"]
    sends, opens = grouped.size(), grouped.sum().astype(np.int64)
    prior = float(opens.sum() / max(sends.sum(), 1))
    return pd.DataFrame({
        "sends": sends.astype(np.int64), "opens": opens, "open_rate_raw": opens / sends,
        "open_rate": (opens + prior_sends * prior) / (sends + prior_sends),
    }).reset_index()


MIN_TIMED_OPENS = 2
"""Opens with a time a customer needs before their own hour is trusted over the shop's."""
RECENT_SENDS = 10
DEFAULT_SEND_HOUR = 9
"""The send hour of a shop whose email log is empty."""
"""The latest sends kept per customer: the most a frequency cap ("N mails in D days") can count."""


def email_timing(email_events: pd.DataFrame, as_of: pd.Timestamp) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """What the campaign plan reads: per customer the hour (UTC) they open mail at, the ages of
    their latest sends (for the frequency cap), and the shop's own open hour.

    A customer's hour is the most common hour of their timed opens (``opened_ts``) once they have
    :data:`MIN_TIMED_OPENS`; the shop's is that of all timed opens, or, where the shop records no
    open times, the hour its opened mails were sent at. Returns ``(hours, recent_sends, shop_hour)``:
    ``customer_id, open_hour, timed_opens`` and ``customer_id, age_days`` (the latest
    :data:`RECENT_SENDS` sends before ``as_of``, in days)."""
    past = email_events[email_events["sent_ts"] < as_of]
    opened = past[past["opened"]]
    timed = opened[opened["opened_ts"] < as_of] if "opened_ts" in opened else opened.iloc[:0].assign(opened_ts=pd.NaT)
    open_hour = timed["opened_ts"].dt.hour.rename("open_hour")
    shop_hours = (open_hour, opened["sent_ts"].dt.hour, past["sent_ts"].dt.hour)  # the best evidence there is
    shop_hour = next((int(h.mode().min()) for h in shop_hours if len(h)), DEFAULT_SEND_HOUR)
    counts = timed.groupby([timed["customer_id"].astype(str), open_hour]).size().rename("n").reset_index()
    best = counts.sort_values(["customer_id", "n", "open_hour"], ascending=[True, False, True],
                              kind="stable").drop_duplicates("customer_id")  # the most common hour, ties: the earliest
    best["timed_opens"] = best["customer_id"].map(counts.groupby("customer_id")["n"].sum())
    hours = best.loc[best["timed_opens"] >= MIN_TIMED_OPENS, ["customer_id", "open_hour", "timed_opens"]]
    hours = hours.astype({"open_hour": np.int64, "timed_opens": np.int64}).reset_index(drop=True)
    age = (as_of - past["sent_ts"]).dt.total_seconds() / 86_400.0
    recent = pd.DataFrame({"customer_id": past["customer_id"].astype(str).to_numpy(), "age_days": age.to_numpy()})
    recent = recent.sort_values(["customer_id", "age_days"], kind="stable").groupby("customer_id").head(RECENT_SENDS)
    return hours, recent.reset_index(drop=True), shop_hour
