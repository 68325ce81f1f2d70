"""Load a shop, then make the test split and the validation windows as training does; the wall
time and peak RSS of each step.

Run: OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_windows.py SHOP

SHOP is a contract folder (``shoprec sample --format parquet --out SHOP``). The steps are the
ones ``shoprec train`` runs before its first fit: :func:`features.loading.load_shop`,
:func:`training.evaluate.time_split` (subsampled to ``split.max_test_customers``) and
:func:`training.selection.prepare_windows`, with the default config. The resident set is
sampled every 50 ms, so a step's peak is its highest sample. Figures are recorded in
docs/benchmarks.md ("Scale") with the machine they came from.
"""

from __future__ import annotations

import argparse
import platform
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import psutil

from features.loading import load_shop
from training.evaluate import time_split
from training.pipeline import TrainConfig
from training.selection import prepare_windows

T = TypeVar("T")
SAMPLE_EVERY_S = 0.05


class PeakRss:
    """The highest resident set sampled since the last :meth:`reset`."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.peak = 0
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        while True:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(SAMPLE_EVERY_S)

    def reset(self) -> None:
        self.peak = self.process.memory_info().rss


def timed(name: str, rss: PeakRss, step: Callable[[], T]) -> T:
    rss.reset()
    started = time.perf_counter()
    result = step()
    print(f"{name:<28} {time.perf_counter() - started:8.1f} s   peak {rss.peak / 2**30:6.2f} GiB", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shop")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, python {platform.python_version()}, {psutil.cpu_count()} CPUs")
    config, rss = TrainConfig(), PeakRss()
    shop = timed("load + validate", rss, lambda: load_shop(args.shop))
    test = timed("test split", rss, lambda: time_split(shop, config.split, config.interactions)
                 .subsample(config.split.max_test_customers))
    windows, _ = timed("windows", rss, lambda: prepare_windows(shop, test, config.split, config.ranking,
                                                               config.interactions))
    print(f"{len(windows)} validation window(s); resident after: {rss.process.memory_info().rss / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
