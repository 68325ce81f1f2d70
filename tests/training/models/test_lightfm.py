"""LightFM hybrid: what the shared contract cannot see, item features and cold items."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from lightfm import LightFM

from features.dataset import Dataset, InteractionConfig, build_dataset
from features.loading import validate_tables
from features.sources import RawTable
from training.models import build_model
from training.models.lightfm_model import (LightFMConfig, LightFMModel, item_feature_matrix, price_tier,
                                           weighted_positives)

FAST = {"no_components": 16, "epochs": 30}
CATEGORIES, PER_CATEGORY, N_CUSTOMERS = ("a", "b"), 8, 30
COLD = {"a": "a_new", "b": "b_new"}


def category_shop() -> Dataset:
    """Customer n loves category a (n even) or b (n odd) and buys 5 of its items, nothing else.

    ``a_new`` and ``b_new`` have no orders at all and a brand nobody has bought: only their
    category and price tier can tell the model what they are.
    """
    rng = np.random.default_rng(0)
    item_ids = [f"{c}{i}" for c in CATEGORIES for i in range(PER_CATEGORY)]
    items = pd.DataFrame({
        "item_id": [*item_ids, *COLD.values()],
        "category": [i[0] for i in item_ids] + list(COLD),
        "price": [*np.tile(np.linspace(10, 80, PER_CATEGORY), len(CATEGORIES)), 45.0, 45.0],
        "brand": [f"brand_{i[0]}{int(i[1:]) % 2}" for i in item_ids] + ["newco_a", "newco_b"],
    })
    rows = [(f"o{n}_{j}", f"u{n:02d}", f"{CATEGORIES[n % 2]}{i}")
            for n in range(N_CUSTOMERS) for j, i in enumerate(rng.choice(PER_CATEGORY, 5, replace=False))]
    orders = pd.DataFrame(rows, columns=["order_id", "customer_id", "item_id"])
    orders["quantity"], orders["unit_price"] = 1.0, 10.0
    orders["ts"] = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(np.arange(len(orders)), unit="h")
    shop = validate_tables({"items": RawTable(items, "items"), "orders": RawTable(orders, "orders")}, source="test")
    return build_dataset(shop, InteractionConfig(half_life_days=None))


@pytest.fixture(scope="module")
def shop() -> Dataset:
    return category_shop()


def cold_item_wins(model: LightFMModel, dataset: Dataset) -> np.ndarray:
    """Per customer: does the cold item of their category outscore every item of the other one?"""
    category = dataset.catalogue["category"].to_numpy()
    wins = []
    for n, loved in enumerate(CATEGORIES):
        customers = dataset.customers.to_index([f"u{c:02d}" for c in range(n, N_CUSTOMERS, 2)])
        scores = model.score(customers, dataset.interactions[customers])
        cold = dataset.items.to_index([COLD[loved]])[0]
        wins.append(scores[:, cold] > scores[:, category != loved].max(axis=1))
    return np.concatenate(wins)


def test_cold_item_is_recommended_through_its_category(shop: Dataset) -> None:
    cold = shop.items.to_index(list(COLD.values()))
    assert shop.interactions[:, cold].nnz == 0
    model = build_model("lightfm", FAST).fit(shop)
    assert cold_item_wins(model, shop).all()


def test_without_metadata_cold_items_are_a_coin_toss(shop: Dataset) -> None:
    """The control: with identity features only, the win above disappears for some customers."""
    model = build_model("lightfm", {**FAST, "item_features": ["identity"]}).fit(shop)
    assert not cold_item_wins(model, shop).all()


def test_feature_matrix_shape_and_row_normalisation(shop: Dataset) -> None:
    n_items, n_brands = len(shop.items), shop.catalogue["brand"].nunique()
    features = item_feature_matrix(shop.catalogue, LightFMConfig())
    assert features.shape == (n_items, n_items + len(CATEGORIES) + n_brands + 3)
    assert features.dtype == np.float32
    np.testing.assert_allclose(np.asarray(features.sum(axis=1)).ravel(), 1.0, rtol=1e-6)
    assert (np.diff(features.indptr) == 4).all()
    only_category = item_feature_matrix(shop.catalogue, LightFMConfig(item_features=("category",)))
    assert only_category.shape == (n_items, len(CATEGORIES))


def test_missing_brand_means_no_brand_column_and_identity_weight_shifts_the_row() -> None:
    catalogue = pd.DataFrame({"category": ["x", "x"], "price": [1.0, 2.0], "brand": ["acme", None]})
    features = item_feature_matrix(catalogue, LightFMConfig(identity_weight=3.0)).toarray()
    # columns: identity x2, category x, brand acme, price tiers 0 and 1
    np.testing.assert_allclose(features, [[0.5, 0, 1 / 6, 1 / 6, 1 / 6, 0], [0, 0.6, 0.2, 0, 0, 0.2]], rtol=1e-6)


def test_price_tier_is_a_quantile_within_the_category() -> None:
    catalogue = pd.DataFrame({"category": ["tv"] * 6 + ["ink"] * 3 + ["pen"] * 2,
                              "price": [900, 100, 500, 300, 700, 1100, 30, 10, 20, 2, 2]})
    assert price_tier(catalogue, 3).tolist() == [2, 0, 1, 0, 1, 2, 2, 0, 1, 0, 0]


def test_positives_are_binary_and_weights_keep_the_confidence() -> None:
    interactions = sp.csr_matrix(np.array([[0.5, 0.0, 2.0], [0.0, 0.1, 0.0]], dtype=np.float32))
    positives, weights = weighted_positives(interactions)
    np.testing.assert_array_equal(positives.toarray(), interactions.toarray() > 0)
    np.testing.assert_array_equal(weights.toarray(), interactions.toarray())
    assert np.array_equal(positives.row, weights.row) and np.array_equal(positives.col, weights.col)


def test_scores_equal_lightfm_predictions(shop: Dataset) -> None:
    """Collapsing features into item representations at fit time changes nothing LightFM would say."""
    config = LightFMConfig(**FAST)
    model = LightFMModel(config).fit(shop)
    reference = LightFM(no_components=config.no_components, loss=config.loss, learning_rate=config.learning_rate,
                        item_alpha=config.item_alpha, user_alpha=config.user_alpha,
                        max_sampled=config.max_sampled, random_state=config.random_state)
    has_history = np.asarray(shop.interactions.sum(axis=0)).ravel() > 0
    features = item_feature_matrix(shop.catalogue, config)
    positives, weights = weighted_positives(shop.interactions[:, has_history])
    reference.fit(positives, item_features=features[has_history], sample_weight=weights,
                  epochs=config.epochs, num_threads=1)
    n_customers, n_items = shop.shape
    users, items = np.repeat(np.arange(n_customers), n_items), np.tile(np.arange(n_items), n_customers)
    expected = reference.predict(users, items, item_features=features).reshape(n_customers, n_items)
    np.testing.assert_allclose(model.score(np.arange(n_customers), shop.interactions), expected, rtol=1e-4, atol=1e-5)


def test_feature_kinds_that_give_no_columns_are_an_error(shop: Dataset) -> None:
    no_brands = replace(shop, catalogue=shop.catalogue.assign(brand=None))
    with pytest.raises(ValueError, match="no feature columns"):
        build_model("lightfm", {"item_features": ["brand"]}).fit(no_brands)


def test_no_interactions_is_an_error(shop: Dataset) -> None:
    empty = replace(shop, interactions=sp.csr_matrix(shop.shape, dtype=np.float32))
    with pytest.raises(ValueError, match="no interactions"):
        build_model("lightfm").fit(empty)


@pytest.mark.parametrize("params", [{"item_features": ["identity", "identity"]}, {"item_features": []},
                                    {"item_features": ["colour"]}, {"loss": "warp-kos"}])
def test_bad_config_is_an_error(params: dict) -> None:
    with pytest.raises(ValueError):
        build_model("lightfm", params)
