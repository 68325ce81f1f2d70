"""One ranking path: the lists offline evaluation scores are the lists the pyfunc, the service
and the batch job give, item for item, on the sample shop (a ranker over ALS, a diversity cap),
with the explore candidates from every item's score and from the item index alike."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.loading import validate_tables
from features.sample import SampleShop
from features.sources import RawTable
from batch.job import run_picks
from batch.sinks import FileSink
from serving.recommender import ShopRecommender
from training.bundle import PRIMARY, Bundle
from training.evaluate import SplitConfig, Window, lists_for, prepare_window, time_split
from training.models import build_model
from training.ranker import as_dense
from training.ranking import RankingConfig, make_lists, make_lists_dense
from training.bundle_files import MANIFEST, BundleError, manifest
from training.models.base import InnerProduct
from training.retrieval import INDEX_FILE, ItemIndex
from training.selection import collect, fit_final

K = 10


@pytest.fixture(scope="module", params=[None, 1], ids=["every item scored", "explore from the item index"])
def window_and_bundle(sample_shop: SampleShop, request: pytest.FixtureRequest) -> tuple[Window, Bundle]:
    """A ranker over ALS on the sample's test window; in the second run the explore candidates
    come from the item index (training/retrieval.py), which each path builds for itself."""
    shop = validate_tables({k: RawTable(v, k) for k, v in sample_shop.tables.items()}, source="sample")
    test = time_split(shop, SplitConfig())
    ranking = RankingConfig(index_from_items=request.param)
    validation = prepare_window(shop, time_split(shop.before(test.cutoff), SplitConfig()), ranking, 28.0)
    ranker = fit_final([collect(validation, build_model("als").fit(validation.split.train), K)[1]])
    window = prepare_window(shop, test, ranking.model_copy(update={"diversity_cap": 3}), 28.0)
    model = build_model("als").fit(window.split.train)
    bundle = dataclasses.replace(window.bundle, models={**window.bundle.models, PRIMARY: model}, ranker=ranker)
    return window, bundle


def test_evaluation_pyfunc_service_and_batch_make_the_same_lists(window_and_bundle: tuple[Window, Bundle],
                                                                 tmp_path: Path) -> None:
    window, bundle = window_and_bundle
    personal = window.personal(bundle.models[PRIMARY], bundle.ranker)
    assert (personal.index is None) == (window.bundle.metadata["ranking"]["index_from_items"] is None)
    assert (bundle.personal.index is None) == (personal.index is None)
    evaluated = lists_for(window, lambda customers, _: personal.score(customers), K)
    ids = bundle.customers.external_ids[window.split.customers]
    expected = {c: [i for i in bundle.items.to_external(row[row >= 0])] for c, row in zip(ids, evaluated, strict=True)}

    pyfunc = bundle.recommend(list(ids), K).groupby("customer_id", sort=False)["item_id"].apply(list).to_dict()
    served = {p.customer_id: [i.item_id for i in p.items] for p in ShopRecommender(bundle, "x").email_picks(ids, K)}
    with FileSink(tmp_path / "picks.parquet") as sink:
        run_picks(ShopRecommender(bundle, "x"), np.asarray(ids, dtype=object), K, sink, block=97)
    batch = pd.read_parquet(tmp_path / "picks.parquet").groupby("customer_id", sort=False)["item_id"].apply(list)
    assert len(expected) > 300
    assert pyfunc == expected
    assert served == expected
    assert batch.to_dict() == expected
    category = bundle.catalogue["category"].to_numpy()
    assert max(pd.Series(category[row[row >= 0]]).value_counts().max() for row in evaluated) <= 3


def test_a_rankers_candidates_give_the_lists_the_whole_catalogue_would(window_and_bundle: tuple[Window, Bundle]
                                                                        ) -> None:
    window, bundle = window_and_bundle
    idx = window.split.customers[:400]
    scored = bundle.personal.score(idx)
    fast = make_lists(bundle.rules, bundle.fallbacks, idx, scored, K)
    slow = make_lists_dense(bundle.rules, bundle.fallbacks, idx, as_dense(scored, len(bundle.items)), K)
    np.testing.assert_array_equal(fast.items, slow.items)
    np.testing.assert_array_equal(fast.personal, slow.personal)
    np.testing.assert_allclose(fast.scores, slow.scores, rtol=1e-6)


def test_blocks_sized_to_a_memory_budget_give_the_same_lists(window_and_bundle: tuple[Window, Bundle],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A large catalogue scores fewer customers per dense block; the lists must not change. The
    budget is shrunk here so this small catalogue gets 37-row blocks, as 40,000 items get 419."""
    import training.top_k as top_k

    window, bundle = window_and_bundle
    personal = window.personal(bundle.models[PRIMARY], bundle.ranker)
    ids = list(bundle.customers.external_ids[window.split.customers])
    before_eval = lists_for(window, lambda customers, _: personal.score(customers), K)
    before_pyfunc = bundle.recommend(ids, K)
    n_items = len(bundle.items)
    assert top_k.block_rows(40_000, 4096) == 419 and top_k.block_rows(n_items, 512) == 512
    monkeypatch.setattr(top_k, "SCORE_BLOCK_BYTES", top_k.BYTES_PER_CELL * n_items * 37)
    small = dataclasses.replace(bundle)  # a fresh bundle: block_rows is computed once per bundle
    assert small.block_rows == 37 and top_k.block_rows(n_items, 1024) == 37
    np.testing.assert_array_equal(lists_for(window, lambda customers, _: personal.score(customers), K), before_eval)
    pd.testing.assert_frame_equal(small.recommend(ids, K), before_pyfunc)


def test_a_saved_bundle_keeps_its_item_index_and_serves_the_same_lists(window_and_bundle: tuple[Window, Bundle],
                                                                       tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A bundle keeps the graph training built (training/retrieval.py, INDEX_FILE), so a worker
    that loads it reads the graph instead of building it (faiss's builder is taken away here)
    and makes the lists the bundle made; below the threshold there is no graph to keep."""
    import faiss

    window, bundle = window_and_bundle
    customers = window.split.customers[:300]
    expected = bundle.lists(customers, K).items
    folder = bundle.save(tmp_path / "bundle")
    indexed = window.bundle.metadata["ranking"]["index_from_items"] is not None
    assert (folder / INDEX_FILE).is_file() == indexed
    monkeypatch.setattr(faiss, "IndexHNSWFlat", None)  # building a graph now fails
    loaded = Bundle.load(folder)
    assert (loaded.personal.index is None) == (not indexed)
    np.testing.assert_array_equal(loaded.lists(customers, K).items, expected)


def test_a_bundle_folder_holds_one_bundle_and_never_serves_another_models_graph(
        window_and_bundle: tuple[Window, Bundle], tmp_path: Path) -> None:
    window, bundle = window_and_bundle
    folder = bundle.save(tmp_path / "bundle")
    with pytest.raises(BundleError, match="not empty; save a bundle into a new or empty folder"):
        bundle.save(folder)  # else one bundle's ranker or graph could pass for the other's
    if window.bundle.metadata["ranking"]["index_from_items"] is None:
        np.save(folder / INDEX_FILE, np.zeros(64, dtype=np.uint8))  # dropped in later, not in the manifest
        assert Bundle.load(folder).personal.index is None  # never read
    product = bundle.models[PRIMARY].inner_product()
    assert product is not None
    other = ItemIndex(InnerProduct(product.user[:, :-1], product.item[:, :-1], None, None))  # another model's graph
    np.save(folder / INDEX_FILE, other.serialized())
    (folder / MANIFEST).write_text(json.dumps(manifest(folder)))  # listed, checksum and all: refused in one line
    with pytest.raises(BundleError, match=f"{INDEX_FILE} is not this bundle's item index"):
        Bundle.load(folder)
