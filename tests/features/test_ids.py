"""Looking ids up: a request's few one by one, a list in one pass, a table's column by pyarrow,
with the same positions every way."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features import ids as ids_module
from features.ids import FEW_IDS, members, positions


def test_a_few_ids_are_looked_up_as_many_are() -> None:
    """A request's few ids go one by one, many in one pass: the same positions either way,
    unknown ids and values that are not ids at all included."""
    index = pd.Index([f"c{n:03d}" for n in range(200)], dtype=object)
    rng = np.random.default_rng(0)
    pool = np.array([*index, "ghost", "", "c1", None, 3, float("nan")], dtype=object)
    for size in (0, 1, 2, FEW_IDS, FEW_IDS + 1, 60):
        ids = list(rng.choice(pool, size=size))
        expected = index.get_indexer(pd.Index(ids, dtype=object))
        np.testing.assert_array_equal(positions(index, ids), expected)
        np.testing.assert_array_equal(positions(index, np.asarray(ids, dtype=object)), expected)


def test_a_table_column_of_ids_is_looked_up_as_a_list_is(monkeypatch: pytest.MonkeyPatch) -> None:
    """A column of many ids goes through pyarrow: the same positions, missing and unknown ids -1."""
    monkeypatch.setattr(ids_module, "COLUMN_IDS", 50)
    index = pd.Index([f"c{n:03d}" for n in range(200)], dtype=object)
    rng = np.random.default_rng(1)
    values = rng.choice(np.array([*index, "ghost", "", "c1 "], dtype=object), size=500)
    column = pd.Series(values, dtype="str").where(rng.random(500) > 0.1, None)
    expected = index.get_indexer(pd.Index(column.astype(object).where(column.notna(), None), dtype=object))
    assert (expected == -1).sum() > 50
    np.testing.assert_array_equal(positions(index, column), expected)


def test_an_index_that_is_not_all_strings_is_looked_up_by_pandas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ids_module, "COLUMN_IDS", 2)
    index = pd.Index(["a", np.nan, "b", 7], dtype=object)
    column = pd.Series(["b", "a", "c", "7"], dtype="str")
    np.testing.assert_array_equal(positions(index, column), [2, 0, -1, -1])


@pytest.mark.parametrize("values", [
    pd.Index(["c001", "c007", "ghost", ""], dtype=object),
    pd.Series(["c001", "c150"], dtype="str"),
    np.array(["c002", None, "c003"], dtype=object),  # a missing value finds the missing ids
    np.array(["c004", 4, 1.5], dtype=object),  # not all strings: pandas' own look-up
    np.array([], dtype=object),
])
def test_members_is_pandas_isin(values: pd.Index | pd.Series | np.ndarray) -> None:
    rng = np.random.default_rng(2)
    column = pd.Series(rng.choice([f"c{n:03d}" for n in range(200)] + ["", "c1 "], size=400), dtype="str")
    column = column.where(rng.random(400) > 0.1, None)
    expected = column.isin(values).to_numpy(dtype=bool)
    assert expected.any() or len(values) == 0
    np.testing.assert_array_equal(members(column, values), expected)
    numbers = pd.Series([1, 2, 3])
    np.testing.assert_array_equal(members(numbers, [2, 5]), [False, True, False])
