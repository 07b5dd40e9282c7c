"""SqliteEventStore: the event log in one SQLite table."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from tidings.adapters.sql import iso_utc
from tidings.adapters.sql_event_store import SqlEventStore
from tidings.adapters.sqlite.database import SqliteDatabase, storage_error
from tidings.ports import Params, Transaction
from tidings.records import EventRecord


class SqliteEventStore(SqlEventStore):
    """Writers are serialised by SQLite's write lock, so the version check is exact and a
    batch's positions are consecutive."""

    def __init__(self, database: SqliteDatabase) -> None:
        super().__init__(database.tables["events"], database.describe())
        self._db = database
        self._insert_sql = (
            f"INSERT INTO {self.table} (event_id, stream_id, version, event_type, "
            "schema_version, occurred_at, data, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        )

    def _query(self, sql: str, params: Params) -> list[Any]:
        return self._db.query(sql, params)

    def _current_version(self, tx: Transaction, stream_id: str) -> int:
        row = tx.execute(
            f"SELECT coalesce(max(version), 0) FROM {self.table} WHERE stream_id = ?",
            (stream_id,),
        ).fetchone()
        return int(row[0])

    def _insert(self, tx: Transaction, records: Sequence[EventRecord]) -> list[int] | None:
        rows = [
            (
                r.event_id,
                r.stream_id,
                r.version,
                r.event_type,
                r.schema_version,
                iso_utc(r.occurred_at),
                r.data.decode(),
                r.metadata.decode(),
            )
            for r in records
        ]
        try:
            tx.connection.executemany(self._insert_sql, rows)
        except sqlite3.Error as exc:
            raise storage_error(exc, f"appending to {self.table}") from exc
        last = int(tx.connection.execute("SELECT last_insert_rowid()").fetchone()[0])
        return list(range(last - len(records) + 1, last + 1))

    def _time(self, value: Any) -> datetime:
        return datetime.fromisoformat(value)

    def _moment(self, value: datetime) -> str:
        return iso_utc(value)  # fixed width, so text order is time order
