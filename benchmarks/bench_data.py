"""Data throughput: sample generation, writing, and loading (read + validate + alias merge).

Run: OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_data.py [--sizes small,large]
     OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_data.py --load SHOP_FOLDER
Prints one row per (size, step) with seconds, rows and rows/second, and peak RSS (the
process's high-water mark, so cumulative across steps). ``--load`` loads one shop folder and
nothing else, so its peak RSS is the load's own (run it in a fresh process per version to
compare two). Figures are recorded in docs/benchmarks.md with the machine they came from.
"""

from __future__ import annotations

import argparse
import platform
import resource
import tempfile
import time
from pathlib import Path

from features.loading import load_shop
from features.sample import SampleConfig, generate_shop
from features.sources import write_tables

SIZES = {
    "small": SampleConfig(customers=10_000, items=2_000, days=180, seed=1),
    "large": SampleConfig(customers=100_000, items=10_000, days=365, seed=1),
}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(label: str, rows: int | None, func) -> object:
    """Run ``func`` once and print its wall time; ``rows=None`` counts the rows of the shop it returns."""
    started = time.perf_counter()
    value = func()
    seconds = time.perf_counter() - started
    if rows is None:
        rows = sum(len(frame) for frame in value.tables.values())
    print(f"{label:<34} {seconds:8.2f} s {rows:>12,} rows {rows / seconds:>14,.0f} rows/s "
          f"peak RSS {peak_rss_mib():,.0f} MiB", flush=True)
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="small,large")
    parser.add_argument("--load", help="Only load this shop folder (or database URL) and report.")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    if args.load:
        timed(f"load+validate {args.load}", None, lambda: load_shop(args.load))
        return
    for size in args.sizes.split(","):
        config = SIZES[size]
        shop = timed(f"{size}: generate", None, lambda: generate_shop(config))
        total = sum(len(f) for f in shop.tables.values())
        print(f"{size}: {config}  -> " + ", ".join(f"{k} {len(v):,}" for k, v in shop.tables.items()))
        with tempfile.TemporaryDirectory() as tmp:
            for fmt in ("parquet", "csv"):
                folder = Path(tmp) / fmt
                timed(f"{size}: write {fmt}", total, lambda: write_tables(shop.tables, folder, fmt))
                timed(f"{size}: load+validate {fmt}", total, lambda: load_shop(folder))


if __name__ == "__main__":
    main()
