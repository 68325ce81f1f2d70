"""What importers share: the notes they hand back and a strict reader for their source files.

An importer maps a public data set onto the contract. Most source rows become exactly one
contract row, and :func:`features.loading.validate_tables` then accounts for them (loaded or
quarantined with a reason). Some rows do not map one-to-one (a product that was never
sold, redemptions folded into one flag); :class:`ImportNotes` counts those, so no row
disappears without a figure next to it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from features.schema import ROW_COLUMN, ContractError
from features.sources import csv_header

Progress = Callable[[str], None]


@dataclass
class ImportNotes:
    """Counts of what an importer decided, beyond the one-row-in-one-row-out mapping.

    ``rows_read`` holds the data rows of each source file; ``counts`` holds one figure
    per decision (keyed for tests and JSON), ``texts`` the sentence printed after it.
    """

    dataset: str
    rows_read: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    remarks: list[str] = field(default_factory=list)

    def read(self, name: str, rows: int) -> None:
        """Record (or add to) the number of data rows read from one source file."""
        self.rows_read[name] = self.rows_read.get(name, 0) + rows

    def add(self, key: str, count: int, text: str) -> None:
        """Record a decision: ``count`` rows or ids, and what happened to them."""
        self.counts[key] = self.counts.get(key, 0) + int(count)
        self.texts[key] = text

    def remark(self, text: str) -> None:
        """Record a decision that has no count (e.g. an optional file that was absent)."""
        self.remarks.append(text)

    def __getitem__(self, key: str) -> int:
        return self.counts[key]

    def lines(self) -> list[str]:
        """One printable line per file read and per non-zero decision, in the order recorded."""
        out = [f"{self.dataset}: read {rows:,} rows from {name}" for name, rows in self.rows_read.items()]
        out += [f"{self.dataset}: {count:,} {self.texts[key]}" for key, count in self.counts.items() if count]
        return out + [f"{self.dataset}: {text}" for text in self.remarks]

    def to_dict(self) -> dict:
        """A JSON-ready form, to write next to the load report."""
        return {"dataset": self.dataset, "rows_read": dict(self.rows_read), "counts": dict(self.counts),
                "texts": dict(self.texts), "remarks": list(self.remarks)}


def require_columns(path: Path, present: list[str], wanted: list[str]) -> None:
    """Fail with one line naming the file when a source file lacks columns the importer maps."""
    missing = [c for c in wanted if c not in present]
    if missing:
        raise ContractError(
            f"{path}: missing column{'s' if len(missing) > 1 else ''} {', '.join(repr(c) for c in missing)}"
            f" (found: {', '.join(present) or 'no columns'})"
        )


def read_text_csv(path: Path, columns: list[str]) -> pd.DataFrame:
    """Read the named columns of a (possibly gzipped) CSV as text, with 1-based row numbers.

    Text keeps ids exact (basket ids exceed float precision, no '.0' suffixes) and leaves
    every value for the contract to judge. The file must be valid UTF-8 and every line must
    have as many fields as the header: these are published data sets, so a corrupt copy
    should stop the import rather than half-load. (All columns are parsed, because with
    ``usecols`` pandas silently cuts an over-long line down to its first fields.)
    """
    require_columns(path, csv_header(path), columns)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])[columns]
    except (UnicodeDecodeError, pd.errors.ParserError) as error:
        raise ContractError(f"{path}: cannot parse CSV: {str(error).strip().splitlines()[0]}") from None
    frame[ROW_COLUMN] = np.arange(1, len(frame) + 1, dtype=np.int64)
    return frame


def blank_to_na(values: pd.Series) -> pd.Series:
    """Whitespace-only text counts as missing, as it does in the contract."""
    stripped = values.str.strip()
    return stripped.where(stripped != "")
