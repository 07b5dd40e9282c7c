"""The snapshot store logic both SQL backends share; each supplies its dialect's pieces."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tidings.ports import Params, Transaction
from tidings.records import SnapshotRecord

LAST_VERSION = 2**31 - 1


class SqlSnapshotStore:
    """Snapshots in one table keyed by (stream, version); the newest usable one is found
    on the primary key, walking down from the wanted version.

    Subclasses set ``mark``, ``state_in`` and ``state_out`` (how the dialect writes and
    reads the JSON column) and implement ``_query``, ``_write``, ``_time`` and ``_moment``.
    """

    mark = "?"
    state_in = "?"
    state_out = "state"

    def __init__(self, table: str) -> None:
        self.table = table
        m = self.mark
        self._save_sql = (
            f"INSERT INTO {table} (stream_id, version, aggregate_type, snapshot_version, "
            f"state, taken_at) VALUES ({m}, {m}, {m}, {m}, {self.state_in}, {m}) "
            "ON CONFLICT (stream_id, version) DO UPDATE SET "
            "aggregate_type = excluded.aggregate_type, "
            "snapshot_version = excluded.snapshot_version, "
            "state = excluded.state, taken_at = excluded.taken_at"
        )
        self._latest_sql = (
            f"SELECT stream_id, version, aggregate_type, snapshot_version, {self.state_out}, "
            f"taken_at FROM {table} WHERE stream_id = {m} AND version <= {m} "
            f"AND aggregate_type = {m} AND snapshot_version = {m} "
            "ORDER BY version DESC LIMIT 1"
        )

    def save(self, tx: Transaction, snapshot: SnapshotRecord) -> None:
        """Write ``snapshot`` inside ``tx``, replacing one at the same stream and version."""
        self._write(
            tx,
            self._save_sql,
            (
                snapshot.stream_id,
                snapshot.version,
                snapshot.aggregate_type,
                snapshot.snapshot_version,
                snapshot.state.decode(),
                self._moment(snapshot.taken_at),
            ),
        )

    def load_latest(
        self,
        stream_id: str,
        aggregate_type: str,
        snapshot_version: int,
        max_version: int | None = None,
    ) -> SnapshotRecord | None:
        """The newest snapshot of this type and shape at or below ``max_version``."""
        top = LAST_VERSION if max_version is None else min(max_version, LAST_VERSION)
        rows = self._query(self._latest_sql, (stream_id, top, aggregate_type, snapshot_version))
        return self._snapshot(rows[0]) if rows else None

    def _snapshot(self, row: Sequence[Any]) -> SnapshotRecord:
        state = row[4]
        return SnapshotRecord(
            stream_id=row[0],
            version=int(row[1]),
            aggregate_type=row[2],
            snapshot_version=int(row[3]),
            state=state.encode() if isinstance(state, str) else bytes(state),
            taken_at=self._time(row[5]),
        )

    def _query(self, sql: str, params: Params) -> list[Any]:
        raise NotImplementedError

    def _write(self, tx: Transaction, sql: str, params: Params) -> None:
        raise NotImplementedError

    def _time(self, value: Any) -> Any:
        return value

    def _moment(self, value: Any) -> Any:
        return value
