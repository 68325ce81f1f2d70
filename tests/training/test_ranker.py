"""The ranker's towers: the product-type features on a hand-made history, and rankers saved by an
earlier version (fewer features) loading and ranking as they did."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from features.errors import UserError
from training.ranker import NEW_FEATURES, OWN_FEATURES, History, Ranker, Tower, new_pairs, own_pairs
from training.retrieval import DenseExplore

ADDED = ("group_share", "share_of_group")
"""Features added after rankers were first saved: a bundle of that time lacks them."""


def history() -> History:
    """Two customers, five items in two groups (items 0-2: group 0; 3-4: group 1). Customer 0
    bought item 0 twice, item 1 once and item 3 once; customer 1 bought item 4 once."""
    counts = sp.csr_matrix(np.array([[2, 1, 0, 1, 0], [0, 0, 0, 0, 1]], dtype=np.float32))
    bought = sp.csr_matrix(np.array([[3, 10, 0, 5, 0], [0, 0, 0, 0, 2]], dtype=np.float32))
    rebuy = pd.DataFrame({"rebuy_prob": [0.5] * 5, "interval_days": [14.0] * 5})
    return History.from_arrays(counts, bought, np.array([5, 4, 3, 2, 1]), np.array([1, 1, 1, 1, 1]), rebuy, 28.0,
                               np.array([0, 0, 0, 1, 1]))


def column(names: tuple[str, ...], name: str) -> int:
    return names.index(name)


def test_own_items_carry_their_groups_share_of_the_customers_buying_and_their_share_within_it() -> None:
    hist = history()
    explore = np.zeros((2, 5), dtype=np.float32)
    pairs = own_pairs(hist, np.array([0, 1]), DenseExplore(explore))
    share, within = column(OWN_FEATURES, "group_share"), column(OWN_FEATURES, "share_of_group")
    got = {(int(r), int(i)): f for r, i, f in zip(pairs.rows, pairs.items, pairs.features, strict=True)}
    assert {pair: float(f[share]) for pair, f in got.items()} == pytest.approx(
        {(0, 0): 0.75, (0, 1): 0.75, (0, 3): 0.25, (1, 4): 1.0})
    assert {pair: float(f[within]) for pair, f in got.items()} == pytest.approx(
        {(0, 0): 2 / 3, (0, 1): 1 / 3, (0, 3): 1.0, (1, 4): 1.0})


def test_new_items_carry_their_groups_share_of_the_customers_buying() -> None:
    hist = history()
    explore = np.array([[0.0, 0.0, 0.9, 0.0, 0.5], [0.2, 0.3, 0.4, 0.6, 0.0]], dtype=np.float32)
    pairs = new_pairs(hist, np.array([0, 1]), DenseExplore(explore), depth=5)
    got = {(int(r), int(i)): float(f[column(NEW_FEATURES, "group_share")])
           for r, i, f in zip(pairs.rows, pairs.items, pairs.features, strict=True)}
    assert got == pytest.approx({(0, 2): 0.75, (0, 4): 0.25, (1, 0): 0.0, (1, 1): 0.0, (1, 2): 0.0, (1, 3): 1.0})


def save_without_added_features(folder: Path, rng: np.random.Generator) -> tuple[Tower, Tower]:
    """A ranker.json as versions before :data:`ADDED` wrote it, and its two towers."""
    towers = []
    for names in (OWN_FEATURES, NEW_FEATURES):
        width = len([n for n in names if n not in ADDED])
        towers.append(Tower(rng.normal(size=width), rng.uniform(0.5, 2.0, width), rng.normal(size=width), -2.0))
    folder.mkdir()
    (folder / "ranker.json").write_text(json.dumps({
        "own": towers[0].to_dict(), "new": towers[1].to_dict(), "depth": 30,
        "own_features": [n for n in OWN_FEATURES if n not in ADDED],
        "new_features": [n for n in NEW_FEATURES if n not in ADDED]}))
    return towers[0], towers[1]


def test_a_ranker_saved_before_the_group_features_ranks_as_it_did(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    old_own, old_new = save_without_added_features(tmp_path / "ranker", rng)
    loaded = Ranker.load(tmp_path / "ranker")
    for old, new, names in ((old_own, loaded.own, OWN_FEATURES), (old_new, loaded.new, NEW_FEATURES)):
        features = rng.normal(size=(50, len(names))).astype(np.float32)
        kept = [i for i, n in enumerate(names) if n not in ADDED]
        np.testing.assert_allclose(new.probability(features), old.probability(features[:, kept]), rtol=1e-6)


def write_ranker(folder: Path, own_features: list[str], new_features: list[str], widths: tuple[int, int]) -> None:
    """A ranker.json naming these features, with towers of these widths."""
    towers = [Tower(np.zeros(w), np.ones(w), np.ones(w), 0.0).to_dict() for w in widths]
    folder.mkdir(exist_ok=True)
    (folder / "ranker.json").write_text(json.dumps({"own": towers[0], "new": towers[1], "depth": 30,
                                                    "own_features": own_features, "new_features": new_features}))


@pytest.mark.parametrize("tower", ["own", "new"])
def test_a_ranker_that_uses_a_feature_this_version_lacks_is_refused_by_name(tower: str, tmp_path: Path) -> None:
    own, new = [*OWN_FEATURES], [*NEW_FEATURES]
    (own if tower == "own" else new).append("days_to_payday")
    write_ranker(tmp_path / "ranker", own, new, (len(own), len(new)))
    with pytest.raises(UserError, match="days_to_payday"):
        Ranker.load(tmp_path / "ranker")


def test_a_ranker_whose_names_and_weights_disagree_is_refused() -> None:
    tower = Tower(np.zeros(3), np.ones(3), np.ones(3), 0.0)
    with pytest.raises(UserError, match="names 2 features for 3 weights"):
        tower.aligned(["log_count", "activity"], OWN_FEATURES)


def test_group_codes_must_cover_every_item_and_be_non_negative() -> None:
    counts = sp.csr_matrix(np.ones((1, 3), dtype=np.float32))
    rebuy = pd.DataFrame({"rebuy_prob": [0.5] * 3, "interval_days": [14.0] * 3})
    for group in (np.array([0, 1]), np.array([0, -1, 1])):
        with pytest.raises(ValueError, match="one code >= 0 per item"):
            History.from_arrays(counts, counts, np.ones(3), np.ones(3), rebuy, 28.0, group)
