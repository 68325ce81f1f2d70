"""The sample shop's config and result, and the run of every stage (one random stream each)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from features.errors import UserError
from features.sample.browsing import build_events, build_sessions
from features.sample.catalogue import build_catalogue
from features.sample.customers import build_customers
from features.sample.dirty import dirty_count, dirty_events, dirty_items, dirty_orders
from features.sample.draws import id_width, make_ids
from features.sample.emails import email_frame
from features.sample.frames import build_aliases, customer_frames, event_frame, order_frame
from features.sample.orders import build_orders
from features.sample.process import MIN_ITEMS, STAGES
from features.sample.triggers import trigger_truth
from features.sample.truth import Planted, planted_truth


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


def generate_shop(config: SampleConfig) -> SampleShop:
    """Simulate the shop described in docs/sample.md; identical output for identical config."""
    seeds = np.random.SeedSequence(config.seed).spawn(len(STAGES))
    rng = dict(zip(STAGES, map(np.random.default_rng, seeds), strict=True))
    start_us, end_us = config.start_ts.value // 1000, config.end_ts.value // 1000
    catalogue = build_catalogue(rng["catalogue"], config.items)
    customers = build_customers(rng["customers"], config.customers, catalogue, start_us, end_us)
    orders = build_orders(rng["orders"], customers, catalogue, end_us)
    sessions = build_sessions(rng["sessions"], customers, orders, start_us, end_us)
    events = build_events(rng["sessions"], sessions, orders, customers, catalogue)
    aliases = build_aliases(rng["aliases"], config.customers)
    n_ids = config.customers + len(aliases.owner)
    ids = make_ids("c", np.arange(n_ids), id_width(n_ids, 6))
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
        "orders": order_frame(rng["orders"], orders, order_id_index, ids, catalogue),
        "events": event_frame(events, sessions, session_id_index, ids, catalogue),
        "customers": customer_table,
        "customer_aliases": alias_table,
    }
    tables["email_events"], email_truth = email_frame(rng["emails"], customers, orders, ids, start_us, end_us)
    if n_bad := dirty_count(share, len(tables["orders"]), 3):
        tables["orders"], found = dirty_orders(rng["dirty"], tables["orders"], n_bad)
        planted += found
    if n_bad := dirty_count(share, config.items, 1):
        tables["items"], found = dirty_items(rng["dirty"], tables["items"], n_bad)
        planted += found
    truth = planted_truth(catalogue, customers, aliases, ids)
    truth["emails"] = email_truth
    truth["triggers"] = trigger_truth(catalogue, orders, sessions, clean_events, tables["email_events"], ids)
    truth["dirty"] = pd.DataFrame(planted, columns=["table", "reason", "count"]).astype({"count": "int64"})
    return SampleShop(tables=tables, truth=truth)


def write_truth(shop: SampleShop, out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write the planted truth as ``<out_dir>/_truth/<name>.csv`` (ignored by the loader)."""
    folder = Path(out_dir) / "_truth"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, frame in shop.truth.items():
        path = folder / f"{name}.csv"
        frame.to_csv(path, index=False)
        written.append(path)
    return written
