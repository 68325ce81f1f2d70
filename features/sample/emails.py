"""The email campaigns: who gets each mail, and who opens it, when.

Opens carry two planted signals beyond each customer's ``open_rate`` (docs/sample.md): recent
buyers open more (engagement) and customers mailed often open less (fatigue), so an open model
has something to learn besides the customer's own open rate; and each customer opens at their
own hour of the day, so a send hour can be learned from past opens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.sample.customers import Customers
from features.sample.draws import id_width, make_ids, take_values, utc_series
from features.sample.orders import Orders
from features.sample.process import (
    CAMPAIGN_AUDIENCE,
    CAMPAIGN_GAP_DAYS,
    CLICK_GIVEN_OPEN,
    DAY_US,
    ENGAGED_LIFT,
    ENGAGEMENT_DAYS,
    FATIGUE_DAYS,
    FATIGUE_PER_MAIL,
    LAPSED_LIFT,
    OPEN_DELAY_DAYS_P,
    SEND_HOUR,
    SEND_SPREAD_S,
    US,
)

HOUR_US = 3600 * US
MAX_OPEN_P = 0.95


def _keys(customer: np.ndarray, times: np.ndarray, universe: np.ndarray) -> np.ndarray:
    """One sortable int64 per (customer, time): the customer, then the time's place among
    ``universe`` (sorted unique times), so that keys never overflow however long the log."""
    return customer.astype(np.int64) * (len(universe) + 1) + np.searchsorted(universe, times)


def _previous(keys: np.ndarray, times: np.ndarray, query_keys: np.ndarray, query_times: np.ndarray) -> np.ndarray:
    """Per query, the latest ``times`` of the same key strictly before the query time (-1 if none).
    ``keys`` and ``times`` sorted by (key, time)."""
    universe = np.unique(np.concatenate([times, query_times]))
    flat = _keys(keys, times, universe)
    at = np.searchsorted(flat, _keys(query_keys, query_times, universe), side="left") - 1
    ok = (at >= 0) & (keys[np.maximum(at, 0)] == query_keys)
    return np.where(ok, times[np.maximum(at, 0)], -1)


def engagement(orders: Orders, customer: np.ndarray, sent_us: np.ndarray) -> np.ndarray:
    """The engagement factor of each mail: how recently its customer ordered before it was sent."""
    order = np.lexsort((orders.ts_us, orders.customer))
    last = _previous(orders.customer[order], orders.ts_us[order], customer, sent_us)
    days = (sent_us - last) / DAY_US
    return np.where(last >= 0, LAPSED_LIFT + (ENGAGED_LIFT - LAPSED_LIFT) * np.exp(-days / ENGAGEMENT_DAYS),
                    LAPSED_LIFT)


def mails_before(customer: np.ndarray, sent_us: np.ndarray, days: float) -> np.ndarray:
    """Per mail, how many mails its customer got in the ``days`` before it."""
    order = np.lexsort((sent_us, customer))
    who, when = customer[order], sent_us[order]
    since_us = when - int(days * DAY_US)
    universe = np.unique(np.concatenate([when, since_us]))
    since = np.searchsorted(_keys(who, when, universe), _keys(who, since_us, universe))
    out = np.empty(len(customer), dtype=np.int64)
    out[order] = np.arange(len(order)) - since
    return out


def open_times(rng: np.random.Generator, hour: np.ndarray, sent_us: np.ndarray) -> np.ndarray:
    """The first time at the customer's hour after the send (at least ten minutes after it), plus
    0-2 whole days, plus a minute-level spread within that hour."""
    day_start = sent_us // DAY_US * DAY_US
    at = day_start + hour * HOUR_US + rng.integers(0, 3600, len(sent_us)) * US
    at = np.where(at < sent_us + 600 * US, at + DAY_US, at)
    return at + rng.choice(len(OPEN_DELAY_DAYS_P), size=len(sent_us), p=OPEN_DELAY_DAYS_P) * DAY_US


@dataclass(frozen=True)
class Campaigns:
    """The shop's campaign calendar: when each campaign is sent and the share of opted-in
    customers it goes to. One calendar for the whole shop, whichever block of customers a
    mail goes to (features.sample.shop)."""

    send_us: np.ndarray
    audience: np.ndarray


def plan_campaigns(rng: np.random.Generator, start_us: int, end_us: int) -> Campaigns:
    """Campaigns every 7-14 days, each to a random 30-70% of the opted-in customers."""
    days = (end_us - start_us) // DAY_US
    lo, hi = CAMPAIGN_GAP_DAYS
    day = rng.integers(0, lo) + np.concatenate(([0], np.cumsum(rng.integers(lo, hi + 1, days // lo + 1))))
    send_us = start_us + day[day < days] * DAY_US + SEND_HOUR * HOUR_US
    return Campaigns(send_us, rng.uniform(*CAMPAIGN_AUDIENCE, len(send_us)))


def email_frame(rng: np.random.Generator, campaigns: Campaigns, customers: Customers, orders: Orders,
                ids: np.ndarray, end_us: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each campaign to its share of the opted-in customers who had signed up by then; opened
    with the customer's open rate times engagement and fatigue, at the customer's hour (an open
    that would fall after the data ends is not seen: not opened), clicked only when opened.
    Also returns the planted truth per mail: its engagement, fatigue and open chance."""
    send_us, audience = campaigns.send_us, campaigns.audience
    eligible = np.flatnonzero(customers.opt_in)
    chosen = ((rng.random((len(send_us), len(eligible))) < audience[:, None])
              & (customers.created_us[eligible][None, :] < send_us[:, None]))
    campaign, position = np.nonzero(chosen)
    customer = eligible[position]
    sent = np.minimum(send_us[campaign] + rng.integers(0, SEND_SPREAD_S, len(campaign)) * US, end_us - US)
    lift = engagement(orders, customer, sent)
    fatigue = FATIGUE_PER_MAIL ** mails_before(customer, sent, FATIGUE_DAYS)
    chance = np.minimum(customers.open_rate[customer] * lift * fatigue, MAX_OPEN_P)
    opened = rng.random(len(customer)) < chance
    clicked = opened & (rng.random(len(customer)) < CLICK_GIVEN_OPEN)
    opened_us = open_times(rng, customers.open_hour[customer], sent)
    seen = opened & (opened_us < end_us)
    customer_ids = take_values(ids, customer)
    campaign_ids = take_values(make_ids("m", np.arange(1, len(send_us) + 1), id_width(len(send_us) + 1, 3)), campaign)
    frame = pd.DataFrame({
        "customer_id": customer_ids,
        "campaign_id": campaign_ids,
        "sent_ts": utc_series(sent),
        "opened": seen,
        "clicked": clicked & seen,
        "opened_ts": utc_series(opened_us).where(seen),
    })
    truth = pd.DataFrame({"customer_id": customer_ids, "campaign_id": campaign_ids, "engagement": lift,
                          "fatigue": fatigue, "open_chance": chance})
    return frame, truth
