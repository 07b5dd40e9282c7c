"""The outbox logic both SQL backends share; each supplies its dialect's pieces.

A relay claims due rows of the lanes it leases, in position order, and never a row whose
aggregate has an earlier row waiting for a retry or a dead letter (the aggregate is
parked: its order holds). The lanes are leased from the ``Leases`` component (the set
``OUTBOX_LANES``); settling a batch is one transaction that first checks there
(``Leases.holds``, which keeps a takeover out until it ends) that every lease still
carries the token the relay holds.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from tidings.ports import (
    OUTBOX_LANES,
    DeadLetter,
    Leases,
    OutboxEntry,
    OutboxStats,
    Settlement,
    Transaction,
    new_entry,
)
from tidings.records import EventRecord, shard_of
from tidings.serialization.cloudevents import with_position

WRITTEN = (
    "event_id, event_type, aggregate_id, aggregate_version, schema_version, occurred_at, "
    "payload, headers, shard"
)
"""The columns a writer fills; the rest take their defaults."""

ROW = (
    "position, event_id, event_type, aggregate_id, aggregate_version, schema_version, "
    "occurred_at, payload, headers, shard"
)


class SqlOutbox:
    """Outbox and dead letters over SQL tables (see the module docstring).

    Subclasses provide ``mark`` (placeholder), ``modulo`` (the operator as the driver needs
    it written), ``now_text`` (SQL for the current time), ``select_row`` and the methods
    that differ:
    ``_transaction``, ``_query``, ``_insert``, ``_record``, ``_age_sql``,
    ``_older_than_sql``, ``wait_for_work``, ``close``.
    """

    mark = "?"
    modulo = "%"
    now_text = "CURRENT_TIMESTAMP"
    select_row = ROW

    def __init__(self, tables: Mapping[str, str], leases: Leases) -> None:
        self.t = dict(tables)
        self.leases = leases

    # -- writing, inside the unit of work -------------------------------------------------

    def write(self, tx: Transaction, records: Sequence[EventRecord]) -> None:
        """Add one outbox row per record in the caller's transaction."""
        if records:
            self._insert(tx, records)

    @staticmethod
    def row_values(r: EventRecord) -> tuple[Any, ...]:
        """The column values of a record's outbox row (without position and state)."""
        return (
            r.event_id,
            r.event_type,
            r.stream_id,
            r.version,
            r.schema_version,
            r.occurred_at,
            r.data.decode(),
            # The event's log position rides in the headers to the wire (tidingsposition).
            with_position(r.metadata, r.position).decode(),
            shard_of(r.stream_id),
        )

    # -- claiming and settling -----------------------------------------------------------

    def claim(
        self,
        leases: Mapping[int, int],
        lanes: int,
        limit: int,
        now: float,
        skip: Collection[int] = (),
    ) -> list[OutboxEntry]:
        """Due, unparked rows of the leased lanes, oldest first, but for ``skip``."""
        if not leases:
            return []
        m, t = self.mark, self.t
        lane_sql, lane_params = self.int_set(sorted(leases))
        skip_sql = ""
        skip_params: tuple[Any, ...] = ()
        if skip:
            condition, skip_params = self.int_set_to_leave_out(sorted(skip))
            skip_sql = f"AND o.position {condition} "
        # A row waiting for a retry has failed before (retry_count > 0): saying so lets the
        # parked check probe the small partial index of such rows, never the whole backlog.
        # The lane test sits in coalesce() so that PostgreSQL does not estimate it: on
        # ``shard % lanes`` it guessed a few rows in a thousand match, and read and sorted
        # the whole backlog instead of walking the position index to the batch's end (a
        # claim of 2,000 of 50,000 rows: 77 ms with every lane held, 58 ms with three of
        # eight; 3.7 and 1.2 ms as written).
        rows = self._claim_rows(
            f"SELECT {self.select_row}, retry_count FROM {t['outbox']} o "
            f"WHERE o.published = FALSE AND o.next_attempt_at <= {m} "
            f"AND coalesce((o.shard {self.modulo} {m}) {lane_sql}, FALSE) {skip_sql}"
            f"AND NOT EXISTS (SELECT 1 FROM {t['outbox']} p WHERE p.aggregate_id = o.aggregate_id "
            f"AND p.published = FALSE AND p.retry_count > 0 AND p.position < o.position "
            f"AND p.next_attempt_at > {m}) "
            f"AND NOT EXISTS (SELECT 1 FROM {t['outbox_dead_letters']} d "
            f"WHERE d.aggregate_id = o.aggregate_id) "
            f"ORDER BY o.position LIMIT {m}",
            (now, lanes, *lane_params, *skip_params, now, limit),
        )
        record, entry = self._record, new_entry
        return [entry(record(row), int(row[9]) % lanes, int(row[10])) for row in rows]

    def settle(self, relay_id: str, leases: Mapping[int, int], outcome: Settlement) -> bool:
        """Apply a batch's outcome in one transaction, only if every lease still holds."""
        m, t = self.mark, self.t
        with self._bookkeeping() as tx:
            if not self.leases.holds(tx, relay_id, OUTBOX_LANES, leases):
                return False
            if outcome.published:
                position_sql, positions = self.int_set(outcome.published)
                tx.execute(
                    f"UPDATE {t['outbox']} SET published = TRUE, published_at = {self.now_text} "
                    f"WHERE position {position_sql}",
                    positions,
                )
            self._execute_many(
                tx,
                f"UPDATE {t['outbox']} SET retry_count = retry_count + 1, "
                f"next_attempt_at = {m}, last_error = {m} WHERE position = {m}",
                [(at, error[:2000], position) for position, at, error in outcome.retry],
            )
            self._execute_many(
                tx,
                f"INSERT INTO {t['outbox_dead_letters']} ({ROW}, created_at, retry_count, "
                f"last_error) SELECT {ROW}, created_at, retry_count + 1, {m} "
                f"FROM {t['outbox']} WHERE position = {m}",
                [(error[:2000], position) for position, error in outcome.dead],
            )
            self._execute_many(
                tx,
                f"DELETE FROM {t['outbox']} WHERE position = {m}",
                [(position,) for position, _ in outcome.dead],
            )
        return True

    # -- operating ------------------------------------------------------------------------

    def stats(self, now: float) -> OutboxStats:
        """Backlog, age of the oldest unpublished row, dead letters.

        The oldest row is the first in line (the lowest position), found through the
        index of unpublished rows without reading the others: a metrics scrape of a
        million-row backlog stays cheap. A row written later by a transaction that began
        earlier may be older by that transaction's length; an age alert does not care.
        """
        t = self.t
        backlog = self._query(f"SELECT count(*) FROM {t['outbox']} WHERE published = FALSE", ())[0][
            0
        ]
        first = self._query(
            f"SELECT {self._age_sql('created_at')} FROM {t['outbox']} "
            "WHERE published = FALSE ORDER BY position LIMIT 1",
            (),
        )
        age = first[0][0] if first else 0.0
        dead = self._query(f"SELECT count(*) FROM {t['outbox_dead_letters']}", ())[0][0]
        return OutboxStats(int(backlog), float(age or 0.0), int(dead))

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Dead letters in the order their events were written."""
        rows = self._query(
            f"SELECT {self.select_row}, retry_count, last_error, dead_at "
            f"FROM {self.t['outbox_dead_letters']} ORDER BY position LIMIT {self.mark}",
            (limit,),
        )
        return [DeadLetter(self._record(r), int(r[10]), r[11], str(r[12])) for r in rows]

    def retry_dead(self, event_ids: Sequence[str] | None = None) -> int:
        """Move dead letters back into the outbox at their old position, due at once."""
        t = self.t
        where, params = self._which(event_ids)
        with self._transaction() as tx:
            moved = tx.execute(
                f"INSERT INTO {t['outbox']} ({ROW}, created_at) "
                f"SELECT {ROW}, created_at FROM {t['outbox_dead_letters']}{where}",
                params,
            ).rowcount
            tx.execute(f"DELETE FROM {t['outbox_dead_letters']}{where}", params)
        return int(moved)

    def purge_dead(self, event_ids: Sequence[str] | None = None) -> int:
        """Delete dead letters; their aggregates' later events flow again."""
        where, params = self._which(event_ids)
        with self._transaction() as tx:
            gone = tx.execute(f"DELETE FROM {self.t['outbox_dead_letters']}{where}", params)
            return int(gone.rowcount)

    def delete_published(self, older_than_seconds: float, batch: int) -> int:
        """Delete up to ``batch`` published rows older than ``older_than_seconds``."""
        t, m = self.t, self.mark
        with self._bookkeeping() as tx:
            gone = tx.execute(
                f"DELETE FROM {t['outbox']} WHERE position IN (SELECT position FROM "
                f"{t['outbox']} WHERE published = TRUE AND "
                f"{self._older_than_sql('published_at')} ORDER BY position LIMIT {m})",
                (older_than_seconds, batch),
            )
            return int(gone.rowcount)

    def _which(self, event_ids: Sequence[str] | None) -> tuple[str, tuple[Any, ...]]:
        if event_ids is None:
            return "", ()
        sql, params = self.in_list(list(event_ids))
        return f" WHERE event_id {sql}", params

    def in_list(self, values: Sequence[Any]) -> tuple[str, tuple[Any, ...]]:
        """``IN (...)`` with one placeholder per value."""
        return f"IN ({', '.join([self.mark] * len(values))})", tuple(values)

    def int_set(self, values: Sequence[int]) -> tuple[str, tuple[Any, ...]]:
        """A condition that the column is one of ``values`` (``IN (...)`` unless the
        dialect has something cheaper for long lists)."""
        return self.in_list(values)

    def int_set_to_leave_out(self, values: Sequence[int]) -> tuple[str, tuple[Any, ...]]:
        """A condition that the column is none of ``values``, cheap for thousands of them
        (the claim's ``skip``: rows in flight or settling)."""
        sql, params = self.in_list(values)
        return f"NOT {sql}", params

    def _execute_many(self, tx: Transaction, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run ``sql`` once per row (the dialect may send them all in one go)."""
        for row in rows:
            tx.execute(sql, row)

    # -- what each dialect supplies -------------------------------------------------------

    def close(self) -> None:
        """Release what the outbox holds beyond the database's pool."""

    def _transaction(self) -> AbstractContextManager[Transaction]:
        raise NotImplementedError

    def _bookkeeping(self) -> AbstractContextManager[Transaction]:
        """A transaction of the relay's own records (published marks, retries, dead
        letters, clean-up) that a crash may lose without losing an event: the event is then
        published again, which at-least-once allows. A dialect may make it cheaper."""
        return self._transaction()

    def _query(self, sql: str, params: Sequence[Any]) -> list[Any]:
        raise NotImplementedError

    def _claim_rows(self, sql: str, params: Sequence[Any]) -> list[Any]:
        """Run the claim's read (a dialect may give it a connection of its own)."""
        return self._query(sql, params)

    def _insert(self, tx: Transaction, records: Sequence[EventRecord]) -> None:
        raise NotImplementedError

    def _record(self, row: Sequence[Any]) -> EventRecord:
        raise NotImplementedError

    def _age_sql(self, column: str) -> str:
        raise NotImplementedError

    def _older_than_sql(self, column: str) -> str:
        raise NotImplementedError
