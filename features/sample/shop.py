"""The sample shop's config and result, and the run of every stage (one random stream each),
a block of customers at a time."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from features.errors import UserError
from features.sample.browsing import build_events, build_sessions
from features.sample.catalogue import Catalogue, build_catalogue
from features.sample.customers import build_customers
from features.sample.dirty import dirty_count, dirty_events, dirty_items, dirty_orders
from features.sample.draws import id_width, make_ids
from features.sample.emails import Campaigns, email_frame, plan_campaigns
from features.sample.frames import alias_count, build_aliases, customer_frames, event_frame, order_frame
from features.sample.orders import build_orders
from features.sample.process import MIN_ITEMS, STAGES
from features.sample.triggers import trigger_truth
from features.sample.truth import Planted, planted_truth
from features.table_files import FileFormat, TableFiles


class SampleConfig(BaseModel):
    """Size, seed and window of a sample shop. The window is [end - days, end)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    customers: int = Field(default=5000, ge=10)
    items: int = Field(default=1000, ge=MIN_ITEMS)
    days: int = Field(default=180, ge=14)
    seed: int = Field(default=42, ge=0)
    dirty_share: float = Field(default=0.005, ge=0.0, le=0.2)
    end: str = "2025-06-30"
    """A fixed end keeps the output identical from day to day and never in the future."""

    @field_validator("end")
    @classmethod
    def _parse_end(cls, value: str) -> str:
        try:
            pd.Timestamp(value)
        except ValueError as error:
            raise UserError(f"end must be an ISO 8601 date, not {value!r}") from error
        return value

    @property
    def end_ts(self) -> pd.Timestamp:
        end = pd.Timestamp(self.end)
        return end.tz_localize("UTC") if end.tzinfo is None else end.tz_convert("UTC")

    @property
    def start_ts(self) -> pd.Timestamp:
        return self.end_ts - pd.Timedelta(days=self.days)


@dataclass(frozen=True)
class SampleShop:
    """Contract tables plus the planted truth that generated them (see docs/sample.md)."""

    tables: dict[str, pd.DataFrame]
    truth: dict[str, pd.DataFrame]


BLOCK_CUSTOMERS = 250_000
"""Customers generated at a time. A larger shop is made a block of customers after another,
each block with random streams of its own and the catalogue and campaign calendar shared, so
a million customers take about one block's memory (a few GiB), not the whole shop's. A shop of
up to this many customers is one block: what it was before shops came in blocks."""
SHOP_TRUTH = ("pairs", "categories", "tiers", "items")
"""Truth about the catalogue and the process, given with the first block; every block has its
own ``customers``, ``emails``, ``triggers`` and ``dirty``."""


@dataclass(frozen=True)
class _Start:
    """Where a block's numbers start in the whole shop's: customers, aliases, orders, sessions."""

    customer: int = 0
    alias: int = 0
    order: int = 1
    session: int = 1


def _streams(seed: int, block: int) -> dict[str, np.random.Generator]:
    """Each stage's random stream in ``block``. Block 0's are ``SeedSequence(seed).spawn``'s
    children, the streams a shop has always used; a later block's are further children of
    the same seed, so no two blocks draw the same numbers."""
    first = block * len(STAGES)
    return {stage: np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(first + i,)))
            for i, stage in enumerate(STAGES)}


def _block_sizes(customers: int, block_customers: int) -> list[int]:
    """``customers`` cut into the fewest blocks of at most ``block_customers``, as even as can be."""
    blocks = -(-customers // block_customers)
    base, extra = divmod(customers, blocks)
    return [base + (i < extra) for i in range(blocks)]


def generate_blocks(config: SampleConfig, block_customers: int = BLOCK_CUSTOMERS) -> Iterator[SampleShop]:
    """The shop of docs/sample.md a block of customers at a time (:data:`BLOCK_CUSTOMERS`), each
    block's tables and truth as a :class:`SampleShop`; the first block also holds the ``items``
    table and :data:`SHOP_TRUTH`. Ids are the whole shop's: customers numbered across blocks,
    aliases after every customer, orders and sessions numbered on from the block before.
    Identical output for identical config and block size."""
    sizes = _block_sizes(config.customers, block_customers)
    start_us, end_us = config.start_ts.value // 1000, config.end_ts.value // 1000
    rng = _streams(config.seed, 0)
    catalogue = build_catalogue(rng["catalogue"], config.items)
    campaigns = plan_campaigns(rng["emails"], start_us, end_us)
    width = id_width(config.customers + sum(map(alias_count, sizes)), 6)
    start = _Start()
    for block, n in enumerate(sizes):
        if block:
            rng = _streams(config.seed, block)
        shop, start = _block(config, rng, catalogue, campaigns, n, start, width, first=block == 0)
        yield shop
        del shop  # not held while the next block is drawn


def _block(config: SampleConfig, rng: dict[str, np.random.Generator], catalogue: Catalogue, campaigns: Campaigns,
           n: int, start: _Start, width: int, first: bool) -> tuple[SampleShop, _Start]:
    """One block of ``n`` customers, and where the next block's numbers start."""
    start_us, end_us = config.start_ts.value // 1000, config.end_ts.value // 1000
    customers = build_customers(rng["customers"], n, catalogue, start_us, end_us)
    orders = build_orders(rng["orders"], customers, catalogue, end_us)
    sessions = build_sessions(rng["sessions"], customers, orders, start_us, end_us)
    events = build_events(rng["sessions"], sessions, orders, customers, catalogue)
    aliases = build_aliases(rng["aliases"], n)
    ids = np.concatenate((make_ids("c", start.customer + np.arange(n), width),
                          make_ids("c", config.customers + start.alias + np.arange(len(aliases.owner)), width)))
    order_id_index = aliases.id_index(rng["aliases"], orders.customer)
    session_id_index = np.concatenate((order_id_index,
                                       aliases.id_index(rng["aliases"], sessions.customer[len(order_id_index):])))
    customer_table, alias_table = customer_frames(rng["aliases"], customers, aliases, ids, end_us)

    planted: list[Planted] = []
    share = config.dirty_share
    clean_events = events
    if n_bad := dirty_count(share, len(events.code), 2):
        events, found = dirty_events(rng["dirty"], events, n_bad)
        planted += found
    tables = {
        "items": catalogue.frame,
        "orders": order_frame(rng["orders"], orders, order_id_index, ids, catalogue, start.order),
        "events": event_frame(events, sessions, session_id_index, ids, catalogue, start.session),
        "customers": customer_table,
        "customer_aliases": alias_table,
    }
    tables["email_events"], email_truth = email_frame(rng["emails"], campaigns, customers, orders, ids, end_us)
    if n_bad := dirty_count(share, len(tables["orders"]), 3):
        tables["orders"], found = dirty_orders(rng["dirty"], tables["orders"], n_bad)
        planted += found
    if first and (n_bad := dirty_count(share, config.items, 1)):
        tables["items"], found = dirty_items(rng["dirty"], tables["items"], n_bad)
        planted += found
    truth = planted_truth(catalogue, customers, aliases, ids)
    truth["emails"] = email_truth
    truth["triggers"] = trigger_truth(catalogue, orders, sessions, clean_events, tables["email_events"], ids)
    truth["dirty"] = _dirty_truth(planted)
    if not first:
        del tables["items"]
        truth = {name: frame for name, frame in truth.items() if name not in SHOP_TRUTH}
    after = _Start(start.customer + n, start.alias + len(aliases.owner), start.order + len(orders.ts_us),
                   start.session + len(sessions.start_us))
    return SampleShop(tables=tables, truth=truth), after


def _dirty_truth(planted: list[Planted]) -> pd.DataFrame:
    """The planted bad rows as the truth frame: (table, reason, count)."""
    return pd.DataFrame(planted, columns=["table", "reason", "count"]).astype({"count": "int64"})


def generate_shop(config: SampleConfig, block_customers: int = BLOCK_CUSTOMERS) -> SampleShop:
    """Simulate the shop described in docs/sample.md, whole in memory; identical output for
    identical config. A shop too large to hold is written block by block: :func:`write_sample`."""
    blocks = list(generate_blocks(config, block_customers))
    if len(blocks) == 1:
        return blocks[0]
    tables = {name: pd.concat([b.tables[name] for b in blocks if name in b.tables], ignore_index=True)
              for name in blocks[0].tables}
    truth = {name: pd.concat([b.truth[name] for b in blocks if name in b.truth], ignore_index=True)
             for name in blocks[0].truth}
    truth["dirty"] = _dirty_sums(truth["dirty"])
    truth["triggers"] = truth["triggers"].sort_values(["trigger", "customer_id", "at"], kind="stable",
                                                      ignore_index=True)  # as one block's are
    return SampleShop(tables=tables, truth=truth)


def _dirty_sums(dirty: pd.DataFrame) -> pd.DataFrame:
    """The blocks' planted rows, one count per table and reason."""
    return dirty.groupby(["table", "reason"], sort=False, as_index=False)["count"].sum()


def write_sample(config: SampleConfig, out_dir: str | os.PathLike[str], fmt: FileFormat,
                 block_customers: int = BLOCK_CUSTOMERS, progress: Callable[[str], None] | None = None
                 ) -> dict[str, int]:
    """Generate the shop block by block into ``out_dir`` (one ``<table>.<fmt>`` file per table)
    and its planted truth into ``out_dir/_truth/<name>.csv`` (ignored by the loader; a
    per-customer truth file holds the blocks one after another), holding one block at a time;
    the rows written per table. Every file appears whole or not at all, the tables first."""
    blocks = len(_block_sizes(config.customers, block_customers))
    dirty: list[pd.DataFrame] = []
    with TableFiles(Path(out_dir) / "_truth", "csv") as truth, TableFiles(out_dir, fmt) as tables:
        for number, block in enumerate(generate_blocks(config, block_customers), start=1):
            if progress is not None and blocks > 1:
                progress(f"block {number} of {blocks} generated; writing it")
            tables.append(block.tables)
            truth.append({name: frame for name, frame in block.truth.items() if name != "dirty"})
            dirty.append(block.truth["dirty"])
            del block  # not held while the next block is drawn
        truth.append({"dirty": _dirty_sums(pd.concat(dirty, ignore_index=True))})
    return tables.rows
