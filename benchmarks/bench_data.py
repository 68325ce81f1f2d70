"""Data throughput: sample generation, writing, and loading (read + validate + alias merge).

Run: OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_data.py [--sizes small,large]
     OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_data.py --load SHOP_FOLDER
     OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_data.py --load SHOP_FOLDER --engines local,spark --repeat 3
Prints one row per (size, step) with seconds, rows and rows/second, and peak RSS (the
process's high-water mark, so cumulative across steps). ``--load`` loads one shop folder and
nothing else, so its peak RSS is the load's own (run it in a fresh process per version to
compare two). With ``--engines local,spark`` the engines load it in turn, ``--repeat`` times,
and the median of each is printed with their ratio; Spark is started (``SPARK_MASTER``, else
``local[2]``) before the first load and not counted, and its JVM is not in the peak RSS.
Figures are recorded in docs/benchmarks.md and docs/spark.md with the machine they came from.
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

from features.loading import load_shop
from features.sample import SampleConfig, generate_shop
from features.table_files import write_tables

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


class StageClock:
    """A progress callback that prints how long the stage before each line took."""

    def __init__(self) -> None:
        self.last, self.stage = time.perf_counter(), "(start)"

    def __call__(self, text: str) -> None:
        now = time.perf_counter()
        print(f"  {now - self.last:7.2f} s  {self.stage}", flush=True)
        self.last, self.stage = now, text

    def done(self, value: object) -> object:
        """Close the last stage and pass the load's result on."""
        self("")
        return value


def compare_engines(folder: str, engines: list[str], repeat: int) -> None:
    """Each engine loads ``folder`` in turn; medians side by side."""
    spark = None
    if "spark" in engines:
        from features.spark_loading import load_shop_spark
        from features.spark_session import spark_session

        started = time.perf_counter()
        spark = spark_session("shoprec-bench-load")
        print(f"spark master: {spark.conf.get('spark.master')}, session started in "
              f"{time.perf_counter() - started:.1f} s (not in the loads; the first spark load also starts "
              f"its Python workers)")
    seconds: dict[str, list[float]] = {engine: [] for engine in engines}
    for _ in range(repeat):
        for engine in engines:
            started = time.perf_counter()
            stage = StageClock()
            if engine == "spark":
                timed(f"load+validate on spark {folder}", None,
                      lambda: stage.done(load_shop_spark(folder, spark=spark, progress=stage)))  # noqa: B023
            else:
                timed(f"load+validate {folder}", None, lambda: stage.done(load_shop(folder, progress=stage)))  # noqa: B023
            seconds[engine].append(time.perf_counter() - started)
    medians = {engine: statistics.median(values) for engine, values in seconds.items()}
    print("medians: " + ", ".join(f"{engine} {value:.1f} s" for engine, value in medians.items()))
    if len(medians) == 2:
        first, second = engines
        print(f"{second} takes {medians[second] / medians[first]:.2f}x the time of {first}")
    if spark is not None:
        spark.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="small,large")
    parser.add_argument("--load", help="Only load this shop folder (or database URL) and report.")
    parser.add_argument("--engines", default="local", help="With --load: local, spark or local,spark.")
    parser.add_argument("--repeat", type=int, default=1, help="With --load: loads per engine.")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    if args.load:
        compare_engines(args.load, args.engines.split(","), args.repeat)
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
