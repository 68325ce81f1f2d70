"""Would adaptive batching pay on the online endpoints? Where one request's time goes.

Run: OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_batching.py [--family als]

BentoML's adaptive batching (``batchable=True`` with ``max_batch_size``/``max_latency_ms``)
saves work only where many requests can share one call: here, the primary model's
matrix product. This trains the default sample shop's bundle (the demo's), times the
parts of one in-process cross-sell (median of many runs each), and the product for one
customer against the same product for 32 customers at once. If the product is a small
share of the request, batching cannot pay for the wait it adds.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import numpy as np

from features.loading import validate_tables
from features.sample import SampleConfig, generate_shop
from features.sources import RawTable
from serving.recommender import ShopRecommender
from training.pipeline import TrainConfig, build_bundle


def median_us(work: Callable[[], object], runs: int = 300) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return float(np.median(times) * 1e6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="als", help="primary model family (default: als, the demo's champion)")
    args = parser.parse_args()
    sample = generate_shop(SampleConfig())
    shop = validate_tables({k: RawTable(v, k) for k, v in sample.tables.items()}, source="sample")
    bundle = build_bundle(shop, TrainConfig(), args.family, {"chosen": args.family})
    rec = ShopRecommender(bundle, "bench")
    rec.warm()  # as each worker does: a request reads the customer's rows made ahead
    customers = [str(c) for c in bundle.profiles["customers"]["customer_id"][:32]]
    idx = rec._customer_index(customers)
    cart = [str(sample.truth["pairs"]["anchor_item_id"].iloc[0])]
    parts = {
        "whole cross_sell (1 customer, 1 cart item)": lambda: rec.cross_sell(cart, customers[0], 5),
        "  rules mask from the excluded row (_free)": lambda: rec._free(int(idx[0])),
        "  primary model product, 1 customer": lambda: bundle.models["primary"].score(idx[:1], bundle.interactions[idx[:1]]),
        "primary model product, 32 customers at once": lambda: bundle.models["primary"].score(idx, bundle.interactions[idx]),
    }
    print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, "
          f"{args.family}, {rec.n_items} items, {len(bundle.customers)} customers")
    timings = {name: median_us(work) for name, work in parts.items()}
    for name, us in timings.items():
        print(f"{name:48s} {us:9.1f} µs")
    one = timings["  primary model product, 1 customer"]
    shared = timings["primary model product, 32 customers at once"] / 32
    whole = timings["whole cross_sell (1 customer, 1 cart item)"]
    print(f"batching 32 requests would save {one - shared:.1f} µs of {whole:.1f} µs per request "
          f"({(one - shared) / whole:.1%}), before the wait it adds")


if __name__ == "__main__":
    main()
