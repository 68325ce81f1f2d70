"""Load a shop: read every contract table, validate it, apply cross-table rules, merge aliases.

The result, :class:`ShopData`, is the only way shop data enters features and training.
Its :class:`LoadReport` accounts for every input row: ``rows_in = loaded + quarantined +
merged + returned + cancelled`` per table (the last two for orders: features/returns.py), and the quarantined rows themselves can be written next to the
run's outputs with the file, row, column and reason of each.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from features.aliases import merge_aliases
from features.returns import net_returns
from features.schema import REQUIRED_TABLES, ROW_COLUMN, TABLES, TIMED_TABLES, ContractConfig, ContractError
from features.sources import RawTable, Source, open_source
from features.table_files import write_tables
from features.validation import quarantine_rows, validate_table

Progress = Callable[[str], None]


@dataclass
class TableReport:
    """What happened to one table's rows."""

    source: str
    rows_in: int
    rows_loaded: int = 0
    rows_quarantined: int = 0
    rows_merged: int = 0
    rows_returned: int = 0
    """Return lines (negative quantity, orders only): applied to purchases, not loaded as orders."""
    rows_cancelled: int = 0
    """Purchase lines whose every unit was returned (orders only)."""
    ids_remapped: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    returns: dict[str, float | int] = field(default_factory=dict)
    """:class:`features.returns.ReturnsReport` of the orders table."""

    @property
    def rows_accounted(self) -> int:
        """loaded + quarantined + merged + returned + cancelled: always equals ``rows_in``."""
        return (self.rows_loaded + self.rows_quarantined + self.rows_merged + self.rows_returned
                + self.rows_cancelled)

    def add_quarantine(self, quarantine: pd.DataFrame) -> None:
        self.rows_quarantined += len(quarantine)
        if len(quarantine):
            for reason, count in quarantine["_reason"].value_counts().items():
                self.reasons[str(reason)] = self.reasons.get(str(reason), 0) + int(count)


@dataclass
class LoadReport:
    """Per-table accounting of a load, plus which optional tables were present."""

    source: str
    tables: dict[str, TableReport] = field(default_factory=dict)

    @property
    def present(self) -> list[str]:
        return list(self.tables)

    @property
    def absent(self) -> list[str]:
        return [name for name in TABLES if name not in self.tables]

    @property
    def rows_quarantined(self) -> int:
        return sum(t.rows_quarantined for t in self.tables.values())

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "present": self.present,
            "absent": self.absent,
            "tables": {name: vars(report) for name, report in self.tables.items()},
        }


@dataclass
class ShopData:
    """Validated contract tables (canonical dtypes, aliases merged) and the report of the load."""

    tables: dict[str, pd.DataFrame]
    report: LoadReport
    quarantine: dict[str, pd.DataFrame]

    def __getitem__(self, name: str) -> pd.DataFrame:
        return self.tables[name]

    def has(self, name: str) -> bool:
        return name in self.tables

    def before(self, cutoff: pd.Timestamp) -> ShopData:
        """The same shop as it stood just before ``cutoff`` (timed tables filtered)."""
        return self._cut(cutoff, keep_before=True)

    def since(self, start: pd.Timestamp) -> ShopData:
        """The same shop with every timed row before ``start`` removed."""
        return self._cut(start, keep_before=False)

    def _cut(self, at: pd.Timestamp, keep_before: bool) -> ShopData:
        """A table already in time order (an event log as written) is cut by position, which
        shares its rows instead of copying them; any other is filtered row by row."""
        tables = dict(self.tables)
        for name, column in TIMED_TABLES.items():
            if name in tables:
                frame, ts = tables[name], tables[name][column]
                if ts.is_monotonic_increasing:
                    split = int(ts.searchsorted(at, side="left"))
                    tables[name] = (frame.iloc[:split] if keep_before else frame.iloc[split:]).reset_index(drop=True)
                else:
                    tables[name] = frame[(ts < at) if keep_before else (ts >= at)].reset_index(drop=True)
        return ShopData(tables=tables, report=self.report, quarantine=self.quarantine)

    def write_quarantine(self, out_dir: str | os.PathLike[str]) -> list[Path]:
        """Write ``<table>.csv`` of quarantined rows and ``load_report.json`` into ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written = write_tables({k: v for k, v in self.quarantine.items() if len(v)}, out, "csv")
        report_path = out / "load_report.json"
        report_path.write_text(json.dumps(self.report.to_dict(), indent=2))
        return [*written, report_path]


def open_shop(location: str | os.PathLike[str]) -> Source:
    """The source at a folder path or SQLAlchemy URL, which must hold every required table."""
    source = open_source(location)
    missing = [name for name in REQUIRED_TABLES if name not in source.available()]
    if missing:
        raise ContractError(
            f"{source.description}: required table{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(m) for m in missing)} not found "
            f"(expected <table>.csv, .csv.gz or .parquet, or a SQL table of that name)"
        )
    return source


def load_shop(location: str | os.PathLike[str], *, now: pd.Timestamp | None = None,
              progress: Progress | None = None, config: ContractConfig | None = None) -> ShopData:
    """Read and validate every contract table found at a folder path or SQLAlchemy URL
    (:mod:`features.engines` chooses between this and the Spark engine)."""
    source = open_shop(location)
    raw = {name: source.read(TABLES[name]) for name in TABLES if name in source.available()}  # columns checked, rows not read
    return validate_tables(raw, source=source.description, now=now, progress=progress, config=config)


@dataclass
class CheckedTable:
    """One table after its row rules: kept rows (with :data:`ROW_COLUMN`), quarantined rows and
    how many rows were read. Made by :func:`check_table` here, or by the Spark engine
    (features/spark_loading.py) from the same :func:`validate_table` run on executors."""

    location: str
    clean: pd.DataFrame
    quarantine: list[pd.DataFrame]
    rows_in: int


def check_table(name: str, table: RawTable, *, now: pd.Timestamp, config: ContractConfig | None = None,
                progress: Progress | None = None) -> CheckedTable:
    """Row rules on one table, a chunk at a time (:meth:`RawTable.batches`), so a table read
    from a source is never held whole as text: only its kept rows, in their canonical types,
    and its quarantined rows stay."""
    if progress:
        progress(f"validating {name}")
    kept, quarantine, claimed, rows_in = [], [], set[str](), 0
    for chunk in table.batches():
        validated = validate_table(TABLES[name], chunk, table.location, now=now, config=config, claimed=claimed)
        rows_in += len(chunk)
        kept.append(validated.clean)
        quarantine.append(validated.quarantine)
    if not kept:  # a reader that gave no chunk at all: an empty table of the contract's columns
        empty = validate_table(TABLES[name], pd.DataFrame(columns=TABLES[name].column_names), table.location,
                               now=now, config=config)
        kept, quarantine = [empty.clean], [empty.quarantine]
    clean = pd.concat(kept, ignore_index=True) if len(kept) > 1 else kept[0]
    checked = CheckedTable(table.location, clean, quarantine, rows_in)
    require_rows(name, checked)
    return checked


def validate_tables(raw: Mapping[str, RawTable], *, source: str, now: pd.Timestamp | None = None,
                    progress: Progress | None = None, config: ContractConfig | None = None) -> ShopData:
    """Validate raw tables (from a source or an importer) into :class:`ShopData`: row rules (with
    the shop's ``config`` bounds), then :func:`finish_load`."""
    now = now if now is not None else pd.Timestamp.now(tz="UTC")
    checked: dict[str, CheckedTable] = {}
    for name, table in raw.items():
        checked[name] = check_table(name, table, now=now, config=config, progress=progress)
    return finish_load(checked, source=source, progress=progress)


def require_rows(name: str, table: CheckedTable) -> None:
    """A required table read with no rows at all is an error, not an empty shop."""
    if name in REQUIRED_TABLES and not table.rows_in:
        raise ContractError(f"{table.location}: required table '{name}' has no rows "
                            f"(a header only, or an empty table)")


def finish_load(checked: dict[str, CheckedTable], *, source: str, progress: Progress | None = None) -> ShopData:
    """Tables past their row rules into :class:`ShopData`: cross-table rules, aliases merged,
    then returns applied; the report accounts for every row. Both engines end here.

    ``checked`` is emptied: its frames are taken over, so that a table a rule splits is not
    held twice."""
    if progress:
        progress("applying cross-table rules, aliases and returns")
    report = LoadReport(source=source)
    clean, quarantine = {}, {}
    for name in list(checked):
        table = checked.pop(name)
        clean[name], quarantine[name] = table.clean, table.quarantine
        report.tables[name] = TableReport(source=table.location, rows_in=table.rows_in)
        del table  # else the last table's frame outlives the rules that replace it

    def split(name: str, mask: np.ndarray, column: str, reason: str) -> None:
        kept, bad = quarantine_rows(clean[name], mask, column, reason, name, report.tables[name].source)
        clean[name] = kept
        quarantine[name].append(bad)

    known_items = clean["items"]["item_id"]
    split("orders", ~clean["orders"]["item_id"].isin(known_items).to_numpy(dtype=bool), "item_id",
          "item_id not in items")
    if "events" in clean:
        events = clean["events"]
        unknown = events["item_id"].notna().to_numpy() & ~events["item_id"].isin(known_items).to_numpy(dtype=bool)
        split("events", unknown, "item_id", "item_id not in items")

    if "customer_aliases" in clean:
        merged = merge_aliases(clean, clean["customer_aliases"],
                               report.tables["customer_aliases"].source)
        for name, bad in merged.quarantine.items():
            quarantine[name].append(bad)
        for name, count in merged.ids_remapped.items():
            report.tables[name].ids_remapped = count
        if "customers" in clean:
            report.tables["customers"].rows_merged = merged.customers_merged
        clean = merged.tables

    clean["orders"], returns = net_returns(clean["orders"])
    orders_report = report.tables["orders"]
    orders_report.rows_returned, orders_report.rows_cancelled = returns.return_lines, returns.cancelled_lines
    if returns.return_lines:
        orders_report.returns = returns.to_dict()

    result_quarantine = {}
    for name, parts in quarantine.items():
        frames = [p for p in parts if len(p)]
        result_quarantine[name] = pd.concat(frames, ignore_index=True) if frames else parts[0]
        report.tables[name].add_quarantine(result_quarantine[name])
        clean[name] = _in_time_order(name, clean.pop(name).drop(columns=[ROW_COLUMN]))
        report.tables[name].rows_loaded = len(clean[name])
    return ShopData(tables=clean, report=report, quarantine=result_quarantine)


def _in_time_order(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    """A timed table sorted by its time column, stably (rows of one instant keep the source's
    order); any other table as it is. Training cuts the shop at a dozen cut-offs or more
    (:meth:`ShopData.before`): a table in time order is cut by position, sharing its rows, and
    any other is copied at every cut, which for a log of tens of millions of events that is
    not written in time order (parts written one after another, a mail log by campaign) held
    several copies of the log at once. A log already in order is not touched.

    ``frame`` is consumed: a sort takes each column in order and lets the unsorted one go
    before the next (emptying ``frame``), so the table is never held twice (a million
    customers' events are 5 GB); pass a frame nothing else uses.
    """
    column = TIMED_TABLES.get(name)
    if column is None or frame[column].is_monotonic_increasing:
        return frame
    order = np.argsort(frame[column].dt.tz_convert(None).to_numpy(), kind="stable")
    return pd.DataFrame({label: frame.pop(label).take(order).array for label in list(frame.columns)})


def write_shop(shop: ShopData, out_dir: str | os.PathLike[str], fmt: str = "csv") -> list[Path]:
    """Write the clean tables as a contract folder, with quarantine and report in ``out/quarantine``."""
    written = write_tables(shop.tables, out_dir, fmt)  # type: ignore[arg-type]
    return [*written, *shop.write_quarantine(Path(out_dir) / "quarantine")]
