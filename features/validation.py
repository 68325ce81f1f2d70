"""Row validation against the contract (:mod:`features.schema`): canonical dtypes or quarantine.

Validation never drops a row silently: each row is either kept (with canonical dtypes) or
moved to a quarantine frame that names the file, the row number, the column and the reason.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.schema import (
    BAD_ENCODING_COLUMN,
    EVENT_TYPES,
    FALSE_STRINGS,
    FUTURE_TOLERANCE,
    INVISIBLE_CHARACTERS,
    ITEM_EVENT_TYPES,
    ROW_COLUMN,
    TRUE_STRINGS,
    Column,
    ContractConfig,
    TableSpec,
    check_columns,
)

INVISIBLE = f"[{codecs.decode(INVISIBLE_CHARACTERS, 'unicode_escape')}]"
"""The contract's invisible characters as a regex class of the characters themselves, not their
escapes: Arrow's regex engine (RE2) refuses Python's ``\\u`` escapes, and pandas then searched
every id with Python's ``re``, value by value (about 40% of validating a large events table).
The same characters as :data:`~features.schema.INVISIBLE_CHARACTERS` (a test checks every code
point)."""


@dataclass
class Validated:
    """The outcome of validating one table: kept rows and quarantined rows."""

    clean: pd.DataFrame
    quarantine: pd.DataFrame


class _Reasons:
    """Collects the first failing reason and column per row, vectorised."""

    def __init__(self, n_rows: int) -> None:
        self.reason = np.full(n_rows, "", dtype=object)
        self.column = np.full(n_rows, "", dtype=object)
        self.bad = np.zeros(n_rows, dtype=bool)
        """Rows flagged so far (kept as booleans: comparing the object array of reasons at every
        flag cost a second per 14 million rows)."""

    def flag(self, mask: np.ndarray | pd.Series, column: str, reason: str) -> None:
        mask = np.asarray(mask, dtype=bool) & ~self.bad
        self.reason[mask] = reason
        self.column[mask] = column
        self.bad |= mask


def _is_blank(values: pd.Series) -> np.ndarray:
    """True where a value is missing or an empty/whitespace-only string."""
    blank = values.isna().to_numpy().copy()
    if values.dtype == object or pd.api.types.is_string_dtype(values):
        stripped = values.astype("str").str.strip()
        blank |= (stripped == "").fillna(True).to_numpy(dtype=bool)
    return blank


def _as_id(values: pd.Series) -> pd.Series:
    """Ids are strings. An integral float (an id column with gaps read from SQL/Parquet) loses
    its '.0', value by value, so an id reads the same whichever chunk it came in. A missing id
    stays missing (``astype("str")`` and ``strip`` keep it so)."""
    if pd.api.types.is_float_dtype(values):
        integral = (values == np.floor(values)).to_numpy(dtype=bool, na_value=False) \
            & (values.abs() < 2**63).to_numpy(dtype=bool, na_value=False)  # finite, and fits int64
        out = values.astype("str")
        out[integral] = values[integral].astype("int64").astype("str")
        return out
    return values.astype("str").str.strip()


def _missing_where(values: pd.Series, missing: np.ndarray) -> pd.Series:
    """``values`` with the ``missing`` rows set to missing (a blank id); the column itself when each
    of them already is: ``where`` rebuilds a whole Arrow string column even when it changes
    nothing, a fifth of validating a large events table."""
    return values.where(~missing, None) if (missing & values.notna().to_numpy()).any() else values


def _as_number(values: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.astype("float64")
    return pd.to_numeric(values.astype("str").str.strip(), errors="coerce").astype("float64")


def _as_bool(values: pd.Series) -> pd.Series:
    """Map booleans and the usual spellings (true/false, 1/0, yes/no) to a nullable boolean."""
    if pd.api.types.is_bool_dtype(values):
        return values.astype("boolean")
    text = values.astype("str").str.strip().str.lower()
    out = pd.Series(pd.NA, index=values.index, dtype="boolean")
    out[text.isin(TRUE_STRINGS).to_numpy(dtype=bool)] = True
    out[text.isin(FALSE_STRINGS).to_numpy(dtype=bool)] = False
    if pd.api.types.is_numeric_dtype(values):
        out[(values == 1).to_numpy(dtype=bool, na_value=False)] = True
        out[(values == 0).to_numpy(dtype=bool, na_value=False)] = False
    return out


def _as_timestamp(values: pd.Series) -> pd.Series:
    """Parse to UTC. Naive timestamps are taken as UTC; text must be ISO 8601."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        parsed = values.dt.tz_convert("UTC")
    elif pd.api.types.is_datetime64_any_dtype(values):
        parsed = values.dt.tz_localize("UTC")
    else:
        parsed = pd.to_datetime(values.astype("str").str.strip(), errors="coerce", utc=True, format="ISO8601")
    return parsed.dt.as_unit("us")


def _check_column(col: Column, raw: pd.Series, reasons: _Reasons, now: pd.Timestamp,
                  config: ContractConfig) -> pd.Series:
    """Convert one column to its canonical dtype and flag the rows whose value is bad."""
    blank = _is_blank(raw)
    if not col.nullable and col.default is None:
        reasons.flag(blank, col.name, f"{col.name} is empty")

    if col.kind in ("id", "text"):
        values = _as_id(raw) if col.kind == "id" else raw.astype("str")
        if col.kind == "id":
            invisible = values.str.contains(INVISIBLE, regex=True, na=False)
            reasons.flag(~blank & invisible.to_numpy(dtype=bool), col.name,
                         f"{col.name} holds a control or invisible character")
        return _missing_where(values, blank)

    if col.kind == "event_type":
        text = raw.astype("str").str.strip().str.lower()
        reasons.flag(~blank & ~text.isin(EVENT_TYPES).to_numpy(dtype=bool), col.name,
                     f"{col.name} is not one of {', '.join(EVENT_TYPES)}")
        return text

    if col.kind == "number":
        parsed = _as_number(raw)
        unparsed = ~blank & parsed.isna().to_numpy()
        reasons.flag(unparsed, col.name, f"{col.name} is not a number")
        reasons.flag(~blank & np.isinf(parsed.to_numpy()), col.name, f"{col.name} is not finite")
        if col.minimum is not None:
            below = parsed <= col.minimum if col.strict_minimum else parsed < col.minimum
            op = "<=" if col.strict_minimum else "<"
            reasons.flag(below.to_numpy(dtype=bool), col.name, f"{col.name} {op} {col.minimum:g}")
        if col.maximum is not None:
            reasons.flag((parsed > col.maximum).to_numpy(dtype=bool), col.name,
                         f"{col.name} > {col.maximum:g} (implausible)")
        if col.nonzero:
            reasons.flag((parsed == 0).to_numpy(dtype=bool), col.name, f"{col.name} is 0")
        bound = getattr(config, col.bound) if col.bound else None
        if bound is not None:
            reasons.flag((parsed.abs() > bound).to_numpy(dtype=bool), col.name,
                         f"|{col.name}| > {bound:g} (implausible; contract.{col.bound})")
        return parsed

    if col.kind == "bool":
        parsed = _as_bool(raw)
        reasons.flag(~blank & parsed.isna().to_numpy(), col.name, f"{col.name} is not a boolean")
        if col.default is not None:
            parsed = parsed.fillna(bool(col.default))
        return parsed

    parsed = _as_timestamp(raw)
    reasons.flag(~blank & parsed.isna().to_numpy(), col.name, f"{col.name} is not an ISO 8601 timestamp")
    reasons.flag((parsed > now + FUTURE_TOLERANCE).to_numpy(dtype=bool), col.name, f"{col.name} is in the future")
    return parsed


def _check_rows(spec: TableSpec, clean: pd.DataFrame, reasons: _Reasons, claimed: set[str]) -> None:
    """Rules that involve more than one column or more than one row."""
    if spec.name == "events":
        needs_item = clean["event_type"].isin(ITEM_EVENT_TYPES).to_numpy(dtype=bool)
        reasons.flag(needs_item & clean["item_id"].isna().to_numpy(), "item_id",
                     "item_id is empty for an item event")
    if spec.name == "email_events":
        opened_ts, opened = clean["opened_ts"], clean["opened"].to_numpy(dtype=bool, na_value=False)
        reasons.flag((opened_ts < clean["sent_ts"]).to_numpy(dtype=bool, na_value=False), "opened_ts",
                     "opened_ts is before sent_ts")
        reasons.flag(opened_ts.notna().to_numpy() & ~opened, "opened_ts", "opened_ts is set on a mail that was not opened")
    if spec.name == "customer_aliases":
        reasons.flag((clean["alias_id"] == clean["customer_id"]).to_numpy(dtype=bool), "customer_id",
                     "alias_id equals customer_id")
    if spec.unique_key:
        # Only an otherwise good row can claim a key first (here or in an earlier chunk); later
        # claimants are duplicates.
        key = clean[spec.unique_key].where(~reasons.bad)
        dup = (key.duplicated(keep="first") | key.isin(claimed)) if claimed else key.duplicated(keep="first")
        reasons.flag((dup & key.notna()).to_numpy(dtype=bool), spec.unique_key, f"duplicate {spec.unique_key}")


def _quarantine_frame(raw: pd.DataFrame, reasons: _Reasons, table: str, location: str) -> pd.DataFrame:
    bad = reasons.bad
    out = raw.loc[bad].copy()
    for name in out.columns:
        if name != ROW_COLUMN:
            out[name] = out[name].astype("str").where(~out[name].isna(), "")
    rows = out.pop(ROW_COLUMN)
    out.insert(0, "_reason", reasons.reason[bad])
    out.insert(0, "_column", reasons.column[bad])
    out.insert(0, ROW_COLUMN, rows)
    out.insert(0, "_source", location)
    out.insert(0, "_table", table)
    return out.reset_index(drop=True)


def validate_table(
    spec: TableSpec, raw: pd.DataFrame, location: str, now: pd.Timestamp | None = None,
    config: ContractConfig | None = None, claimed: set[str] | None = None,
) -> Validated:
    """Check every row of ``raw`` against ``spec``.

    ``raw`` holds source values as read (text or typed) plus :data:`ROW_COLUMN`.
    Returns kept rows with canonical dtypes (ids and text as strings, numbers float64,
    booleans bool, timestamps UTC) plus :data:`ROW_COLUMN` (so later cross-table rules
    can still name the source row), and the quarantined rows with their reasons.
    Extra columns are ignored; missing optional columns get their default.

    ``raw`` may be one chunk of a table: ``claimed`` then holds the unique keys that kept rows
    of the earlier chunks hold, and this chunk's kept keys are added to it.
    """
    check_columns(spec, list(raw.columns), location)
    now = now if now is not None else pd.Timestamp.now(tz="UTC")
    if ROW_COLUMN not in raw.columns:
        raw = raw.assign(**{ROW_COLUMN: np.arange(1, len(raw) + 1)})
    raw = raw.reset_index(drop=True)
    reasons = _Reasons(len(raw))
    if BAD_ENCODING_COLUMN in raw.columns:
        reasons.flag(raw[BAD_ENCODING_COLUMN].to_numpy(dtype=bool), "", "row is not valid UTF-8")
    clean = pd.DataFrame(index=raw.index)
    for col in spec.columns:
        if col.name in raw.columns:
            clean[col.name] = _check_column(col, raw[col.name], reasons, now, config or ContractConfig())
        else:
            clean[col.name] = _missing_column(col, len(raw))
    _check_rows(spec, clean, reasons, set() if claimed is None else claimed)
    quarantine = _quarantine_frame(raw[[c for c in raw.columns if c in spec.column_names or c == ROW_COLUMN]],
                                   reasons, spec.name, location)
    clean[ROW_COLUMN] = raw[ROW_COLUMN].to_numpy()
    kept = _finalise_dtypes(spec, clean.loc[~reasons.bad].reset_index(drop=True))
    if claimed is not None and spec.unique_key:
        claimed.update(kept[spec.unique_key].dropna())
    return Validated(kept, quarantine)


def _missing_column(col: Column, n_rows: int) -> pd.Series:
    if col.kind == "bool":
        return pd.Series(np.full(n_rows, bool(col.default)), dtype="bool")
    if col.kind == "number":
        return pd.Series(np.full(n_rows, np.nan), dtype="float64")
    if col.kind == "timestamp":
        return pd.Series(pd.NaT, index=range(n_rows), dtype="datetime64[us, UTC]")
    return pd.Series([None] * n_rows, dtype="str")


def _finalise_dtypes(spec: TableSpec, frame: pd.DataFrame) -> pd.DataFrame:
    """Give every kept column one canonical dtype, whatever the source type was."""
    for col in spec.columns:
        if col.kind in ("id", "text", "event_type"):
            frame[col.name] = frame[col.name].astype("str")  # a missing value stays missing
        elif col.kind == "bool":
            frame[col.name] = frame[col.name].astype("bool")
        elif col.kind == "number":
            frame[col.name] = frame[col.name].astype("float64")
    return frame


def quarantine_rows(frame: pd.DataFrame, mask: np.ndarray, column: str, reason: str,
                    table: str, location: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split already-validated rows by a cross-table rule (e.g. an order naming an unknown item)."""
    reasons = _Reasons(len(frame))
    reasons.flag(mask, column, reason)
    quarantine = _quarantine_frame(frame, reasons, table, location)
    return frame.loc[~reasons.bad].reset_index(drop=True), quarantine
