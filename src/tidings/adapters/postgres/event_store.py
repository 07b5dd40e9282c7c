"""PostgresEventStore: the event log in PostgreSQL, concurrent writers, gap-aware reads."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import psycopg

from tidings.adapters.postgres.database import PostgresDatabase
from tidings.adapters.postgres.reader_hold import HoldWarning, ReaderHold, hold_sql, measure_hold
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

    Both facts come from the server (R, and the transactions running now), so a store
    that has never seen the hole decides it within one ``read_all``: it takes R, then
    looks again, at once and for up to ``hole_wait`` seconds. What it noted is only kept
    so that the next call need not take another R.

    "Older than R" counts every transaction on the server, in any database: one left open
    holds every reader. ``reader_hold`` and ``reader_held_seconds`` say for how long, and
    a warning on the ``tidings.event_store`` logger names the transaction once a hold
    reaches ``warn_after`` seconds (again at most every ``warn_every`` seconds).
    """

    mark = "%s"
    select = COLUMNS.replace("data, metadata", "data::text, metadata::text")

    def __init__(
        self,
        database: PostgresDatabase,
        *,
        hole_wait: float = 0.1,
        warn_after: float = 10.0,
        warn_every: float = 60.0,
    ) -> None:
        super().__init__(database.tables["events"], database.describe())
        self._db = database
        for name, seconds in (
            ("hole_wait", hole_wait),
            ("warn_after", warn_after),
            ("warn_every", warn_every),
        ):
            if not seconds >= 0:  # also refuses NaN
                raise ValueError(f"{name} is in seconds and must be 0 or more (got {seconds!r})")
        self.hole_wait = hole_wait
        self._hold: ReaderHold | None = None
        self._hold_sql = hold_sql(self.table)
        self._hold_warning = HoldWarning(warn_after, warn_every)
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
        """Up to ``limit`` records after ``after_position``, never past a hole that may fill.

        A hole this store has not seen before gets its bound now, and is looked at again
        at once and then for up to ``hole_wait`` seconds: a fresh store (a new process, a
        worker reading from its checkpoint) passes a hole a rollback left as soon as the
        transactions running when it met the hole have ended, rather than on some later
        call. A hole still pending then ends the page early (see ``reader_hold``).
        """
        records: list[EventRecord] = []
        deadline: float | None = None
        pause = 0.0
        while True:
            rows = self._query(self._read_all_sql, (after_position, limit - len(records)))
            self._forget_holes(after_position)
            page, pending = self._gap_free(after_position, rows)
            records += page
            if pending is None:
                self._hold = None
                return records
            if deadline is None:
                deadline = time.monotonic() + self.hole_wait
            elif time.monotonic() >= deadline:
                self._note_hold(pending, rows)
                return records
            if records:
                after_position = records[-1].position
            time.sleep(pause)  # the first look again is at once: a rollback is over already
            pause = min(max(pause * 2, 0.002), 0.02)

    def _gap_free(
        self, after_position: int, rows: list[Any]
    ) -> tuple[list[EventRecord], int | None]:
        """The records of ``rows`` up to the first hole that may still fill, and that
        hole's first position (None when there is none)."""
        records: list[EventRecord] = []
        expected = after_position + 1
        for row in rows:
            if row[0] > expected and not self._holes_are_final(expected, row[0], row[9] or ()):
                return records, expected
            records.append(self._record(row))
            expected = row[0] + 1
        return records, None

    @property
    def reader_hold(self) -> ReaderHold | None:
        """Where the last ``read_all`` stopped for a hole that may still fill, for how
        long, and behind which transaction; None when it was not held."""
        return self._hold

    @property
    def reader_held_seconds(self) -> float:
        """How long the last ``read_all`` has been held at a hole, 0.0 when it was not: a
        figure for a metric (it grows while a transaction stays open on the server)."""
        hold = self._hold
        return 0.0 if hold is None else hold.held_seconds

    def _note_hold(self, position: int, rows: list[Any]) -> None:
        """Measure the hold at ``position`` from the database, keep it, maybe warn."""
        past_hole = next(row[0] for row in rows if row[0] > position)
        running = [int(xid) for row in rows[:1] for xid in row[9] or ()]
        hold = measure_hold(
            self._query, self._hold_sql, position, past_hole, min(running, default=None)
        )
        self._hold = hold
        self._hold_warning.consider(hold)

    def _holes_are_final(self, first: int, end: int, in_progress: Sequence[str]) -> bool:
        """True when positions ``first`` to ``end - 1`` are permanently empty."""
        with self._holes_lock:
            unseen = [p for p in range(first, end) if p not in self._holes]
            if unseen:  # first sight: note the bound now, decide on a later look
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
