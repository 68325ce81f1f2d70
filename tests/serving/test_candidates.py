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
from training.ranking import Rules


def _requests(bundle: Bundle, n: int, seed: int) -> list[tuple[list[str], str, int]]:
    """Cross-sell requests: 1-3 in-stock cart items, a known customer (else a stranger), k 5-20."""
    rng = np.random.default_rng(seed)
    customers = bundle.customers.external_ids[bundle.has_history].tolist()
    items = bundle.items.external_ids[bundle.catalogue["in_stock"].to_numpy(dtype=bool)].tolist()
    return [(rng.choice(items, int(rng.integers(1, 4))).tolist(),
             customers[rng.integers(len(customers))] if rng.random() < 0.8 else "stranger",
             int(rng.integers(5, 21))) for _ in range(n)]


def cross_sell_recall(bundle: Bundle, requests: int = 300, seed: int = 7) -> float:
    """Recall of the served cross-sells (warmed rows, each item's best partners) against
    cross-sells made per request from every partner."""
    exact = ShopRecommender(bundle, "exact", ServingConfig(cross_sell_partners=None))
    served = ShopRecommender(bundle, "served")
    served.warm()
    assert served.personal_rows.rows is not None and served.excluded_rows.rows is not None
    hits = total = 0
    for cart, who, k in _requests(bundle, requests, seed):
        want, got = exact.cross_sell(cart, who, k).items, served.cross_sell(cart, who, k).items
        hits += len({p.item_id for p in want} & {p.item_id for p in got})
        total += len(want)
    return hits / total


def test_precomputed_candidates_keep_the_exact_lists(bundle: Bundle) -> None:
    assert cross_sell_recall(bundle) >= 0.99


def test_rows_made_ahead_give_the_answers_made_per_request(bundle: Bundle) -> None:
    """With every partner, warming changes nothing but the time: the same items, in the same
    order, for the same reasons (scores of rows made in blocks may differ in the last float bit)."""
    config = ServingConfig(cross_sell_partners=None)
    per_request, warmed = ShopRecommender(bundle, "a", config), ShopRecommender(bundle, "b", config)
    warmed.warm()
    for cart, who, k in _requests(bundle, 200, 3):
        for a, b in ((per_request.cross_sell(cart, who, k), warmed.cross_sell(cart, who, k)),
                     (per_request.offers(who, k), warmed.offers(who, k))):
            assert [(p.item_id, p.reason) for p in a.items] == [(p.item_id, p.reason) for p in b.items]
            np.testing.assert_allclose([p.score for p in a.items], [p.score for p in b.items], rtol=1e-5)


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


def _kept_away(rules: Rules, customer: int) -> set[int]:
    """The rules' exclusions of one customer, spelled out item by item from their purchases: a
    bought non-repeat item, a re-buy not due within the horizon, and every non-repeat item of a
    category whose block a non-repeat purchase there has not closed."""
    row = rules.bought.getrow(customer)
    kept: set[int] = set()
    for item, since in zip(row.indices.tolist(), row.data.tolist(), strict=True):
        if rules.non_repeat[item]:
            kept.add(item)
            category = rules.category[item]
            if since - 1.0 < rules.block_days[category]:
                kept |= set(np.flatnonzero(rules.non_repeat & (rules.category == category)).tolist())
        elif since - 1.0 + rules.horizon_days < rules.wait_days[item]:
            kept.add(item)
    return kept


def test_exclusions_hold_each_category_block_once_and_keep_away_what_the_rules_say(bundle: Bundle) -> None:
    """The sample's durable categories are blocked after a purchase: a customer's held row names
    each block once, and the items a request keeps away are those the rules spell out."""
    served = ShopRecommender(bundle, "served")
    served.warm()
    exclusions, rules = served.excluded_rows, bundle.rules
    known = np.flatnonzero(bundle.has_history)
    rows, items = rules.excluded(known)
    assert exclusions.rows is not None and exclusions.rows.nnz < len(set(zip(rows.tolist(), items.tolist(), strict=True)))
    blocked = 0
    for position, customer in enumerate(known.tolist()):
        blocked += int((exclusions.of(customer).items >= exclusions.n_catalogue).sum())
        expected = _kept_away(rules, customer)
        assert set(exclusions.items_of(customer).tolist()) == expected
        assert set(items[rows == position].tolist()) == expected
    assert blocked > 0.1 * len(known)  # the check above covers many blocks


def test_customer_rows_place_each_customers_row_and_leave_the_rest_empty() -> None:
    def make(customers: np.ndarray) -> sp.csr_matrix:  # customer c scores item c % 4 at c
        return sp.csr_matrix((customers.astype(np.float32), (np.arange(len(customers)), customers % 4)),
                             shape=(len(customers), 4))

    rows = CustomerRows(make, 4)
    assert rows.warm(np.array([1, 5, 6]), 8)
    assert [(r.items.tolist(), r.scores.tolist()) for r in map(rows.of, range(8))] == [
        ([], []), ([1], [1.0]), ([], []), ([], []), ([], []), ([1], [5.0]), ([2], [6.0]), ([], [])]
    nobody = CustomerRows(make, 4)  # a bundle where no customer has history
    assert nobody.warm(np.zeros(0, dtype=np.int64), 3)
    assert [r.items.tolist() for r in map(nobody.of, range(3))] == [[], [], []]


def test_top_partners_keeps_each_items_best_ties_by_the_lower_item() -> None:
    item_item = sp.csr_matrix(np.array([[0, 3, 1, 3, 2], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=np.float32))
    kept = top_partners(item_item, 2)
    assert kept.toarray().tolist() == [[0, 3, 0, 3, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]]
    assert top_partners(item_item, None).nnz == item_item.nnz
