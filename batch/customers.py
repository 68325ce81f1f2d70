"""Which customers a picks job scores: a file's ids cleaned (reported, never silent) or the whole bundle."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.errors import UserError
from training.bundle import Bundle


@dataclass(frozen=True)
class CustomerList:
    """The ids to score and what was done to the input on the way (reported, never silent)."""

    ids: np.ndarray
    source: str
    rows_in: int
    empty: int = 0
    """Rows with an empty or missing customer_id: skipped and reported."""
    duplicates: int = 0
    """Repeated ids: scored once, reported."""

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "rows_in": self.rows_in, "empty_ids_skipped": self.empty,
                "duplicate_ids_dropped": self.duplicates, "customers": len(self.ids)}


def all_customers(bundle: Bundle) -> CustomerList:
    ids = np.asarray(bundle.customers.external_ids, dtype=object)
    return CustomerList(ids, "bundle (every customer)", len(ids))


def read_customers(path: Path) -> CustomerList:
    """Customer ids from a CSV (optionally .gz) or Parquet file with a ``customer_id`` column.

    A missing file or column, or a file without any id, is a :class:`UserError` / ``FileNotFoundError``
    naming the file; empty ids are skipped and duplicates scored once, both counted.
    """
    if not path.is_file():
        raise FileNotFoundError(f"--customers {path}: no such file")
    name = path.name.lower()
    try:
        if name.endswith(".parquet"):
            columns = pq.read_schema(path).names
            if "customer_id" not in columns:
                raise UserError(_missing_column(path, columns))
            frame = pd.read_parquet(path, columns=["customer_id"])
        elif name.endswith((".csv", ".csv.gz")):
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8-sig")
            if "customer_id" not in frame.columns:
                raise UserError(_missing_column(path, list(frame.columns)))
        else:
            raise UserError(f"--customers {path}: use a .csv, .csv.gz or .parquet file with a customer_id column")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError, UnicodeDecodeError,
            pa.ArrowException) as error:
        raise UserError(f"--customers {path}: cannot read it ({str(error).splitlines()[0]})") from None
    raw = frame["customer_id"]
    present = raw.notna().to_numpy() & (raw.astype(str).str.strip() != "").to_numpy()
    ids = raw[present].astype(str).str.strip()
    unique = pd.unique(ids.to_numpy(dtype=object))
    if not len(unique):
        raise UserError(f"--customers {path}: no customer ids in column customer_id ({len(frame):,} rows)")
    return CustomerList(np.asarray(unique, dtype=object), str(path), len(frame), int((~present).sum()),
                        int(len(ids) - len(unique)))


def _missing_column(path: Path, columns: list[str]) -> str:
    shown = ", ".join(map(str, columns[:8])) + (", ..." if len(columns) > 8 else "")
    return f"--customers {path}: no 'customer_id' column (columns: {shown or 'none'})"
