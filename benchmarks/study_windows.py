"""A version's ranking on earlier windows of one shop: more than one test window before a change
is believed (a single 28-day window of a thin shop cannot tell a 5% gain from none).

Run: OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/study_windows.py DIR [--back 0 --back 1 --back 2]
         [--config CONFIG.json]

``DIR`` is a shop folder (``shoprec sample --out DIR``, ``shoprec import completejourney SRC
DIR``). For each ``--back N`` the shop is cut N test windows back, as a training run cuts its
validation windows (``ShopData.before`` the cut-off of the later window's test split,
``split.test_days`` before its last order), and the cut shop is evaluated as a training run
does (``training.pipeline.evaluate_shop``: validation windows sized by customers choose, the
test window after them reports); so ``--back 1`` reports on the window that ``--back 0``
validated on first, and so on.

Printed per cut: the test window's start and customers, then per row (every ranker row, the
chosen row and every baseline, capped and not) its NDCG@k on validation (uncapped, as the choice is
made) and on test; at the end, per cut, the chosen row's test NDCG@k against the strongest
baseline's with the gain and its 95% interval, and both means over the cuts. The script reads only public
entry points, so it can be run against an earlier version's code from a worktree (``cd
WORKTREE && PYTHONPATH=. python /path/to/this/script.py``) to compare the two on the same
windows. Figures are recorded in docs/evaluation.md with the command and machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from features.loading import ShopData, load_shop
from training.pipeline import TrainConfig, evaluate_shop
from training.selection import BASELINES

from study_params import markdown  # benchmarks/study_params.py: the same table format


def cuts(shop: ShopData, test_days: int, backs: list[int]) -> Iterator[tuple[int, ShopData]]:
    """``shop`` cut back N test windows for each N of ``backs``, chained as a run's validation
    windows are: each cut ends where the next-later cut's test window starts."""
    current = shop
    for back in range(max(backs) + 1):
        if back in backs:
            yield back, current
        current = current.before(current["orders"]["ts"].max() - pd.Timedelta(days=test_days))


@dataclasses.dataclass(frozen=True)
class Cut:
    """One cut's chosen row against its strongest baseline on the test window."""

    back: int
    start: str
    customers: int
    chosen: str
    chosen_test: float
    baseline: str
    baseline_test: float
    gain: tuple[float, float, float]
    """Relative gain over the baseline, and its 95% interval."""


def study(shop: ShopData, config: TrainConfig, back: int) -> Cut:
    """One cut: prints its rows' validation and test NDCG@k (every ranker row, the chosen row and
    every baseline); returns the cut's summary (the chosen row against the baseline)."""
    selection, _ = evaluate_shop(shop, config)
    start = selection.test_split.cutoff
    metric, test = config.metric_key, selection.test
    chosen, baseline = selection.chosen, selection.strongest_baseline
    rows = [r for r in test.index if r.startswith("ranker_") and not r.endswith("_no_cap")]
    rows += [r for r in (chosen, *test.index[test.index.str.removesuffix("_no_cap").isin(BASELINES)]) if r not in rows]
    customers = selection.test_split.relevant.shape[0]
    print(f"\n## back {back}: test window from {start:%Y-%m-%d}, {customers:,} customers scored")
    print(markdown(pd.DataFrame({"row": rows, "validation (uncapped)": selection.validation[metric].reindex(
        [r.removesuffix("_no_cap") for r in rows]).to_numpy(), "test": test.loc[rows, metric].to_numpy()})))
    gain = test.loc[chosen, ["gain_vs_baseline", "gain_low", "gain_high"]].to_numpy(dtype=float) \
        if "gain_vs_baseline" in test else [float("nan")] * 3
    return Cut(back, f"{start:%Y-%m-%d}", customers, chosen, float(test.loc[chosen, metric]), baseline,
               float(test.loc[baseline, metric]), (float(gain[0]), float(gain[1]), float(gain[2])))


def summary(cuts: list[Cut]) -> str:
    """The chosen row against the strongest baseline on every cut's test window, and their means."""
    lines = ["| back | test window from | customers | chosen | its test NDCG | strongest baseline | its test NDCG "
             "| gain [95% interval] |", "| ---: | --- | ---: | --- | ---: | --- | ---: | ---: |"]
    for c in cuts:
        lines.append(f"| {c.back} | {c.start} | {c.customers:,} | `{c.chosen}` | {c.chosen_test:.4f} | `{c.baseline}` "
                     f"| {c.baseline_test:.4f} | {c.gain[0]:+.1%} [{c.gain[1]:+.1%}, {c.gain[2]:+.1%}] |")
    chosen = sum(c.chosen_test for c in cuts) / len(cuts)
    baseline = sum(c.baseline_test for c in cuts) / len(cuts)
    gain = f"{chosen / baseline - 1:+.1%}" if baseline > 0 else "n/a"
    lines.append(f"| mean | | | | {chosen:.4f} | | {baseline:.4f} | {gain} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", help="A shop folder or database URL.")
    parser.add_argument("--back", type=int, action="append", help="Test windows to cut off the end (repeatable; "
                                                                      "default 0, 1 and 2).")
    parser.add_argument("--config", type=Path, help="A TrainConfig as JSON (default: the default config).")
    args = parser.parse_args()
    config = TrainConfig(**json.loads(args.config.read_text())) if args.config else TrainConfig()
    shop = load_shop(args.data)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; shop {args.data}; "
          f"families {config.families}")
    studied = [study(cut, config, back) for back, cut in cuts(shop, config.split.test_days, args.back or [0, 1, 2])]
    print("\n## the chosen row against the strongest baseline\n" + summary(studied))


if __name__ == "__main__":
    main()
