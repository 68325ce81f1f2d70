"""Contract tables written to files a block of rows at a time: ``<table>.csv``, ``.csv.gz`` or
``.parquet`` in one folder, as :class:`features.sources.FolderSource` reads them.

A sample shop of a million customers is generated a block of customers at a time
(:mod:`features.sample.shop`); its tables are written here as the blocks come, so no table is
ever held whole. A file is written under a temporary name and renamed into place when the
writer closes, so a reader never sees half a table, and a failed run leaves the folder's
earlier files as they were.
"""

from __future__ import annotations

import contextlib
import gzip
import os
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

FileFormat = Literal["csv", "csv.gz", "parquet"]
FILE_SUFFIXES: tuple[str, ...] = (".csv", ".csv.gz", ".parquet")
CSV_DATES = "%Y-%m-%dT%H:%M:%S.%fZ"
"""ISO 8601 in UTC, to the microsecond: what the contract's loader reads back exactly."""


class TableFiles:
    """One file per table in ``out_dir``, each appended to block by block (:meth:`append`) and
    put in place by :meth:`close` (or leaving a ``with`` block without an error). Every block of
    a table must have the first block's columns, in its order, with its types: a block that
    differs is refused (a CSV header is written once, and Parquet would drop or cast silently)."""

    def __init__(self, out_dir: str | os.PathLike[str], fmt: FileFormat) -> None:
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.fmt = fmt
        self.rows: dict[str, int] = {}
        self.written: list[Path] = []
        self._dtypes: dict[str, pd.Series] = {}
        self._parquet: dict[str, pq.ParquetWriter] = {}
        self._text: dict[str, IO[str]] = {}

    def _path(self, name: str) -> Path:
        return self.out / f"{name}.{self.fmt}"

    def _temporary(self, name: str) -> Path:
        path = self._path(name)
        return path.with_name(f".{path.name}.tmp")

    def append(self, tables: Mapping[str, pd.DataFrame]) -> None:
        """Add each frame's rows to the end of its table's file (opened on its first block)."""
        for name, frame in tables.items():
            first = name not in self.rows
            if first:
                self._dtypes[name] = frame.dtypes
            elif not frame.dtypes.equals(self._dtypes[name]):
                raise ValueError(f"{name}: a block with columns {dict(frame.dtypes.astype(str))} after a first "
                                 f"block with {dict(self._dtypes[name].astype(str))}")
            self.rows[name] = self.rows.get(name, 0) + len(frame)
            if self.fmt == "parquet":
                if first:
                    schema = pa.Schema.from_pandas(frame, preserve_index=False)
                    self._parquet[name] = pq.ParquetWriter(self._temporary(name), schema)
                writer = self._parquet[name]
                writer.write_table(pa.Table.from_pandas(frame, schema=writer.schema, preserve_index=False))
                continue
            if first:
                self._text[name] = self._open_text(self._temporary(name))
            frame.to_csv(self._text[name], index=False, header=first, date_format=CSV_DATES)

    def _open_text(self, path: Path) -> IO[str]:
        """The table's CSV file, kept open across blocks (closed by :meth:`close`)."""
        if self.fmt == "csv.gz":
            return gzip.open(path, "wt", newline="")  # noqa: SIM115
        return open(path, "w", newline="")  # noqa: SIM115

    def close(self) -> list[Path]:
        """Finish every table's file, then put them all in place (replacing the same table in
        another format, which the loader would refuse as given twice); the paths written, in the
        order first appended. When a file cannot be finished, none is put in place; a rename
        that fails (the folder gone) leaves those renamed before it. No temporary file stays."""
        try:
            for handles in (self._parquet, self._text):
                for name in list(handles):
                    handles[name].close()
                    del handles[name]
            for name in self.rows:
                path = self._path(name)
                if path in self.written:
                    continue  # closed before
                os.replace(self._temporary(name), path)
                self.written.append(path)
                for suffix in FILE_SUFFIXES:
                    other = self.out / f"{name}{suffix}"
                    if other != path and other.exists():
                        other.unlink()
        except BaseException:
            self.discard()
            raise
        return self.written

    def discard(self) -> None:
        """Close and delete every temporary file: what is not yet in place never will be."""
        for handles in (self._parquet, self._text):
            for handle in handles.values():
                with contextlib.suppress(Exception):  # a half-written file is deleted below either way
                    handle.close()
            handles.clear()
        for name in self.rows:
            self._temporary(name).unlink(missing_ok=True)

    def __enter__(self) -> TableFiles:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if kind is None:
            self.close()
        else:
            self.discard()


def write_tables(tables: Mapping[str, pd.DataFrame], out_dir: str | os.PathLike[str],
                 fmt: FileFormat = "csv") -> list[Path]:
    """Write contract tables as ``<table>.<fmt>`` files, each atomically (temp file, then rename)."""
    with TableFiles(out_dir, fmt) as files:
        files.append(tables)
    return files.written
