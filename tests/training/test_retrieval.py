"""The item index (training/retrieval.py): it finds nearly every exact explore candidate, scores
what it returns as the model does, and is built alike in every process."""

from __future__ import annotations

import numpy as np
import pytest

from features.dataset import build_dataset
from features.loading import ShopData
from training.models import build_model
from training.models.base import Recommender
from training.ranking import RankingConfig
from training.retrieval import DenseExplore, IndexedExplore, ItemIndex, index_hits, item_index
from training.top_k import rows_of

DEPTH = 30
Fitted = tuple[Recommender, np.ndarray, tuple[np.ndarray, np.ndarray]]


@pytest.fixture(scope="module")
def als_and_owned(shop: ShopData) -> Fitted:
    """ALS on the sample shop, 600 customers who bought, and what they bought."""
    dataset = build_dataset(shop)
    model = build_model("als").fit(dataset)
    customers = np.flatnonzero(np.diff(dataset.purchases.indptr) > 0)[:600]
    return model, customers, rows_of(dataset.purchases.tocsr(), customers)[:2]


def test_the_index_finds_nearly_every_exact_candidate(als_and_owned: Fitted) -> None:
    model, customers, owned = als_and_owned
    product = model.inner_product()
    assert product is not None
    exact = DenseExplore(np.asarray(model.score(customers, None), dtype=np.float32))
    hits, wanted = index_hits(ItemIndex(product), exact, customers, owned, DEPTH)
    assert wanted == DEPTH * len(customers) and hits >= 0.97 * wanted


def test_what_the_index_returns_is_scored_as_the_model_scores_it(als_and_owned: Fitted) -> None:
    model, customers, owned = als_and_owned
    exact = np.asarray(model.score(customers, None), dtype=np.float32)
    indexed = IndexedExplore(ItemIndex(model.inner_product()), customers, owned, DEPTH)
    rng = np.random.default_rng(0)
    rows, items = rng.integers(0, len(customers), 500), rng.integers(0, exact.shape[1], 500)
    np.testing.assert_allclose(indexed.at(rows, items), exact[rows, items], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(indexed.columns(items[:40]), exact[:, items[:40]], rtol=1e-4, atol=1e-5)
    # the row's best is found (or is one of the customer's own items) for nearly every customer
    same_scale = np.isclose(indexed.scale(), DenseExplore(exact).scale(), rtol=1e-4)
    assert same_scale.mean() >= 0.99
    best = indexed.best_new(DEPTH, owned)
    owned_keys = set(zip(owned[0].tolist(), owned[1].tolist(), strict=True))
    assert not any((r, int(i)) in owned_keys for r in range(len(best)) for i in best[r] if i >= 0)


def test_two_builds_of_one_model_answer_alike(als_and_owned: Fitted) -> None:
    model, customers, owned = als_and_owned
    first = IndexedExplore(ItemIndex(model.inner_product()), customers, owned, DEPTH).best_new(DEPTH, owned)
    second = IndexedExplore(ItemIndex(model.inner_product()), customers, owned, DEPTH).best_new(DEPTH, owned)
    np.testing.assert_array_equal(first, second)


def test_lightfms_inner_product_with_its_biases_is_its_score(shop: ShopData) -> None:
    dataset = build_dataset(shop)
    model = build_model("lightfm", {"epochs": 2}).fit(dataset)
    product = model.inner_product()
    assert product is not None and product.offset is not None
    customers = np.arange(50)
    np.testing.assert_allclose(product.user[customers] @ product.item.T + product.offset[customers, None],
                               model.score(customers, dataset.interactions[customers]), rtol=1e-4, atol=1e-5)


def test_an_index_only_from_the_configured_size_and_only_for_an_inner_product(als_and_owned: Fitted,
                                                                            shop: ShopData) -> None:
    model = als_and_owned[0]
    n_items = len(model.item_factors_)
    assert item_index(model, n_items, None) is None
    assert item_index(model, n_items, n_items + 1) is None
    assert isinstance(item_index(model, n_items, n_items), ItemIndex)
    assert item_index(build_model("popularity").fit(build_dataset(shop)), n_items, 1) is None
    assert RankingConfig().index_from_items == 50_000
