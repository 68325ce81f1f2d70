"""Which hyper-parameters hold up on more than one shop: a grid per explore family, chosen on the
validation windows of every shop at once, reported on each shop's later test window.

Run: OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/study_params.py --data NAME=DIR [--data NAME=DIR ...]
         [--family als --family cooccurrence ...] [--k 10]

Each ``--data`` is a shop folder (``shoprec sample --out DIR``, ``shoprec import completejourney
SRC DIR``). The windows are the training run's (``training.selection.prepare_windows``: the
validation windows sized by customers and the test window after them, default ``SplitConfig``).
For every setting of a family's grid (:data:`GRIDS`, the current default always among them):

- **validation**: the family fitted on each validation window, its NDCG@k alone and under the
  repeat/explore ranker with cross-fitted towers (``training.selection.validate_ranker``): the
  ranker row is what a run serves, so it is what decides;
- **test**: refitted on the test window's history, the towers fitted on every validation window,
  NDCG@k alone and under the ranker.

A setting's validation score on a shop is taken relative to the best setting on that shop; the
robust setting is the one whose worst relative score over the shops is highest (no shop may be
sacrificed to another). The tables print every setting, then the robust choice against the
current default on each shop's test window. Nothing here reads a test window to choose.
Figures are recorded in docs/evaluation.md with the command and machine they came from.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import time
from pathlib import Path
from typing import Any

import pandas as pd

from features.loading import load_shop
from training.evaluate import SplitConfig, evaluate_model, pooled_metrics, time_split
from training.models import build_model
from training.ranking import RankingConfig
from training.selection import fit_final, prepare_windows, validate_ranker

GRIDS: dict[str, dict[str, list[Any]]] = {
    "als": {"factors": [32, 64, 128], "regularization": [0.05, 1.0, 10.0], "alpha": [1.0, 10.0, 40.0]},
    "cooccurrence": {"history_weight": [0.0, 0.1, 0.5], "shrinkage": [0.0, 5.0, 20.0], "min_support": [1, 2]},
    "lightfm": {"no_components": [32, 64], "learning_rate": [0.02, 0.05], "epochs": [15, 30]},
    "ease": {"l2": [50.0, 200.0, 1000.0]},
}
"""Each family's grid: its key hyper-parameters at a few values either side of the default."""


def settings(family: str) -> list[dict[str, Any]]:
    default = build_model(family).config.model_dump()
    grid = GRIDS[family]
    combos = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
    current = {name: default[name] for name in grid}
    return combos if current in combos else [current, *combos]


def study_shop(name: str, folder: str, family: str, k: int) -> pd.DataFrame:
    shop = load_shop(folder)
    split = SplitConfig(k=k)
    windows, test = prepare_windows(shop, time_split(shop, split), split, RankingConfig())
    metric = f"ndcg_at_{k}"
    default = {n: build_model(family).config.model_dump()[n] for n in GRIDS[family]}
    rows = []
    for setting in settings(family):
        started = time.perf_counter()
        alone, ranked, towers = [], [], []
        for window in windows:
            model = build_model(family, setting).fit(window.split.train)
            metrics, ranked_metrics, data, _ = validate_ranker(window, model, k)
            alone.append(metrics)
            ranked.append(ranked_metrics)
            towers.append(data)
        model = build_model(family, setting).fit(test.split.train)
        rows.append({"shop": name, **setting, "default": setting == default,
                     "validation_alone": pooled_metrics(alone)[metric],
                     "validation_ranker": pooled_metrics(ranked)[metric],
                     "test_alone": evaluate_model(model, test, k)[metric],
                     "test_ranker": evaluate_model(model, test, k, fit_final(towers))[metric],
                     "seconds": time.perf_counter() - started})
        print(name, family, setting, {key: round(value, 4) for key, value in rows[-1].items()
                                      if key.startswith(("validation", "test"))}, flush=True)
    return pd.DataFrame(rows)


def robust(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per setting: its validation ranker score over the best on each shop, the worst over shops."""
    relative = table.assign(relative=table["validation_ranker"]
                            / table.groupby("shop")["validation_ranker"].transform("max"))
    worst = relative.groupby(keys)["relative"].min().rename("worst_relative")
    return relative.join(worst, on=keys)


def markdown(table: pd.DataFrame) -> str:
    """A markdown table, floats to four places."""
    def cell(value: Any) -> str:
        return f"{value:.4f}" if isinstance(value, float) else str(value)
    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + " --- |" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", action="append", required=True, help="NAME=DIR, one per shop.")
    parser.add_argument("--family", action="append", choices=sorted(GRIDS), help="Default: every family.")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--out", type=Path, help="Also write every row as CSV here.")
    args = parser.parse_args()
    shops = dict(item.split("=", 1) for item in args.data)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}")
    for family in args.family or sorted(GRIDS):
        keys = list(GRIDS[family])
        table = robust(pd.concat([study_shop(name, folder, family, args.k) for name, folder in shops.items()]), keys)
        if args.out:
            table.to_csv(args.out.with_name(f"{args.out.stem}_{family}.csv"), index=False)
        print(f"\n### {family}: NDCG@{args.k}, every setting\n")
        print(markdown(table.sort_values(["shop", "validation_ranker"], ascending=[True, False])))
        best = table.sort_values(["worst_relative", "default"], ascending=[False, False]).iloc[0]
        chosen = {key: best[key].item() if hasattr(best[key], "item") else best[key] for key in keys}
        picked = table[(table[keys] == pd.Series(chosen)).all(axis=1)].assign(row="robust choice")
        current = table[table["default"]].assign(row="current default")
        print(f"\n### {family}: robust choice {chosen} (worst relative validation {best['worst_relative']:.3f})\n")
        print(markdown(pd.concat([current, picked])[["row", "shop", *keys, "validation_ranker", "test_ranker",
                                                      "test_alone"]]))


if __name__ == "__main__":
    main()
