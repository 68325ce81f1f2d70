"""Customer features as of a cut-off, and the labels that follow it, for the propensity models.

Every feature function takes the *whole* shop and a cut-off and reads only rows strictly
before the cut-off (it starts from ``shop.before(cutoff)``); every label function reads only
rows inside ``[cutoff, cutoff + horizon)``. :func:`check_time_cut` proves both on real data by
recomputing with the future (or the past) removed, so a feature that peeks past the cut-off
fails the training run instead of flattering its metrics.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from features.ids import members, positions
from features.loading import ShopData
from features.profiles import email_open_rates
from features import sessions as sess

CAP_DAYS = 365.0
"""Recency-like features of customers with no such event take this value (and a flag says so),
so linear models see a finite, monotone "very long ago" rather than a missing value."""
RECENT_WINDOWS = (7, 30)
LAST_MAILS = 3
"""How many of the customer's latest mails the "opens of the last mails" feature reads."""
OPEN_WINDOW_DAYS = 3
"""A mail counts as opened when the open comes within this many days of the send; the mails of the
data's last days are too recent to tell (training.propensity leaves them out of every window)."""
ORDER_WINDOWS = (30, 90)
AGE_BLOCK = 1 << 20
"""Events whose age (days before a cut-off) is computed at a time: pandas' day arithmetic makes
a few temporaries the size of its input."""


class LeakageError(ValueError):
    """A feature or label function used data from the wrong side of its cut-off."""


def _days(cutoff: pd.Timestamp, ts: pd.Series) -> pd.Series:
    return (cutoff - ts).dt.total_seconds() / 86_400.0


def _population(past: ShopData, cutoff: pd.Timestamp, seen: SeenEvents | None) -> pd.Index:
    """Customers the shop knew before ``cutoff``: any order, identified event or email, or a sign-up.

    Customers who first appear inside a label window are not scorable at the cut-off (the
    service answers them from the "no history" row), so they are left out of the rows.
    """
    columns = [past["orders"]["customer_id"]]
    if seen is not None:
        columns.append(pd.Series(seen.ids))
    if past.has("email_events"):
        columns.append(past["email_events"]["customer_id"])
    if past.has("customers"):
        customers = past["customers"]
        signed_up = customers["created_at"].isna() | (customers["created_at"] < cutoff) \
            if "created_at" in customers else pd.Series(True, index=customers.index)
        columns.append(customers.loc[signed_up, "customer_id"])
    ids = pd.concat([c.astype(str) for c in columns], ignore_index=True).unique()
    return pd.Index(np.sort(ids.astype(object)), name="customer_id")


def customer_features(shop: ShopData, cutoff: pd.Timestamp, log: sess.SessionLog | None = None) -> pd.DataFrame:
    """One row per customer the shop knew before ``cutoff`` (any order, identified event or email,
    or a sign-up), every column numeric and finite.

    Orders: RFM, order rate, spend trend, category breadth. Events (when present): views,
    cart adds, sessions in recent windows, abandoned carts, days since last visit. Email (when
    present): sends, the shrunk open rate of :func:`features.profiles.email_open_rates`, days
    since the last open and send, sends in the last 7 and 30 days (fatigue), opens of the last
    three mails and the recent-vs-overall open-rate trend.

    ``log``: the shop's events as a session log (:func:`features.sessions.ordered` of
    ``shop["events"]`` and ``shop["items"]``), for a caller that reads many cut-offs: the event
    features group its integer codes, read before ``cutoff`` only. Without it, one is made of
    the events before the cut-off.
    """
    past = shop.before(cutoff)
    seen = _seen_events(past, cutoff, log)
    population = _population(past, cutoff, seen)
    coded = _coded(past, population)
    frame = pd.DataFrame(index=pd.RangeIndex(len(population)))
    frame = frame.join(_order_features(coded, cutoff))
    frame = frame.join(_seen_days(coded, cutoff, seen, population).rename("seen_days"))
    if seen is not None:
        frame = frame.join(_by_position(_event_features(seen), population))
    if coded.has("email_events"):
        frame = frame.join(_email_features(coded["email_events"], cutoff))
    frame = _rates(_fill(frame), past, cutoff)
    frame.index = population
    return frame


_CODED_TABLES = ("orders", "email_events", "customers")
"""The tables whose customer ids :func:`_coded` replaces (a customer who signs up after the cut-off
is at -1 there, and no feature reads that row)."""


def _coded(past: ShopData, population: pd.Index) -> ShopData:
    """``past`` with each customer id in its orders, email log and customers table replaced by its
    position in ``population`` (sorted, so positions sort as the ids do): the group-bys of every
    feature then hash integers, where pandas factorized the Arrow strings again for each of them,
    at every cut-off. Same groups, same rows in the same order, so the same sums to the bit. Only
    for this module's group-bys: its ids are no longer the contract's."""
    tables = {name: frame.assign(customer_id=positions(population, frame["customer_id"]))
              if name in _CODED_TABLES else frame for name, frame in past.tables.items()}
    return ShopData(tables=tables, report=past.report, quarantine=past.quarantine)


def _by_position(features: pd.DataFrame | pd.Series, population: pd.Index) -> pd.DataFrame | pd.Series:
    """Features indexed by customer id (those made from the session log), re-indexed by the id's
    position in ``population``, so that they join the features grouped by position."""
    return features.set_axis(positions(population, features.index.to_numpy()))


def _rates(frame: pd.DataFrame, past: ShopData, cutoff: pd.Timestamp) -> pd.DataFrame:
    """Orders (and sessions) per 30 days of *exposure*: the time the shop could have seen the customer.

    Exposure is the shorter of "since sign-up / first seen" and "since the data begins", so a
    customer who joined last week is not read as a slow buyer.
    """
    starts = [past["orders"]["ts"].min(), past["events"]["ts"].min() if past.has("events") else pd.NaT]
    starts = [t for t in starts if pd.notna(t)]
    history = (cutoff - min(starts)).total_seconds() / 86_400.0 if starts else 0.0
    exposure = frame["seen_days"].clip(upper=history, lower=14.0)
    frame["exposure_days"] = exposure
    frame["order_rate_exposed"] = frame["frequency"] / exposure * 30.0
    if "sessions_all" in frame:
        frame["session_rate_exposed"] = frame["sessions_all"] / exposure * 30.0
    return frame


def _fill(frame: pd.DataFrame) -> pd.DataFrame:
    capped = [c for c in frame.columns if c.startswith("days_since") or c in ("recency_days", "tenure_days",
                                                                             "seen_days")]
    frame[capped] = frame[capped].fillna(CAP_DAYS).clip(upper=CAP_DAYS)
    frame = frame.fillna(0.0).astype(np.float64)
    frame["never_ordered"] = (frame["frequency"] == 0).astype(np.float64)
    return frame


def _order_features(past: ShopData, cutoff: pd.Timestamp) -> pd.DataFrame:
    lines = past["orders"].assign(spend=lambda o: o["quantity"] * o["unit_price"])
    orders = lines.groupby("order_id", sort=False).agg(customer_id=("customer_id", "first"), ts=("ts", "first"),
                                                       spend=("spend", "sum"))
    orders["age"] = _days(cutoff, orders["ts"])
    grouped = orders.groupby("customer_id", sort=True)
    out = pd.DataFrame({
        "recency_days": grouped["age"].min(),
        "tenure_days": grouped["age"].max(),
        "frequency": grouped.size().astype(np.float64),
        "monetary": grouped["spend"].sum(),
    })
    for window in ORDER_WINDOWS:
        recent = orders[orders["age"] < window].groupby("customer_id")
        out[f"orders_{window}d"] = recent.size()
        out[f"spend_{window}d"] = recent["spend"].sum()
    half = ORDER_WINDOWS[-1] / 2
    newer = orders[orders["age"] < half].groupby("customer_id")["spend"].sum()
    older = orders[(orders["age"] >= half) & (orders["age"] < 2 * half)].groupby("customer_id")["spend"].sum()
    both = pd.concat([newer, older], axis=1).fillna(0.0)
    out["spend_trend"] = (both.iloc[:, 0] - both.iloc[:, 1]) / (both.sum(axis=1) + 1.0)
    out["order_rate_30d"] = out["frequency"] / out["tenure_days"].clip(lower=30.0) * 30.0
    out["mean_order_value"] = out["monetary"] / out["frequency"]
    categories = lines.merge(past["items"][["item_id", "category"]], on="item_id")
    out["categories_bought"] = categories.groupby("customer_id")["category"].nunique()
    return out


def _seen_days(past: ShopData, cutoff: pd.Timestamp, seen: SeenEvents | None, population: pd.Index) -> pd.Series:
    """Days since the customer was first seen: sign-up when known, else the first activity
    (``past`` coded by :func:`_coded`, the result by position in ``population``)."""
    # each table's first time per customer, then the earliest
    parts = [past["orders"].groupby("customer_id")["ts"].min()]
    if seen is not None:
        parts.append(_by_position(seen.first_ts(), population))
    if past.has("customers") and "created_at" in past["customers"]:
        customers = past["customers"]
        signed_up = (customers["created_at"] < cutoff).to_numpy()
        parts.append(customers.loc[signed_up].groupby("customer_id")["created_at"].min())
    first = pd.concat(parts).rename("ts").groupby(level=0).min()
    return _days(cutoff, first)


class SeenEvents:
    """The identified events before a cut-off, read from a session log (events sorted by session,
    then time, as integer codes): grouping those codes costs a fraction of grouping the events'
    Arrow strings, which pandas factorizes again for every group-by at every cut-off. Anonymous
    events and those at or after the cut-off are left out here, once; what is kept takes about
    21 bytes an event (codes, and the age a feature compares with its window)."""

    def __init__(self, log: sess.SessionLog, cutoff: pd.Timestamp) -> None:
        self.log = log
        keep = log.customer >= 0
        keep &= np.asarray(log.ts < cutoff)
        at = np.flatnonzero(keep)
        del keep
        self.customer, self.session, self.kind, self.item = log.customer[at], log.session[at], log.kind[at], log.item[at]
        self.age = np.empty(len(at))
        for start in range(0, len(at), AGE_BLOCK):  # pandas' own day arithmetic, a block of events at a time
            part = at[start:start + AGE_BLOCK]
            self.age[start:start + len(part)] = _days(cutoff, pd.Series(log.ts.take(part))).to_numpy()
        self.first = np.full(len(log.customer_ids), np.iinfo(np.int64).max)
        """Per customer code, their first event's time in the log's timestamp units."""
        np.minimum.at(self.first, self.customer, log.ts.asi8[at])
        self.codes = np.flatnonzero(self.first < np.iinfo(np.int64).max)
        """The customers seen (codes into the log's ``customer_ids``), in code order."""
        self.ids = log.customer_ids[self.codes]

    def per_customer(self, values: np.ndarray) -> pd.Series:
        """Per customer seen, one value of an array over every customer code."""
        return pd.Series(values[self.codes], index=self.ids)

    def first_ts(self) -> pd.Series:
        """Per customer seen, the time of their first event (the log's timestamp type)."""
        stamps = self.log.ts
        utc = pd.Series(self.first[self.codes].view(f"M8[{stamps.unit}]"), index=self.ids).dt.tz_localize("UTC")
        return utc.dt.tz_convert(stamps.tz)  # None: back to naive UTC

    def counts(self, mask: np.ndarray) -> np.ndarray:
        """Per customer code, how many of its events ``mask`` holds."""
        return np.bincount(self.customer[mask], minlength=len(self.log.customer_ids)).astype(np.float64)

    def distinct(self, mask: np.ndarray, values: np.ndarray, runs: bool = False) -> np.ndarray:
        """Per customer code, how many distinct non-negative ``values`` its events under ``mask``
        hold (``runs``: as :func:`features.sessions.distinct`, for values that lie together in
        the log, such as sessions)."""
        keep = mask & (values >= 0)
        return sess.distinct(self.customer[keep], values[keep], len(self.log.customer_ids), runs)


def _seen_events(past: ShopData, cutoff: pd.Timestamp, log: sess.SessionLog | None) -> SeenEvents | None:
    """The identified events before ``cutoff`` from ``log``, or from a log of ``past``'s own events;
    None for a shop without events."""
    if not past.has("events"):
        return None
    return SeenEvents(log if log is not None else sess.ordered(past["events"], past["items"]), cutoff)


def _event_features(seen: SeenEvents) -> pd.DataFrame:
    """Browsing features per customer seen: every group-by over integer codes. A session's
    customer (for its abandoned cart) is its first identified event's in time order, as in the
    log's session table."""
    n = len(seen.log.customer_ids)
    last = np.full(n, np.inf)
    np.minimum.at(last, seen.customer, seen.age)
    every = np.ones(len(seen.customer), dtype=bool)
    out = pd.DataFrame({"days_since_event": seen.per_customer(last),
                        "sessions_all": seen.per_customer(seen.distinct(every, seen.session, runs=True))})
    for window in RECENT_WINDOWS:
        recent = seen.age < window
        out[f"views_{window}d"] = seen.per_customer(seen.counts(recent & (seen.kind == sess.VIEW)))
        out[f"carts_{window}d"] = seen.per_customer(seen.counts(recent & (seen.kind == sess.CART)))
        out[f"sessions_{window}d"] = seen.per_customer(seen.distinct(recent, seen.session, runs=True))
    month = np.flatnonzero(seen.age < RECENT_WINDOWS[-1])  # the longest window's events
    starts = sess.run_starts(seen.session[month])
    abandoned = np.zeros(n)
    if len(starts):
        kind = seen.kind[month]
        carted = np.logical_or.reduceat(kind == sess.CART, starts)
        bought = np.logical_or.reduceat(kind == sess.PURCHASE, starts)
        np.add.at(abandoned, seen.customer[month][starts][carted & ~bought], 1.0)
    out[f"abandoned_carts_{RECENT_WINDOWS[-1]}d"] = seen.per_customer(abandoned)
    views = month[seen.kind[month] == sess.VIEW]
    category = np.nan_to_num(seen.log.category[seen.item[views]], nan=-1.0).astype(np.int64)
    listed = category >= 0  # an item the catalogue lists, in a category
    out[f"categories_viewed_{RECENT_WINDOWS[-1]}d"] = seen.per_customer(
        sess.distinct(seen.customer[views][listed], category[listed], n))
    return out


def _email_features(emails: pd.DataFrame, cutoff: pd.Timestamp) -> pd.DataFrame:
    if "opened_ts" in emails:  # an open (and so a click) the shop had not seen by the cut-off is not known yet
        unseen = emails["opened_ts"] >= cutoff
        emails = emails.assign(opened=emails["opened"] & ~unseen,
                               **({"clicked": emails["clicked"] & ~unseen} if "clicked" in emails else {}))
    age = _days(cutoff, emails["sent_ts"])
    rates = email_open_rates(emails).set_index("customer_id")
    out = pd.DataFrame({"sends": rates["sends"].astype(np.float64), "open_rate": rates["open_rate"],
                        "log_opens": np.log1p(rates["opens"].astype(np.float64)),
                        # mailed again and again and never opened: the strongest "no" a log holds
                        "never_opened_sends": np.where(rates["opens"] == 0, np.log1p(rates["sends"]), 0.0)})
    out["days_since_send"] = age.groupby(emails["customer_id"]).min()
    out["days_since_open"] = age[emails["opened"]].groupby(emails.loc[emails["opened"], "customer_id"]).min()
    for window in RECENT_WINDOWS:  # fatigue: how often the customer was mailed lately
        out[f"sends_{window}d"] = (age < window).groupby(emails["customer_id"]).sum().astype(np.float64)
    latest = emails.assign(age=age).sort_values(["customer_id", "age"], kind="stable") \
        .groupby("customer_id", sort=True).head(LAST_MAILS)
    out[f"opens_last_{LAST_MAILS}"] = latest.groupby("customer_id")["opened"].sum().astype(np.float64)
    recent = emails[age < 90]
    if len(recent):
        recent_rate = email_open_rates(recent).set_index("customer_id")["open_rate"]
        out["open_rate_trend"] = (recent_rate - out["open_rate"]).reindex(out.index)
    if "clicked" in emails:
        out["clicks"] = emails.groupby("customer_id")["clicked"].sum().astype(np.float64)
    return out


def purchase_labels(shop: ShopData, cutoff: pd.Timestamp, horizon_days: float, ids: pd.Index) -> pd.Series:
    """1 when the customer places an order in ``[cutoff, cutoff + horizon)``, for each of ``ids``."""
    orders = shop["orders"]
    end = cutoff + pd.Timedelta(days=horizon_days)
    buyers = orders.loc[(orders["ts"] >= cutoff) & (orders["ts"] < end), "customer_id"].unique()
    return pd.Series(ids.isin(buyers).astype(np.int64), index=ids, name="label")


def email_labels(shop: ShopData, cutoff: pd.Timestamp, horizon_days: float, ids: pd.Index) -> pd.Series:
    """One row per email sent in ``[cutoff, cutoff + horizon)`` to one of ``ids``: 1 when it was
    opened (within :data:`OPEN_WINDOW_DAYS` of the send, where the shop records when).

    The index repeats the customer id for each send, so the features (as of the cut-off) of
    a customer with two mails count twice, as the batch job would score both.
    """
    emails = shop["email_events"]
    end = cutoff + pd.Timedelta(days=horizon_days)
    window = emails[(emails["sent_ts"] >= cutoff) & (emails["sent_ts"] < end) & members(emails["customer_id"], ids)]
    opened = window["opened"]
    if "opened_ts" in window:
        opened = opened & ~(window["opened_ts"] - window["sent_ts"] >= pd.Timedelta(days=OPEN_WINDOW_DAYS))
    return pd.Series(opened.astype(np.int64).to_numpy(),
                     index=pd.Index(window["customer_id"].astype(str).to_numpy(dtype=object), name="customer_id"),
                     name="label")


FeatureFn = Callable[[ShopData, pd.Timestamp], pd.DataFrame]
LabelFn = Callable[[ShopData, pd.Timestamp, float, pd.Index], pd.Series]


def check_time_cut(features: FeatureFn, labels: LabelFn, shop: ShopData, cutoff: pd.Timestamp,
                   horizon_days: float) -> None:
    """Raise :class:`LeakageError` unless features see only the past and labels only their window.

    Features computed on the whole shop must equal those computed on ``shop.before(cutoff)``;
    labels computed on the whole shop must equal those computed with everything before the
    cut-off and after the window removed. Both comparisons are exact.
    """
    full = features(shop, cutoff)
    past_only = features(shop.before(cutoff), cutoff)
    if not full.index.equals(past_only.index) or not full.equals(past_only):
        diff = [c for c in full.columns if c not in past_only or not full[c].equals(past_only[c])]
        raise LeakageError(f"features as of {cutoff} change when data after the cut-off is removed "
                           f"(columns {diff[:5] or 'rows'}): a feature reads the future")
    end = cutoff + pd.Timedelta(days=horizon_days)
    window_only = shop.before(end).since(cutoff)
    ids = full.index
    if not labels(shop, cutoff, horizon_days, ids).equals(labels(window_only, cutoff, horizon_days, ids)):
        raise LeakageError(f"labels for [{cutoff}, {end}) change when data outside that window is removed")
