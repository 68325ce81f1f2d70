"""The HTTP contract: pydantic request and response models, and the one error body.

Requests forbid unknown fields so a typo (``customerid``) is a 400 naming the field, not
a silently ignored option. Limits live here, in one place, and appear in /docs.json.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_K = 100
MAX_EMAIL_CUSTOMERS = 1000
MAX_CART = 200
Id = Annotated[str, Field(min_length=1, max_length=128, pattern=r"\S")]
K = Annotated[int, Field(ge=1, le=MAX_K, strict=True)]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CrossSellRequest(Request):
    cart: list[Id] = Field(max_length=MAX_CART, description="Item ids in the cart; unknown ids are reported.")
    customer_id: Id | None = Field(None, description="Blends the customer's own scores in when known.")
    k: K = 5


class EmailPicksRequest(Request):
    customer_ids: list[Id] = Field(min_length=1, max_length=MAX_EMAIL_CUSTOMERS)
    k: K = 10


class OffersRequest(Request):
    customer_id: Id
    k: K = 5
    category: Id | None = Field(None, description="Only items of this category.")


class NoopRequest(Request):
    """The benchmark ceiling's body: one id, parsed and validated like the real endpoints' bodies."""

    customer_id: Id | None = Field(None, description="Validated, then ignored.")


class ItemOut(BaseModel):
    item_id: str
    score: float
    reason: str = Field(description="bought_together:<item_id> | similar_customers | popular_in:<category> "
                                    "| popular_in_segment:<segment> | popular")


class CrossSellResponse(BaseModel):
    model_version: str
    customer_known: bool = Field(description="False: unknown id or no history, so fallbacks were used.")
    unknown_items: list[str]
    items: list[ItemOut]


class EmailPickOut(BaseModel):
    customer_id: str
    customer_known: bool
    send: bool
    open_propensity: float
    items: list[ItemOut]


class EmailPicksResponse(BaseModel):
    model_version: str
    picks: list[EmailPickOut]


class BandOut(BaseModel):
    lo: float
    hi: float
    source: Literal["customer", "segment", "catalogue"]
    widened: bool = Field(description="True when too few items lay inside and the band grew to the nearest prices.")


class OffersResponse(BaseModel):
    model_version: str
    customer_known: bool
    unknown_category: bool
    band: BandOut
    items: list[ItemOut]


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
