"""Propensity scoring cost: a whole customer base in one call, and one live session per call.

Run: OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_propensity.py [--customers 100000]
Fits the propensity part on the default sample shop (5,000 customers) once per model family,
then scores a customer feature frame resampled to ``--customers`` rows as saving a bundle does
(``score_customers``; the cost depends on rows, not on where they came from) and times single live sessions through
``PropensitySet.live_session`` (features from raw event dicts + calibrated probability).
Figures are recorded in docs/benchmarks.md with the machine they came from.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import pandas as pd

from features.loading import validate_tables
from features.sample import SampleConfig, generate_shop
from features.sources import RawTable
from training.propensity import PropensityConfig, fit_propensity
from training.propensity_set import score_customers


def best_of(fn, repeats: int = 3) -> float:  # noqa: ANN001 - any zero-argument callable
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--live-calls", type=int, default=2000)
    args = parser.parse_args()
    generated = generate_shop(SampleConfig(dirty_share=0))
    shop = validate_tables({k: RawTable(v, k) for k, v in generated.tables.items()}, source="sample")
    events, items = shop["events"], shop["items"]
    sessions = [[{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in g.to_dict("records")]
                for _, g in events.groupby("session_id")]
    rng = np.random.default_rng(0)
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    print("| model family | customers scored | seconds (purchase) | seconds (email open) | live session "
          "median µs | p99 µs | batch sessions/s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for kind in ("logistic", "boosting"):
        part = fit_propensity(shop, PropensityConfig(candidates=[kind]))
        rows = part.customer_features.iloc[rng.integers(0, len(part.customer_features), args.customers)]
        rows = rows.set_axis(pd.Index([f"b{i:07d}" for i in range(len(rows))]))
        purchase = best_of(lambda: score_customers(part.models["customer"], rows))
        email = best_of(lambda: score_customers(part.models["email"], rows))
        part.live_session(sessions[0], items)  # builds the look-up tables once, as the service does at load
        picks = rng.integers(0, len(sessions), args.live_calls)
        latencies = []
        for i in picks:
            start = time.perf_counter()
            part.live_session(sessions[i], items)
            latencies.append(time.perf_counter() - start)
        batch = best_of(lambda: part.sessions(events, items), repeats=2)
        n_sessions = events["session_id"].nunique()
        print(f"| {kind} | {args.customers:,} | {purchase:.3f} | {email:.3f} | "
              f"{statistics.median(latencies) * 1e6:.0f} | {np.percentile(latencies, 99) * 1e6:.0f} | "
              f"{n_sessions / batch:,.0f} |")


if __name__ == "__main__":
    main()
