"""Rows per propensity target: the feature rows, labels and trivial baselines' scores that each
target is fitted, calibrated and tested on (:mod:`training.propensity` stacks them into
periods), and the snapshots evaluation keeps so that the bundle's fit builds none again."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features import sessions as sess
from features.customer_features import customer_features, email_labels, purchase_labels
from features.loading import ShopData


class NotTrainable(ValueError):
    """The data cannot support a target (too little history, one class only): skip it, say why."""


class EmptyWindow(NotTrainable):
    """One window holds no rows of a target (no mail sent in it): the target's other windows may
    still have some (:func:`training.propensity.periods` pools those)."""


@dataclass
class Rows:
    """Feature rows, labels and each trivial baseline's score (:data:`training.propensity.BASELINES`;
    higher = more likely)."""

    X: pd.DataFrame
    y: np.ndarray
    baselines: dict[str, np.ndarray]

    @staticmethod
    def concat(parts: list[Rows]) -> Rows:
        return Rows(pd.concat([p.X for p in parts]), np.concatenate([p.y for p in parts]),
                    {name: np.concatenate([p.baselines[name] for p in parts]) for name in parts[0].baselines})


@dataclass
class Snapshots:
    """What one shop's propensity evaluation built that the bundle's fit reuses (never share one
    between shops): customer and email ``rows`` by (target, cut-off, horizon days), as the fit's
    cut-offs are all among evaluation's, and the events sorted into sessions once (as codes,
    :class:`features.sessions.SessionLog`, held until the run drops this after the bundle's fit)
    for every session read and every customer-feature snapshot's events."""

    rows: dict[tuple[str, pd.Timestamp, float], Rows] = field(default_factory=dict)
    _session_log: sess.SessionLog | None = None

    def session_log(self, shop: ShopData) -> sess.SessionLog:
        if self._session_log is None:
            self._session_log = sess.ordered(shop["events"], shop["items"])
        return self._session_log

    def event_log(self, shop: ShopData) -> sess.SessionLog | None:
        """The session log for the customer features' events; None for a shop without events."""
        return self.session_log(shop) if shop.has("events") else None


def customer_rows(shop: ShopData, cutoff: pd.Timestamp, horizon: float, log: sess.SessionLog | None) -> Rows:
    X = customer_features(shop, cutoff, log=log)
    y = purchase_labels(shop, cutoff, horizon, X.index).to_numpy()
    return Rows(X, y, {"recency": -X["recency_days"].to_numpy()})


def email_rows(shop: ShopData, cutoff: pd.Timestamp, horizon: float, log: sess.SessionLog | None) -> Rows:
    """One row per mail sent in ``[cutoff, cutoff + horizon)``, with its customer's features as of
    the start of the (UTC) day it was sent.

    The email builder decides just before a campaign whom to mail, so a mail's features are as
    fresh as that: how often the customer was mailed lately (fatigue) and how recently they
    bought change within a window. One feature snapshot per day that holds a send. ``log``: the
    shop's events as a session log, read at every snapshot (:func:`customer_features`).
    """
    emails = shop["email_events"]
    end = cutoff + pd.Timedelta(days=horizon)
    sent = emails.loc[(emails["sent_ts"] >= cutoff) & (emails["sent_ts"] < end), "sent_ts"]
    starts = sorted({max(cutoff, day) for day in sent.dt.floor("D")})
    if not starts:
        raise EmptyWindow(f"no mails sent in [{cutoff}, {end})")
    parts = []
    for start, stop in zip(starts, [*starts[1:], end], strict=True):
        everyone = customer_features(shop, start, log)
        labels = email_labels(shop, start, (stop - start).total_seconds() / 86_400.0, everyone.index)
        X = everyone.loc[labels.index]
        parts.append(Rows(X, labels.to_numpy(), {"open_rate": X["open_rate"].to_numpy(),
                                                 "recency": -X["days_since_open"].to_numpy()}))
    return Rows.concat(parts)


def session_rows(log: sess.SessionLog, past: pd.DataFrame, lo: pd.Timestamp | None, hi: pd.Timestamp | None,
                 rng: np.random.Generator) -> Rows:
    """Sessions starting in ``[lo, hi)``, each cut at a random prefix of its pre-purchase events."""
    table = log.table
    chosen = table[((table["start"] >= lo) if lo is not None else True) & ((table["start"] < hi) if hi is not None
                                                                            else True)]
    prefix = sess.random_prefixes(chosen, rng)
    X = log.features(prefix.index, past, prefix)
    y = chosen.loc[X.index, "converted"].to_numpy()
    return Rows(X, y, {"base_rate": np.zeros(len(X))})
