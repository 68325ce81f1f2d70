"""Propensity's memory, target by target, on one shop: where a training run's peak comes from.

Run: OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_propensity_memory.py SHOP_FOLDER

Loads the shop, then evaluates each propensity target as a training run does (one
``Snapshots`` shared by all, so the events are sorted into sessions once), printing after
each step the process's resident memory and the highest RSS sampled every 0.1 s since the
previous step (a peak shorter than that can be missed). Figures are recorded in
docs/benchmarks.md ("Scale") with the machine they came from.
"""

from __future__ import annotations

import argparse
import threading
import time

import psutil

from features.loading import load_shop
from training.propensity import TARGETS, PropensityConfig, evaluate_target, skip_reason
from training.propensity_rows import Snapshots

SAMPLE_EVERY_S = 0.1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shop", help="A shop folder or database URL.")
    args = parser.parse_args()
    process, peak = psutil.Process(), [0]

    def sample() -> None:
        while True:
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(SAMPLE_EVERY_S)

    threading.Thread(target=sample, daemon=True).start()
    started = time.perf_counter()

    def report(step: str) -> None:
        print(f"{time.perf_counter() - started:7.1f} s  RSS {process.memory_info().rss / 2**30:5.2f} GiB  "
              f"peak since the last step {peak[0] / 2**30:5.2f} GiB  {step}", flush=True)
        peak[0] = 0

    shop = load_shop(args.shop)
    report("loaded")
    snapshots = Snapshots()
    for target in TARGETS:
        if reason := skip_reason(shop, target):
            print(f"{target}: {reason}")
            continue
        evaluate_target(target, shop, PropensityConfig(), snapshots)
        report(f"evaluated {target}")


if __name__ == "__main__":
    main()
