"""The BentoML service: a thin HTTP layer over :class:`serving.recommender.ShopRecommender`.

Loads ``models:/<SHOPREC_MODEL_NAME>@champion`` when a worker starts (the model is fetched
at start-up, not baked into the Bento) and follows the registry from then on: a new champion
or a running experiment is swapped in without a restart (serving/following.py). In an
experiment each request is answered by its visitor's variant (serving/arms.py) and logged as
an exposure before the answer is sent (serving/exposures.py).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import uuid
from datetime import UTC, datetime

import anyio
import bentoml
import numpy as np
from starlette.responses import JSONResponse
from threadpoolctl import threadpool_limits

from serving import schemas
from serving.event_log import EventLogError, open_event_log
from serving.exposures import Exposure, ExposureWriter, Outcome, open_exposure_log, open_outcome_log
from serving.guard import HttpGuard, quiet_client_errors
from serving.lifecycle import BundleCache, RegistryError
from serving.live_events import LiveEvent, at_the_door
from serving.answers import NO_SESSION, EmailPick, LiveSession, Pick
from serving.arms import Arms
from serving.following import FollowsRegistry, settle
from serving.config import serving_config
from serving.recommender import ShopRecommender
from serving.session_store import REDIS_URL_ENV, SessionStoreError, open_session_store
from serving.settings import workers
from training.bundle_files import BundleError
from training.experiments import Experiment, Variant
from training.propensity_set import PropensityUnavailable

logger = logging.getLogger("shoprec.serving")
WORKERS, WORKERS_WHY = workers(os.environ, bool(os.environ.get(REDIS_URL_ENV, "").strip()))

FALLBACKS = bentoml.metrics.Counter(name="shoprec_fallbacks_total",
                                    documentation="Answers that used a fallback instead of personal scores.",
                                    labelnames=["endpoint", "kind"])
UNKNOWN_IDS = bentoml.metrics.Counter(name="shoprec_unknown_ids_total",
                                      documentation="Ids in requests that the model does not know.",
                                      labelnames=["endpoint", "kind"])
ALIAS_IDS = bentoml.metrics.Counter(name="shoprec_alias_ids_total",
                                    documentation="Customer ids in requests that are merged duplicates (aliases), "
                                                  "answered as their canonical id.",
                                    labelnames=["endpoint"])
EVENTS = bentoml.metrics.Counter(name="shoprec_events_total",
                                 documentation="Live events acknowledged (durable), by type.", labelnames=["event_type"])


def _items(picks: list[Pick]) -> list[schemas.ItemOut]:
    return [schemas.ItemOut(item_id=p.item_id, score=p.score, reason=p.reason) for p in picks]


def _count_fallbacks(endpoint: str, known: bool, picks: list[Pick]) -> None:
    if not known:
        UNKNOWN_IDS.labels(endpoint=endpoint, kind="customer").inc()
    if any(p.reason.startswith("popular") for p in picks):
        FALLBACKS.labels(endpoint=endpoint, kind="popular").inc()


def _request_id() -> str:
    return uuid.uuid4().hex


@bentoml.service(name="shoprec", traffic={"timeout": 30}, workers=WORKERS)
class ShoprecService(FollowsRegistry):
    """Cross-sell, email picks and price-band offers from the champion bundle (and, in an
    experiment, from each visitor's variant)."""

    def __init__(self) -> None:
        logger.setLevel(logging.INFO)  # BentoML's root is at WARNING; a worker's start lines belong in the log
        threadpool_limits(1)  # one request = one small product; BLAS threads only add contention
        self.config = serving_config()  # SHOPREC_SERVING_CONFIG: a bad one refuses to start, before any download
        self.source = BundleCache(os.environ.get("SHOPREC_MODEL_NAME", "shoprec"))
        loaded = self.source.load_initial()
        self.recommender, self.loaded_key = ShopRecommender(loaded.bundle, loaded.version, self.config), loaded.key
        self.recommender.warm()
        self.arms = Arms()
        self.sessions = open_session_store()  # Redis with SHOPREC_REDIS_URL, else in this worker's memory
        self.event_log = open_event_log()  # opened per worker: the log refuses to be shared across a fork
        self.exposures = ExposureWriter(open_exposure_log())
        self.outcomes = open_outcome_log()
        self._swap_lock = threading.Lock()
        try:
            self._follow_experiment()
        except (RegistryError, BundleError) as error:  # serve the champion to everyone; the poll retries
            logger.error("cannot load the running experiment (%s); serving the champion to everyone", error)
        logger.info("live sessions in %s; events logged to %s; exposures to %s", self.sessions.description,
                    getattr(self.event_log, "description", type(self.event_log).__name__),
                    self.exposures.description)
        self.start_following()
        settle()
        logger.info("serving %s with %s; workers %s: %s", loaded.version, self.config.model_dump_json(),
                    WORKERS, WORKERS_WHY)

    @bentoml.on_shutdown
    def _shutdown(self) -> None:
        self._stop.set()
        self.exposures.close()
        self.outcomes.close()
        self.event_log.close()  # compacts the last write-ahead segment; a crash leaves it to recovery
        self.sessions.close()

    def _session(self, rec: ShopRecommender, session_id: str | None, customer_id: str | None = None
                 ) -> tuple[LiveSession, list[dict]]:
        """The stored session as ``rec`` (the recommender the request answers from, whatever a swap
        does meanwhile) reads it, and its events. Without a session id, a logged-in customer's
        recently viewed items from earlier visits (no events)."""
        if session_id is not None:
            events = [e.to_dict() for e in self.sessions.session_events(session_id)]
            return rec.live_session(events), events
        if customer_id is not None:
            return rec.recently_viewed(self.sessions.recent_items(customer_id)), []
        return NO_SESSION, []

    async def _session_on_loop(self, rec: ShopRecommender, session_id: str | None, customer_id: str | None = None
                               ) -> tuple[LiveSession, list[dict]]:
        """:meth:`_session` for the page endpoints (cross-sell, offers, propensity), which run on
        the event loop rather than in a worker thread: their work is a fraction of a millisecond
        of CPU, and the hand-off to a thread and back cost more than that (``/cross_sell`` 0.76x
        of a sync ``/noop``'s throughput as a thread, 0.94x inline; docs/benchmarks.md). A store across
        a network is still read in a worker thread, so a slow Redis never holds the loop every
        request shares. ``/email_picks`` (batches of up to 1,000 customers) stays in a thread."""
        if (session_id is None and customer_id is None) or self.sessions.in_process:
            return self._session(rec, session_id, customer_id)
        return await anyio.to_thread.run_sync(self._session, rec, session_id, customer_id)

    def _canonical(self, endpoint: str, customer_id: str | None) -> str | None:
        """The id training merged ``customer_id`` into (itself unless it is an alias), counted."""
        if customer_id is None:
            return None
        canonical = str(self.recommender.bundle.canonical_ids([customer_id])[0])
        if canonical != customer_id:
            ALIAS_IDS.labels(endpoint=endpoint).inc()
        return canonical

    def _route(self, customer_id: str | None, session_id: str | None
               ) -> tuple[ShopRecommender, Experiment | None, Variant | None]:
        """The recommender that answers a request: its experiment variant's, else the champion."""
        arms = self.arms
        routed = arms.route(customer_id, session_id)
        if routed is None:
            return self.recommender, None, None
        return routed[0], arms.experiment, routed[1]

    async def _expose(self, endpoint: str, request_id: str, rec: ShopRecommender, experiment: Experiment | None,
                      variant: Variant | None, customer_id: str | None, session_id: str | None,
                      picks: list[Pick]) -> JSONResponse | None:
        """Log an experiment's answer before it is sent (nothing outside an experiment); a 503
        when the exposure log fails, so no answer leaves that the experiment cannot count."""
        if experiment is None or variant is None:
            return None
        unit = experiment.unit_of(customer_id, session_id) or ""
        try:
            await self.exposures.record([Exposure(request_id, experiment.name, variant.name, rec.model_version, unit,
                                                  endpoint, [p.item_id for p in picks], customer_id, session_id)])
        except EventLogError as error:
            return self._unavailable(f"exposure log: {error}; retry")
        return None

    def _unavailable(self, what: str) -> JSONResponse:
        """A 503 in the one error shape (BentoML would hide the message of a raised 5xx)."""
        return JSONResponse(schemas.ErrorResponse(error=what).model_dump(), status_code=503)

    @bentoml.api(route="/events", input_spec=schemas.EventsRequest)
    def events(self, events: list[schemas.LiveEventIn]) -> schemas.EventsResponse:
        """Acknowledge a batch only once it is in the durable log (write-ahead), then in the
        session store, so the very next request of the session sees it. At least once: a
        client that retries a batch whose answer it lost logs it twice. Events that name the
        answer they came from (``request_id``) are outcomes too, logged next to the exposures."""
        received = datetime.now(UTC)
        kept = [at_the_door(e.ts, received) for e in events]
        batch = [LiveEvent(session_id=e.session_id, event_type=e.event_type, ts=ts,
                           customer_id=e.customer_id, item_id=e.item_id) for e, (ts, _) in zip(events, kept, strict=True)]
        try:
            self.event_log.append(batch)
        except (EventLogError, OSError) as error:
            return self._unavailable(f"event log: {error}; nothing was acknowledged, retry")  # type: ignore[return-value]
        # The log keeps the ids as sent (training merges aliases itself); the session store and
        # the outcomes follow the canonical id, as the exposures do, so either id finds the visit.
        canonical = self.recommender.bundle.canonical_ids([e.customer_id or "" for e in batch])
        stored = [dataclasses.replace(e, customer_id=str(c)) if e.customer_id is not None and c != e.customer_id
                  else e for e, c in zip(batch, canonical, strict=True)]
        if aliased := sum(s is not e for s, e in zip(stored, batch, strict=True)):
            ALIAS_IDS.labels(endpoint="events").inc(aliased)
        if outcomes := [Outcome(e.request_id, event) for e, event in zip(events, stored, strict=True) if e.request_id]:
            try:
                self.outcomes.append(outcomes)
            except EventLogError as error:
                return self._unavailable(  # type: ignore[return-value]
                    f"outcome log: {error} (the events are logged; retrying logs them again)")
        try:
            self.sessions.add(stored)
        except SessionStoreError as error:
            return self._unavailable(  # type: ignore[return-value]
                f"session store: {error} (the events are logged; retrying logs them again)")
        items = [e.item_id for e in batch if e.item_id is not None]
        unknown = int((self.recommender.bundle.items.to_index(np.asarray(items, dtype=object), unknown="mark") < 0)
                      .sum()) if items else 0
        for event in batch:
            EVENTS.labels(event_type=event.event_type).inc()
        if unknown:
            UNKNOWN_IDS.labels(endpoint="events", kind="item").inc(unknown)
        return schemas.EventsResponse(accepted=len(batch), unknown_items=unknown,
                                      sessions=len({e.session_id for e in batch}),
                                      future_ts_clamped=sum(clamped for _, clamped in kept))

    @bentoml.api(route="/cross_sell", input_spec=schemas.CrossSellRequest)
    async def cross_sell(self, cart: list[str], customer_id: str | None = None, session_id: str | None = None,
                         k: int = 5) -> schemas.CrossSellResponse:
        """Items that go with the cart (and the session); never in the cart, out of stock or a
        recently bought durable. On the event loop (see :meth:`_session_on_loop`); in an experiment,
        from the visitor's variant, logged as an exposure before it is sent."""
        canonical = self._canonical("cross_sell", customer_id)
        rec, experiment, variant = self._route(canonical, session_id)
        try:
            session, _ = await self._session_on_loop(rec, session_id, canonical)
        except SessionStoreError as error:
            return self._unavailable(f"session store: {error}")  # type: ignore[return-value]
        answer = rec.cross_sell(cart, canonical, k, session)
        if answer.unknown_items:
            UNKNOWN_IDS.labels(endpoint="cross_sell", kind="item").inc(len(answer.unknown_items))
        _count_fallbacks("cross_sell", answer.customer_known or customer_id is None, answer.items)
        request_id = _request_id()
        if failed := await self._expose("cross_sell", request_id, rec, experiment, variant, canonical, session_id,
                                        answer.items):
            return failed  # type: ignore[return-value]
        return schemas.CrossSellResponse(request_id=request_id, experiment=experiment and experiment.name,
                                         variant=variant and variant.name,
                                         model_version=rec.model_version, customer_id=customer_id,
                                         canonical_id=canonical, customer_known=answer.customer_known,
                                         session_items=answer.session_items, unknown_items=answer.unknown_items,
                                         items=_items(answer.items))

    @bentoml.api(route="/email_picks", input_spec=schemas.EmailPicksRequest)
    def email_picks(self, customer_ids: list[str], k: int = 10) -> schemas.EmailPicksResponse:
        """Per customer: whether to send and why, the hour to send at, the open propensity and the
        picks (one batch product per variant). In an experiment each customer's picks come from
        their variant, and the batch's exposures are logged before it is answered."""
        champion, arms = self.recommender, self.arms
        answered: list[tuple[EmailPick, ShopRecommender, Variant | None]] = [None] * len(customer_ids)  # type: ignore[list-item]
        for rec, variant, positions in arms.batches(champion, customer_ids):
            for position, pick in zip(positions, rec.email_picks([customer_ids[i] for i in positions], k),
                                      strict=True):
                answered[position] = (pick, rec, variant)
        for pick, _, _ in answered:
            _count_fallbacks("email_picks", pick.customer_known, pick.items)
        if aliases := sum(p.canonical_id != p.customer_id for p, _, _ in answered):
            ALIAS_IDS.labels(endpoint="email_picks").inc(aliases)
        request_ids = [_request_id() for _ in answered]  # one per email: its links name the picks they came from
        if arms.experiment is not None and (exposures := [
                Exposure(request_id, arms.experiment.name, variant.name, rec.model_version, pick.canonical_id,
                         "email_picks", [p.item_id for p in pick.items], pick.canonical_id)
                for (pick, rec, variant), request_id in zip(answered, request_ids, strict=True) if variant is not None]):
            try:
                self.exposures.record_now(exposures)
            except EventLogError as error:
                return self._unavailable(f"exposure log: {error}; retry")  # type: ignore[return-value]
        return schemas.EmailPicksResponse(
            model_version=champion.model_version, experiment=arms.experiment and arms.experiment.name, picks=[
                schemas.EmailPickOut(customer_id=p.customer_id, canonical_id=p.canonical_id,
                                     customer_known=p.customer_known, send=p.send, send_reason=p.send_reason,
                                     send_hour=p.send_hour, trigger=p.trigger, trigger_detail=p.trigger_detail,
                                     open_propensity=p.open_propensity, items=_items(p.items),
                                     model_version=rec.model_version, variant=variant and variant.name,
                                     request_id=request_id)
                for (p, rec, variant), request_id in zip(answered, request_ids, strict=True)])

    @bentoml.api(route="/offers", input_spec=schemas.OffersRequest)
    async def offers(self, customer_id: str, session_id: str | None = None, k: int = 5,
                     category: str | None = None) -> schemas.OffersResponse:
        """Personal items inside the customer's price band, with the band and where it came from.
        On the event loop (see :meth:`_session_on_loop`); in an experiment as ``/cross_sell``."""
        canonical = self._canonical("offers", customer_id) or customer_id
        rec, experiment, variant = self._route(canonical, session_id)
        try:
            session, _ = await self._session_on_loop(rec, session_id, canonical)
        except SessionStoreError as error:
            return self._unavailable(f"session store: {error}")  # type: ignore[return-value]
        answer = rec.offers(canonical, k, category, session)
        _count_fallbacks("offers", answer.customer_known, answer.items)
        if answer.unknown_category:
            UNKNOWN_IDS.labels(endpoint="offers", kind="category").inc()
        request_id = _request_id()
        if failed := await self._expose("offers", request_id, rec, experiment, variant, canonical, session_id,
                                        answer.items):
            return failed  # type: ignore[return-value]
        band = answer.band
        return schemas.OffersResponse(
            request_id=request_id, experiment=experiment and experiment.name, variant=variant and variant.name,
            model_version=rec.model_version, customer_id=customer_id, canonical_id=canonical,
            customer_known=answer.customer_known,
            session_items=answer.session_items, unknown_category=answer.unknown_category, items=_items(answer.items),
            band=schemas.BandOut(lo=band.lo, hi=band.hi, source=band.source, widened=band.widened))

    @bentoml.api(route="/propensity", input_spec=schemas.PropensityRequest)
    async def propensity(self, customer_id: str | None = None, session_id: str | None = None,
                         session_events: list[schemas.SessionEvent] | None = None) -> schemas.PropensityResponse:
        """Customer and/or live-session purchase probability; 503 naming the reason when the
        champion has no model for the part asked for (a made-up number would be worse).
        A ``session_id`` adds the stored events of the session before any given inline. On the
        event loop (see :meth:`_session_on_loop`)."""
        rec = self.recommender
        try:
            _, stored = await self._session_on_loop(rec, session_id)
        except SessionStoreError as error:
            return self._unavailable(f"session store: {error}")  # type: ignore[return-value]
        received = datetime.now(UTC)
        events = stored + [{**e.model_dump(), "ts": at_the_door(e.ts, received)[0]} for e in session_events or []]
        canonical = self._canonical("propensity", customer_id)
        try:
            answer = rec.propensity(canonical, events)
        except PropensityUnavailable as missing:
            return self._unavailable(  # type: ignore[return-value]
                f"{missing.target} propensity: {missing.reason} ({rec.model_version})")
        if customer_id is not None and not answer.customer_known:
            UNKNOWN_IDS.labels(endpoint="propensity", kind="customer").inc()
        return schemas.PropensityResponse(
            model_version=rec.model_version, customer_id=customer_id, canonical_id=canonical,
            customer_known=answer.customer_known,
            customer_propensity=answer.customer, session_propensity=answer.session,
            session_events_used=answer.session_events_used)

    @bentoml.api(route="/noop", input_spec=schemas.NoopRequest)
    async def noop(self, customer_id: str | None = None) -> schemas.NoopResponse:
        """The framework's ceiling for benchmarks/bench_serving.py: everything but the recommender.

        On the event loop like the page endpoints (cross-sell, offers, propensity), so it takes
        their path (guard, validation, serialisation); its latency is what such an endpoint pays
        before the recommender does any work. ``/email_picks`` pays a worker thread's hand-off too.
        """
        return schemas.NoopResponse(model_version=self.recommender.model_version)

    @bentoml.api(route="/admin/reload")
    def admin_reload(self) -> schemas.ReloadResponse:
        """Load the registry's champion now, in this worker and, within a second, in every other
        one (bearer token checked by :class:`HttpGuard`); a 503 naming the registry or the failed
        checksum when it cannot, the current model still serving."""
        try:
            version, changed = self.reload("admin")
            self._reload_seen = self.source.request_reload()  # the other workers follow within a second
        except (RegistryError, BundleError) as error:
            logger.error("admin reload failed (%s); still serving %s", error, self.recommender.model_version)
            return self._unavailable(  # type: ignore[return-value]
                f"reload failed, still serving {self.recommender.model_version}: {error}")
        return schemas.ReloadResponse(model_version=version, changed=changed)


def json_routes(service: type) -> dict[str, bool]:
    """Each endpoint's path -> whether its JSON body is required (its request model has fields)."""
    return {api.route: bool(api.input_spec.model_fields) for api in service.apis.values()}  # type: ignore[attr-defined]


quiet_client_errors()
ShoprecService.add_asgi_middleware(HttpGuard, json_routes=json_routes(ShoprecService))  # type: ignore[attr-defined]  # @bentoml.service
