"""PostgresEventStore: the event log in PostgreSQL, concurrent writers, gap-aware reads."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from tidings.adapters.postgres.database import PostgresDatabase
from tidings.adapters.sql_event_store import COLUMNS, SqlEventStore
from tidings.ports import Params, Transaction
from tidings.records import EventRecord


class PostgresEventStore(SqlEventStore):
    """Writers on different streams never wait for each other; a reader of the global log
    never skips an event that commits late.

    Positions come from a sequence, so transaction A may take position 10 and commit after
    transaction B committed 11. A reader that returned 11 and moved its checkpoint past 10
    would lose A's event. ``read_all`` therefore returns positions only without holes: at a
    missing position it notes which transactions were in progress; the hole is passed over
    only once all of those have ended and it is still empty (its writer rolled back). That
    works because every writer takes its transaction id before its position, so whoever
    holds a hole was in progress when the hole was first seen.
    """

    mark = "%s"
    select = COLUMNS.replace("data, metadata", "data::text, metadata::text")

    def __init__(self, database: PostgresDatabase) -> None:
        super().__init__(database.tables["events"], database.describe())
        self._db = database
        self._insert_sql = (
            f"INSERT INTO {self.table} (event_id, stream_id, version, event_type, "
            "schema_version, occurred_at, data, metadata) "
            "SELECT e, s, v, t, sv, o, d::jsonb, m::jsonb FROM unnest("
            "%s::text[], %s::text[], %s::int[], %s::text[], %s::int[], %s::timestamptz[], "
            "%s::text[], %s::text[]) AS u(e, s, v, t, sv, o, d, m) "
            "ON CONFLICT (stream_id, version) DO NOTHING RETURNING version, position"
        )
        self._read_all_sql = (
            f"SELECT {self.select}, (SELECT array_agg(x::text) FROM "
            "pg_snapshot_xip(pg_current_snapshot()) AS x) "
            f"FROM {self.table} WHERE position > %s ORDER BY position LIMIT %s"
        )
        self._holes: dict[int, frozenset[str]] = {}
        self._holes_lock = threading.Lock()

    def _query(self, sql: str, params: Params) -> list[Any]:
        return self._db.query(sql, params)

    def _current_version(self, tx: Transaction, stream_id: str) -> int:
        # pg_current_xact_id() gives this transaction its id now, before the INSERT takes a
        # position: read_all relies on that order.
        row = tx.execute(
            f"SELECT pg_current_xact_id(), coalesce(max(version), 0) FROM {self.table} "
            "WHERE stream_id = %s",
            (stream_id,),
        ).fetchone()
        return int(row[1])

    def _insert(self, tx: Transaction, records: Sequence[EventRecord]) -> list[int] | None:
        columns: list[list[Any]] = [[] for _ in range(8)]
        for r in records:
            for column, value in zip(
                columns,
                (
                    r.event_id,
                    r.stream_id,
                    r.version,
                    r.event_type,
                    r.schema_version,
                    r.occurred_at,
                    r.data.decode(),
                    r.metadata.decode(),
                ),
                strict=True,
            ):
                column.append(value)
        rows = tx.execute(self._insert_sql, columns).fetchall()
        if len(rows) != len(records):
            return None
        position_of = dict(rows)
        return [position_of[r.version] for r in records]

    def read_all(self, after_position: int = 0, limit: int = 1000) -> list[EventRecord]:
        """Up to ``limit`` records after ``after_position``, never past a hole that may fill."""
        rows = self._query(self._read_all_sql, (after_position, limit))
        records: list[EventRecord] = []
        expected = after_position + 1
        for row in rows:
            in_progress = frozenset(row[9] or ())
            while row[0] > expected:
                if not self._hole_is_final(expected, in_progress):
                    return records
                expected += 1
            records.append(self._record(row))
            expected = row[0] + 1
        return records

    def _hole_is_final(self, position: int, in_progress: frozenset[str]) -> bool:
        """True when no transaction that could still write ``position`` is running."""
        with self._holes_lock:
            first_seen = self._holes.setdefault(position, in_progress)
            if first_seen & in_progress:
                return False
            del self._holes[position]
            return True
