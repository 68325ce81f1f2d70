"""Exact scoring against an approximate nearest-neighbour index for the ranker's explore
candidates, on a shop's own ALS factors: does an index pay at this catalogue size, and at what recall?

Run: OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_retrieval.py DIR [--customers 2000] [--depth 30]
     OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_retrieval.py --bundle BUNDLE [--customers 2000]

``DIR`` is a shop folder (``shoprec sample --out DIR``, ``shoprec import completejourney SRC DIR``).
ALS is fitted on it with the default config, then for ``--customers`` random customers with
history, each customer's ``--depth`` best items they never bought (what
:func:`training.ranker.new_pairs` takes from the explore model) are found

- **exactly**, as lists are made below ``index_from_items``: the customers' scores over the whole catalogue (one
  matrix product per block of :data:`training.bundle.BLOCK_ROWS`, into a reused buffer) and
  :func:`training.top_k.best_columns` with their own items excluded; per customer in blocks (the
  picks job, evaluation) and for one customer at a time (a request);
- **approximately**, by the ranker's own item index (:class:`training.retrieval.ItemIndex`, faiss's
  HNSW graph over the item factors by inner product, one thread) at several ``efSearch``
  (:data:`training.retrieval.HNSW_SEARCH_DEPTH` is the served one), in the same blocks and alone;
  recall is the share of the exact candidates found.

With ``--bundle`` (a saved bundle folder whose ranker ranks over a factor model), the same
bundle is served both ways, its explore scores from every item and from the item index
(:mod:`training.retrieval`; the index regardless of ``index_from_items``), each loaded afresh:
the lists of ``--customers`` customers in blocks (``Bundle.lists``, the picks job's path), the
service's warm-up (every customer's personal row, made ahead), one cross-sell made per request
(a base too large to make ahead), and how many of the exact lists' items the index's lists hold.
Figures are recorded in docs/benchmarks.md with the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from features.dataset import build_dataset
from features.loading import load_shop
from serving.recommender import ShopRecommender
from training.bundle import BLOCK_ROWS, Bundle
from training.models import build_model
from training.models.base import Recommender
from training.retrieval import INDEX_FILE, IndexedExplore, ItemIndex
from training.top_k import best_columns, rows_of


def exact_candidates(user: np.ndarray, items: np.ndarray, owned: sp.csr_matrix, depth: int,
                     block: int) -> tuple[np.ndarray, float, float]:
    """Each customer's best ``depth`` new items; µs per customer in blocks and for one alone."""
    out = np.full((len(user), depth), -1, dtype=np.int64)
    buffer = np.empty((min(block, len(user)), len(items)), dtype=np.float32)
    started = time.perf_counter()
    for start in range(0, len(user), block):
        rows = slice(start, start + block)
        scores = np.matmul(user[rows], items.T, out=buffer[:len(user[rows])])
        own_rows, own_cols, _ = rows_of(owned, np.arange(start, min(start + block, len(user))))
        top = best_columns(scores, depth, excluded=(own_rows, own_cols))[0]
        out[rows, :top.shape[1]] = top
    blocked = 1e6 * (time.perf_counter() - started) / len(user)
    single = []
    for row in range(min(200, len(user))):
        started = time.perf_counter()
        scores = user[row:row + 1] @ items.T
        own_rows, own_cols, _ = rows_of(owned, np.array([row]))
        best_columns(scores, depth, excluded=(own_rows, own_cols))
        single.append(1e6 * (time.perf_counter() - started))
    return out, blocked, statistics.median(single)


def approximate(model: Recommender, chosen: np.ndarray, owned: sp.csr_matrix, depth: int, exact: np.ndarray,
                efs: tuple[int, ...], block: int) -> list[str]:
    """Table rows for the item index (:class:`training.retrieval.ItemIndex`) searched at each
    ``efSearch``, through the ranker's own :class:`~training.retrieval.IndexedExplore`: build
    seconds, µs per customer in blocks and alone, recall of the exact candidates."""
    product = model.inner_product()
    if product is None:
        return [f"| item index | not run: {model.family} is not an inner product | | | |"]
    started = time.perf_counter()
    index = ItemIndex(product)
    built = time.perf_counter() - started
    lines = []
    for ef in efs:
        index.search_depth = ef
        found, started = [], time.perf_counter()
        for start in range(0, len(chosen), block):
            at = np.arange(start, min(start + block, len(chosen)))
            own_rows, own_items, _ = rows_of(owned, at)
            top = IndexedExplore(index, chosen[at], (own_rows, own_items), depth).best_new(depth, (own_rows, own_items))
            found.append(np.pad(top, ((0, 0), (0, depth - top.shape[1])), constant_values=-1))
        blocked = 1e6 * (time.perf_counter() - started) / len(chosen)
        single = []
        for row in range(min(200, len(chosen))):
            started = time.perf_counter()
            own_rows, own_items, _ = rows_of(owned, np.array([row]))
            IndexedExplore(index, chosen[row:row + 1], (own_rows, own_items), depth).best_new(depth, (own_rows, own_items))
            single.append(1e6 * (time.perf_counter() - started))
        approx = np.vstack(found)
        hits = sum(int(np.isin(exact[r][exact[r] >= 0], approx[r]).sum()) for r in range(len(chosen)))
        recall = hits / max(int((exact >= 0).sum()), 1)
        lines.append(f"| item index, efSearch {ef} | {blocked:.0f} | {statistics.median(single):.0f} | "
                     f"{recall:.4f} | {built:.1f} |")
    return lines


def served(folder: str, index_from_items: int | None, customers: np.ndarray, k: int = 10) -> dict[str, object]:
    """One way of serving the bundle at ``folder``: the load's seconds with the index (read from the
    bundle, or built), µs per customer of its lists in blocks, the warm-up's seconds, the median
    ms of a cross-sell made per request, and the lists."""
    started = time.perf_counter()
    bundle = Bundle.load(Path(folder))  # reads the bundle's graph, if it keeps one
    bundle.metadata["ranking"] = {**bundle.metadata.get("ranking", {}), "index_from_items": index_from_items}
    _ = bundle.personal  # builds the index, if it is wanted and the bundle keeps none
    built = time.perf_counter() - started
    started = time.perf_counter()
    lists = np.vstack([bundle.lists(customers[s:s + bundle.block_rows], k).items
                       for s in range(0, len(customers), bundle.block_rows)])
    blocked = 1e6 * (time.perf_counter() - started) / len(customers)
    cold = ShopRecommender(bundle, "bench")  # not warmed: each request makes its customer's row
    ids, carts = bundle.customers.external_ids, bundle.items.external_ids
    rng = np.random.default_rng(1)
    times = []
    for customer in customers[:200]:
        cart = [str(carts[rng.integers(len(carts))])]
        started = time.perf_counter()
        cold.cross_sell(cart, str(ids[customer]), 5)
        times.append(1e3 * (time.perf_counter() - started))
    started = time.perf_counter()
    ShopRecommender(bundle, "bench").warm()
    return {"build": built, "blocked": blocked, "request": statistics.median(times[20:]),
            "warm": time.perf_counter() - started, "lists": lists}


def compare_served(folder: str, n: int) -> None:
    bundle = Bundle.load(Path(folder))
    warm = np.flatnonzero(bundle.has_history)
    customers = np.sort(np.random.default_rng(0).choice(warm, min(n, len(warm)), replace=False))
    exact, indexed = served(folder, None, customers), served(folder, 1, customers)
    a, b = exact["lists"], indexed["lists"]
    assert isinstance(a, np.ndarray) and isinstance(b, np.ndarray)
    kept = sum(int(np.isin(a[r][a[r] >= 0], b[r]).sum()) for r in range(len(a))) / max(int((a >= 0).sum()), 1)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; bundle {folder} "
          f"({bundle.metadata.get('chosen')}, {len(bundle.customers):,} customers x {len(bundle.items):,} items); "
          f"{len(customers):,} customers")
    print("| explore scores from | bundle load + index s | lists, µs per customer in blocks | cross-sell made per request, "
          "ms | service warm-up s |\n| --- | ---: | ---: | ---: | ---: |")
    for name, row in (("every item", exact), ("the item index", indexed)):
        print(f"| {name} | {row['build']:.1f} | {row['blocked']:.0f} | {row['request']:.2f} | {row['warm']:.1f} |")
    print(f"items of the exact top-10 lists that the index's lists hold: {kept:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="?", help="A shop folder or database URL.")
    parser.add_argument("--bundle", help="A saved bundle folder: serve it with and without the item index.")
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--depth", type=int, default=30)
    parser.add_argument("--ef", type=int, action="append", help="efSearch values (default 64, 128, 256).")
    args = parser.parse_args()
    if args.bundle:
        compare_served(args.bundle, args.customers)
        return
    if not args.data:
        parser.error("a shop folder (DIR) or --bundle is needed")
    dataset = build_dataset(load_shop(args.data))
    started = time.perf_counter()
    model = build_model("als").fit(dataset)
    fitted = time.perf_counter() - started
    warm = np.flatnonzero(np.diff(dataset.interactions.indptr) > 0)
    chosen = np.sort(np.random.default_rng(0).choice(warm, min(args.customers, len(warm)), replace=False))
    user = np.ascontiguousarray(model.user_factors_[chosen])
    items = np.ascontiguousarray(model.item_factors_)
    owned = dataset.purchases[chosen].tocsr()
    exact, blocked, single = exact_candidates(user, items, owned, args.depth, BLOCK_ROWS)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; shop: {args.data} ({dataset.shape[0]:,} customers x {dataset.shape[1]:,} "
          f"items, ALS {items.shape[1]} factors fitted in {fitted:.0f} s); {len(chosen):,} customers, depth "
          f"{args.depth}")
    print("| candidates by | µs per customer, in blocks | µs per request (one customer) | recall of exact | "
          "index build s |\n| --- | ---: | ---: | ---: | ---: |")
    print(f"| exact (product + best_columns) | {blocked:.0f} | {single:.0f} | 1 | |")
    for line in approximate(model, chosen, owned, args.depth, exact, tuple(args.ef or (64, 128, 256)), BLOCK_ROWS):
        print(line)
    print(saved_index(model))


def saved_index(model: Recommender, repeats: int = 3) -> str:
    """What a worker pays for the index: building the graph, or reading the one a bundle keeps
    (:data:`training.retrieval.INDEX_FILE`, written and read as a bundle does); medians."""
    product = model.inner_product()
    if product is None:
        return "saved index: not run (not an inner product)"
    built, read = [], []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / INDEX_FILE
        for _ in range(repeats):
            started = time.perf_counter()
            index = ItemIndex(product)
            built.append(time.perf_counter() - started)
            np.save(path, index.serialized())
            started = time.perf_counter()
            ItemIndex(product, saved=np.load(path))
            read.append(time.perf_counter() - started)
        size = path.stat().st_size / 2**20
    return (f"the index for a worker, median of {repeats}: built in {statistics.median(built):.2f} s, "
            f"read from the bundle's {size:.1f} MiB {INDEX_FILE} in {statistics.median(read):.3f} s")


if __name__ == "__main__":
    main()
