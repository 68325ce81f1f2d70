"""The email-picks batch job end to end, next to the raw limit of the same factors.

Run: OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_picks.py [--customers 10000 100000 1000000]

For each base size, in a fresh spawned process (so peak memory is that size's own): a
synthetic bundle with ``--items`` items and ``--factors`` ALS factors is built and saved
(not timed), then

- **load**: ``Bundle.load`` (checksums included) + building the ``ShopRecommender``;
- **raw limit**: one numpy matrix product + ``argpartition`` per block of the same factors,
  no rules, no I/O: what scoring costs at the very least;
- **job**: :func:`batch.job.run_picks` into a Parquet (or ``--format csv``) file, then the
  atomic rename (or, with ``--sql URL``, a staging table swapped in for ``bench_picks``), as
  ``shoprec picks`` runs it: rules, fallbacks, send decision, summary, writing.

The figure to watch is job / raw (customers per minute): what the rules and the writing
cost on top of the arithmetic. Peak RSS is the process high-water mark reset just before
the job (``/proc/self/clear_refs``), so it is what the job needs on top of the loaded
bundle; "bundle RSS" is the process after loading. Figures are recorded in
docs/benchmarks.md with the machine they came from.

The synthetic shop: 10% of customers without history (fallbacks), 50 categories of which
10 durable (a fifth of the items, never re-bought, the category blocked for a year), 5% of
items out of stock, about 8 interactions and 3 purchases per customer with history, open
rates for 60%; the repeat/explore ranker over the ALS factors (training/ranker.py) with fixed
coefficients of the sizes training learns, and a diversity cap of 3 per category.
"""

from __future__ import annotations

import argparse
import multiprocessing
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

BLOCK = 4096


PARTNERS = 50
"""Random co-occurrence partners per item of the synthetic bundle, for its cross-sells."""


def synthetic_bundle(n_customers: int, n_items: int = 10_000, factors: int = 64, seed: int = 0) -> Any:
    """A bundle with random ALS factors, random co-occurrence partners and the profile tables the
    serving rules read (benchmarks/bench_requests.py serves it too)."""
    from features.dataset import IdMap
    from training.bundle import COOCCURRENCE, POPULARITY, PRIMARY, Bundle
    from training.bundle_profiles import ITEM_SALES, REBUY_CATEGORIES, REBUY_ITEMS
    from training.models.cooccurrence import CooccurrenceModel
    from training.models.factorization import ALSModel
    from training.models.popularity import PopularityModel
    from training.ranker import NEW_FEATURES, OWN_FEATURES, Ranker, Tower
    from training.ranking import RankingConfig

    rng = np.random.default_rng(seed)
    customers = np.array([f"c{i:08d}" for i in range(n_customers)], dtype=object)
    items = np.array([f"i{i:06d}" for i in range(n_items)], dtype=object)
    n_categories, n_durable = 50, 10
    category = rng.integers(0, n_categories, n_items)
    durable = category < n_durable
    catalogue = pd.DataFrame({
        "item_id": items, "category": [f"cat{c:02d}" for c in category],
        "price": np.round(np.exp(rng.normal(3.0, 1.0, n_items)), 2), "in_stock": rng.random(n_items) > 0.05,
        "durable": durable, "repurchase_days": np.where(durable, 365.0, 30.0)})
    warm = rng.random(n_customers) > 0.10
    per_customer = np.where(warm, 8, 0)
    rows = np.repeat(np.arange(n_customers), per_customer)
    cols = rng.integers(0, n_items, len(rows))
    interactions = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n_customers, n_items))
    interactions.sum_duplicates()
    bought = rng.random(len(rows)) < 0.4
    purchases = sp.csr_matrix((np.ones(int(bought.sum()), dtype=np.float32), (rows[bought], cols[bought])),
                              shape=(n_customers, n_items))
    purchases.sum_duplicates()
    als = ALSModel()
    als.user_factors_ = (rng.standard_normal((n_customers, factors)) * 0.3).astype(np.float32)
    als.item_factors_ = (rng.standard_normal((n_items, factors)) * 0.3).astype(np.float32)
    cooccurrence = CooccurrenceModel()
    partners = np.random.default_rng(seed + 1)  # a stream of its own: the rest of the bundle is as it was before
    anchors = np.repeat(np.arange(n_items), PARTNERS)
    partner = partners.integers(0, n_items, len(anchors))
    other = partner != anchors  # an item is not its own partner
    cooccurrence.item_item_ = sp.csr_matrix((partners.random(int(other.sum())).astype(np.float32),
                                             (anchors[other], partner[other])), shape=(n_items, n_items))
    popularity = PopularityModel()
    popularity.item_scores_ = np.asarray(purchases.sum(axis=0)).ravel().astype(np.float32) + 1e-3
    known = np.flatnonzero(warm)
    segments = np.array(["champions", "loyal", "new", "at_risk", "lost"], dtype=object)
    profiles = {
        "customers": pd.DataFrame({
            "customer_id": customers[known], "segment": segments[rng.integers(0, 5, len(known))],
            "price_lo": 5.0, "price_hi": 80.0, "recency_days": rng.uniform(1, 200, len(known))}),
    }
    coo = purchases.tocoo()
    affinity = pd.DataFrame({"customer_id": customers[coo.row], "category": catalogue["category"].to_numpy()[coo.col],
                             "days_since": rng.uniform(0, 400, len(coo.row))})
    profiles["category_affinity"] = affinity.drop_duplicates(["customer_id", "category"])
    rated = np.flatnonzero(rng.random(n_customers) < 0.6)
    sends = rng.integers(1, 20, len(rated))
    opens = rng.binomial(sends, 0.3)
    profiles["email_open_rates"] = pd.DataFrame({"customer_id": customers[rated], "sends": sends, "opens": opens,
                                                 "open_rate": (opens + 1.5) / (sends + 5.0)})
    sales = np.asarray(purchases.sum(axis=0)).ravel()
    profiles[REBUY_ITEMS] = pd.DataFrame({"item_id": items, "rebuy_prob": np.where(durable, 0.0, 0.15),
                                          "interval_days": np.where(durable, np.nan, 30.0),
                                          "wait_days": np.where(durable, 0.0, 15.0), "non_repeat": durable})
    profiles[REBUY_CATEGORIES] = pd.DataFrame({
        "category": [f"cat{c:02d}" for c in range(n_categories)], "rebuy_prob": 0.1, "interval_days": 30.0,
        "non_repeat": np.arange(n_categories) < n_durable,
        "block_days": np.where(np.arange(n_categories) < n_durable, 365.0, 0.0)})
    profiles[ITEM_SALES] = pd.DataFrame({"item_id": items, "sales": sales, "recent_sales": sales // 4})
    since = purchases.copy()
    since.data = rng.uniform(1, 200, len(since.data)).astype(np.float32)
    towers = [Tower(np.zeros(len(names)), np.ones(len(names)), rng.normal(0.0, 0.5, len(names)), -4.0)
              for names in (OWN_FEATURES, NEW_FEATURES)]
    ranking = RankingConfig(diversity_cap=3, horizon_days=28.0).model_dump()
    return Bundle(IdMap(customers), IdMap(items), catalogue, interactions, purchases,
                  {PRIMARY: als, POPULARITY: popularity, COOCCURRENCE: cooccurrence}, {"synthetic": True, "ranking": ranking,
                                                           "as_of": "2025-06-30T00:00:00+00:00"}, profiles,
                  bought=since, ranker=Ranker(*towers))


def _rss_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def raw_limit(user: np.ndarray, item: np.ndarray, k: int, block: int) -> float:
    """Seconds for one matrix product + argpartition per block over every customer."""
    start = time.perf_counter()
    item_t, n_items = item.T, len(item)
    for s in range(0, len(user), block):
        scores = user[s:s + block] @ item_t
        np.argpartition(scores, n_items - k, axis=1)[:, n_items - k:]  # the k best, unsorted
    return time.perf_counter() - start


def measure(n_customers: int, n_items: int, factors: int, k: int, block: int, raw_block: int,
            fmt: str) -> dict[str, Any]:
    from threadpoolctl import threadpool_limits

    from batch.job import run_picks
    from batch.sinks import FileSink, SqlSink
    from serving.recommender import ShopRecommender
    from training.bundle import PRIMARY, Bundle

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "bundle"
        synthetic_bundle(n_customers, n_items, factors).save(folder)
        with threadpool_limits(1, user_api="blas"):
            start = time.perf_counter()
            bundle = Bundle.load(folder)
            recommender = ShopRecommender(bundle, "bench/v1")
            load_s = time.perf_counter() - start
            bundle_rss = _rss_mib("VmRSS")
            model = bundle.models[PRIMARY]
            raw_s = raw_limit(model.user_factors_, model.item_factors_, k, raw_block)
            ids = bundle.customers.external_ids
            _reset_peak()
            start = time.perf_counter()
            with (SqlSink(fmt, "bench_picks") if "://" in fmt else FileSink(Path(tmp) / f"picks.{fmt}")) as sink:
                summary = run_picks(recommender, ids, k, sink, block=block)
            job_s = time.perf_counter() - start
            peak = _rss_mib("VmHWM")
            size = 0 if "://" in fmt else (Path(tmp) / f"picks.{fmt}").stat().st_size
    return {"customers": n_customers, "load_s": load_s, "raw_s": raw_s, "job_s": job_s, "bundle_rss": bundle_rss,
            "peak_rss": peak, "rows": summary.rows_written, "sent": summary.sent,
            "fallback": summary.fallback_customers, "output_mib": size / 2**20}


def main() -> None:
    from features.sources import safe_url
    from training.bundle import BLOCK_ROWS

    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--block", type=int, default=BLOCK, help="customers per score_block call")
    parser.add_argument("--format", choices=["parquet", "csv"], default="parquet", help="the job's output file")
    parser.add_argument("--sql", help="write to this SQLAlchemy URL (table bench_picks) instead of a file")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {multiprocessing.cpu_count()} cores, "
          f"python {platform.python_version()}, numpy {np.__version__}; {args.items:,} items, "
          f"{args.factors} factors, k={args.k}, job blocks of {args.block:,} (scored {BLOCK_ROWS:,} rows at a time), "
          f"raw limit blocks of {BLOCK_ROWS:,}; output {safe_url(args.sql) if args.sql else args.format}")
    print("| customers | load s | raw limit s | raw customers/min | job s | job customers/min | job / raw "
          "| bundle RSS MiB | job peak RSS MiB | rows | sent | with fallbacks | output MiB |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    context = multiprocessing.get_context("spawn")
    for n in args.customers:
        with context.Pool(1) as pool:
            r = pool.apply(measure, (n, args.items, args.factors, args.k, args.block, BLOCK_ROWS,
                                      args.sql or args.format))
        raw_rate, job_rate = n / r["raw_s"] * 60, n / r["job_s"] * 60
        print(f"| {n:,} | {r['load_s']:.2f} | {r['raw_s']:.2f} | {raw_rate:,.0f} | {r['job_s']:.2f} | "
              f"{job_rate:,.0f} | {job_rate / raw_rate:.2f}x | {r['bundle_rss']:,.0f} | {r['peak_rss']:,.0f} | "
              f"{r['rows']:,} | {r['sent']:,} | {r['fallback']:,} | {r['output_mib']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
