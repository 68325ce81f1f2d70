"""One request's in-process cost, this version against an earlier one, on the same saved bundle.

Run: OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_requests.py --bundle DIR --ref REV [--repeats 2]
     OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_requests.py --synthetic 100000 100000 --ref REV

``--bundle`` is a saved bundle folder (``Bundle.save``; the ``bundle`` artefact of a train run)
that both versions read (save it with the older one). ``--synthetic CUSTOMERS ITEMS`` saves
benchmarks/bench_picks.py's synthetic bundle of that size with this version instead (random
factors and partners, durable categories blocked for a year after a purchase; no propensity):
a large catalogue without a long training run, for a reference that reads this version's bundles. The earlier version is checked out with
``git worktree`` and imported through ``PYTHONPATH`` with this repository's virtual environment;
the two run alternately, each in a fresh interpreter, so that drift on a shared machine hits
both alike. Each builds the service's recommender as a worker does (warmed where the version
can), then times, over the same random bodies (seeded): ``cross_sell`` (one in-stock item, a
known customer), ``offers``, ``propensity`` (a known customer; where the bundle has propensity models), ``email_picks`` for one and for
100 customers. Medians in ms; the table prints the median over repeats and the ratio.
Figures are recorded in docs/benchmarks.md with the machine they came from.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
from pathlib import Path

from bench_picks import synthetic_bundle
from versions import REPO, earlier_version, probe  # benchmarks/versions.py, shared with the other side-by-side script

PROBE = r'''
import json, statistics, sys, time
from pathlib import Path
import numpy as np
from training.bundle import Bundle
from serving.recommender import ShopRecommender
bundle = Bundle.load(Path(sys.argv[1]))
rec = ShopRecommender(bundle, "bench")
if hasattr(rec, "warm"):
    rec.warm()
history = np.flatnonzero(np.diff(bundle.interactions.indptr) > 0)
customers = [str(c) for c in bundle.customers.external_ids[history]]
in_stock = [str(i) for i in bundle.items.external_ids[bundle.catalogue["in_stock"].to_numpy(dtype=bool)]]
calls = int(sys.argv[2])
cases = {
    "cross_sell": lambda r: rec.cross_sell([in_stock[r.integers(len(in_stock))]], customers[r.integers(len(customers))], 5),
    "offers": lambda r: rec.offers(customers[r.integers(len(customers))], 5),
    "propensity": lambda r: rec.propensity(customers[r.integers(len(customers))], None),
    "email_picks_1": lambda r: rec.email_picks([customers[r.integers(len(customers))]], 10),
    "email_picks_100": lambda r: rec.email_picks(list(r.choice(customers, 100)), 10),
}
if bundle.propensity is None:  # a bundle trained without propensity (or benchmarks/bench_picks.py's synthetic one)
    del cases["propensity"]
out = {}
for name, call in cases.items():
    rng = np.random.default_rng(0)
    for _ in range(20):
        call(rng)
    times = []
    for _ in range(calls if not name.endswith("100") else max(calls // 10, 20)):
        started = time.perf_counter(); call(rng); times.append(time.perf_counter() - started)
    out[name] = 1000 * statistics.median(times)
print("RESULT " + json.dumps(out))
'''


def measure(checkout: Path, bundle: Path, calls: int) -> dict[str, float]:
    return probe(checkout, PROBE, [str(bundle), str(calls)], timeout=3600)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    given = parser.add_mutually_exclusive_group(required=True)
    given.add_argument("--bundle", type=Path, help="A saved bundle folder both versions read.")
    given.add_argument("--synthetic", type=int, nargs=2, metavar=("CUSTOMERS", "ITEMS"),
                       help="Save and serve benchmarks/bench_picks.py's synthetic bundle of this size.")
    parser.add_argument("--ref", required=True, help="The earlier version: a commit, tag or branch.")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--calls", type=int, default=1500)
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {"ref": [], "this": []}
    with earlier_version(args.ref) as (ref, _), tempfile.TemporaryDirectory(prefix="shoprec-bench-") as scratch:
        bundle = args.bundle.resolve() if args.bundle else Path(scratch) / "bundle"
        if args.synthetic:
            synthetic_bundle(*args.synthetic).save(bundle)
        for _ in range(args.repeats):
            for name, checkout in (("ref", ref), ("this", REPO)):
                results[name].append(measure(checkout, bundle, args.calls))
                print(name, results[name][-1], flush=True)
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; bundle {args.bundle or f'synthetic {args.synthetic}'}; medians over {args.repeats} runs of each")
    print(f"| call | {args.ref} ms | HEAD ms | HEAD / {args.ref} |\n| --- | ---: | ---: | ---: |")
    for call in results["ref"][0]:
        before = statistics.median(r[call] for r in results["ref"])
        after = statistics.median(r[call] for r in results["this"])
        print(f"| {call} | {before:.3f} | {after:.3f} | {after / before:.2f}x |")


if __name__ == "__main__":
    main()
