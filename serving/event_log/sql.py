"""The database event log: one INSERT transaction per batch into the contract's ``events`` table."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from features.errors import first_line
from serving.event_log.common import EVENT_LOG_ENV, EventLogError
from serving.live_events import EVENT_COLUMNS, LiveEvent


class SqlEventLog:
    """One INSERT transaction per batch into the contract's ``events`` table (created if missing)."""

    def __init__(self, url: str, *, table: str = "events") -> None:
        from features.sources import safe_url

        self.description = safe_url(url)
        try:
            self.engine = sa.create_engine(url, pool_pre_ping=True)
            self._table = self._ensure_table(table)
        except (sa.exc.SQLAlchemyError, ImportError) as error:
            raise EventLogError(f"{self.description}: cannot open the event log database ({EVENT_LOG_ENV}): "
                                f"{first_line(error)}") from None
        self._columns = [c.name for c in self._table.columns if c.name in EVENT_COLUMNS]
        missing = [c for c in EVENT_COLUMNS if c not in self._columns]
        if missing:
            raise EventLogError(f"{self.description}: table '{table}' lacks column{'s' if len(missing) > 1 else ''} "
                                f"{', '.join(missing)}; add {'them' if len(missing) > 1 else 'it'} or drop the table")
        ts_type = self._table.columns["ts"].type
        # A typed column gets datetimes (naive UTC where it stores no zone); a text column ISO text.
        self._ts_kind = ("aware" if isinstance(ts_type, sa.DateTime) and ts_type.timezone else
                         "naive" if isinstance(ts_type, (sa.DateTime, sa.Date)) else "text")

    def _ensure_table(self, name: str) -> sa.Table:
        with self.engine.connect() as conn:
            if not sa.inspect(conn).has_table(name):
                metadata = sa.MetaData()
                sa.Table(name, metadata,
                         sa.Column("session_id", sa.Text, nullable=False),
                         sa.Column("event_type", sa.Text, nullable=False),
                         sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
                         sa.Column("customer_id", sa.Text, nullable=True),
                         sa.Column("item_id", sa.Text, nullable=True))
                try:
                    metadata.create_all(conn, checkfirst=True)
                    conn.commit()
                except sa.exc.SQLAlchemyError:  # another worker created it first
                    conn.rollback()
                    if not sa.inspect(conn).has_table(name):
                        raise
        with self.engine.connect() as conn:
            return sa.Table(name, sa.MetaData(), autoload_with=conn)

    def _row(self, event: LiveEvent) -> dict:
        ts: object = event.ts
        if self._ts_kind == "naive":
            ts = event.ts.replace(tzinfo=None)
        elif self._ts_kind == "text":
            ts = event.to_dict()["ts"]
        return {"session_id": event.session_id, "event_type": event.event_type, "ts": ts,
                "customer_id": event.customer_id, "item_id": event.item_id}

    def append(self, events: Sequence[LiveEvent]) -> None:
        if not events:
            return
        rows = [self._row(e) for e in events]
        try:
            with self.engine.begin() as conn:
                conn.execute(self._table.insert(), rows)
        except sa.exc.SQLAlchemyError as error:
            raise EventLogError(f"{self.description}: cannot write events: {first_line(error)}") from None

    def compact(self) -> int:
        return 0  # rows are readable as soon as their transaction commits

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> SqlEventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
