"""TIFU-KNN's neighbours: exactly the k most cosine-similar other customers, ties by index."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from training import top_k
from training.models.baselines import TifuKNNModel


def _reference(unit: np.ndarray, customers: np.ndarray, k: int) -> list[list[int]]:
    """Each row's other customers with a positive similarity, most similar first, then by index."""
    similarity = unit[customers] @ unit.T
    out = []
    for row, customer in enumerate(customers):
        others = [c for c in range(len(unit)) if c != customer and similarity[row, c] > 0]
        out.append(sorted(others, key=lambda c: (-similarity[row, c], c))[:k])
    return out


@pytest.mark.parametrize("block_bytes", [top_k.SCORE_BLOCK_BYTES, 16 * 60 * 7])
def test_neighbours_are_the_k_most_similar_others_whatever_the_block(
        block_bytes: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Binary baskets give many equal similarities; some customers share nothing with anyone.
    Scored in one block or in blocks of 7 rows, the neighbours are the same."""
    monkeypatch.setattr(top_k, "SCORE_BLOCK_BYTES", block_bytes)
    rng = np.random.default_rng(11)
    vectors = (rng.random((60, 40)) < 0.08).astype(np.float32)
    vectors[:, 39] = 0.0
    vectors[5] = 0.0  # no items
    vectors[6] = 0.0
    vectors[6, 39] = 1.0  # only an item nobody else has
    norms = np.linalg.norm(vectors, axis=1)
    unit = np.where(norms[:, None] > 0, vectors / np.maximum(norms, 1e-12)[:, None], 0.0).astype(np.float32)
    model = TifuKNNModel()
    model.unit_ = sp.csr_matrix(unit)
    customers = np.array([0, 5, 6, 7, 59, 3, 3, 12, 40, 41, 42, 43, 44, 45, 46, 47])
    for k in (1, 4, 300):
        got = model._neighbours(customers, k)
        assert got.shape == (len(customers), 60)
        expected = _reference(unit, customers, k)
        for row in range(len(customers)):
            chosen = got[row].indices.tolist()
            assert sorted(chosen) == sorted(expected[row]), (k, row)
            np.testing.assert_allclose(got[row].data, 1.0 / k)
        assert got[1].nnz == 0 and got[2].nnz == 0  # no items; an item of one's own only
    assert model._neighbours(np.zeros(0, dtype=np.int64), 5).shape == (0, 60)
