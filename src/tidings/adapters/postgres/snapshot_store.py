"""PostgresSnapshotStore: snapshots of aggregate state in one PostgreSQL table."""

from __future__ import annotations

from typing import Any

import psycopg

from tidings.adapters.postgres.database import PostgresDatabase, storage_error
from tidings.adapters.sql_snapshot_store import SqlSnapshotStore
from tidings.ports import Params, Transaction


class PostgresSnapshotStore(SqlSnapshotStore):
    """State as JSONB (read back as text for the codec), times as TIMESTAMPTZ."""

    mark = "%s"
    state_in = "%s::jsonb"
    state_out = "state::text"

    def __init__(self, database: PostgresDatabase) -> None:
        super().__init__(database.tables["snapshots"])
        self._db = database

    def _query(self, sql: str, params: Params) -> list[Any]:
        return self._db.query(sql, params)

    def _write(self, tx: Transaction, sql: str, params: Params) -> None:
        try:
            tx.connection.execute(sql, params)
        except psycopg.Error as exc:
            raise storage_error(
                exc, f"writing a snapshot to {self.table}", self._db.describe()
            ) from exc
