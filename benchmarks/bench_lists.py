"""Where a list's time goes: the stages of ``Bundle.lists`` timed one by one, per customer.

Run: OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_lists.py [--bundle DIR] [--blocks 25]

``--bundle`` is a saved bundle folder (``Bundle.save``; the ``bundle`` artefact of a train
run); without it the demo sample shop is generated and trained on (``register=False``, in a
temporary ``SHOPREC_HOME``) first, which takes about a minute. Then, for ``--blocks`` random
blocks of :data:`training.bundle.BLOCK_ROWS` customers with history, each stage of the one
ranking path is timed on its own, in order, on the previous stage's output:

- **model product**: the explore model's scores, customers x items;
- **new candidates**: :func:`training.ranker.new_pairs` (the model's and popularity's best new items);
- **own candidates**: :func:`training.ranker.own_pairs` (everything the customer bought);
- **towers**: both logistic towers' probabilities;
- **packing**: :meth:`training.ranking.Candidates.from_pairs`;
- **lists**: :func:`training.ranking.make_lists` (rules, cap, fallback fill);
- **reasons**: :meth:`training.bundle.Bundle.reasons`;

and ``Bundle.lists`` whole. Medians over the blocks after the first two, in µs per customer.
Figures are recorded in docs/benchmarks.md with the machine they came from.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from training.bundle import BLOCK_ROWS, Bundle
from training.ranker import new_pairs, own_pairs
from training.retrieval import DenseExplore
from training.ranking import Candidates, make_lists


def demo_bundle(folder: Path) -> Bundle:
    """The demo's bundle: the default sample shop, trained with the default config."""
    os.environ["SHOPREC_HOME"] = str(folder / "home")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    from features.sample import SampleConfig, generate_shop
    from features.table_files import write_tables
    from training.pipeline import TrainConfig, run_training

    write_tables(generate_shop(SampleConfig()).tables, str(folder / "shop"), "parquet")
    return run_training(str(folder / "shop"), TrainConfig(), register=False).bundle


def time_stages(bundle: Bundle, blocks: int, k: int = 10, seed: int = 0) -> dict[str, float]:
    personal = bundle.personal
    if personal.ranker is None:
        raise SystemExit(f"the bundle serves {bundle.metadata.get('chosen')} without the ranker: nothing to split")
    ranker, history = personal.ranker, personal.history
    warm = np.flatnonzero(bundle.has_history)
    rows = min(BLOCK_ROWS, len(warm))
    rng = np.random.default_rng(seed)
    timings: dict[str, list[float]] = {}

    def timed(stage: str, run: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        out = run()
        timings.setdefault(stage, []).append(1e6 * (time.perf_counter() - started) / rows)
        return out

    rules, fallbacks = bundle.rules, bundle.fallbacks
    for _ in range(blocks + 2):
        idx = np.sort(rng.choice(warm, rows, replace=False))
        raw = timed("model product", lambda: np.asarray(personal.model.score(idx, personal.interactions[idx]),
                                                           dtype=np.float32))
        explore = DenseExplore(raw)
        fresh = timed("new candidates", lambda: new_pairs(history, idx, explore, ranker.depth))
        owned = timed("own candidates", lambda: own_pairs(history, idx, explore))
        probs = timed("towers", lambda: (ranker.new.probability(fresh.features), ranker.own.probability(owned.features)))
        candidates = timed("packing", lambda: Candidates.from_pairs(
            rows, np.concatenate([fresh.rows, owned.rows]), np.concatenate([fresh.items, owned.items]),
            np.concatenate(probs)))
        block = timed("lists", lambda: make_lists(rules, fallbacks, idx, candidates, k))
        timed("reasons", lambda: bundle.reasons(idx, block))
        timed("Bundle.lists whole", lambda: bundle.lists(idx, k))
    return {stage: statistics.median(values[2:]) for stage, values in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, help="A saved bundle folder (default: train the demo's).")
    parser.add_argument("--blocks", type=int, default=25)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="shoprec-bench-") as tmp:
        bundle = Bundle.load(args.bundle) if args.bundle else demo_bundle(Path(tmp))
        figures = time_stages(bundle, args.blocks)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; bundle: {args.bundle or 'demo'} ({bundle.metadata.get('chosen')}, "
          f"{len(bundle.customers):,} customers x {len(bundle.items):,} items); medians of {args.blocks} blocks")
    print("| stage | µs per customer |\n| --- | ---: |")
    for stage, value in figures.items():
        print(f"| {stage} | {value:.2f} |")


if __name__ == "__main__":
    main()
