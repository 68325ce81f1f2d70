"""Merge duplicate customer ids before any feature sees them.

Shops end up with several ids for one person (guest checkout, a second account, a CRM
merge). ``customer_aliases`` maps each alias to the id that should survive; chains
(a -> b -> c) resolve to their end, cycles are quarantined because no id can win.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.ids import positions
from features.schema import ROW_COLUMN
from features.validation import quarantine_rows

CUSTOMER_TABLES = ("orders", "events", "customers", "email_events")
MAX_CHAIN = 64


@dataclass
class MergeResult:
    tables: dict[str, pd.DataFrame]
    quarantine: dict[str, pd.DataFrame]
    ids_remapped: dict[str, int]
    customers_merged: int


def resolve_aliases(aliases: pd.DataFrame) -> tuple[pd.Series, np.ndarray]:
    """Map every alias to the end of its chain.

    Returns the mapping (index alias_id, values canonical customer_id) and a mask over
    ``aliases`` rows that sit on a cycle.
    """
    resolved = pd.Series(aliases["customer_id"].to_numpy(), index=aliases["alias_id"].to_numpy())
    for _ in range(MAX_CHAIN):
        step = resolved.map(resolved)
        moved = step.notna()
        if not moved.any():
            break
        resolved = step.where(moved, resolved)
    on_cycle = resolved.isin(resolved.index).to_numpy()
    return resolved[~on_cycle], on_cycle


def merge_aliases(tables: dict[str, pd.DataFrame], aliases: pd.DataFrame, location: str) -> MergeResult:
    """Rewrite customer ids in every table to their canonical id and fold duplicate customer rows.

    ``location`` names the aliases' source in quarantine records.
    """
    resolved, on_cycle = resolve_aliases(aliases)
    out = dict(tables)
    kept_aliases, bad_aliases = quarantine_rows(aliases, on_cycle, "alias_id", "alias chain forms a cycle",
                                                "customer_aliases", location)
    out["customer_aliases"] = kept_aliases
    remapped: dict[str, int] = {}
    aliases_index, canonical = pd.Index(resolved.index), resolved.to_numpy()
    for name in CUSTOMER_TABLES:
        if name not in out:
            continue
        frame = out[name]
        at = positions(aliases_index, frame["customer_id"])  # not Series.map: value by value on Arrow strings
        hit = at >= 0
        remapped[name] = int(hit.sum())
        if remapped[name]:
            ids = frame["customer_id"].copy()
            ids[hit] = canonical[at[hit]]
            out[name] = frame.assign(customer_id=ids)
    merged = 0
    if "customers" in out:
        before = len(out["customers"])
        out["customers"] = _fold_customers(out["customers"])
        merged = before - len(out["customers"])
    return MergeResult(out, {"customer_aliases": bad_aliases}, remapped, merged)


def _fold_customers(customers: pd.DataFrame) -> pd.DataFrame:
    """One row per customer: opted in only if every merged profile opted in; earliest created_at."""
    if not customers["customer_id"].duplicated().any():
        return customers
    grouped = customers.groupby("customer_id", sort=False)
    folded = grouped.agg(email_opt_in=("email_opt_in", "all"), created_at=("created_at", "min"),
                         **{ROW_COLUMN: (ROW_COLUMN, "first")})
    return folded.reset_index()[list(customers.columns)]
