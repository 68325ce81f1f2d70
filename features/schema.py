"""The data contract: which tables a shop provides, their columns and the values they may hold.

Declarations only: :mod:`features.validation` applies them to rows. Every input
(CSV/Parquet folder, SQL database, importer output) passes through
:func:`features.validation.validate_table` before any feature sees it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from features.errors import UserError

ColumnKind = Literal["id", "text", "number", "bool", "timestamp", "event_type"]

EVENT_TYPES: tuple[str, ...] = ("view", "cart", "remove_from_cart", "wishlist", "search", "purchase")
"""Browsing vocabulary. ``purchase`` extends DESIGN.md so that session-conversion labels
come straight from the log (REES46 has it); see docs/architecture.md."""

ITEM_EVENT_TYPES: frozenset[str] = frozenset(EVENT_TYPES) - {"search"}
"""Event types that are about one item and therefore need an ``item_id``."""

MAX_QUANTITY = 1000.0
"""Default bound on ``|quantity|`` of an order line (:class:`ContractConfig`): above it a line is
quarantined as implausible (fuel litres, data-entry slips). A wholesaler sells thousands of
units on legitimate lines, so the bound is per shop; interaction weights grow with the log of
the quantity (``features.dataset.InteractionConfig``), so a large line never dominates."""

FUTURE_TOLERANCE = pd.Timedelta(days=1)
"""Timestamps later than load time plus this margin are quarantined (clock or parse errors)."""

INVISIBLE_CHARACTERS = r"\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff"
"""Characters no id may hold, as a regex class body: C0 and C1 controls (NUL, BEL, ESC, ...),
DEL, zero-width and direction marks, line separators and the BOM. An id that holds one looks
like another id in every log and screen, so the loader quarantines it and the service refuses it."""

ID_PATTERN = rf"^[^\s{INVISIBLE_CHARACTERS}](?:[^{INVISIBLE_CHARACTERS}]*[^\s{INVISIBLE_CHARACTERS}])?$"
"""A whole id: no invisible character, no leading or trailing whitespace (JSON Schema, Python
and Rust regex alike, so /docs.json states the very rule the service applies)."""

ROW_COLUMN = "_row"
"""Column carrying the 1-based data row number in the source (header excluded)."""

BAD_ENCODING_COLUMN = "_bad_encoding"
"""Optional boolean column a reader adds when some rows held bytes that are not UTF-8."""

TRUE_STRINGS = frozenset({"true", "t", "1", "yes", "y"})
FALSE_STRINGS = frozenset({"false", "f", "0", "no", "n"})


class ContractError(UserError):
    """Input that cannot be loaded at all (missing table, missing column, unreadable file).

    The message is one line meant for the person who owns the data.
    """


@dataclass(frozen=True)
class Column:
    """One column of a contract table.

    ``required`` columns must exist in the source; ``nullable`` says whether a row may
    leave the value empty; ``default`` fills an optional column the source lacks.
    ``minimum``/``strict_minimum``/``maximum`` bound numeric values; ``nonzero`` refuses 0 and
    ``bound`` names the shop's own limit on ``|value|``.
    """

    name: str
    kind: ColumnKind
    required: bool = True
    nullable: bool = False
    default: object = None
    minimum: float | None = None
    strict_minimum: bool = False
    maximum: float | None = None
    nonzero: bool = False
    bound: str | None = None
    """A :class:`ContractConfig` field bounding ``|value|`` (the shop's own limit)."""


@dataclass(frozen=True)
class TableSpec:
    """A contract table: its columns, whether the shop must provide it, and its unique key."""

    name: str
    columns: tuple[Column, ...]
    required: bool = False
    unique_key: str | None = None
    feeds: str = ""
    time_column: str | None = None
    """When each row happened (orders, events, email sends): what a time cut filters on."""
    column_names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "column_names", tuple(c.name for c in self.columns))

    @property
    def required_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.required)


TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec(
            "items",
            (
                Column("item_id", "id"),
                Column("category", "id"),
                Column("price", "number", minimum=0.0),
                Column("title", "text", required=False, nullable=True),
                Column("brand", "text", required=False, nullable=True),
                # finer than the category ("FLUID MILK WHITE ONLY"): what the lists' diversity cap counts
                Column("product_type", "text", required=False, nullable=True),
                Column("in_stock", "bool", required=False, default=True),
                # units on hand, where the shop exports them: marks "low stock" on triggers (batch/triggers.py)
                Column("stock_qty", "number", required=False, nullable=True, minimum=0.0),
                Column("durable", "bool", required=False, default=False),
                Column("repurchase_days", "number", required=False, nullable=True, minimum=0.0),
            ),
            required=True,
            unique_key="item_id",
            feeds="the catalogue",
        ),
        TableSpec(
            "orders",
            (
                Column("order_id", "id"),
                Column("customer_id", "id"),
                Column("item_id", "id"),
                # Negative: a return (features/returns.py); zero: neither a purchase nor a return.
                Column("quantity", "number", nonzero=True, bound="max_quantity"),
                Column("unit_price", "number", minimum=0.0),
                Column("ts", "timestamp"),
            ),
            required=True,
            feeds="purchases",
            time_column="ts",
        ),
        TableSpec(
            "events",
            (
                Column("session_id", "id"),
                Column("event_type", "event_type"),
                Column("ts", "timestamp"),
                Column("customer_id", "id", required=False, nullable=True),
                Column("item_id", "id", required=False, nullable=True),
            ),
            feeds="browsing signal and session propensity",
            time_column="ts",
        ),
        TableSpec(
            "customers",
            (
                Column("customer_id", "id"),
                Column("email_opt_in", "bool", required=False, default=True),
                Column("created_at", "timestamp", required=False, nullable=True),
            ),
            unique_key="customer_id",
            feeds="the customer base for email picks",
        ),
        TableSpec(
            "customer_aliases",
            (Column("alias_id", "id"), Column("customer_id", "id")),
            unique_key="alias_id",
            feeds="merging duplicate customer ids",
        ),
        TableSpec(
            "email_events",
            (
                Column("customer_id", "id"),
                Column("campaign_id", "id"),
                Column("sent_ts", "timestamp"),
                Column("opened", "bool"),
                Column("clicked", "bool", required=False, default=False),
                Column("opened_ts", "timestamp", required=False, nullable=True),
            ),
            feeds="email open-rate targeting, the open model and each customer's send hour (opened_ts)",
            time_column="sent_ts",
        ),
    )
}
REQUIRED_TABLES: tuple[str, ...] = tuple(name for name, spec in TABLES.items() if spec.required)
TIMED_TABLES: dict[str, str] = {name: spec.time_column for name, spec in TABLES.items() if spec.time_column}
"""Table -> the column of when its rows happened: the tables a time cut filters."""


class ContractConfig(BaseModel):
    """The shop-specific bounds of the contract: part of ``TrainConfig`` (``contract``) and of
    ``shoprec validate`` (``--max-quantity``), so the rule that quarantines a row is the shop's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_quantity: float | None = Field(MAX_QUANTITY, gt=0, description=(
        "Order lines with |quantity| above this are quarantined as implausible; None: no bound. "
        "Negative quantities are returns (features/returns.py), zero is a bad row."))


def check_columns(spec: TableSpec, present: list[str] | tuple[str, ...], location: str) -> None:
    """Raise a :class:`ContractError` naming the table, column and file if a required column is absent."""
    missing = [c for c in spec.required_columns if c not in present]
    if missing:
        found = ", ".join(str(c) for c in present) or "no columns"
        if len(found) > 160:  # a binary or mis-delimited file has one huge "column name"
            found = found[:160] + "..."
        hint = _header_hint(spec, [str(c) for c in present])
        raise ContractError(
            f"{location}: table '{spec.name}' is missing required column"
            f"{'s' if len(missing) > 1 else ''} {', '.join(repr(c) for c in missing)} (found: {found})"
            + (f"; {hint}" if hint else "")
        )


DELIMITERS = {";": "semicolon", "\t": "tab", "|": "pipe"}


def _header_hint(spec: TableSpec, present: list[str]) -> str:
    """What was probably wrong with a header that lacks required columns: another delimiter
    (one column holding them all), or names that differ only in case or surrounding spaces."""
    for delimiter, name in DELIMITERS.items():
        if any(delimiter in column and len(column.split(delimiter)) >= 2 for column in present):
            return f"the file looks {name}-separated: shoprec reads comma-separated CSV"
    expected = {c.lower(): c for c in spec.column_names}
    near = [(column, expected[column.strip().lower()]) for column in present
            if column != expected.get(column.strip().lower(), column) and column.strip().lower() in expected]
    if near:
        shown = ", ".join(f"{given!r} should be {wanted!r}" for given, wanted in near[:6])
        return f"column names must match exactly (lower case, no surrounding spaces): {shown}"
    return ""
