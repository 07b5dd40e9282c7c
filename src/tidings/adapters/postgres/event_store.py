"""PostgresEventStore: the event log in PostgreSQL, concurrent writers, gap-aware reads."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import psycopg

from tidings.adapters.postgres.database import PostgresDatabase
from tidings.adapters.sql_event_store import COLUMNS, SqlEventStore
from tidings.errors import StorageError
from tidings.ports import Params, Transaction
from tidings.records import EventRecord

FINAL = 0
"""Marks a hole known to be permanent (its writer rolled back)."""


class PostgresEventStore(SqlEventStore):
    """Writers on different streams never wait for each other; a reader of the global log
    never skips an event that commits late.

    Positions come from a sequence, so transaction A may take position 10 and commit after
    transaction B committed 11. A reader that returned 11 and moved its checkpoint past 10
    would lose A's event. ``read_all`` therefore returns positions only without holes. When
    it first meets a hole it takes a fresh transaction id R of its own: whoever holds the
    hole took its id before R (writers take their id before their position, see
    ``_current_version``). The hole is passed only once no transaction older than R is
    still in progress and the hole is still empty: its writer rolled back. A snapshot's
    in-progress list is complete below R once R has ended, which is why R is taken rather
    than read off the first snapshot (that list leaves out running transactions newer than
    the latest finished one).
    """

    mark = "%s"
    select = COLUMNS.replace("data, metadata", "data::text, metadata::text")

    def __init__(self, database: PostgresDatabase) -> None:
        super().__init__(database.tables["events"], database.describe())
        self._db = database
        head = (
            f"INSERT INTO {self.table} (event_id, stream_id, version, event_type, "
            "schema_version, occurred_at, data, metadata) "
            "SELECT e, s, v, t, sv, o, d::jsonb, m::jsonb FROM "
        )
        many = (
            "unnest(%s::text[], %s::text[], %s::int[], %s::text[], %s::int[], "
            "%s::timestamptz[], %s::text[], %s::text[]) AS u(e, s, v, t, sv, o, d, m) "
        )
        one = (  # one row: plain parameters, cheaper to send than eight arrays
            "(VALUES (%s::text, %s::text, %s::int, %s::text, %s::int, %s::timestamptz, "
            "%s::text, %s::text)) AS u(e, s, v, t, sv, o, d, m) "
        )
        # With an expected version the INSERT checks it itself (one statement, one round
        # trip), so nothing is written when the stream is elsewhere. Both conditions are
        # uncorrelated subqueries: PostgreSQL runs them once, as a filter, before the first
        # row is formed, so the transaction takes its id (pg_current_xact_id) before the
        # row's position is drawn from the sequence, the order read_all relies on. A
        # writer that commits the same versions meanwhile still meets ON CONFLICT, and the
        # short RETURNING makes it a ConcurrencyError.
        guard = (
            f"WHERE (SELECT coalesce(max(version), 0) FROM {self.table} WHERE stream_id = %s) "
            "= %s AND (SELECT pg_current_xact_id() IS NOT NULL) "
        )
        # Alone (a transaction of its own, see Transaction.last_statement) the INSERT has
        # no ON CONFLICT: a version taken meanwhile fails the whole statement, where DO
        # NOTHING would commit the other rows of a multi-row append.
        returning = "RETURNING version, position"
        on_conflict = "ON CONFLICT (stream_id, version) DO NOTHING "
        self._inserts = {
            (rows, guarded, alone): head
            + rows_sql
            + (guard if guarded else "")
            + ("" if alone else on_conflict)
            + returning
            for rows, rows_sql in (("one", one), ("many", many))
            for guarded in (False, True)
            for alone in (False, True)
        }
        self._read_all_sql = (
            f"SELECT {self.select}, (SELECT array_agg(x::text) FROM "
            "pg_snapshot_xip(pg_current_snapshot()) AS x) "
            f"FROM {self.table} WHERE position > %s ORDER BY position LIMIT %s"
        )
        # hole position -> the xid bound noted when it was first seen, or FINAL
        self._holes: dict[int, int] = {}
        self._holes_lock = threading.Lock()  # readers on several threads share what is known

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

    def _insert(
        self, tx: Transaction, records: Sequence[EventRecord], guard: int | None, alone: bool
    ) -> list[int] | None:
        rows: Any = [
            (
                r.event_id,
                r.stream_id,
                r.version,
                r.event_type,
                r.schema_version,
                r.occurred_at,
                r.data.decode(),
                r.metadata.decode(),
            )
            for r in records
        ]
        if len(rows) == 1:
            params, shape = list(rows[0]), "one"
        else:
            params, shape = [list(column) for column in zip(*rows, strict=True)], "many"
        if guard is not None:
            params += (records[0].stream_id, guard)
        # Without a guard, _current_version gave the transaction its id already.
        sql = self._inserts[shape, guard is not None, alone]
        try:
            returned = tx.execute(sql, params).fetchall()
        except StorageError as exc:
            # Alone, the statement wrote nothing. A writer that took these versions after
            # the guard looked is a ConcurrencyError; a duplicate event id is not.
            if (
                alone
                and isinstance(exc.__cause__, psycopg.errors.UniqueViolation)
                and self._current_version(tx, records[0].stream_id) >= records[0].version
            ):
                return None
            raise
        if len(returned) != len(records):
            return None
        position_of = dict(returned)
        return [position_of[r.version] for r in records]

    def read_all(self, after_position: int = 0, limit: int = 1000) -> list[EventRecord]:
        """Up to ``limit`` records after ``after_position``, never past a hole that may fill."""
        rows = self._query(self._read_all_sql, (after_position, limit))
        self._forget_holes(after_position)
        records: list[EventRecord] = []
        expected = after_position + 1
        for row in rows:
            if row[0] > expected and not self._holes_are_final(expected, row[0], row[9] or ()):
                return records
            records.append(self._record(row))
            expected = row[0] + 1
        return records

    def _holes_are_final(self, first: int, end: int, in_progress: Sequence[str]) -> bool:
        """True when positions ``first`` to ``end - 1`` are permanently empty."""
        with self._holes_lock:
            unseen = [p for p in range(first, end) if p not in self._holes]
            if unseen:  # first sight: note the bound now, decide on a later read
                bound = self._fresh_xid()
                self._holes.update(dict.fromkeys(unseen, bound))
                return False
            oldest_running = min((int(xid) for xid in in_progress), default=None)
            for position in range(first, end):
                verdict = self._holes[position]
                if verdict != FINAL and oldest_running is not None and oldest_running < verdict:
                    return False
                self._holes[position] = FINAL
            return True

    def _fresh_xid(self) -> int:
        """A transaction id newer than that of every writer that holds a position already."""
        return int(self._query("SELECT pg_current_xact_id()::text", ())[0][0])

    def _forget_holes(self, upto: int) -> None:
        """Drop what is known of holes at or before ``upto``: the reader is past them."""
        with self._holes_lock:
            if self._holes and min(self._holes) <= upto:
                for position in [p for p in self._holes if p <= upto]:
                    del self._holes[position]
