"""Choose on validation, report on test: every baseline, every model alone, and the
repeat/explore ranker over each explore model, through one ranking path.

The validation windows (``test_days`` each, before the test window; as many as it takes to
hold ``min_validation_customers``) decide everything: which explore family the ranker sits
on, the ranker's coefficients, and the diversity cap. The ranker's own rows on validation are
cross-fitted (towers fitted on half the customers, scored on the other half), so the choice
never reads a score the ranker was fitted on. The test window only reports, and guards: if
the chosen model does not beat the strongest baseline there, the bundle serves that baseline
instead (:attr:`Selection.fallback_reason` says so).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from features.loading import ShopData
from training.evaluate import (SplitConfig, TimeSplit, Window, customer_metrics, evaluate_model, lists_for,
                               model_lists, pooled_metrics, prepare_window, ranking_metrics, relative_gains, time_split,
                               validation_splits)
from training.models import build_model
from training.models.base import FitBudget, MatrixSize, Recommender
from training.ranker import (MAX_FIT_CUSTOMERS, NEW_FEATURES, OWN_FEATURES, Pairs, Personal, Ranker, fit_tower, gather,
                             new_pairs, own_pairs)
from training.retrieval import DenseExplore
from training.ranking import DIVERSITY_CANDIDATES, DIVERSITY_TOLERANCE, Candidates, RankingConfig, Rules, make_lists

Progress = Callable[[str], None]
BASELINES = ("popularity", "recent_popularity", "own_most_bought", "tifu_knn")
"""What a data scientist runs first; every table has them, the gate compares with the strongest."""
REPEAT = "repeat"
RANKER = "ranker_"
"""Row prefix of the ranker over an explore family: ``ranker_ease``."""
GAIN, GAIN_LOW, GAIN_HIGH = "gain_vs_baseline", "gain_low", "gain_high"
"""Test-table columns: each row's relative gain on the metric over the strongest baseline, and
its 95% interval (paired bootstrap over the test customers, :func:`training.evaluate.relative_gains`)."""
NO_CAP = "_no_cap"
"""Row suffix of a list made without the diversity cap: every row is capped as the shop's lists
are, and the baselines (and the chosen row) are also reported as a data scientist would run
them, uncapped; the strongest of all those baselines is what the gate compares with."""


@dataclass
class TowerData:
    """Both towers' feature rows of one family on one window, with labels (rows: positions in
    the window's evaluated customers)."""

    own: Pairs
    own_labels: np.ndarray
    new: Pairs
    new_labels: np.ndarray


def _concat(parts: list[Pairs]) -> Pairs:
    width = parts[0].features.shape[1] if parts else 0
    if not parts:
        return Pairs(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, width), np.float32))
    return Pairs(np.concatenate([p.rows for p in parts]), np.concatenate([p.items for p in parts]),
                 np.vstack([p.features for p in parts]))


def collect(window: Window, model: Recommender, k: int) -> tuple[dict[str, float], TowerData]:
    """One pass over the window: the model's own metrics and both towers' labelled feature rows."""
    history, relevant = window.bundle.history, window.split.relevant.tocsr()
    own_parts: list[Pairs] = []
    new_parts: list[Pairs] = []
    lists: list[np.ndarray] = []
    # the towers learn from the candidates they will be served: an item index's on a large catalogue
    personal = Personal(model, window.bundle.interactions, history, None, window.bundle.explore_index(model))
    for start, customers in window.blocks():
        raw = np.asarray(model.score(customers, window.bundle.interactions[customers]), dtype=np.float32)
        lists.append(lists_for_block(window, customers, raw, k))
        explore = DenseExplore(raw) if personal.index is None else personal.explore(customers)
        for pairs, out in ((own_pairs(history, customers, explore), own_parts),
                           (new_pairs(history, customers, explore), new_parts)):
            out.append(Pairs(pairs.rows + start, pairs.items, pairs.features))
    own, new = _concat(own_parts), _concat(new_parts)
    metrics = ranking_metrics(np.vstack(lists), window.split)
    return metrics, TowerData(own, gather(relevant, own.rows, own.items) > 0, new,
                              gather(relevant, new.rows, new.items) > 0)


def lists_for_block(window: Window, customers: np.ndarray, scores: np.ndarray, k: int,
                    rules: Rules | None = None) -> np.ndarray:
    return make_lists(rules or window.rules, window.bundle.fallbacks, customers, scores, k).items


def _candidates(data: TowerData, own_prob: np.ndarray, new_prob: np.ndarray
                ) -> Callable[[np.ndarray, int], Candidates]:
    """Block candidates from per-pair probabilities (what :meth:`Ranker.score` would give)."""
    rows = np.concatenate([data.new.rows, data.own.rows])
    items = np.concatenate([data.new.items, data.own.items])
    probs = np.concatenate([new_prob, own_prob])

    def scores(customers: np.ndarray, start: int) -> Candidates:
        inside = (rows >= start) & (rows < start + len(customers))
        return Candidates.from_pairs(len(customers), rows[inside] - start, items[inside], probs[inside])
    return scores


def cross_fitted(window: Window, data: TowerData) -> tuple[np.ndarray, np.ndarray]:
    """Each pair's probability from towers fitted on the other half of the customers."""
    probs = []
    for pairs, labels, names in ((data.own, data.own_labels, OWN_FEATURES), (data.new, data.new_labels, NEW_FEATURES)):
        out = np.zeros(len(labels), dtype=np.float32)
        fold = pairs.rows % 2
        for half in (0, 1):
            train, score = fold != half, fold == half
            tower = fit_tower(Pairs(pairs.rows[train], pairs.items[train], pairs.features[train]), labels[train], names)
            out[score] = tower.probability(pairs.features[score])
        probs.append(out)
    return probs[0], probs[1]


def validate_ranker(window: Window, model: Recommender, k: int
                    ) -> tuple[dict[str, float], dict[str, float], TowerData,
                               Callable[[np.ndarray, int], Candidates]]:
    """A family on one validation window, alone and under the ranker (towers cross-fitted, so no
    customer is scored by towers that saw their labels): both rows' metrics, the towers' feature
    rows (for :func:`fit_final`) and the ranker's block scores (for :func:`choose_cap`)."""
    metrics, data = collect(window, model, k)
    scores = _candidates(data, *cross_fitted(window, data))
    return metrics, ranking_metrics(lists_for(window, scores, k), window.split), data, scores


def fit_final(data: list[TowerData]) -> Ranker:
    """Both towers on every validation pair of every window."""
    own = _concat([d.own for d in data])
    new = _concat([d.new for d in data])
    return Ranker(fit_tower(own, np.concatenate([d.own_labels for d in data]), OWN_FEATURES),
                  fit_tower(new, np.concatenate([d.new_labels for d in data]), NEW_FEATURES))


@dataclass
class Selection:
    validation: pd.DataFrame
    test: pd.DataFrame
    chosen: str
    """The row chosen on validation (``ranker_ease``, ``own_most_bought``, ...)."""
    family: str
    """The model family the served bundle's primary model is."""
    ranker: Ranker | None
    cap: int | None
    strongest_baseline: str
    """The baseline row (capped, or ``_no_cap``) with the best test metric: what the gate compares with."""
    windows: list[dict[str, Any]]
    test_split: TimeSplit
    fallback_reason: str | None = None
    cap_effect: dict[str, float] = field(default_factory=dict)
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    """Explore families that cannot run at this shop's size, with the reason (never fitted)."""

    @property
    def primary_row(self) -> str:
        """The row the served bundle answers like: the chosen one, or the baseline it fell back to."""
        return self.family if self.ranker is None else f"{RANKER}{self.family}"


def _scores_of(personal: Personal) -> Callable[[np.ndarray, int], np.ndarray | Candidates]:
    """``lists_for``'s scorer for a fitted model's personal scores (the block's start unused)."""
    return lambda customers, _start: personal.score(customers)


def family_of(row: str) -> str:
    return row[len(RANKER):] if row.startswith(RANKER) else row


def choose_cap(windows: list[Window], scores: list[Callable[[np.ndarray, int], np.ndarray | Candidates]], metric: str,
               k: int) -> tuple[int | None, dict[str, float]]:
    """The tightest cap of :data:`DIVERSITY_CANDIDATES` whose pooled validation ``metric`` is within
    :data:`DIVERSITY_TOLERANCE` of the uncapped lists' (the loosest when none is)."""
    def measured(cap: int | None) -> float:
        parts = [ranking_metrics(lists_for(w, s, k, w.rules.with_cap(cap)), w.split) for w, s in zip(windows, scores,
                                                                                                     strict=True)]
        return pooled_metrics(parts)[metric]
    uncapped = measured(None)
    effect = {"none": uncapped}
    for cap in sorted(DIVERSITY_CANDIDATES):
        effect[str(cap)] = measured(cap)
        if effect[str(cap)] >= (1.0 - DIVERSITY_TOLERANCE) * uncapped:
            return cap, effect
    return max(DIVERSITY_CANDIDATES), effect


def prepare_windows(shop: ShopData, test_split: TimeSplit, split: SplitConfig, ranking: RankingConfig,
                    interactions: Any = None) -> tuple[list[Window], Window]:
    """The validation windows before ``test_split`` (sized by customers, :func:`validation_splits`;
    at most :data:`MAX_FIT_CUSTOMERS` over all) and the test window, each uncapped (the cap is
    chosen later, on the validation windows)."""
    splits = validation_splits(shop, test_split.cutoff, split, interactions)
    per_window = MAX_FIT_CUSTOMERS // len(splits)
    uncapped = ranking.model_copy(update={"diversity_cap": None})
    recent = float(split.test_days)
    windows = [prepare_window(shop, s.subsample(per_window), uncapped, recent) for s in splits]
    return windows, prepare_window(shop, test_split, uncapped, recent)


def select(shop: ShopData, families: list[str], params: dict[str, dict[str, Any]], split: SplitConfig,
           ranking: RankingConfig, interactions: Any, metric: str, budget: FitBudget | None = None,
           tune: Callable[[Window, list[str], dict[str, dict[str, Any]]], dict[str, dict[str, Any]]] | None = None,
           progress: Progress | None = None) -> Selection:
    """Everything in the module docstring; ``metric`` (``ndcg_at_10``) decides; a family over
    ``budget`` at the shop's size is skipped with its reason."""
    say = progress or (lambda _text: None)
    test_split = time_split(shop, split, interactions).subsample(split.max_test_customers)
    if len(test_split.customers) < test_split.window_customers:
        say(f"test window: {len(test_split.customers):,} of its {test_split.window_customers:,} customers scored "
            f"(split.max_test_customers)")
    size, budget = MatrixSize.of(test_split.train), budget or FitBudget()
    skipped = {family: reason for family in families
               if (reason := build_model(family, params.get(family)).over_budget(size, budget))}
    for family, reason in skipped.items():
        say(f"skipped {family}: {reason}")
    families = [family for family in families if family not in skipped]
    windows, test = prepare_windows(shop, test_split, split, ranking, interactions)
    if tune is not None:
        untuned, params = params, tune(windows[0], families, params)
        for family in families:  # a tuned setting can cost more than the one the budget passed
            if (reason := build_model(family, params.get(family)).over_budget(size, budget)) is not None:
                say(f"tuned {family} kept at its untuned setting: the tuned one is {reason}")
                params = {**params, family: untuned.get(family, {})}

    def fit(family: str, window: Window) -> Recommender:
        say(f"fitting {family} on {window.split.train.shape[0]:,} x {window.split.train.shape[1]:,}")
        return build_model(family, params.get(family)).fit(window.split.train)

    rows: dict[str, dict[str, float]] = {}
    towers: dict[str, list[TowerData]] = {}
    fitted_scores: dict[str, list[Callable[[np.ndarray, int], np.ndarray | Candidates]]] = {}
    for family in [*BASELINES, REPEAT, *families]:
        parts, ranked = [], []
        for window in windows:
            model = fit(family, window)
            if family in families:
                metrics, ranked_metrics, data, scores = validate_ranker(window, model, split.k)
                towers.setdefault(family, []).append(data)
                fitted_scores.setdefault(family, []).append(scores)
                ranked.append(ranked_metrics)
            else:
                metrics = evaluate_model(model, window, split.k)
            parts.append(metrics)
        rows[family] = pooled_metrics(parts)
        if ranked:
            rows[f"{RANKER}{family}"] = pooled_metrics(ranked)
    validation = pd.DataFrame.from_dict(rows, orient="index")
    chosen = str(validation[metric].idxmax())
    chosen_family = family_of(chosen)
    say(f"chosen on validation: {chosen} ({metric} {validation.loc[chosen, metric]:.4f})")

    cap = ranking.diversity_cap
    effect: dict[str, float] = {}
    if cap is None:
        if chosen.startswith(RANKER):
            cap, effect = choose_cap(windows, fitted_scores[chosen_family], metric, split.k)
        else:
            model_scores = [_scores_of(window.personal(fit(chosen_family, window))) for window in windows]
            cap, effect = choose_cap(windows, model_scores, metric, split.k)
        say(f"diversity cap {cap} per list ({metric} on validation by cap: "
            + ", ".join(f"{c} {v:.4f}" for c, v in effect.items()) + ")")

    rankers = {family: fit_final(towers[family]) for family in families}
    capped = test.rules.with_cap(cap)
    results: dict[str, dict[str, float]] = {}
    per_customer: dict[str, np.ndarray] = {}

    def report(row: str, lists: np.ndarray) -> None:
        values = customer_metrics(lists, test.split)
        results[row] = ranking_metrics(lists, test.split, values)
        if metric in values:
            per_customer[row] = values[metric]

    for family in [*BASELINES, REPEAT, *families]:
        model = fit(family, test)
        report(family, model_lists(model, test, split.k, rules=capped))
        if cap is not None and (family in BASELINES or family == chosen):
            report(f"{family}{NO_CAP}", model_lists(model, test, split.k, rules=test.rules))
        if family in families:
            report(f"{RANKER}{family}", model_lists(model, test, split.k, rankers[family], capped))
            if f"{RANKER}{family}" == chosen and cap is not None:
                report(f"{chosen}{NO_CAP}", model_lists(model, test, split.k, rankers[family], test.rules))
    test_table = pd.DataFrame.from_dict(results, orient="index")
    baseline_rows = [row for row in test_table.index if row in BASELINES or row.removesuffix(NO_CAP) in BASELINES]
    strongest = str(test_table.loc[baseline_rows, metric].idxmax())
    if strongest in per_customer:  # every row against the strongest baseline, on the same customers
        gains = relative_gains(per_customer, strongest)
        for column, position in ((GAIN, 0), (GAIN_LOW, 1), (GAIN_HIGH, 2)):
            test_table[column] = [gains[row][position] if row in gains else np.nan for row in test_table.index]
    ranker = rankers.get(chosen_family) if chosen.startswith(RANKER) else None
    family, fallback = chosen_family, None
    if chosen not in BASELINES and test_table.loc[chosen, metric] <= test_table.loc[strongest, metric]:
        family = str(validation.loc[list(BASELINES), metric].idxmax())
        ranker = None
        fallback = (f"{chosen} ({metric} {test_table.loc[chosen, metric]:.4f}) does not beat the strongest baseline "
                    f"{strongest} ({test_table.loc[strongest, metric]:.4f}) on the test window: serving the best "
                    f"baseline on validation, {family}")
        say(fallback)
    if cap is not None and f"{chosen}{NO_CAP}" in test_table.index:
        effect = {**{f"validation_{c}": v for c, v in effect.items()},
                  "test_capped": float(test_table.loc[chosen, metric]),
                  "test_no_cap": float(test_table.loc[f"{chosen}{NO_CAP}", metric])}
    described = [{"cutoff": w.split.cutoff.isoformat(), "customers": len(w.split.customers)} for w in windows]
    return Selection(validation, test_table, chosen, family, ranker, cap, strongest, described, test_split,
                     fallback, effect, params, skipped)
