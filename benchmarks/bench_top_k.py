"""The one top-k's two wide-row paths side by side: a whole-row partition against a floor from
a sorted sample of each row's columns (training/top_k.py).

Run: .venv/bin/python benchmarks/bench_top_k.py [--rows 400] [--depth 30] [--repeats 5]

For catalogues of 1,000 to 40,000 items and three kinds of score rows: distinct scores (an
explore model's), mostly zeros (a baseline's sparse scores: own most-bought, repeat) and
mostly -inf (the personal tier after the rules and the positive-score filter), each path's
best of ``--repeats`` on the same matrix, the ratio, and a check that both give the same
columns. ``best_columns`` takes the sampled floor from ``SAMPLED_FROM`` columns on; the
figures say why there. Figures are recorded in docs/benchmarks.md with the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable

import numpy as np

from training.top_k import SAMPLED_FROM, _best_above_sampled_floor, _best_by_partition

WIDTHS = (1_000, 4_096, 10_000, 40_000)


def kinds(rng: np.random.Generator, rows: int, width: int) -> dict[str, np.ndarray]:
    sparse = rng.random((rows, width)) < 0.01
    values = rng.random((rows, width))
    return {"distinct": values.astype(np.float32),
            "mostly zeros": np.where(sparse, values, 0.0).astype(np.float32),
            "mostly -inf": np.where(sparse, values, -np.inf).astype(np.float32)}


def best_ms(func: Callable[[], tuple[np.ndarray, np.ndarray]], repeats: int) -> tuple[float, np.ndarray]:
    times, items = [], np.zeros(0)
    for _ in range(repeats):
        started = time.perf_counter()
        items, _ = func()
        times.append((time.perf_counter() - started) * 1000)
    return min(times), items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=400, help="Rows per matrix (a block of customers).")
    parser.add_argument("--depth", type=int, default=30, help="Best columns wanted per row.")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, numpy {np.__version__}; "
          f"{args.rows} rows, depth {args.depth}, best of {args.repeats}; best_columns samples from "
          f"{SAMPLED_FROM:,} columns")
    print("| items | scores | whole-row partition ms | sampled floor ms | ratio |")
    print("| ---: | --- | ---: | ---: | ---: |")
    rng = np.random.default_rng(0)
    for width in WIDTHS:
        for kind, scores in kinds(rng, args.rows, width).items():
            whole, expected = best_ms(lambda s=scores: _best_by_partition(s, args.depth, None), args.repeats)
            sampled, got = best_ms(lambda s=scores: _best_above_sampled_floor(s, args.depth, None), args.repeats)
            if not np.array_equal(expected, got):
                raise SystemExit(f"the two paths disagree at {width} items, {kind}")
            print(f"| {width:,} | {kind} | {whole:.1f} | {sampled:.1f} | {whole / sampled:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
