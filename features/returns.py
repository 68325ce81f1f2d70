"""Returns: order lines with a negative quantity take back units the customer bought.

Real order exports carry returns and cancellations as negative quantities, often on an order
id of their own (``C536379`` against invoice ``536379``). They are not dirt: a returned TV is
not a TV the customer kept, so it must not count as a purchase in the interaction matrix,
the profiles (spend, price band) or the durable rules. :func:`net_returns` applies each
return to the same customer's purchases of the same item made at or before it, the most
recent first (the purchase a return most likely refers to): a purchase line whose units are
all returned is cancelled (dropped), one partly returned keeps the units that were kept.
Units returned with no such purchase (bought before the export began) cancel nothing and
are counted.

Every line is accounted for: the load report's ``rows_returned`` (return lines, never
loaded as orders) and ``rows_cancelled`` (purchase lines fully returned) join ``loaded``,
``quarantined`` and ``merged`` in ``rows in``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class ReturnsReport:
    """What the returns did to the orders table."""

    return_lines: int = 0
    returned_units: float = 0.0
    cancelled_lines: int = 0
    """Purchase lines whose every unit was returned: dropped."""
    reduced_lines: int = 0
    """Purchase lines with some units returned: kept with the units that were kept."""
    unmatched_lines: int = 0
    """Return lines with units left over: no earlier purchase of the item by the customer to take them from."""
    unmatched_units: float = 0.0

    def to_dict(self) -> dict[str, float | int]:
        return dict(vars(self))


def net_returns(orders: pd.DataFrame) -> tuple[pd.DataFrame, ReturnsReport]:
    """Orders with returns applied: only purchase lines left, quantities net of what came back.

    ``orders`` holds validated lines (quantity never 0, customer ids already merged). Returns
    the purchase lines (original order and index labels reset), minus cancelled ones, and the report.
    """
    quantity = orders["quantity"].to_numpy(dtype=np.float64)
    is_return = quantity < 0
    if not is_return.any():
        return orders, ReturnsReport()
    kept_quantity = np.where(is_return, 0.0, quantity)
    key = pd.MultiIndex.from_arrays([orders["customer_id"].to_numpy(dtype=object),
                                     orders["item_id"].to_numpy(dtype=object)])
    group = pd.factorize(key)[0]
    returned_groups = np.unique(group[is_return])
    involved = np.flatnonzero(np.isin(group, returned_groups))
    # Within each (customer, item): purchases and returns in time order; at the same instant the
    # purchase comes first (a cancellation stamped with its own invoice's second).
    ts = orders["ts"].dt.tz_convert(None).to_numpy()[involved]  # datetime64, not a Timestamp object per line
    order = np.lexsort((is_return[involved], ts, group[involved]))
    rows = involved[order]
    unmatched_lines, unmatched_units = 0, 0.0
    bounds = np.flatnonzero(np.diff(group[rows])) + 1
    for block in np.split(rows, bounds):
        bought: list[int] = []  # purchase rows seen so far, most recent last
        for row in block.tolist():
            if not is_return[row]:
                bought.append(row)
                continue
            need = -quantity[row]
            while need > 0 and bought:
                last = bought[-1]
                take = min(need, kept_quantity[last])
                kept_quantity[last] -= take
                need -= take
                if kept_quantity[last] <= 0:
                    bought.pop()
            if need > 0:
                unmatched_lines += 1
                unmatched_units += float(need)
    purchase = ~is_return
    cancelled = purchase & (kept_quantity <= 0)
    reduced = purchase & ~cancelled & (kept_quantity < quantity)
    kept = purchase & ~cancelled
    result = orders.loc[kept].copy()
    result["quantity"] = kept_quantity[kept]
    report = ReturnsReport(return_lines=int(is_return.sum()), returned_units=float(-quantity[is_return].sum()),
                           cancelled_lines=int(cancelled.sum()), reduced_lines=int(reduced.sum()),
                           unmatched_lines=unmatched_lines, unmatched_units=unmatched_units)
    return result.reset_index(drop=True), report
