"""What the recommender answers: plain frozen records, built once per request and turned into the
HTTP schemas (:mod:`serving.schemas`) by the service. Ids are external here; the recommender
works on internal indices until it builds these."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

BandSource = Literal["customer", "session", "segment", "catalogue"]


@dataclass(frozen=True)
class Pick:
    item_id: str
    score: float
    reason: str


@dataclass(frozen=True)
class CrossSell:
    items: list[Pick]
    unknown_items: list[str]
    customer_known: bool
    session_items: int = 0


@dataclass(frozen=True)
class LiveSession:
    """The items a visitor touched in the live session, most recent first, weighted as
    training weighs the same events (a cart add says more than a view)."""

    item_idx: np.ndarray
    weights: np.ndarray
    unknown_items: int = 0

    def __len__(self) -> int:
        return len(self.item_idx)


NO_SESSION = LiveSession(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32))


LIKELY_OPENER, OPTED_OUT, UNENGAGED, MAILED_RECENTLY, BELOW_THRESHOLD, MOSTLY_FALLBACKS = (
    "likely_opener", "opted_out", "unengaged", "mailed_recently", "below_threshold", "mostly_fallbacks")
SEND_REASONS = (OPTED_OUT, UNENGAGED, MAILED_RECENTLY, BELOW_THRESHOLD, MOSTLY_FALLBACKS, LIKELY_OPENER)
"""Why a customer is mailed (``likely_opener``) or not, in the order the rules are applied:
no consent, the sunset rule (many mails, never an open), the frequency cap, an open propensity
below the threshold, picks mostly fallbacks."""


@dataclass(frozen=True)
class EmailPick:
    customer_id: str
    canonical_id: str
    customer_known: bool
    send: bool
    send_reason: str
    send_hour: int
    trigger: str | None
    trigger_detail: str | None
    open_propensity: float
    items: list[Pick]


@dataclass(frozen=True)
class EmailPicksBlock:
    """Email picks for a block of customers as arrays: what the endpoint and the batch job share.

    Row ``r`` is ``customer_ids[r]``; its picks are left-packed in ``items[r]`` (internal item
    indices, best first, ``-1`` after the last pick), with ``scores`` and ``reasons`` aligned.
    """

    customer_ids: np.ndarray
    """External ids as given (object array, one per row)."""
    canonical_ids: np.ndarray
    """The id each was scored as: the canonical id for a merged duplicate (alias), else as given."""
    customer_known: np.ndarray
    """Known with history: scored by the model (otherwise fallbacks only)."""
    in_bundle: np.ndarray
    """The id is in the bundle at all (a known id may still be cold: no history)."""
    send: np.ndarray
    open_propensity: np.ndarray
    items: np.ndarray
    scores: np.ndarray
    reasons: np.ndarray
    n_picks: np.ndarray
    n_personal: np.ndarray
    """Picks per row from the personal scores (``similar_customers`` or ``buy_again:<date>``)."""
    send_reason: np.ndarray
    """Why ``send`` is what it is (:data:`SEND_REASONS`)."""
    send_hour: np.ndarray
    """Hour of the day (UTC) to mail at: the customer's own open hour, else the shop's (-1: no email data)."""
    trigger: np.ndarray
    """The lifecycle trigger that makes a mail worth sending now (features.triggers; None: none)."""
    trigger_detail: np.ndarray
    """Its detail: the cart or wish-list day, the due date, the years, the campaign not opened."""


@dataclass(frozen=True)
class Propensity:
    """Purchase probabilities: the customer's within the model's horizon, the live session's."""

    customer: float | None
    customer_known: bool
    session: float | None
    session_events_used: int


@dataclass(frozen=True)
class PriceBand:
    lo: float
    hi: float
    source: BandSource
    widened: bool = False


@dataclass(frozen=True)
class Offers:
    customer_known: bool
    band: PriceBand
    items: list[Pick]
    unknown_category: bool = False
    session_items: int = 0
