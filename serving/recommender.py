"""The serving logic as a plain object: scoring, business rules, reasons and fallbacks.

Built once from a :class:`~training.bundle.Bundle`; every request then merges a few short
candidate lists made ahead (:mod:`serving.candidates`: the cart's partners, the customer's personal
row, the popular tiers), so the HTTP layer (``serving/service.py``) stays thin and everything here
is testable without a server. Nothing a client sends can raise here:
unknown ids become fallbacks that the answer reports, never errors.

Reasons are short machine-readable strings: ``bought_together:<item_id>``,
``buy_again:<due date>``, ``similar_customers``, ``popular_in_segment:<segment>``,
``popular_in:<category>``, ``popular``.

Every rule (stock, never-recommend, durables and learned re-buying, category windows, the
diversity cap) comes from the bundle's :class:`training.ranking.Rules`; every personal
list comes from :meth:`training.bundle.Bundle.lists`, the very path offline evaluation scores,
so the metrics measure these answers, and cross-sells and offers rank their tiers through
:func:`training.tiers.rank_tiers` with the same top-k and cap.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from features.dataset import InteractionConfig
from features.triggers import FOLLOW_UP
from serving.answers import (
    BELOW_THRESHOLD,
    LIKELY_OPENER,
    MAILED_RECENTLY,
    MOSTLY_FALLBACKS,
    NO_SESSION,
    OPTED_OUT,
    UNENGAGED,
    CrossSell,
    EmailPick,
    EmailPicksBlock,
    LiveSession,
    Offers,
    Pick,
    PriceBand,
    Propensity,
)
from serving.candidates import (CartPartners, Exclusions, Sparse, TierLists, blend, personal_rows, scale_to_best,
                                top_partners)
from serving.config import ServingConfig
from serving.live_session import SessionReader, until_purchase, utc
from serving.profiles import CustomerProfiles
from training.bundle import PRIMARY, SIMILAR, Bundle
from training.propensity_set import PropensityUnavailable
from training.tiers import AnyTier, Tier, rank_tiers

logger = logging.getLogger("shoprec.serving")

Reason = str | Callable[[int], str] | None
"""The reason of a pick from a tier: fixed, per item, or None for ``popular_in:<category>``."""


class ShopRecommender:
    """Answers cross-sell, email picks and offers from one bundle; unchanged once warmed.

    The service warms a new instance (:meth:`warm`) before it swaps it in whole on reload, so
    nothing here changes while requests read it and concurrent requests need no locks.
    """

    def __init__(self, bundle: Bundle, model_version: str, config: ServingConfig | None = None) -> None:
        self.bundle = bundle
        self.model_version = model_version
        self.config = config or ServingConfig()
        cat = bundle.catalogue
        self.n_items = len(cat)
        self.item_ids = np.array([str(i) for i in bundle.items.external_ids], dtype=object)
        self.rules = bundle.rules
        self.in_stock = ~self.rules.blocked  # in stock and recommendable
        self.price = cat["price"].to_numpy(dtype=np.float64)
        self.item_category, self.categories = bundle.item_categories
        self._category_of = {c: i for i, c in enumerate(self.categories)}
        self.fallbacks = bundle.fallbacks
        self.popularity = self.fallbacks.scores[self.fallbacks.shop]
        self.has_history = bundle.has_history
        self.profiles = CustomerProfiles.from_bundle(bundle, self.price, self.in_stock, self.config.middle_band)
        interactions = InteractionConfig(**bundle.metadata.get("config", {}).get("interactions", {}))
        self.session_reader = SessionReader(bundle.items, {**interactions.event_weights,
                                                           "purchase": interactions.purchase_weight},
                                            self.config.session_items)
        self.personal_rows = personal_rows(bundle.personal, self.n_items)
        self.excluded_rows = Exclusions(self.rules)
        self.tier_lists = TierLists.build(self.popularity, self.item_category, len(self.categories), self.fallbacks)

    @functools.cached_property
    def item_id_array(self) -> pa.StringArray:
        """The item ids as one Arrow array, so that output columns are built by ``take`` on item
        indices (the batch job's) instead of converting each block's Python strings again."""
        return pa.array(self.item_ids, pa.string())

    def warm(self) -> None:
        """Compute now what every request would otherwise compute again and again from this
        bundle alone: each stored customer's personal row and what the rules keep from them
        (:class:`serving.candidates.CustomerRows`, each within its memory budget), and the
        propensity scores of a bundle saved before they were stored (any first look-up would
        score the whole base). The service warms a bundle before it serves it; a batch job that
        scores a few customers of a large base need not."""
        if self.bundle.propensity is not None:
            self.bundle.propensity.warm()
        known = np.flatnonzero(self.has_history)
        for name, rows in (("personal", self.personal_rows), ("excluded", self.excluded_rows)):
            if not rows.warm(known, len(self.has_history), self.bundle.block_rows):
                logger.warning("%s rows of %d customers would pass their memory budget "
                               "(serving/candidates.py CUSTOMER_ROWS_BYTES): made per request instead", name, len(known))
        _ = self.partners

    @functools.cached_property
    def partners(self) -> sp.csr_matrix:
        """Each item's best ``cross_sell_partners`` partners (:func:`serving.candidates.top_partners`);
        made on first use, as a bundle made for offline evaluation has no cross-sell model."""
        return top_partners(self.bundle.cooccurrence.item_item_, self.config.cross_sell_partners)

    # ---- shared pieces -----------------------------------------------------------------------
    def _customer_index(self, customer_ids: Sequence[str]) -> np.ndarray:
        """Internal indices; -1 for unknown ids and for known ids without any history (cold)."""
        idx = self.bundle.customer_index(np.asarray(customer_ids, dtype=object))
        idx[idx >= 0] = np.where(self.has_history[idx[idx >= 0]], idx[idx >= 0], -1)
        return idx

    def _free(self, idx: int) -> np.ndarray:
        """Per item: what the rules allow customer ``idx`` (-1: anyone) whatever the score, as
        :meth:`training.ranking.Rules.allowed` says, from the customer's excluded row."""
        free = self.in_stock.copy()
        if idx >= 0:
            free[self.excluded_rows.items_of(idx)] = False
        return free

    def _fallback_tier(self, idx: int) -> tuple[Tier, Reason]:
        """The customer's fallback list (training/ranking.py Fallbacks): their segment's popular
        items when they have a segment, else the shop's."""
        row = int(self.fallbacks.rows_for(np.array([idx]))[0])
        return self.tier_lists.by_fallback[row], self.fallbacks.reasons[row]

    def _ranked(self, tiers: list[tuple[AnyTier, Reason]], free: np.ndarray, k: int) -> list[Pick]:
        """Picks from score tiers in turn through the one ranking path
        (:func:`training.tiers.rank_tiers`: one diversity cap over the whole list), then the
        shop's popular items and, last, any item (zero scores included) that is ``free`` (per
        item: what the bundle's rules allow this customer, narrowed by the request), so a list
        is only ever short when fewer than k items are free."""
        tiers = [*tiers, (self.tier_lists.anything, "popular")]
        items, tier_of, scores = rank_tiers(self.rules, free, [tier for tier, _ in tiers], k)
        picks = []
        for i, t, score in zip(items.tolist(), tier_of.tolist(), scores.tolist(), strict=True):
            if i < 0:
                break
            reason = tiers[t][1]
            if reason is None:
                reason = f"popular_in:{self.categories[self.item_category[i]]}"
            picks.append(Pick(self.item_ids[i], score, reason if isinstance(reason, str) else reason(i)))
        return picks

    # ---- the live session ----------------------------------------------------------------------
    def live_session(self, events: Sequence[Mapping[str, Any]]) -> LiveSession:
        """The live session of these events (see :meth:`SessionReader.from_events`)."""
        return self.session_reader.from_events(events)

    def recently_viewed(self, items: Sequence[str]) -> LiveSession:
        """A logged-in customer's recent items (see :meth:`SessionReader.from_recent`)."""
        return self.session_reader.from_recent(items)

    def _session_scores(self, session: LiveSession) -> Sparse:
        """Scores for what the session touched, folded into the primary model where its family
        can (ALS, EASE), else from the item-item model; scaled into [0, 1]."""
        row = sp.csr_matrix((session.weights, (np.zeros(len(session), dtype=np.int64), session.item_idx)),
                            shape=(1, self.n_items))
        scores = self.bundle.models[PRIMARY].score_history(row)
        if scores is None:
            scores = self.bundle.cooccurrence.score_history(row)
        return Sparse.from_dense(scale_to_best(np.asarray(scores, dtype=np.float32)[0]))

    def _personal_scores(self, idx: int, session: LiveSession) -> tuple[Sparse, str] | None:
        """The customer's own personal row, blended with the session's (``session_weight``) when
        both exist; the session's alone for a visitor the model does not know; None for neither."""
        own = self.personal_rows.of(idx) if idx >= 0 else None
        live = self._session_scores(session) if len(session) else None
        if own is not None and live is not None:
            weight = self.config.session_weight
            return blend([(1 - weight, own), (weight, live)]), SIMILAR
        if own is not None:
            return own, SIMILAR
        return (live, "session_interest") if live is not None else None

    # ---- endpoints -----------------------------------------------------------------------------
    def cross_sell(self, cart: Sequence[str], customer_id: str | None, k: int,
                   session: LiveSession = NO_SESSION) -> CrossSell:
        """Items that go with the cart: co-occurrence, blended with the customer's CF when known.

        Items touched in the live ``session`` are anchors too (at ``session_anchor_weight``)
        and feed the personal part (:meth:`_personal_scores`), so an anonymous visitor
        still gets personal answers. Never an item in the cart or already touched in the
        session, out of stock, or a durable the rules exclude; unknown cart items are
        ignored and reported; short lists are filled with what is popular in the cart's
        and session's categories, then in the shop.
        """
        cart_idx_all = self.bundle.items.to_index(np.asarray(cart, dtype=object), unknown="mark")
        unknown_items = [c for c, i in zip(cart, cart_idx_all, strict=True) if i < 0]
        in_cart = set(cart_idx_all[cart_idx_all >= 0].tolist())
        cart_idx = np.array(sorted(in_cart), dtype=np.int64)
        session_idx = np.array(sorted(set(session.item_idx.tolist()) - in_cart), dtype=np.int64)
        anchors = np.concatenate([cart_idx, session_idx])
        anchor_weight = np.concatenate([np.ones(len(cart_idx), dtype=np.float32),
                                        np.full(len(session_idx), self.config.session_anchor_weight, np.float32)])
        idx = self._customer_index([customer_id]) if customer_id else np.array([-1])
        free = self._free(int(idx[0]))
        free[anchors] = False
        partners = CartPartners.of(self.partners, anchors, anchor_weight)
        personal = self._personal_scores(int(idx[0]), session)
        cf, personal_reason = personal if personal is not None else (Sparse.empty(), SIMILAR)
        co = partners.scores
        pulled = set(co.items[co.scores > 0].tolist())

        def why(item: int) -> str:
            """The anchor that pulls hardest, or the personal reason when no anchor pulls."""
            if item not in pulled:
                return personal_reason
            anchor = partners.strongest(item)
            kind = "bought_together" if anchor < len(cart_idx) else "goes_with_viewed"
            return f"{kind}:{self.item_ids[anchors[anchor]]}"

        blended = blend([(1.0, co), (self.config.cf_weight, cf)])
        tiers: list[tuple[AnyTier, Reason]] = [(Tier(blended.items, blended.scores), why)]
        if len(anchors):
            tiers.append((self.tier_lists.in_categories(self.item_category[anchors]), None))
        tiers.append(self._fallback_tier(int(idx[0])))
        return CrossSell(self._ranked(tiers, free, k), unknown_items, bool(idx[0] >= 0), len(session))

    def email_picks(self, customer_ids: Sequence[str], k: int) -> list[EmailPick]:
        """Per customer: the personal top k (consumables may return, recent durables not),
        the open propensity, and whether to send at all.

        ``send`` needs the customer's consent (``email_opt_in`` of the customers table; no
        threshold overrides it), a likely open (see :meth:`_open_propensities`) and picks that
        are mostly personal rather than fallbacks. The answer is :meth:`email_picks_block`'s,
        the very code path the batch job (``batch/job.py``) writes from.
        """
        block = self.email_picks_block(customer_ids, k)
        out = []
        for row, cid in enumerate(block.customer_ids):
            n = int(block.n_picks[row])
            picks = [Pick(self.item_ids[i], float(score), reason) for i, score, reason in
                     zip(block.items[row, :n].tolist(), block.scores[row, :n].tolist(),
                         block.reasons[row, :n].tolist(), strict=True)]
            out.append(EmailPick(cid, str(block.canonical_ids[row]), bool(block.customer_known[row]),
                                 bool(block.send[row]), str(block.send_reason[row]), int(block.send_hour[row]),
                                 block.trigger[row], block.trigger_detail[row],
                                 float(block.open_propensity[row]), picks))
        return out

    def email_picks_block(self, customer_ids: Sequence[str] | np.ndarray, k: int) -> EmailPicksBlock:
        """Email picks for many customers at once, vectorised, through the bundle's one ranking
        path (:meth:`training.bundle.Bundle.lists`): personal scores under every rule, then each
        customer's fallback list (their segment's popular items, else the shop's) for the rest,
        one diversity cap over both; in blocks of :attr:`~training.bundle.Bundle.block_rows` customers."""
        ids = np.array([str(c) for c in customer_ids], dtype=object)
        n, k = len(ids), max(int(k), 0)
        canonical = self.bundle.canonical_ids(ids)
        raw_idx = self.bundle.customers.to_index(canonical, unknown="mark")
        in_bundle = raw_idx >= 0
        idx = np.where(in_bundle & self.has_history[np.maximum(raw_idx, 0)], raw_idx, -1)
        items = np.full((n, k), -1, dtype=np.int64)
        scores = np.zeros((n, k), dtype=np.float64)
        reasons = np.full((n, k), None, dtype=object)
        personal = np.zeros((n, k), dtype=bool)
        step = self.bundle.block_rows
        for start in range(0, n if k else 0, step):
            rows = slice(start, start + step)
            block = self.bundle.lists(raw_idx[rows], k)
            items[rows], scores[rows], personal[rows] = block.items, block.scores, block.personal
            reasons[rows] = self.bundle.reasons(raw_idx[rows], block)
        n_picks = (items >= 0).sum(axis=1)
        n_personal = personal.sum(axis=1)
        propensities = self._open_propensities(ids.tolist(), raw_idx)
        send_reason = self._send_reasons(raw_idx, propensities, n_personal / np.maximum(n_picks, 1))
        send_hour = np.where(in_bundle, self.profiles.send_hour[np.maximum(raw_idx, 0)],
                             self.profiles.shop_send_hour)
        trigger, trigger_detail = self.profiles.triggers.of(canonical)
        # as shoprec triggers: no follow-up for the sunset rule's unengaged (it is the last
        # trigger in order, so a customer whose first it is has no other)
        sunset = (send_reason == UNENGAGED) & (trigger == FOLLOW_UP)
        trigger[sunset], trigger_detail[sunset] = None, None
        return EmailPicksBlock(ids, canonical, idx >= 0, in_bundle, send_reason == LIKELY_OPENER,
                               propensities.astype(np.float64), items, scores, reasons, n_picks, n_personal,
                               send_reason, send_hour.astype(np.int64), trigger, trigger_detail)

    def _send_reasons(self, raw_idx: np.ndarray, propensities: np.ndarray, personal_share: np.ndarray) -> np.ndarray:
        """Why each customer is mailed or not, the first rule that holds in :data:`SEND_REASONS`
        order: consent first whatever the scores; the sunset rule (``sunset_after_unopened``
        mails and not one opened: email practice stops there, whatever a model says about
        customers like them); the frequency cap (no more than ``max_mails`` in
        ``max_mails_days``); the open propensity; picks worth a mail."""
        known = raw_idx >= 0
        row = np.maximum(raw_idx, 0)
        nth_latest = self.profiles.send_ages[row, self.config.max_mails - 1]
        sunset = self.config.sunset_after_unopened
        rules = [(known & self.profiles.opted_out[row], OPTED_OUT),
                 (known & (sunset > 0) & (self.profiles.unopened_sends[row] >= sunset), UNENGAGED),
                 (known & (nth_latest < self.config.max_mails_days), MAILED_RECENTLY),
                 (propensities < self.config.send_min_open_propensity, BELOW_THRESHOLD),
                 (personal_share < self.config.send_min_personal_share, MOSTLY_FALLBACKS)]
        return np.select([mask for mask, _ in rules], [reason for _, reason in rules], LIKELY_OPENER).astype(object)

    def _open_propensities(self, ids: list[str], raw_idx: np.ndarray) -> np.ndarray:
        """The bundle's email-open model for everyone when it beat the customer's own open rate
        (and recency of the last open) on the test window, ranking and calibration alike; else
        the customer's Beta-shrunk open rate, which keeps a customer who never opened six mails
        below the send threshold, and the model (else the shop's open rate) only for customers
        without email history."""
        rates = np.where(raw_idx >= 0, self.profiles.open_rate[np.maximum(raw_idx, 0)], np.nan)
        use_model = np.ones(len(rates), dtype=bool) if self.bundle.open_model_beats_baseline else ~np.isfinite(rates)
        if use_model.any():
            try:
                modelled = self.bundle.email_open_propensity([ids[i] for i in np.flatnonzero(use_model)])
                rates[use_model] = modelled["probability"].to_numpy(dtype=np.float64)
            except PropensityUnavailable:
                rates[use_model & ~np.isfinite(rates)] = self.profiles.open_prior
        return rates

    def price_band(self, customer_id: str, session: LiveSession = NO_SESSION) -> PriceBand:
        """The customer's own band; else the prices of what the live session touched; else
        their segment's median band; else the catalogue's middle."""
        idx = self.bundle.customer_index(np.array([customer_id], dtype=object))[0]
        if idx >= 0 and np.isfinite(self.profiles.band_lo[idx]) and np.isfinite(self.profiles.band_hi[idx]):
            return PriceBand(float(self.profiles.band_lo[idx]), float(self.profiles.band_hi[idx]), "customer")
        touched = self.price[session.item_idx]
        touched = touched[touched > 0]
        if len(touched):
            return PriceBand(float(touched.min()), float(touched.max()), "session")
        segment = self.profiles.segment[idx] if idx >= 0 else None
        if isinstance(segment, str) and segment in self.profiles.segment_band:
            return PriceBand(*self.profiles.segment_band[segment], "segment")
        return PriceBand(*self.profiles.catalogue_band, "catalogue")

    def offers(self, customer_id: str, k: int, category: str | None = None,
               session: LiveSession = NO_SESSION) -> Offers:
        """Personal items priced inside the customer's band (in ``category`` when given).

        A visitor the model does not know gets items scored from the live ``session`` and
        the band of the prices it touched. When fewer than k allowed items lie inside the
        band, the band is widened to the nearest prices (in log space) and the answer says
        so: every returned item always lies inside the returned band.
        """
        idx = self._customer_index([customer_id])
        band = self.price_band(customer_id, session)
        allowed = self._free(int(idx[0]))
        unknown_category = category is not None and category not in self._category_of
        if category is not None and not unknown_category:
            allowed &= self.item_category == self._category_of[category]
        inside = allowed & (self.price >= band.lo) & (self.price <= band.hi)
        if inside.sum() < k and allowed.sum() > inside.sum():
            band, inside = self._widen(band, allowed, k)
        personal = self._personal_scores(int(idx[0]), session)
        raw = int(self.bundle.customer_index(np.array([customer_id], dtype=object))[0])
        tiers: list[tuple[AnyTier, Reason]] = [(Tier(scores.items, scores.scores), reason)
                                            for scores, reason in ([personal] if personal is not None else [])]
        tiers.append(self._fallback_tier(raw))
        return Offers(bool(idx[0] >= 0), band, self._ranked(tiers, inside, k), unknown_category, len(session))

    def _widen(self, band: PriceBand, allowed: np.ndarray, k: int) -> tuple[PriceBand, np.ndarray]:
        candidates = np.flatnonzero(allowed & (self.price > 0))
        if not len(candidates):
            return band, allowed & (self.price >= band.lo) & (self.price <= band.hi)
        log_price = np.log(self.price[candidates])
        lo, hi = math.log(max(band.lo, 1e-9)), math.log(max(band.hi, 1e-9))
        distance = np.maximum(lo - log_price, 0) + np.maximum(log_price - hi, 0)
        nearest = candidates[np.argsort(distance, kind="stable")[:k]]
        new = PriceBand(min(band.lo, float(self.price[nearest].min())), max(band.hi, float(self.price[nearest].max())),
                        band.source, widened=True)
        return new, allowed & (self.price >= new.lo) & (self.price <= new.hi)

    def propensity(self, customer_id: str | None, session_events: Sequence[Mapping[str, Any]] | None) -> Propensity:
        """Customer and/or live-session purchase probability.

        Raises :class:`PropensityUnavailable` (with the reason recorded at training) when the
        bundle has no model for a part that was asked for: a made-up number would be worse.
        """
        customer, known = None, False
        if customer_id is not None:
            row = self.bundle.customer_propensity([customer_id]).iloc[0]
            customer, known = float(row["probability"]), bool(row["known"])
        session, used = None, 0
        if session_events:
            events = [dict(e, ts=utc(e["ts"]), customer_id=e.get("customer_id") or customer_id)
                      for e in session_events]
            session = self.bundle.live_session_propensity(events)
            used = len(until_purchase(events))
        return Propensity(customer, known, session, used)
