"""Reading a folder log (:class:`serving.event_log.FileEventLog`) without writing to it: its
write-ahead segments as they are parsed for compaction, and the whole log as one table."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from serving.event_log.common import EventLogError, LogTable

logger = logging.getLogger("shoprec.serving.event_log")


def read_log(folder: Path, table: LogTable) -> pa.Table:
    """Every row of the log in ``folder``: the segments not compacted yet (a live writer's included,
    up to its last complete line) and the Parquet parts. A segment compacted while it is read
    may give its rows twice, from the segment and from its part; callers that count rows drop the
    repeats by the table's key. Raises :class:`EventLogError` for a part or segment it cannot read."""
    tables = []
    # Segments before parts: a segment compacted in between is then read twice (from both), never
    # missed (gone from the segments and not yet listed among the parts).
    for segment in sorted((folder / table.wal).glob("*.jsonl")):
        try:
            data = segment.read_bytes()
        except FileNotFoundError:
            continue  # compacted before it could be read: its part is listed below
        complete = data[: data.rfind(b"\n") + 1]  # a live writer's batch may be half written
        tables.append(parse_segment(complete, segment, table))
    for part in sorted((folder / table.name).glob("part-*.parquet")):
        try:
            tables.append(pq.read_table(part, schema=table.schema))
        except (OSError, pa.ArrowInvalid) as error:
            raise EventLogError(f"{part}: cannot read ({error})") from None
    return pa.concat_tables(tables) if tables else table.schema.empty_table()


def parse_segment(data: bytes, path: Path, table: LogTable) -> pa.Table:
    """JSON lines -> an Arrow table of the log's schema. A torn last line (a batch whose write never
    finished, so never acknowledged) is dropped; any other bad line is an error."""
    lines = data.split(b"\n")
    if lines[-1]:
        logger.warning("log: %s ends in an incomplete line (an unacknowledged batch); dropped", path)
    lines = lines[:-1]
    schema = table.schema
    columns: dict[str, list] = {name: [] for name in schema.names}
    for number, line in enumerate(lines, start=1):
        try:
            row = json.loads(line)
            for name in schema.names:
                columns[name].append(row[name])
        except (ValueError, KeyError, TypeError) as error:
            raise EventLogError(f"{path} line {number}: not {table.row} ({type(error).__name__}: {error})") from None
    try:  # times are ISO text in the JSON lines, cast by the schema; the rest is taken as typed
        arrays = [pa.array(columns[f.name], pa.string()).cast(f.type) if pa.types.is_timestamp(f.type)
                  else pa.array(columns[f.name], f.type) for f in schema]
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise EventLogError(f"{path}: a value does not fit the log's schema, such as a ts that is not "
                            f"ISO 8601 ({error})") from None
    return pa.Table.from_arrays(arrays, schema=schema)
