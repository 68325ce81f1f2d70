"""The one ranking path: the capped top-k, the history rules and the fallback fill, on small
hand-made cases whose right answer is known, and on the sample shop's bundle."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from features.loading import validate_tables
from features.sample import SampleShop
from features.sources import RawTable
from training.bundle import Bundle
from training.pipeline import TrainConfig, build_bundle
from training.ranker import as_dense
from training.ranking import RankingConfig, Rules, build_fallbacks, build_rules, make_lists, make_lists_dense
from training.tiers import AnyTier, Tier, TierUnion, rank_tiers
from training import top_k
from training.top_k import CANDIDATE_DEPTH, best_columns, capped_top_k


def test_capped_top_k_is_best_first_and_never_exceeds_the_cap() -> None:
    scores = np.array([[9, 8, 7, 6, 5, 4], [1, 2, 3, -np.inf, -np.inf, -np.inf]], dtype=np.float32)
    group = np.array([0, 0, 0, 1, 1, 2])
    items, top = capped_top_k(scores.copy(), 4)
    assert items[0].tolist() == [0, 1, 2, 3] and top[0].tolist() == [9, 8, 7, 6]
    assert items[1].tolist() == [2, 1, 0, -1] and top[1, 3] == 0.0  # excluded items never come back
    items, _ = capped_top_k(scores.copy(), 4, group, cap=2)
    assert items[0].tolist() == [0, 1, 3, 4]  # the third item of group 0 waits behind the cap
    assert items[1].tolist() == [2, 1, -1, -1]


def test_one_row_is_walked_to_the_answer_of_the_block_path() -> None:
    """A request's single row takes a sort and a walk; a block of rows the vectorised passes. Both
    give every row the same answer, for a cap per column or per cell and without one."""
    rng = np.random.default_rng(11)
    for trial in range(300):
        m, k, cap = int(rng.integers(1, 300)), int(rng.integers(1, 25)), int(rng.integers(1, 5))
        row = np.where(rng.random(m) < 0.2, -np.inf, rng.integers(0, 6, m)).astype(np.float64)
        group = rng.integers(-1, 5, m) if trial % 2 else rng.integers(0, 5, (1, m))
        for g, c in ((None, None), (group, cap)):
            alone = capped_top_k(row[None, :], k, g, c)
            cells = None if g is None else (np.vstack([g, g]) if g.ndim == 2 else g)
            block = capped_top_k(np.vstack([row, row]), k, cells, c)
            assert alone[0][0].tolist() == block[0][0].tolist(), trial
            assert alone[1][0].tolist() == block[1][0].tolist(), trial


def _best_by_sorting(scores: np.ndarray, depth: int) -> list[list[int]]:
    """The reference: each row's finite columns sorted by score, best first, then by column."""
    return [sorted(np.flatnonzero(row > -np.inf).tolist(), key=lambda c: (-row[c], c))[:depth] for row in scores]


def test_best_columns_cut_ties_by_column_whatever_the_block() -> None:
    """Scores with many ties (a row of zeros ties across the catalogue), -inf cells and cells
    excluded by position: each row's best columns are those a full sort gives, and a row's
    answer is the same alone or in a block, on both the narrow and the partition path."""
    rng = np.random.default_rng(3)
    for trial in range(300):
        n, m = int(rng.integers(1, 30)), int(rng.integers(1, 120))
        scores = rng.integers(-2, 3, size=(n, m)).astype(np.float32)
        scores[rng.random((n, m)) < rng.random()] = -np.inf
        if trial % 5 == 0:
            scores[0] = 0.0
        excluded = np.nonzero(rng.random((n, m)) < 0.2) if trial % 2 else None
        masked = scores.copy()
        if excluded is not None:
            masked[excluded] = -np.inf
        depth = int(rng.integers(1, m + 4))
        items, top = best_columns(scores, depth, excluded)
        expected = _best_by_sorting(masked, depth)
        for row in range(n):
            got = items[row][items[row] >= 0].tolist()
            assert got == expected[row], (trial, row)
            np.testing.assert_array_equal(top[row, :len(got)], scores[row, got])
            assert (top[row, len(got):] == -np.inf).all()
        alone = best_columns(masked[-1:], depth)[0][0]
        assert alone[alone >= 0].tolist() == expected[-1]


@pytest.mark.parametrize("sampled_from", [0, top_k.SAMPLED_FROM])
def test_best_columns_above_a_sampled_floor_still_give_a_full_sorts_answer(
        sampled_from: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows of a large catalogue go through a floor taken from a sample of their columns: the
    answer is still a full sort's, whatever the scores hold: distinct values, runs of ties,
    mostly zeros (a baseline's sparse scores), mostly -inf (rules), excluded cells, and rows
    whose sample holds fewer finite scores than the depth. Narrow rows take that path too
    here (``sampled_from`` 0), so that many shapes are tried in little time."""
    monkeypatch.setattr(top_k, "SAMPLED_FROM", sampled_from)
    rng = np.random.default_rng(5)
    for trial in range(240 if sampled_from == 0 else 12):
        n, depth = int(rng.integers(0 if trial == 7 else 1, 12)), int(rng.integers(1, 25))
        m = int(rng.integers(200, 900)) if sampled_from == 0 else int(rng.integers(sampled_from, 2 * sampled_from))
        dtype = np.float64 if trial % 5 == 4 else np.float32
        kind = trial % 4
        if kind == 0:
            scores = rng.random((n, m))
        elif kind == 1:
            scores = rng.integers(0, 4, size=(n, m)).astype(np.float64)
        else:
            scores = np.where(rng.random((n, m)) < rng.random() * 0.1, rng.random((n, m)),
                              0.0 if kind == 2 else -np.inf)
        scores = scores.astype(dtype)
        if trial % 7 == 3 and n:
            scores[0, rng.integers(0, m, 3)] = np.inf
        excluded = None
        if trial % 3 == 0:  # random cells
            excluded = np.nonzero(rng.random((n, m)) < 0.3)
        elif trial % 3 == 1:  # each row's best cells, as new_pairs leaves out what was bought
            best = np.argsort(-scores, axis=1, kind="stable")[:, :int(rng.integers(1, 3 * depth))]
            excluded = (np.repeat(np.arange(n), best.shape[1]), best.ravel())
        masked = scores.copy()
        if excluded is not None:
            masked[excluded] = -np.inf
        items, top = best_columns(scores, depth, excluded)
        expected = _best_by_sorting(masked, depth)
        assert items.shape == top.shape and items.shape[0] == n and top.dtype == dtype
        assert items.shape[1] == max((len(e) for e in expected), default=0)
        for row in range(n):
            got = items[row][items[row] >= 0].tolist()
            assert got == expected[row], (trial, kind, row)
            np.testing.assert_array_equal(top[row, :len(got)], scores[row, got])
            assert (items[row, len(got):] == -1).all() and (top[row, len(got):] == -np.inf).all()


def _capped_by_walking(scores: np.ndarray, group: np.ndarray, cap: int, k: int) -> list[list[int]]:
    """The reference: walk each row's whole sorted row, keeping a column while its group has
    fewer than cap."""
    out = []
    for row in scores:
        kept: list[int] = []
        for column in _best_by_sorting(row[None, :], len(row))[0]:
            if sum(group[c] == group[column] for c in kept) < cap:
                kept.append(column)
            if len(kept) == k:
                break
        out.append(kept)
    return out


def test_capped_top_k_walks_deeper_only_where_the_cap_leaves_a_row_short() -> None:
    """Few groups and a tight cap, so that many rows exhaust the first 3k candidates and go on
    to 10k, and some past that to the whole row: every row is what walking its whole sorted row
    gives (a list is never cut short while the cap keeps an item further down)."""
    rng = np.random.default_rng(4)
    deep = whole = 0
    for trial in range(150):
        n, m, k = int(rng.integers(1, 20)), int(rng.integers(20, 150)), int(rng.integers(2, 8))
        scores = rng.integers(0, 6, size=(n, m)).astype(np.float32)
        scores[rng.random((n, m)) < 0.2] = -np.inf
        group = np.where(rng.random(m) < 0.8, 0, rng.integers(1, 4, m))  # most columns in one group
        cap = int(rng.integers(1, 3))
        items, top = capped_top_k(scores, k, group, cap)
        expected = _capped_by_walking(scores, group, cap, k)
        for row in range(n):
            got = items[row][items[row] >= 0].tolist()
            assert got == expected[row], (trial, row)
            np.testing.assert_array_equal(top[row, :len(got)], scores[row, got])
            first_window = _best_by_sorting(scores[row:row + 1], 3 * k)[0]
            deep += bool(got) and got[-1] not in first_window
            whole += bool(got) and got[-1] not in _best_by_sorting(scores[row:row + 1], CANDIDATE_DEPTH * k)[0]
    assert deep > 20, deep  # the deeper pass was exercised
    assert whole > 5, whole  # and the whole-row pass


def _rules(non_repeat: list[bool], category: list[int], block_days: list[float], bought: sp.csr_matrix,
           in_stock: list[bool] | None = None, horizon_days: float = 28.0) -> Rules:
    catalogue = pd.DataFrame({"item_id": [f"i{j}" for j in range(len(category))],
                              "category": [f"c{c}" for c in category],
                              "in_stock": in_stock if in_stock is not None else [True] * len(category)})
    rebuy = pd.DataFrame({"item_id": catalogue["item_id"], "non_repeat": non_repeat,
                          "wait_days": [7.0 if not n else 0.0 for n in non_repeat]})
    categories = pd.DataFrame({"category": [f"c{c}" for c in range(len(block_days))], "block_days": block_days})
    return build_rules(catalogue, rebuy, categories, bought, RankingConfig(horizon_days=horizon_days))


def test_rules_exclude_a_bought_durable_and_its_category_within_the_window() -> None:
    # items 0-2: TVs (non-repeat, category 0, blocked 1000 days); 3-4: coffee (repeat, category 1)
    bought = sp.csr_matrix(np.array([[31.0, 0, 0, 2.0, 0],      # TV 0 bought 30 days ago, coffee yesterday
                                     [1001.0 + 1, 0, 0, 0, 0],  # TV 0 bought 1,001 days ago: window closed
                                     [0, 0, 0, 0, 0]], dtype=np.float32))
    rules = _rules([True, True, True, False, False], [0, 0, 0, 1, 1], [1000.0, 0.0], bought)
    allowed = rules.allowed(np.array([0, 1, 2]))
    assert allowed[0].tolist() == [False, False, False, True, True]  # no second TV; coffee due within 28 days
    assert allowed[1].tolist() == [False, True, True, True, True]  # the TV they own stays out, others return
    assert allowed[2].all()
    # a list for the next 3 days: coffee bought yesterday (wait 7 days) cannot be due within it
    short = _rules([True, True, True, False, False], [0, 0, 0, 1, 1], [1000.0, 0.0], bought, horizon_days=3.0)
    assert short.allowed(np.array([0]))[0].tolist() == [False, False, False, False, True]


def test_fallbacks_fill_under_the_rules_and_the_cap() -> None:
    bought = sp.csr_matrix((3, 5), dtype=np.float32)
    rules = _rules([False] * 5, [0, 0, 0, 1, 1], [0.0, 0.0], bought, in_stock=[True, True, True, True, False])
    rules = rules.with_cap(2)
    fallbacks = build_fallbacks(sp.csr_matrix(np.eye(3, 5, dtype=np.float32)), np.array([5, 4, 3, 2, 1.0]),
                                np.array([None, None, None], dtype=object))
    personal = np.array([[0, 0, 0.9, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=np.float32)
    block = make_lists(rules, fallbacks, np.array([0, 1, -1]), personal, 4)
    assert block.items[0].tolist() == [2, 0, 3, -1]  # personal first; one more of category 0; item 4 out of stock
    assert block.personal[0].tolist() == [True, False, False, False]
    assert block.items[2].tolist() == [0, 1, 3, -1]  # an unknown customer: the shop's list, capped


def _as_tier(scores: np.ndarray, rng: np.random.Generator) -> AnyTier:
    """Dense scores as one of the tiers the service gives: ranked, unranked, or the union of ranked
    tiers of disjoint items (a cart's categories)."""
    kind = rng.integers(3)
    if kind == 0:
        return Tier.from_dense(scores)
    if kind == 1:
        return Tier(np.flatnonzero(scores), scores[np.flatnonzero(scores)])
    part = rng.integers(0, 3, len(scores))
    return TierUnion([Tier.from_dense(np.where(part == p, scores, 0.0)) for p in range(3)])


def test_a_union_of_ranked_tiers_reads_as_the_one_ranked_tier_of_all_their_items() -> None:
    """Any prefix of the union (merged from the parts' prefixes) is the whole tier's prefix, ties by item."""
    rng = np.random.default_rng(1)
    for trial in range(300):
        m = int(rng.integers(1, 300))
        scores = np.where(rng.random(m) < 0.5, rng.integers(0, 5, m), 0).astype(np.float32)
        part = rng.integers(0, 4, m)
        union = TierUnion([Tier.from_dense(np.where(part == p, scores, 0.0)) for p in range(4)])
        whole = Tier.from_dense(scores)
        assert (union.size, union.top) == (whole.size, whole.top), trial
        for depth in (None, 1, 5, 50, 400):
            assert [a.tolist() for a in union.head(depth)] == [a.tolist() for a in whole.head(depth)], (trial, depth)


def test_rank_tiers_takes_each_tier_in_turn_under_the_rules_and_one_cap() -> None:
    """Random tiers against a walk written out: an item ranks in the first tier that scores it
    positive, tier by tier, best first within one (ties by item), skipping what the rules or the
    request exclude, the cap counted over the whole list. Tiers come sparse, ranked (read to a
    depth, then whole when the list reaches past it), unranked or a union of ranked ones, as the
    service gives them."""
    rng = np.random.default_rng(5)
    deep = 0
    for trial in range(300):
        m, k, cap = int(rng.integers(5, 200)), int(rng.integers(1, 12)), int(rng.integers(1, 4))
        category = rng.integers(0, 4, m).tolist()
        rules = _rules([False] * m, category, [0.0] * 4, sp.csr_matrix((1, m), dtype=np.float32),
                       in_stock=(rng.random(m) > 0.1).tolist()).with_cap(cap)
        dense = [np.where(rng.random(m) < 0.3, rng.integers(0, 4, m), 0).astype(np.float32) for _ in range(3)]
        dense.append(np.full(m, 1e-6, dtype=np.float32))  # anything allowed, last
        tiers: list[AnyTier] = [_as_tier(scores, rng) for scores in dense[:3]]
        tiers.append(Tier.from_dense(dense[3]))
        allowed = rng.random(m) > rng.choice([0.2, 0.95])  # sometimes nearly nothing: past the depth
        items, tier_of, scores = rank_tiers(rules, ~rules.blocked & allowed, tiers, k)
        expected, used = [], [0] * 4
        ok = allowed & ~rules.blocked
        first = [next((t for t, scores in enumerate(dense) if scores[i] > 0), None) for i in range(m)]
        for i in sorted(np.flatnonzero(ok).tolist(), key=lambda i: (first[i], -dense[first[i]][i], i)):
            if len(expected) < k and used[category[i]] < cap:
                used[category[i]] += 1
                expected.append(i)
        got = items[items >= 0].tolist()
        assert got == expected, trial
        assert tier_of[:len(got)].tolist() == [first[i] for i in got]
        assert scores[:len(got)].tolist() == [float(dense[first[i]][i]) for i in got]
        deep += m > k * CANDIDATE_DEPTH and len(got) < k  # the last tier was cut and read past: made again
    assert deep > 10


@pytest.fixture(scope="module")
def fuel_bundle(sample_shop: SampleShop) -> Bundle:
    shop = validate_tables({k: RawTable(v, k) for k, v in sample_shop.tables.items()}, source="sample")
    config = TrainConfig(ranking=RankingConfig(never_recommend=["snacks", "coffee"], diversity_cap=2))
    return build_bundle(shop, config, "als", {"chosen": "als"}, cap=2)


def test_no_list_holds_never_recommend_categories_or_more_than_the_cap(fuel_bundle: Bundle) -> None:
    from serving.recommender import ShopRecommender

    customers = [*fuel_bundle.customers.external_ids[:300].tolist(), "stranger"]
    category = fuel_bundle.catalogue.set_index("item_id")["category"]
    served = ShopRecommender(fuel_bundle, "local")
    lists = {"pyfunc": fuel_bundle.recommend(customers, 10)[["customer_id", "item_id"]]}
    picks = served.email_picks(customers, 10)
    lists["email_picks"] = pd.DataFrame([(p.customer_id, i.item_id) for p in picks for i in p.items],
                                        columns=["customer_id", "item_id"])
    cart = [str(fuel_bundle.items.external_ids[0])]
    rows = []
    for customer in customers[:60]:
        rows += [(f"{customer}|cart", i.item_id) for i in served.cross_sell(cart, customer, 10).items]
        rows += [(f"{customer}|offers", i.item_id) for i in served.offers(customer, 10).items]
    lists["cross_sell and offers"] = pd.DataFrame(rows, columns=["customer_id", "item_id"])
    for name, frame in lists.items():
        categories = frame["item_id"].map(category)
        assert len(frame) and not categories.isin(["snacks", "coffee"]).any(), name
        per_list = frame.assign(category=categories).groupby(["customer_id", "category"]).size()
        assert per_list.max() <= 2, (name, per_list.max())


def test_the_fast_path_makes_the_lists_the_whole_catalogue_would(fuel_bundle: Bundle) -> None:
    """make_lists walks each row's candidates and the head of its fallback list; made over the
    whole catalogue (every item scored, dense masks) the lists are the same, item for item."""
    idx = np.concatenate([np.flatnonzero(fuel_bundle.has_history)[:400], [-1, -1]])
    warm = idx >= 0
    scored = fuel_bundle.personal.score(idx[warm])
    dense = np.zeros((len(idx), len(fuel_bundle.items)), dtype=np.float32)
    dense[warm] = as_dense(scored, len(fuel_bundle.items))
    fast = fuel_bundle.lists(idx, 10)
    slow = make_lists_dense(fuel_bundle.rules, fuel_bundle.fallbacks, idx, dense, 10)
    np.testing.assert_array_equal(fast.items, slow.items)
    np.testing.assert_array_equal(fast.personal, slow.personal)
    np.testing.assert_allclose(fast.scores, slow.scores, rtol=1e-6)
    assert fast.personal.any() and (~fast.personal & (fast.items >= 0)).any()  # both tiers exercised
