"""The HTTP contract: pydantic request and response models, and the one error body.

Requests forbid unknown fields so a typo (``customerid``) is a 400 naming the field, not
a silently ignored option. Limits live here, in one place, and appear in /docs.json.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from features.schema import EVENT_TYPES, ID_PATTERN, ITEM_EVENT_TYPES
from features.triggers import TRIGGERS
from serving.answers import SEND_REASONS

MAX_K = 100
MAX_EMAIL_CUSTOMERS = 1000
MAX_CART = 200
MAX_SESSION_EVENTS = 500
MAX_EVENTS_BATCH = 500
_WHOLE_ID = re.compile(ID_PATTERN)


def _visible_id(value: str) -> str:
    """The contract's id rule (features.schema.ID_PATTERN), with a message a person can read."""
    if not _WHOLE_ID.match(value):
        raise ValueError("ids may not hold control or invisible characters, nor start or end with a space")
    return value


Id = Annotated[str, Field(min_length=1, max_length=128, json_schema_extra={"pattern": ID_PATTERN}),
               AfterValidator(_visible_id)]


def _whole_number(value: object) -> object:
    """JSON Schema counts 5.0 as an integer, so accept it as 5; strings and 5.5 still fail."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


K = Annotated[int, Field(ge=1, le=MAX_K, strict=True), BeforeValidator(_whole_number)]


def _as_utc(ts: datetime) -> datetime:
    """UTC, a time without an offset taken as UTC; the first and last representable instants
    stand in for times an offset would push past them (0001-01-01T00:00+05:00)."""
    if ts.tzinfo is None:
        return ts.replace(tzinfo=UTC)
    try:
        return ts.astimezone(UTC)
    except OverflowError:
        return (datetime.min if ts.year == 1 else datetime.max).replace(tzinfo=UTC)


Timestamp = Annotated[datetime, Field(strict=True), AfterValidator(_as_utc)]
"""ISO 8601 text (a number is refused: seconds or milliseconds?), kept as UTC."""
SessionId = Annotated[Id, Field(description="The shop's id of the visit; sessions expire after "
                                            "SHOPREC_SESSION_TTL_SECONDS of silence.")]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CrossSellRequest(Request):
    cart: list[Id] = Field(max_length=MAX_CART, description="Item ids in the cart; unknown ids are reported.")
    customer_id: Id | None = Field(None, description="Blends the customer's own scores in when known.")
    session_id: SessionId | None = Field(None, description="Reads what the visit touched (POST /events).")
    k: K = 5


class EmailPicksRequest(Request):
    customer_ids: list[Id] = Field(min_length=1, max_length=MAX_EMAIL_CUSTOMERS)
    k: K = 10


class OffersRequest(Request):
    customer_id: Id
    session_id: SessionId | None = Field(None, description="Reads what the visit touched (POST /events).")
    k: K = 5
    category: Id | None = Field(None, description="Only items of this category.")


class _ItemEvent(Request):
    """The item rule every browsing event obeys, in code and in the OpenAPI schema (3.1)."""

    model_config = ConfigDict(json_schema_extra={"anyOf": [
        {"properties": {"event_type": {"const": "search"}}},
        {"required": ["item_id"], "properties": {"item_id": {"type": "string"}}}]})

    event_type: Literal[EVENT_TYPES]  # type: ignore[valid-type]
    item_id: Id | None = Field(None, description="Required for every event type but search.")

    @model_validator(mode="after")
    def _item_events_name_the_item(self) -> _ItemEvent:
        if self.event_type in ITEM_EVENT_TYPES and self.item_id is None:
            raise ValueError(f"item_id: required for a {self.event_type!r} event")
        return self


class SessionEvent(_ItemEvent):
    """One browsing event of the live session, in the ``events`` vocabulary of the data contract."""

    ts: Timestamp = Field(description="A time more than a day after the request is read as the request's time, "
                                      "as POST /events keeps it.")


class LiveEventIn(_ItemEvent):
    """One event for ``POST /events``: a row of the contract's ``events`` table."""

    session_id: SessionId
    customer_id: Id | None = Field(None, description="When the visitor is logged in.")
    request_id: Id | None = Field(None, description="The request_id of the answer this event came from: the "
                                                    "view a click on a recommended item leads to, a cart or a "
                                                    "purchase of it. An experiment's report counts it as that "
                                                    "answer's click-through and attributes a purchase to it.")
    ts: Timestamp | None = Field(None, description="Default: when the service received it. A time more than a "
                                                   "day after that is kept as the receive time (counted in "
                                                   "future_ts_clamped).")


class EventsRequest(Request):
    events: list[LiveEventIn] = Field(min_length=1, max_length=MAX_EVENTS_BATCH)


class EventsResponse(BaseModel):
    accepted: int = Field(description="Events written to the durable log and the session store.")
    unknown_items: int = Field(description="Accepted events about items the serving model does not know.")
    sessions: int = Field(description="Distinct sessions in the batch.")
    future_ts_clamped: int = Field(0, description="Events whose ts lay more than a day after the service received "
                                                  "them (a client clock error): kept at the receive time.")


class PropensityRequest(Request):
    model_config = ConfigDict(json_schema_extra={"anyOf": [
        {"required": ["customer_id"], "properties": {"customer_id": {"type": "string"}}},
        {"required": ["session_id"], "properties": {"session_id": {"type": "string"}}},
        {"required": ["session_events"], "properties": {"session_events": {"type": "array", "minItems": 1}}}]})

    customer_id: Id | None = Field(None, description="The customer's P(buys within the trained horizon).")
    session_id: SessionId | None = Field(None, description="The live session's stored events (POST /events) "
                                                           "are read, before any session_events given here.")
    session_events: list[SessionEvent] | None = Field(
        None, max_length=MAX_SESSION_EVENTS,
        description="The live session so far: P(this session ends in a purchase). Events after a purchase "
                    "are ignored, as in training.")

    @model_validator(mode="after")
    def _asks_for_something(self) -> PropensityRequest:
        if self.customer_id is None and self.session_id is None and not self.session_events:
            raise ValueError("customer_id, session_id, session_events: give at least one")
        return self


class NoopRequest(Request):
    """The benchmark ceiling's body: one id, parsed and validated like the real endpoints' bodies."""

    customer_id: Id | None = Field(None, description="Validated, then ignored.")


class ItemOut(BaseModel):
    item_id: str
    score: float
    reason: str = Field(description="bought_together:<item_id> | similar_customers | popular_in:<category> "
                                    "| popular_in_segment:<segment> | popular")


class Experimental(BaseModel):
    """What an answer says about the online experiment it took part in (docs/experiments.md)."""

    request_id: str = Field(description="This answer's id (in the exposure log, while an experiment runs).")
    experiment: str | None = Field(None, description="The running experiment the answer belongs to; null when "
                                                     "none runs or the request named no customer or session.")
    variant: str | None = Field(None, description="The experiment's variant that answered (model_version is "
                                                  "its version); null outside an experiment.")


class CrossSellResponse(Experimental):
    model_version: str
    customer_id: str | None = Field(description="As sent.")
    canonical_id: str | None = Field(description="The id the answer was computed for: the canonical id when "
                                                 "customer_id is a merged duplicate (customer_aliases), else "
                                                 "customer_id itself; null without a customer_id.")
    customer_known: bool = Field(description="False: unknown id or no history, so fallbacks were used.")
    session_items: int = Field(description="Distinct known items of the live session that were used.")
    unknown_items: list[str]
    items: list[ItemOut]


class EmailPickOut(BaseModel):
    customer_id: str
    canonical_id: str = Field(description="The id the picks were computed for: the canonical id when customer_id "
                                          "is a merged duplicate (customer_aliases), else customer_id itself.")
    customer_known: bool
    send: bool
    send_reason: Literal[SEND_REASONS] = Field(  # type: ignore[valid-type]
        description="Why send is what it is, the first that holds: opted_out (no consent), unengaged (the sunset "
                    "rule: sunset_after_unopened mails, none opened), mailed_recently "
                    "(the frequency cap: max_mails in max_mails_days), below_threshold (open propensity), "
                    "mostly_fallbacks (too few personal picks), else likely_opener (send).")
    send_hour: int = Field(ge=-1, le=23, description="Hour of the day (UTC) to mail at: the customer's own open "
                                                     "hour from past opens, else the shop's; -1 without email data.")
    trigger: Literal[TRIGGERS] | None = Field(  # type: ignore[valid-type]
        description="What makes a mail worth sending now, on the day after the model's data ends: the first of "
                    "abandoned_cart, refill_due, anniversary, wishlist_reminder, follow_up_non_openers that fired "
                    "for the customer under the training config's windows; null when none did, and no "
                    "follow-up for the sunset rule's unengaged (as shoprec triggers, which lists every "
                    "trigger with its items).")
    trigger_detail: str | None = Field(description="The trigger's detail: the day the cart was left or the item "
                                                   "wish-listed, the refill's due date, the years since the first "
                                                   "purchase, or the campaign not opened.")
    open_propensity: float
    items: list[ItemOut]
    model_version: str = Field(description="The version that made these picks.")
    variant: str | None = Field(None, description="The experiment's variant the customer is in; null outside one.")
    request_id: str = Field(description="This customer's picks' own id (in the exposure log, while an experiment "
                                        "runs): the email's links send it back with the click (POST /events).")


class EmailPicksResponse(BaseModel):
    model_version: str = Field(description="The champion's version; a pick in an experiment names its own.")
    experiment: str | None = Field(None, description="The running experiment, if any.")
    picks: list[EmailPickOut]


class BandOut(BaseModel):
    lo: float
    hi: float
    source: Literal["customer", "session", "segment", "catalogue"]
    widened: bool = Field(description="True when too few items lay inside and the band grew to the nearest prices.")


class OffersResponse(Experimental):
    model_version: str
    customer_id: str = Field(description="As sent.")
    canonical_id: str | None = Field(description="The id the answer was computed for: the canonical id when "
                                                 "customer_id is a merged duplicate (customer_aliases), else "
                                                 "customer_id itself; null without a customer_id.")
    customer_known: bool
    session_items: int = Field(description="Distinct known items of the live session that were used.")
    unknown_category: bool
    band: BandOut
    items: list[ItemOut]


class PropensityResponse(BaseModel):
    model_version: str
    customer_id: str | None
    canonical_id: str | None = Field(description="The id the answer was computed for: the canonical id when "
                                                 "customer_id is a merged duplicate (customer_aliases), else "
                                                 "customer_id itself; null without a customer_id.")
    customer_known: bool = Field(description="False: unknown id or no history; the probability is the "
                                             "model's answer for a customer without history.")
    customer_propensity: float | None = Field(description="P(buys within the horizon set at training); "
                                                          "null when no customer_id was given.")
    session_propensity: float | None = Field(description="P(the live session ends in a purchase); null when "
                                                         "no session event before a purchase was given.")
    session_events_used: int = Field(description="Events read: those before the first purchase.")


class ReloadResponse(BaseModel):
    model_version: str
    changed: bool


class NoopResponse(BaseModel):
    model_version: str


class ErrorDetail(BaseModel):
    loc: list[str | int] = Field(default_factory=list, description="Path of the offending field.")
    msg: str
    type: str


class ErrorResponse(BaseModel):
    """Every 4xx body: ``error`` names the field(s) in one line, ``detail`` lists each problem."""

    error: str
    detail: list[ErrorDetail] = Field(default_factory=list)
