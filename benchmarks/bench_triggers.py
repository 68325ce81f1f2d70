"""``shoprec triggers`` end to end on a sample shop of a given size.

Run: OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_triggers.py [--customers 100000] [--items 10000]

The sample shop (``shoprec sample``: orders, browsing, email campaigns) is generated and written
as Parquet, and a bundle is trained on it with ALS alone (neither is timed); then
:func:`batch.triggers.run_triggers` runs as the command does: load and validate the tables,
load the bundle, find every trigger as of the day after the data ends, write the rows
atomically to Parquet. Printed: each step's seconds (from the run's own clock and around it),
the customers per trigger, the rows, and the process's peak RSS. Figures are recorded in
docs/benchmarks.md with the machine they came from.
"""

from __future__ import annotations

import argparse
import platform
import resource
import tempfile
import time
from pathlib import Path

import pandas as pd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=365)
    args = parser.parse_args()

    from batch.triggers import run_triggers
    from features.loading import load_shop
    from features.sample import SampleConfig, generate_shop
    from features.table_files import write_tables
    from training.pipeline import TrainConfig, build_bundle

    with tempfile.TemporaryDirectory(prefix="bench-triggers-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        sample = generate_shop(SampleConfig(customers=args.customers, items=args.items, days=args.days))
        write_tables(sample.tables, root / "shop", "parquet")
        shop = load_shop(root / "shop")
        build_bundle(shop, TrainConfig(), "als", {"chosen": "als"}).save(root / "bundle")
        today = (shop["orders"]["ts"].max() + pd.Timedelta(days=1)).normalize()
        print(f"set-up (sample, bundle; not timed): {time.perf_counter() - started:.1f} s; "
              f"{len(shop['orders']):,} order lines, {len(shop['events']):,} events, "
              f"{len(shop['email_events']):,} mails")
        del shop, sample
        started = time.perf_counter()
        summary = run_triggers(str(root / "shop"), str(root / "triggers.parquet"), today=today,
                               model=str(root / "bundle"), track=False)
        wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print(f"{args.customers:,} customers x {args.items:,} items, {args.days} days; today {summary['today']}")
    print(f"run_triggers: {wall:.1f} s wall (load, find, write), {summary['rows']:,} rows")
    for name, n in summary["customers"].items():
        print(f"  {name:<24} {n:>9,} customers")
    print(f"peak RSS of the process (set-up included): {peak:,.0f} MiB")


if __name__ == "__main__":
    main()
