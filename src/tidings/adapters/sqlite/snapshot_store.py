"""SqliteSnapshotStore: snapshots of aggregate state in one SQLite table."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from tidings.adapters.sql import iso_utc
from tidings.adapters.sql_snapshot_store import SqlSnapshotStore
from tidings.adapters.sqlite.database import SqliteDatabase, storage_error
from tidings.ports import Params, Transaction


class SqliteSnapshotStore(SqlSnapshotStore):
    """State as JSON text, times as fixed-width ISO 8601 UTC text."""

    def __init__(self, database: SqliteDatabase) -> None:
        super().__init__(database.tables["snapshots"])
        self._db = database

    def _query(self, sql: str, params: Params) -> list[Any]:
        return self._db.query(sql, params)

    def _write(self, tx: Transaction, sql: str, params: Params) -> None:
        try:
            tx.connection.execute(sql, params)
        except sqlite3.Error as exc:
            raise storage_error(exc, f"writing a snapshot to {self.table}") from exc

    def _time(self, value: Any) -> datetime:
        return datetime.fromisoformat(value)

    def _moment(self, value: datetime) -> str:
        return iso_utc(value)
