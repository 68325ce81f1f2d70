"""Co-occurrence counts, shrunk confidence and lift on a basket log small enough to count by hand."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from features.cooccurrence import cooccurrence

# baskets: {0,1}, {0,1}, {0,2}, {2}, {0,0,1}  (item 0 twice in the last counts once)
GROUPS = pd.Series(["b1", "b1", "b2", "b2", "b3", "b3", "b4", "b5", "b5", "b5"])
ITEMS = np.array([0, 1, 0, 1, 0, 2, 2, 0, 0, 1])


def test_counts_are_per_group_and_symmetric() -> None:
    co = cooccurrence(GROUPS, ITEMS, 3)
    assert co.n_groups == 5
    assert co.item_groups.tolist() == [4, 3, 2]
    assert co.pairs.toarray().tolist() == [[0, 3, 1], [3, 0, 0], [1, 0, 0]]


def test_confidence_shrinks_and_respects_min_support() -> None:
    co = cooccurrence(GROUPS, ITEMS, 3)
    conf = co.confidence(shrinkage=1.0, min_support=2).toarray()
    assert conf[0, 1] == pytest.approx(3 / (4 + 1))
    assert conf[1, 0] == pytest.approx(3 / (3 + 1))
    assert conf[0, 2] == 0  # seen once, below min_support


def test_no_shrinkage_leaves_an_item_never_bought_without_pairs_and_warns_of_nothing() -> None:
    co = cooccurrence(GROUPS, ITEMS, 4)  # item 3 is in no basket
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        conf = co.confidence(shrinkage=0.0, min_support=1).toarray()
    assert conf[0, 1] == pytest.approx(3 / 4)
    assert np.isfinite(conf).all() and not conf[3].any()


def test_lift_is_one_for_independence_above_for_complements() -> None:
    co = cooccurrence(GROUPS, ITEMS, 3)
    lift = co.lift(min_support=1).toarray()
    assert lift[0, 1] == pytest.approx(3 * 5 / (4 * 3))
    assert lift[0, 2] == pytest.approx(1 * 5 / (4 * 2))
