"""Property: whatever text a shop sends, every row is either loaded or quarantined, never lost."""

from __future__ import annotations

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from features.schema import TABLES
from features.validation import validate_table

NOW = pd.Timestamp("2024-06-01T00:00:00Z")
cell = st.one_of(
    st.none(),
    st.text(max_size=12),
    st.sampled_from(["1", "0", "-1", "2.5", "1,5", "nan", "inf", "true", "view", "cart", "2024-01-01",
                     "2024-01-01T10:00:00Z", "9999-12-31", " ", "i1"]),
)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(sorted(TABLES)), st.data())
def test_rows_in_equal_loaded_plus_quarantined(table: str, data: st.DataObject) -> None:
    spec = TABLES[table]
    n_rows = data.draw(st.integers(min_value=0, max_value=8))
    frame = pd.DataFrame({c: data.draw(st.lists(cell, min_size=n_rows, max_size=n_rows))
                          for c in spec.column_names}, dtype=object)
    result = validate_table(spec, frame, "fuzz.csv", now=NOW)
    assert len(result.clean) + len(result.quarantine) == n_rows
    assert (result.quarantine["_reason"] != "").all()
    assert set(result.clean["_row"]).isdisjoint(set(result.quarantine["_row"]))
