"""The candidates a request's lists are drawn from (serving/candidates.py): made ahead, they keep
the lists that scoring the whole catalogue per request gives."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import serving.candidates as candidates
from serving.candidates import CustomerRows, top_partners
from serving.config import ServingConfig
from serving.recommender import ShopRecommender
from training.bundle import Bundle


def served_against_exact(bundle: Bundle, requests: int = 300, seed: int = 7) -> float:
    """Recall of the served lists (warmed rows, each item's best partners) against lists made per
    request from every partner: cross-sells of 1-3 cart items and offers, for known customers
    and strangers, k from 5 to 20."""
    exact = ShopRecommender(bundle, "exact", ServingConfig(cross_sell_partners=None))
    served = ShopRecommender(bundle, "served")
    served.warm()
    assert served.personal_rows.rows is not None and served.excluded_rows.rows is not None
    rng = np.random.default_rng(seed)
    customers = bundle.customers.external_ids[bundle.has_history].tolist()
    items = bundle.items.external_ids[bundle.catalogue["in_stock"].to_numpy(dtype=bool)].tolist()
    hits = total = 0
    for n in range(requests):
        cart = rng.choice(items, int(rng.integers(1, 4))).tolist()
        who = customers[rng.integers(len(customers))] if rng.random() < 0.8 else "stranger"
        k = int(rng.integers(5, 21))
        pairs = [(exact.cross_sell(cart, who, k), served.cross_sell(cart, who, k))]
        if n % 2:
            pairs.append((exact.offers(who, k), served.offers(who, k)))
        for want, got in pairs:
            hits += len({p.item_id for p in want.items} & {p.item_id for p in got.items})
            total += len(want.items)
    return hits / total


def test_precomputed_candidates_keep_the_exact_lists(bundle: Bundle) -> None:
    assert served_against_exact(bundle) >= 0.99


def test_a_base_over_the_memory_budget_is_served_per_request(bundle: Bundle, monkeypatch: pytest.MonkeyPatch) -> None:
    warmed = ShopRecommender(bundle, "warmed")
    warmed.warm()
    monkeypatch.setattr(candidates, "CUSTOMER_ROWS_BYTES", 1)
    cold = ShopRecommender(bundle, "cold")
    cold.warm()
    assert cold.personal_rows.rows is None and cold.excluded_rows.rows is None
    for customer in np.flatnonzero(bundle.has_history)[:50].tolist():
        for fast, slow in ((warmed.personal_rows, cold.personal_rows), (warmed.excluded_rows, cold.excluded_rows)):
            a, b = fast.of(customer), slow.of(customer)
            assert a.items.tolist() == b.items.tolist()
            np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5)


def test_customer_rows_place_each_customers_row_and_leave_the_rest_empty() -> None:
    def make(customers: np.ndarray) -> sp.csr_matrix:  # customer c scores item c % 4 at c
        return sp.csr_matrix((customers.astype(np.float32), (np.arange(len(customers)), customers % 4)),
                             shape=(len(customers), 4))

    rows = CustomerRows(make, 4)
    assert rows.warm(np.array([1, 5, 6]), 8)
    assert [(r.items.tolist(), r.scores.tolist()) for r in map(rows.of, range(8))] == [
        ([], []), ([1], [1.0]), ([], []), ([], []), ([], []), ([1], [5.0]), ([2], [6.0]), ([], [])]


def test_top_partners_keeps_each_items_best_ties_by_the_lower_item() -> None:
    item_item = sp.csr_matrix(np.array([[0, 3, 1, 3, 2], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=np.float32))
    kept = top_partners(item_item, 2)
    assert kept.toarray().tolist() == [[0, 3, 0, 3, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]]
    assert top_partners(item_item, None).nnz == item_item.nnz
