"""Figures logged with each run (matplotlib, headless).

Figures are built as bare :class:`~matplotlib.figure.Figure` objects, never through pyplot,
so importing this module does not switch the process's backend: a notebook that imports
the training pipeline keeps showing its own plots inline.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure


def metric_comparison(table: pd.DataFrame, key: str) -> Figure:
    """Bar chart of the primary metric per model on the test window, baseline included."""
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    values = table[key].sort_values()
    colors = ["#999999" if name == "popularity" else "#3b75af" for name in values.index]
    ax.barh(values.index, values.to_numpy(), color=colors)
    ax.set_xlabel(f"{key} (test window)")
    ax.set_title("Models against the popularity baseline")
    for y, v in enumerate(values.to_numpy()):
        ax.text(v, y, f" {v:.3f}", va="center")
    fig.tight_layout()
    return fig


def price_band_histogram(orders: pd.DataFrame) -> Figure:
    """Distribution of each customer's median unit price paid (log scale): the shop's price bands."""
    medians = orders.groupby("customer_id")["unit_price"].median()
    medians = medians[medians > 0]
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    if len(medians):
        bins = np.logspace(np.log10(medians.min()), np.log10(medians.max()) + 1e-9, 40)
        ax.hist(medians, bins=bins.tolist(), color="#3b75af")
        ax.set_xscale("log")
    ax.set_xlabel("median unit price paid per customer")
    ax.set_ylabel("customers")
    fig.tight_layout()
    return fig


def reliability(deciles: dict[str, pd.DataFrame]) -> Figure:
    """Reliability diagram per propensity target: mean predicted vs observed rate by decile."""
    fig = Figure(figsize=(4 * len(deciles), 4))
    axes = fig.subplots(1, len(deciles), squeeze=False)
    for ax, (target, table) in zip(axes[0], deciles.items(), strict=True):
        top = float(max(table["mean_predicted"].max(), table["observed_rate"].max(), 0.05)) * 1.05
        ax.plot([0, top], [0, top], color="#999999", linestyle="--", linewidth=1)
        ax.plot(table["mean_predicted"], table["observed_rate"], marker="o", color="#3b75af")
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_xlabel("mean predicted probability (decile)")
        ax.set_ylabel("observed rate")
        ax.set_title(f"{target} (test window)")
    fig.tight_layout()
    return fig
