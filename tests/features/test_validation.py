"""Row validation's own machinery: the invisible-character rule as Arrow reads it."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.schema import INVISIBLE_CHARACTERS, ROW_COLUMN, TABLES
from features.validation import INVISIBLE, validate_table


def test_the_invisible_class_arrow_reads_holds_the_contracts_characters_at_every_code_point() -> None:
    code_points = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    by_arrow = pc.match_substring_regex(pa.array(code_points), INVISIBLE).to_numpy(zero_copy_only=False)
    contract = re.compile(f"[{INVISIBLE_CHARACTERS}]")
    by_contract = np.array([contract.search(c) is not None for c in code_points])
    assert by_contract.sum() > 80  # the class is not empty on either side
    assert np.array_equal(by_arrow, by_contract)


def test_ids_holding_a_control_or_invisible_character_are_quarantined_from_arrow_strings() -> None:
    ids = ["c1", "c\x1b[31m2", "c\u200b3", "c\x854", "c\ufeff5", "c\u20656", "c日本7"]
    orders = pd.DataFrame({"order_id": [f"o{n}" for n in range(len(ids))], "customer_id": pd.array(ids, dtype="str"),
                           "item_id": "i1", "quantity": 1.0, "unit_price": 2.0, "ts": "2024-01-01T10:00:00Z"})
    validated = validate_table(TABLES["orders"], orders, "orders.parquet", now=pd.Timestamp("2025-01-01", tz="UTC"))
    assert validated.clean["customer_id"].tolist() == ["c1", "c\u20656", "c日本7"]
    assert validated.quarantine[ROW_COLUMN].tolist() == [2, 3, 4, 5]
    assert set(validated.quarantine["_reason"]) == {"customer_id holds a control or invisible character"}

