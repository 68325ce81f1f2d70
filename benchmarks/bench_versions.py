"""This version against an earlier one, side by side in one run: training time, /cross_sell,
email picks and the picks job, on the same shop, in fresh processes.

Run: OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_versions.py --ref 5dd3f68 [--data DIR] [--repeats 3]

The earlier version is checked out with ``git worktree`` into a temporary folder and imported
from there (``PYTHONPATH``), with this repository's virtual environment, so both run with the
same libraries on the same machine, alternately (ref, this, ref, this, ...) so that drift on a
shared machine hits both alike. Each measurement is a spawned interpreter:

- **train**: ``run_training(data, TrainConfig(...), register=False)`` (load, evaluate every
  model, fit the propensity models, build and log the bundle), wall seconds; once with each
  version's default families and once with the same explore families for both
  (``--families``), which isolates what the repeat scorer, the baselines and the ranker cost;
- **serving**, on the bundle that run built: the median in-process ``cross_sell`` (cart of
  one in-stock item, a known customer) over ``--calls`` calls, and ``email_picks_block`` for
  1,000 customers (the endpoint's batch and the picks job's scoring step), per customer;
- **picks job**: ``run_picks`` over every customer of the bundle into a Parquet file, customers/s:
  the median of ``JOB_RUNS`` runs after one that warms up (a single run of the demo's 5,000 customers
  lasts a tenth of a second, and a first one pays for imports and caches).

Without ``--data`` the shop is the demo's (``SampleConfig()`` defaults, written once as Parquet).
Figures are recorded in docs/benchmarks.md with the machine they came from.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
from pathlib import Path

from versions import REPO, earlier_version, probe  # benchmarks/versions.py, shared with the other side-by-side script

PROBE = r'''
import json, os, sys, time, tempfile
from pathlib import Path
import numpy as np
os.environ["SHOPREC_HOME"] = tempfile.mkdtemp()
os.environ.pop("MLFLOW_TRACKING_URI", None)
from training.pipeline import TrainConfig, run_training
from serving.recommender import ShopRecommender
try:  # versions before the batch floor (batch/ of this checkout must not leak into an older one)
    from serving.picks import run_picks
    from serving.picks_sinks import FileSink
except ImportError:
    from batch.job import run_picks
    from batch.sinks import FileSink
data, families, calls = sys.argv[1], sys.argv[2], int(sys.argv[3])
JOB_RUNS = 5
config = TrainConfig() if families == "default" else TrainConfig(families=families.split(","))
started = time.perf_counter()
result = run_training(data, config, register=False)
train_s = time.perf_counter() - started
bundle = result.bundle
rec = ShopRecommender(bundle, "bench")
history = np.flatnonzero(np.diff(bundle.interactions.indptr) > 0)
customers = [str(c) for c in bundle.customers.external_ids[history]]
in_stock = [str(i) for i in bundle.items.external_ids[bundle.catalogue["in_stock"].to_numpy(dtype=bool)]]
rng = np.random.default_rng(0)
rec.cross_sell([in_stock[0]], customers[0], 5)
times = []
for n in range(calls):
    cart, who = [in_stock[rng.integers(len(in_stock))]], customers[rng.integers(len(customers))]
    t = time.perf_counter(); rec.cross_sell(cart, who, 5); times.append(time.perf_counter() - t)
block = list(rng.choice(customers, size=min(1000, len(customers)), replace=False))
rec.email_picks_block(block, 10)
t = time.perf_counter(); rec.email_picks_block(block, 10); picks_block_s = time.perf_counter() - t
everyone = np.asarray([str(c) for c in bundle.customers.external_ids], dtype=object)
job_times = []
with tempfile.TemporaryDirectory() as tmp:
    for _ in range(JOB_RUNS + 1):  # the first run warms up (imports, caches): not counted
        with FileSink(Path(tmp) / "picks.parquet") as sink:
            t = time.perf_counter(); run_picks(rec, everyone, 10, sink); job_times.append(time.perf_counter() - t)
job_s = float(np.median(job_times[1:]))
print("RESULT " + json.dumps({"train_s": train_s, "served": str(result.chosen),
                              "cross_sell_ms": 1000 * float(np.median(times)),
                              "email_picks_us_per_customer": 1e6 * picks_block_s / len(block),
                              "picks_customers_per_s": len(everyone) / job_s}))
'''


def measure(checkout: Path, data: str, families: str, calls: int) -> dict[str, float]:
    return probe(checkout, PROBE, [data, families, str(calls)], timeout=7200)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ref", required=True, help="The earlier version: a commit, tag or branch.")
    parser.add_argument("--data", help="A shop folder (default: the demo sample shop, written once).")
    parser.add_argument("--families", default="als,ease,lightfm,cooccurrence",
                        help="Explore families both versions train with in the like-for-like rows.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()
    with earlier_version(args.ref) as (ref, tmp):
        data = args.data
        if data is None:
            from features.sample import SampleConfig, generate_shop
            from features.table_files import write_tables

            data = str(tmp / "shop")
            write_tables(generate_shop(SampleConfig()).tables, data, "parquet")
        results: dict[tuple[str, str], list[dict[str, float]]] = {}
        for _ in range(args.repeats):
            for families in ("default", args.families):
                for name, checkout in (("ref", ref), ("this", REPO)):
                    results.setdefault((name, families), []).append(measure(checkout, data, families, args.calls))
                    print(name, families, results[(name, families)][-1], flush=True)
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; data: {args.data or 'demo sample shop'}; medians of {args.repeats}")
    metrics = ("train_s", "cross_sell_ms", "email_picks_us_per_customer", "picks_customers_per_s")
    print("| families | version | served | " + " | ".join(metrics) + " |")
    print("| --- | --- | --- | " + " | ".join("---:" for _ in metrics) + " |")
    for families in ("default", args.families):
        medians = {}
        for name in ("ref", "this"):
            runs = results[(name, families)]
            medians[name] = {m: statistics.median(r[m] for r in runs) for m in metrics}
            served = runs[-1]["served"]
            print(f"| {families} | {name} ({args.ref if name == 'ref' else 'HEAD'}) | {served} | "
                  + " | ".join(f"{medians[name][m]:,.2f}" for m in metrics) + " |")
        print(f"| {families} | this / ref | | " + " | ".join(
            f"{medians['this'][m] / medians['ref'][m]:.2f}x" for m in metrics) + " |")


if __name__ == "__main__":
    main()
