"""Quality floors on the default sample shop (fixed seed), measured on held-out time windows.

Floors from the training issue: the best model beats popularity by at least 50% relative
NDCG@10 on the test window, and the cross-sell model recovers the planted complementary pairs.
"""

from __future__ import annotations

import numpy as np
import pytest

from features.dataset import build_dataset
from features.loading import ShopData, validate_tables
from features.sample import SampleConfig, SampleShop, generate_shop
from features.sources import RawTable
from training.models import build_model
from training.pipeline import TrainConfig, choose, evaluate_shop


@pytest.fixture(scope="module")
def sample() -> tuple[SampleShop, ShopData]:
    generated = generate_shop(SampleConfig(seed=42))
    shop = validate_tables({k: RawTable(v, k) for k, v in generated.tables.items()}, source="sample")
    return generated, shop


def test_best_model_beats_popularity_by_half(sample: tuple[SampleShop, ShopData]) -> None:
    _, shop = sample
    config = TrainConfig()
    validation, test, split, config = evaluate_shop(shop, config)
    chosen = choose(validation, config)
    ndcg = test["ndcg_at_10"]
    assert len(split.customers) > 500
    assert ndcg[chosen] >= 1.5 * ndcg["popularity"], test.round(4).to_string()


def test_cross_sell_recovers_planted_pairs(sample: tuple[SampleShop, ShopData]) -> None:
    generated, shop = sample
    dataset = build_dataset(shop)
    model = build_model("cooccurrence").fit(dataset)
    pairs = generated.truth["pairs"]
    anchors = dataset.items.to_index(pairs["anchor_item_id"])
    partners = dataset.items.to_index(pairs["partner_item_id"])
    bought = np.asarray(dataset.purchases.sum(axis=0)).ravel()
    observable = bought[anchors] >= 2  # an anchor bought once or never carries no pair signal
    hits = []
    for anchor, partner in zip(anchors[observable], partners[observable], strict=True):
        scores = model.score_items(np.array([anchor]))
        scores[anchor] = -np.inf
        hits.append(partner in np.argsort(-scores)[:5])
    assert observable.sum() >= 100
    assert np.mean(hits) >= 0.85, f"partner in top 5 for {np.mean(hits):.0%} of {observable.sum()} pairs"
