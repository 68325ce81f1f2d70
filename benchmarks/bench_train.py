"""Training cost: wall time of each stage of the train job and peak memory, at ~10k / 100k / 1M interactions.

Run: OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_train.py [--sizes 10k,100k,1M]
Prints one table (a column per size, a row per stage) and the figure to watch: our ALS
wrapper's fit time over a raw ``implicit`` ALS fit on the very same matrix with the same
hyper-parameters. Each family's fit is shown next to the estimate the train job's size
budget makes for it (``Recommender.fit_cost``): the 100k shop is one of the two the constants
were set on, the 1M shop an independent check. Figures are recorded in docs/benchmarks.md with the machine they came from.

Each size runs in fresh spawned processes, one that generates and writes the shop and
one that trains on it, so the training process's peak RSS is its own and neither the
generator nor an earlier size inflates it. Every BLAS/OpenMP pool is held to one thread,
as the train job holds its fits, so the timings are single-core and a second core on a
shared machine absorbs other work rather than changing the figures.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import implicit
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

from features.dataset import InteractionConfig, build_dataset
from features.loading import load_shop
from features.sample import SampleConfig, generate_shop
from features.table_files import write_tables
from training.bundle_profiles import build_profiles
from training.models import build_model
from training.models.base import MatrixSize
from training.models.ease import MAX_ITEMS as EASE_MAX_ITEMS
from training.models.factorization import ALSConfig
from training.pipeline import TrainConfig, build_bundle, evaluate_shop

SIZES = {
    "10k": SampleConfig(customers=1_000, items=300, days=90, seed=1),
    "100k": SampleConfig(customers=5_000, items=1_000, days=180, seed=1),
    "1M": SampleConfig(customers=25_000, items=5_000, days=365, seed=1),
}
"""Shops whose order lines plus weighted events land near 10k, 100k and 1M (100k is the demo shop)."""
FAMILIES = ("popularity", "als", "ease", "lightfm", "cooccurrence")
"""The train job's default families plus the popularity fallback (TrainConfig().families)."""
REPEATS = 3
SLOW_FIT_S = 30.0
"""A stage slower than this is timed once: two more runs would add minutes and little precision."""


@dataclass
class Timing:
    seconds: float
    runs: int


@dataclass
class SizeResult:
    """What one size's training process measured; plain data so it crosses the process boundary."""

    size: str
    shop: str
    order_lines: int = 0
    weighted_events: int = 0
    nnz: int = 0
    shape: tuple[int, int] = (0, 0)
    stages: dict[str, Timing] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    estimates: dict[str, float] = field(default_factory=dict)
    """Per ``fit <family>`` stage: the seconds :meth:`Recommender.fit_cost` estimates for it."""
    rss_start_mib: float = 0.0
    peak_rss_mib: float = 0.0

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> SizeResult:
        stages = {name: Timing(**timing) for name, timing in payload.pop("stages").items()}
        return cls(**payload, stages=stages)


def peak_rss_mib() -> float:
    """This process's resident high-water mark in MiB.

    Linux's ``ru_maxrss`` carries the parent's high-water mark across the fork that
    precedes a spawn's exec, so a child would report at least its parent's peak;
    ``VmHWM`` belongs to the process's own address space and starts afresh at exec.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(func: Callable[[], Any], repeats: int = REPEATS) -> tuple[Any, Timing]:
    """Median wall time of up to ``repeats`` runs, and the last run's value for the next stage.

    A first run slower than SLOW_FIT_S ends the series. The previous value is dropped
    before each run so that repeats do not hold two copies and inflate the peak RSS.
    """
    times: list[float] = []
    while len(times) < repeats and (not times or times[0] <= SLOW_FIT_S):
        value = None
        started = time.perf_counter()
        value = func()
        times.append(time.perf_counter() - started)
    return value, Timing(statistics.median(times), len(times))


def raw_als_fit(interactions: sp.csr_matrix, config: ALSConfig) -> AlternatingLeastSquares:
    """What the ALS wrapper calls, without the wrapper: the baseline its overhead is measured against."""
    model = AlternatingLeastSquares(factors=config.factors, regularization=config.regularization,
                                    alpha=config.alpha, iterations=config.iterations,
                                    random_state=config.random_state, calculate_training_loss=False,
                                    num_threads=1)
    model.fit(interactions, show_progress=False)
    return model


def prepare(size: str, folder: str) -> None:
    """Generate the size's shop and write it as Parquet (in its own process: not part of training)."""
    write_tables(generate_shop(SIZES[size]).tables, folder, "parquet")


def train(size: str, folder: str) -> dict[str, Any]:
    """Every stage of the train job on one shop, timed; returns :class:`SizeResult` as a dict."""
    config = SIZES[size]
    result = SizeResult(size, f"{config.customers:,} customers, {config.items:,} items, {config.days} days",
                        rss_start_mib=peak_rss_mib())

    def record(stage: str, timing: Timing) -> None:
        result.stages[stage] = timing
        runs = "" if timing.runs == REPEATS else f" ({timing.runs} run{'s' if timing.runs > 1 else ''})"
        print(f"[{size}] {stage:<32} {timing.seconds:9.3f} s{runs}  peak RSS {peak_rss_mib():,.0f} MiB",
              flush=True)

    with threadpool_limits(limits=1):
        shop, timing = timed(lambda: load_shop(folder))
        record("load + validate (Parquet)", timing)
        dataset, timing = timed(lambda: build_dataset(shop))
        record("build_dataset", timing)
        weights = InteractionConfig().event_weights
        events = shop["events"].dropna(subset=["customer_id", "item_id"])
        result.order_lines = len(shop["orders"])
        result.weighted_events = int((events["event_type"].map(weights).fillna(0.0) > 0).sum())
        result.nnz = dataset.interactions.nnz
        result.shape = dataset.shape
        _, timing = timed(lambda: build_profiles(shop, dataset, float(TrainConfig().split.test_days)))
        record("profiles", timing)

        families = [f for f in FAMILIES if not (f == "ease" and dataset.shape[1] > EASE_MAX_ITEMS)]
        if "ease" not in families:
            result.skipped["fit ease"] = (f"{dataset.shape[1]:,} items > EASE limit {EASE_MAX_ITEMS:,} "
                                          f"(dense items x items inverse)")
        matrix = MatrixSize.of(dataset)
        for family in families:  # what the train job's budget would estimate, next to each fit
            if (estimate := build_model(family).fit_cost(matrix).seconds) > 0:
                result.estimates[f"fit {family}"] = estimate
            if family == "als":
                continue
            _, timing = timed(lambda: build_model(family).fit(dataset))
            record(f"fit {family}", timing)

        # Always three pairs (the figure to watch); wrapper and raw alternate so drift hits both alike.
        als_config = ALSConfig()
        wrapper_times, raw_times = [], []
        for _ in range(REPEATS):
            _, timing = timed(lambda: build_model("als").fit(dataset), repeats=1)
            wrapper_times.append(timing.seconds)
            _, timing = timed(lambda: raw_als_fit(dataset.interactions, als_config), repeats=1)
            raw_times.append(timing.seconds)
        record("fit als", Timing(statistics.median(wrapper_times), REPEATS))
        record("raw implicit ALS fit", Timing(statistics.median(raw_times), REPEATS))

        # The whole choice as the train job makes it: validation windows, every family and
        # baseline refitted per window, the repeat/explore ranker, the diversity cap, the test table.
        config = TrainConfig(families=[f for f in families if f != "popularity"])
        (selection, config), timing = timed(lambda: evaluate_shop(shop, config), repeats=1)
        record("select on validation + test", timing)
        with tempfile.TemporaryDirectory() as tmp:
            _, timing = timed(lambda: build_bundle(shop, config, selection.family, {"chosen": selection.primary_row},
                                                   ranker=selection.ranker, cap=selection.cap)
                              .save(Path(tmp) / "bundle"))
        record(f"bundle build + save ({selection.primary_row})", timing)
    result.peak_rss_mib = peak_rss_mib()
    return asdict(result)


def in_fresh_process(func: Callable[..., Any], *args: str) -> Any:
    """Run ``func`` in a newly spawned interpreter, so its memory high-water mark is its own."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(func, *args).result()


def table(results: list[SizeResult]) -> str:
    """Markdown table: a column per size, a row per fact or stage (``n runs`` marks fewer than REPEATS)."""
    def cell(result: SizeResult, stage: str) -> str:
        if stage in result.skipped:
            return "skipped"
        if stage not in result.stages:
            return ""
        timing = result.stages[stage]
        seconds = f"{timing.seconds:.3f}" if timing.seconds >= 0.0005 else "<0.001"
        return seconds + ("" if timing.runs == REPEATS else f" ({timing.runs} run)")

    def ratio(result: SizeResult) -> str:
        return f"{result.stages['fit als'].seconds / result.stages['raw implicit ALS fit'].seconds:.2f}x"

    rows: list[tuple[str, Callable[[SizeResult], str]]] = [
        ("shop", lambda r: r.shop),
        ("order lines", lambda r: f"{r.order_lines:,}"),
        ("weighted events", lambda r: f"{r.weighted_events:,}"),
        ("interactions (lines + events)", lambda r: f"{r.order_lines + r.weighted_events:,}"),
        ("matrix customers x items", lambda r: f"{r.shape[0]:,} x {r.shape[1]:,}"),
        ("matrix nnz", lambda r: f"{r.nnz:,}"),
    ]
    stages = list(dict.fromkeys(s for r in results for s in [*r.stages, *r.skipped]))
    rows += [(f"{stage} (s)", lambda r, s=stage: cell(r, s)) for stage in stages]
    estimated = list(dict.fromkeys(s for r in results for s in r.estimates))
    rows += [(f"{stage}, budget's estimate (s)", lambda r, s=stage: f"{r.estimates[s]:.3f}" if s in r.estimates else "")
             for stage in estimated]
    rows += [("ALS wrapper / raw implicit", ratio),
             ("RSS after imports", lambda r: f"{r.rss_start_mib:,.0f} MiB"),
             ("peak RSS", lambda r: f"{r.peak_rss_mib:,.0f} MiB")]
    lines = ["| | " + " | ".join(r.size for r in results) + " |",
             "| --- |" + " ---: |" * len(results)]
    lines += [f"| {label} | " + " | ".join(fmt(r) for r in results) + " |" for label, fmt in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=",".join(SIZES), help=f"comma-separated, from {', '.join(SIZES)}")
    args = parser.parse_args()
    sizes = args.sizes.split(",")
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        parser.error(f"unknown sizes {unknown}; choose from {', '.join(SIZES)}")
    # Spawned children read this when they import numpy; threadpool_limits covers pools already loaded.
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}, implicit {implicit.__version__}")
    results = []
    for size in sizes:
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            in_fresh_process(prepare, size, folder)
            print(f"[{size}] {SIZES[size]}: generated and written in {time.perf_counter() - started:.1f} s",
                  flush=True)
            results.append(SizeResult.from_dict(in_fresh_process(train, size, folder)))
    print()
    print(table(results))
    for result in results:
        for stage, reason in result.skipped.items():
            print(f"{result.size}: {stage} skipped: {reason}")
    for result in results:
        wrapper, raw = result.stages["fit als"].seconds, result.stages["raw implicit ALS fit"].seconds
        print(f"{result.size}: ALS wrapper {wrapper:.3f} s vs raw implicit {raw:.3f} s "
              f"-> overhead ratio {wrapper / raw:.2f}x (medians of {REPEATS})")


if __name__ == "__main__":
    main()
