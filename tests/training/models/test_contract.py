"""The shared contract every recommender passes (after implicit's and RecTools' test mixins).

Known answer: two blocks of customers each buying only from their own block of items.
A model that learns anything recommends in-block items; popularity cannot.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from features.dataset import Dataset, InteractionConfig, build_dataset
from features.loading import validate_tables
from features.sources import RawTable
from training.models import MODELS, build_model, load_model
from training.models.base import Recommender
from training.top_k import capped_top_k

N_CUSTOMERS, N_ITEMS, BLOCK = 40, 20, 10
LEARNING_FAMILIES = ["als", "bpr", "ease", "lightfm", "cooccurrence", "tifu_knn"]
"""Families that learn from other customers: own most-bought and the repeat scorer rank what
the customer bought (excluded here), popularity and recent popularity rank for everyone."""
FAST_PARAMS = {"als": {"factors": 4, "iterations": 15, "regularization": 1.0}, "bpr": {"factors": 8, "iterations": 200},
               "ease": {"l2": 1.0}, "cooccurrence": {"min_support": 1}, "popularity": {},
               "lightfm": {"no_components": 8, "epochs": 20}, "recent_popularity": {}, "own_most_bought": {},
               "tifu_knn": {"neighbours": 10}, "repeat": {}}


def recommend(model: Recommender, dataset: Dataset, k: int, exclude: sp.csr_matrix | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Top k of the model's scores for every customer, ``exclude`` never shown (the one top-k)."""
    customers = np.arange(dataset.shape[0])
    scores = np.array(model.score(customers, dataset.interactions), dtype=np.float32)
    if exclude is not None:
        coo = exclude.tocoo()
        scores[coo.row, coo.col] = -np.inf
    return capped_top_k(scores, k)


def block_dataset(seed: int = 0) -> Dataset:
    """Customer c in block c % 2 buys 6 random items of that block, one order per item."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(N_CUSTOMERS):
        block = c % 2
        for n, i in enumerate(rng.choice(BLOCK, size=6, replace=False)):
            rows.append((f"o{c}_{n // 2}", f"c{c:02d}", f"i{block * BLOCK + i:02d}"))
    orders = pd.DataFrame(rows, columns=["order_id", "customer_id", "item_id"])
    orders["quantity"], orders["unit_price"] = 1.0, 5.0
    orders["ts"] = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(np.arange(len(orders)), unit="h")
    items = pd.DataFrame({"item_id": [f"i{i:02d}" for i in range(N_ITEMS)], "category": "x", "price": 5.0})
    shop = validate_tables({"items": RawTable(items, "items"), "orders": RawTable(orders, "orders")}, source="test")
    return build_dataset(shop, InteractionConfig(half_life_days=None))


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return block_dataset()


def fitted(family: str, dataset: Dataset):
    return build_model(family, FAST_PARAMS[family]).fit(dataset)


@pytest.mark.parametrize("family", LEARNING_FAMILIES)
def test_known_answer_blocks(family: str, dataset: Dataset) -> None:
    items, _ = recommend(fitted(family, dataset), dataset, 4, exclude=dataset.purchases)
    block_of_customer = np.array([int(c[1:]) % 2 for c in dataset.customers.external_ids])
    block_of_item = np.array([int(i[1:]) // BLOCK for i in dataset.items.external_ids])
    in_block = block_of_item[items] == block_of_customer[:, None]
    assert in_block.mean() >= 0.95, f"{family}: only {in_block.mean():.0%} in-block"


def test_popularity_ignores_the_customer(dataset: Dataset) -> None:
    items, _ = recommend(fitted("popularity", dataset), dataset, 4)
    assert (items == items[0]).all()


@pytest.mark.parametrize("family", list(MODELS))
def test_save_load_round_trip_gives_identical_recommendations(family: str, dataset: Dataset, tmp_path: Path) -> None:
    model = fitted(family, dataset)
    model.save(tmp_path / family)
    again = load_model(tmp_path / family)
    assert type(again) is type(model) and again.config == model.config
    a_items, a_scores = recommend(model, dataset, 5, dataset.purchases)
    b_items, b_scores = recommend(again, dataset, 5, dataset.purchases)
    np.testing.assert_array_equal(a_items, b_items)
    np.testing.assert_array_equal(a_scores, b_scores)


@pytest.mark.parametrize("family", ["als", "bpr", "lightfm"])  # lightfm: deterministic with num_threads=1
def test_same_seed_same_recommendations(family: str, dataset: Dataset) -> None:
    first = recommend(fitted(family, dataset), dataset, 5)[0]
    second = recommend(fitted(family, dataset), dataset, 5)[0]
    np.testing.assert_array_equal(first, second)
    other = build_model(family, {**FAST_PARAMS[family], "random_state": 7}).fit(dataset)
    assert not np.array_equal(first, recommend(other, dataset, 5)[0])


@pytest.mark.parametrize("family", list(MODELS))
def test_excluded_items_never_recommended(family: str, dataset: Dataset) -> None:
    items, _ = recommend(fitted(family, dataset), dataset, 5, dataset.purchases)
    bought = dataset.purchases.toarray() > 0
    picked = items.ravel() >= 0
    assert not bought[np.repeat(np.arange(N_CUSTOMERS), 5)[picked], items.ravel()[picked]].any()


def test_unknown_hyper_parameter_is_an_error() -> None:
    with pytest.raises(ValueError, match="factor"):
        build_model("als", {"factor": 10})
    with pytest.raises(ValueError, match="unknown model family"):
        build_model("svd")


@pytest.mark.parametrize("family", list(MODELS))
def test_config_round_trips_through_logged_params(family: str) -> None:
    model = build_model(family, FAST_PARAMS[family])
    again = build_model(family, model.config.model_dump())
    assert again.config == model.config


FOLDING_FAMILIES = ["als", "ease", "cooccurrence"]


@pytest.mark.parametrize("family", LEARNING_FAMILIES)
def test_a_new_visitor_folds_in_from_touched_items(family: str, dataset: Dataset) -> None:
    """A visitor the model never saw, with three block-1 items, gets block-1 items; families
    that cannot fold a row in say so with None (the service then uses the item-item model)."""
    touched = np.array([BLOCK + 1, BLOCK + 4, BLOCK + 7])
    visitor = sp.csr_matrix((np.ones(3, dtype=np.float32), (np.zeros(3, dtype=np.int64), touched)),
                            shape=(1, N_ITEMS))
    scores = fitted(family, dataset).score_history(visitor)
    if family not in FOLDING_FAMILIES:
        assert scores is None
        return
    ranked = [i for i in np.argsort(-scores[0], kind="stable") if i not in touched][:4]
    assert all(i >= BLOCK for i in ranked), (family, ranked)


def test_als_fold_in_of_a_fitted_customer_agrees_with_the_fit(dataset: Dataset) -> None:
    """Solving a known customer's row with the item factors fixed lands where ALS put them."""
    model = fitted("als", dataset)
    customers = np.arange(N_CUSTOMERS)
    folded = model.score_history(dataset.interactions[customers])
    fitted_scores = model.score(customers, dataset.interactions[customers])
    gap = np.abs(folded - fitted_scores).max() / np.abs(fitted_scores).max()
    assert gap < 0.05, gap  # the confidence scaling matters: alpha taken as 1 gives a gap of 0.4
