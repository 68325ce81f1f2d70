"""The item index (training/retrieval.py): it finds nearly every exact explore candidate, scores
what it returns as the model does, answers a customer alike in any block, and is built once."""

from __future__ import annotations

import numpy as np
import pytest

from features.dataset import build_dataset
from features.loading import ShopData
from training.models import build_model
from training.models.base import InnerProduct, Recommender
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
    assert indexed.finite(items[:40]).all()
    # the row's best is found (or is one of the customer's own items) for nearly every customer
    same_scale = np.isclose(indexed.scale(), DenseExplore(exact).scale(), rtol=1e-4)
    assert same_scale.mean() >= 0.99
    best = indexed.best_new(DEPTH, owned)
    owned_keys = set(zip(owned[0].tolist(), owned[1].tolist(), strict=True))
    assert not any((r, int(i)) in owned_keys for r in range(len(best)) for i in best[r] if i >= 0)


def test_a_customers_candidates_do_not_depend_on_the_block_not_even_beside_a_heavy_buyer(als_and_owned: Fitted
                                                                                       ) -> None:
    """Evaluation, the batch job and a request score a customer in blocks of different sizes and
    company: a block holding a buyer of more items than the search keeps must not change the
    others' answers (a heavy buyer's search is their own)."""
    model, customers, (own_rows, own_items) = als_and_owned
    index = Recording(model.inner_product())
    n_items = len(model.item_factors_)
    heavy = np.arange(0, n_items, 2)[:index.search_depth - DEPTH + 20]  # owns more than a search keeps
    assert len(heavy) > index.search_depth - DEPTH
    block = np.array([customers[0], customers[1], customers[2]])
    first_two = own_rows < 2
    owned = (np.concatenate([own_rows[first_two], np.full(len(heavy), 2)]),
             np.concatenate([own_items[first_two], heavy]))
    together = IndexedExplore(index, block, owned, DEPTH)
    # the two light buyers were searched as deep as ever, the heavy one on their own
    assert sorted(index.calls) == [([block[0], block[1]], index.search_depth), ([block[2]], DEPTH + len(heavy))]
    for row in (0, 1):
        alone_owned = (np.zeros(int((own_rows == row).sum()), dtype=np.int64), own_items[own_rows == row])
        alone = IndexedExplore(index, block[row:row + 1], alone_owned, DEPTH)
        expected = alone.best_new(DEPTH, alone_owned)[0]
        np.testing.assert_array_equal(together.best_new(DEPTH, owned)[row][:len(expected)], expected)
        assert alone.scale()[0] == together.scale()[row]
    heavy_new = together.best_new(DEPTH, owned)[2]
    assert (heavy_new >= 0).sum() == DEPTH and not np.isin(heavy_new, heavy).any()


class Recording(ItemIndex):
    """An item index that notes who is searched how deep."""

    def __init__(self, product: InnerProduct | None) -> None:
        assert product is not None
        super().__init__(product)
        self.calls: list[tuple[list[int], int]] = []

    def search(self, customers: np.ndarray, k: int) -> np.ndarray:
        self.calls.append((customers.tolist(), k))
        return super().search(customers, k)


def test_an_index_is_built_once_per_model(als_and_owned: Fitted) -> None:
    model = als_and_owned[0]
    n_items = len(model.item_factors_)
    assert item_index(model, n_items, 1) is item_index(model, n_items, 1)


def test_a_saved_index_searches_as_the_built_one_and_must_fit_its_model(als_and_owned: Fitted) -> None:
    model, customers, _ = als_and_owned
    product = model.inner_product()
    assert product is not None
    built = ItemIndex(product)
    restored = ItemIndex(product, saved=built.serialized())
    np.testing.assert_array_equal(restored.search(customers, DEPTH), built.search(customers, DEPTH))
    narrower = InnerProduct(product.user[:, :-1], product.item[:, :-1], None, None)  # another model's vectors
    with pytest.raises(ValueError, match="saved item index holds"):
        ItemIndex(narrower, saved=built.serialized())


def test_lightfms_inner_product_with_its_biases_is_its_score(shop: ShopData) -> None:
    dataset = build_dataset(shop)
    model = build_model("lightfm", {"epochs": 2}).fit(dataset)
    customers = np.arange(50)
    exact = model.score(customers, dataset.interactions[customers])
    owned = rows_of(dataset.purchases.tocsr(), customers)[:2]
    indexed = IndexedExplore(ItemIndex(model.inner_product()), customers, owned, DEPTH)
    rows, items = np.repeat(np.arange(50), 40), np.tile(np.arange(40) * 7 % exact.shape[1], 50)
    np.testing.assert_allclose(indexed.at(rows, items), exact[rows, items], rtol=1e-4, atol=1e-5)
    found = indexed.best_new(DEPTH, owned)
    truth = DenseExplore(np.asarray(exact, dtype=np.float32)).best_new(DEPTH, owned)
    assert np.mean([np.isin(truth[r], found[r]).mean() for r in range(50)]) >= 0.9  # biases searched too


def test_an_index_only_from_the_configured_size_and_only_for_an_inner_product(als_and_owned: Fitted,
                                                                            shop: ShopData) -> None:
    model = als_and_owned[0]
    n_items = len(model.item_factors_)
    assert item_index(model, n_items, None) is None
    assert item_index(model, n_items, n_items + 1) is None
    assert isinstance(item_index(model, n_items, n_items), ItemIndex)
    assert item_index(build_model("popularity").fit(build_dataset(shop)), n_items, 1) is None
