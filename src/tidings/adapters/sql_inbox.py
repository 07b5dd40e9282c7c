"""SqlInbox: the inbox tables on SQLite and PostgreSQL (the SQL differs only in details)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import msgspec

from tidings.ports import InboxDeadLetter, InFlightMessage, Transaction
from tidings.records import EventRecord

DEAD = "id, event_id, handler_name, event_type, body, reason, attempts, dead_at"
_encoder = msgspec.json.Encoder()
SQLITE_ROWS = 200  # rows per multi-row VALUES: 1,200 parameters, far below SQLite's limit


class SqlInbox:
    """One row per (event, handler); an upsert that finds the row processed reports a
    duplicate, and under PostgreSQL a parallel duplicate waits on the key until the first
    commits, then sees it processed. Exactly once is a database fact."""

    def __init__(
        self,
        tables: dict[str, str],
        *,
        mark: str,
        now: str,
        transaction: Callable[[], AbstractContextManager[Transaction]],
        query: Callable[[str, Sequence[Any]], list[Any]],
        older_than: str,
        dialect: str = "sqlite",
    ) -> None:
        t, m = tables, mark
        self._transaction, self._query, self._mark = transaction, query, mark
        self._inbox, self._dead = t["inbox"], t["inbox_dead_letters"]
        self._older_than = older_than
        columns = (
            f"INSERT INTO {self._inbox} AS i (event_id, handler_name, event_type, aggregate_id, "
            "aggregate_version, status, payload, attempts, processed_at, error_message) "
        )
        processed = (
            "ON CONFLICT (event_id, handler_name) DO UPDATE SET status = 'processed', "
            "attempts = i.attempts + 1, processed_at = excluded.processed_at, "
            "error_message = NULL WHERE i.status <> 'processed'"
        )
        self._values = f"({m}, {m}, {m}, {m}, {m}, 'processed', {m}, 1, {now}, NULL)"
        self._begin = f"{columns}VALUES {self._values} {processed}"
        self._columns, self._processed = columns, processed
        self._one_document = dialect == "postgresql"
        # PostgreSQL: every row in one JSON parameter (the server splits it in C; psycopg
        # would dump six arrays element by element in Python, four times slower), in key
        # order, so two consumers upserting overlapping batches lock the rows in the same
        # order and never deadlock.
        self._begin_document = (
            f"{columns}SELECT x->>0, x->>1, x->>2, x->>3, (x->>4)::int, 'processed', "
            f"(x->5)::jsonb, 1, {now}, NULL FROM json_array_elements(%s::json) AS x "
            f"ORDER BY x->>0, x->>1 {processed} RETURNING event_id, handler_name"
        )
        self._fail = (
            f"{columns}VALUES ({m}, {m}, {m}, {m}, {m}, 'failed', {m}, 1, NULL, {m}) "
            "ON CONFLICT (event_id, handler_name) DO UPDATE SET status = 'failed', "
            "attempts = i.attempts + 1, error_message = excluded.error_message "
            "WHERE i.status <> 'processed' RETURNING attempts"
        )

    def begin(self, tx: Transaction, record: EventRecord, handler: str) -> bool:
        """Mark (event, handler) processed; False if it already was."""
        cursor = tx.execute(self._begin, self._key(record, handler))
        return bool(cursor.rowcount)

    def begin_many(self, tx: Transaction, keys: Sequence[tuple[EventRecord, str]]) -> list[bool]:
        """Mark every (event, handler) processed in one statement (a few on SQLite); per
        pair, False if it already was, or if the same pair came earlier in ``keys``."""
        first: dict[tuple[str, str], int] = {}
        for i, (record, handler) in enumerate(keys):
            first.setdefault((record.event_id, handler), i)
        rows = [self._key(*keys[i]) for i in first.values()]
        fresh = self._upsert(tx, rows) if rows else set()
        return [
            first[(record.event_id, handler)] == i and (record.event_id, handler) in fresh
            for i, (record, handler) in enumerate(keys)
        ]

    def _upsert(self, tx: Transaction, rows: list[tuple[Any, ...]]) -> set[tuple[str, str]]:
        """The keys of ``rows`` that were not processed before (now they are)."""
        if self._one_document:
            document = _encoder.encode([(*row[:5], msgspec.Raw(row[5])) for row in rows])
            rows_back = tx.execute(self._begin_document, (document.decode(),)).fetchall()
            return {(e, h) for e, h in rows_back}
        fresh: set[tuple[str, str]] = set()
        for start in range(0, len(rows), SQLITE_ROWS):
            chunk = rows[start : start + SQLITE_ROWS]
            values = ", ".join([self._values] * len(chunk))
            sql = (
                f"{self._columns}VALUES {values} {self._processed} RETURNING event_id, handler_name"
            )
            cursor = tx.execute(sql, [value for row in chunk for value in row])
            fresh.update((e, h) for e, h in cursor.fetchall())
        return fresh

    def fail(self, tx: Transaction, record: EventRecord, handler: str, error: str) -> int:
        """Count a failed attempt and keep the error."""
        rows = tx.execute(self._fail, (*self._key(record, handler), error[:2000])).fetchall()
        return int(rows[0][0]) if rows else 0

    @staticmethod
    def _key(record: EventRecord, handler: str) -> tuple[Any, ...]:
        return (
            record.event_id,
            handler,
            record.event_type,
            record.stream_id,
            record.version,
            record.data.decode(),
        )

    def bury(
        self,
        tx: Transaction,
        body: bytes,
        reason: str,
        *,
        handler: str = "*",
        record: EventRecord | None = None,
        attempts: int = 1,
    ) -> None:
        """Keep the message as it arrived, with the reason."""
        m = self._mark
        tx.execute(
            f"INSERT INTO {self._dead} (event_id, handler_name, event_type, body, reason, "
            f"attempts) VALUES ({m}, {m}, {m}, {m}, {m}, {m})",
            (
                record.event_id if record else None,
                handler,
                record.event_type if record else None,
                body,
                reason[:2000],
                attempts,
            ),
        )

    def dead_letters(self, limit: int = 100) -> list[InboxDeadLetter]:
        """Dead letters, oldest first."""
        rows = self._query(
            f"SELECT {DEAD} FROM {self._dead} ORDER BY id LIMIT {self._mark}", (limit,)
        )
        return [self._letter(row) for row in rows]

    def remove_dead(
        self, tx: Transaction, ids: Sequence[int] | None = None
    ) -> list[InboxDeadLetter]:
        """Delete and return dead letters in ``tx`` (all when ``ids`` is None)."""
        where, params = "", tuple(ids or ())
        if ids is not None:
            marks = ", ".join([self._mark] * len(ids))
            where = f" WHERE id IN ({marks})" if ids else " WHERE 1 = 0"
        rows = tx.execute(f"DELETE FROM {self._dead}{where} RETURNING {DEAD}", params)
        return sorted((self._letter(r) for r in rows.fetchall()), key=lambda d: d.id)

    def delete_processed(self, older_than_seconds: float, batch: int) -> int:
        """Delete old processed rows in one small batch."""
        m = self._mark
        with self._transaction() as tx:
            gone = tx.execute(
                f"DELETE FROM {self._inbox} WHERE (event_id, handler_name) IN (SELECT event_id, "
                f"handler_name FROM {self._inbox} WHERE status = 'processed' AND "
                f"{self._older_than} LIMIT {m})",
                (older_than_seconds, batch),
            )
            return int(gone.rowcount)

    @staticmethod
    def _letter(row: Sequence[Any]) -> InboxDeadLetter:
        return InboxDeadLetter(
            int(row[0]), row[1], row[2], row[3], bytes(row[4]), row[5], int(row[6]), str(row[7])
        )


class SqlInFlight:
    """The ``InFlight`` port on the ``inbox_fetched`` table (SQLite and PostgreSQL).

    A batch's note is one row, its messages in one JSON object (event id -> [aggregate id,
    version]), written by one statement in a transaction of its own; the transaction that
    handles messages takes them out of the consumer's rows and deletes the rows left empty.
    A row per message cost PostgreSQL two index entries a message, written and deleted
    again a few milliseconds later: 500 of them took 4 to 6 ms against about 2 for the one
    row (``docs/inbox.md``, "Throughput"). A message fetched again (held, or delivered again
    after a crash) is in the new batch's row too, so its newest row says when it was last
    seen."""

    def __init__(
        self,
        tables: dict[str, str],
        *,
        mark: str,
        transaction: Callable[[], AbstractContextManager[Transaction]],
    ) -> None:
        self._table, self._mark, self._transaction = tables["inbox_fetched"], mark, transaction
        t = self._table
        # The new row is not visible to the SELECT of the same statement: the batch's own
        # messages are found only in the rows of earlier fetches, and the caller skips
        # them either way (it looks for the other messages of their aggregates).
        self._note_document = (
            f"WITH noted AS (INSERT INTO {t} (consumer, seen_at, items) VALUES (%s, %s, "
            f"%s::jsonb)) SELECT e.key, e.value->>0, (e.value->>1)::int FROM {t}, "
            f"jsonb_each({t}.items) AS e WHERE {t}.consumer = %s AND {t}.seen_at >= %s "
            "AND e.value->>0 IN (SELECT json_array_elements_text(%s::json))"
        )
        # Lists go as one JSON document each: psycopg dumps a list parameter as an array
        # literal element by element, with a pattern search for quoting on each one.
        done = (
            "WITH done AS (SELECT array_agg(x) AS ids FROM json_array_elements_text(%s::json) x) "
        )
        self._finish_statements = (
            f"{done}DELETE FROM {t} USING done WHERE consumer = %s "
            "AND items - done.ids = '{}'::jsonb",
            f"{done}UPDATE {t} SET items = items - done.ids FROM done "
            "WHERE consumer = %s AND items ?| done.ids",
        )

    def note(
        self, consumer: str, messages: Sequence[InFlightMessage], now: float, stale_after: float
    ) -> list[InFlightMessage]:
        """Write the fetched batch's row, then read back its aggregates' messages in flight."""
        items = _encoder.encode({x.event_id: (x.stream_id, x.version) for x in messages})
        streams = {x.stream_id for x in messages}
        with self._transaction() as tx:
            if self._mark == "%s":
                tx.last_statement()
                rows = tx.execute(
                    self._note_document,
                    (
                        consumer,
                        now,
                        items.decode(),
                        consumer,
                        now - stale_after,
                        _encoder.encode(list(streams)).decode(),
                    ),
                ).fetchall()
                return [InFlightMessage(e, a, int(v)) for e, a, v in rows]
            m = self._mark
            found = [
                InFlightMessage(event_id, stream, int(version))
                for _, _, entries in self._rows(tx, consumer, now - stale_after)
                for event_id, (stream, version) in entries.items()
                if stream in streams
            ]
            tx.execute(
                f"INSERT INTO {self._table} (consumer, seen_at, items) VALUES ({m}, {m}, {m})",
                (consumer, now, items.decode()),
            )
            return found

    def finish(self, tx: Transaction, consumer: str, event_ids: Sequence[str]) -> None:
        """Take the handled messages out of the consumer's rows, in the handling
        transaction; a row left empty goes."""
        if not event_ids:
            return
        done = sorted(set(event_ids))
        if self._mark == "%s":
            document = _encoder.encode(done).decode()
            for statement in self._finish_statements:
                tx.execute(statement, (document, consumer))
            return
        m, gone = self._mark, set(done)
        for row_id, _, entries in self._rows(tx, consumer):
            left = {k: v for k, v in entries.items() if k not in gone}
            if not left:
                tx.execute(f"DELETE FROM {self._table} WHERE id = {m}", (row_id,))
            elif len(left) < len(entries):
                tx.execute(
                    f"UPDATE {self._table} SET items = {m} WHERE id = {m}",
                    (_encoder.encode(left).decode(), row_id),
                )

    def delete_stale(self, consumer: str, older_than: float) -> int:
        """Delete the consumer's rows written before ``older_than``; the count is of their
        messages not fetched again since (those are in a newer row, and still count)."""
        m = self._mark
        with self._transaction() as tx:
            rows = self._rows(tx, consumer)
            stale = [row for row in rows if row[1] < older_than]
            if not stale:
                return 0
            seen_since = {k for _, seen, entries in rows if seen >= older_than for k in entries}
            forgotten = {k for _, _, entries in stale for k in entries} - seen_since
            for row_id, _, _ in stale:
                tx.execute(f"DELETE FROM {self._table} WHERE id = {m}", (row_id,))
            return len(forgotten)

    def _rows(
        self, tx: Transaction, consumer: str, seen_since: float | None = None
    ) -> list[tuple[int, float, dict[str, tuple[str, int]]]]:
        """The consumer's rows (written at ``seen_since`` or later): id, seen_at, items."""
        m = self._mark
        where = f"consumer = {m}" + ("" if seen_since is None else f" AND seen_at >= {m}")
        params = (consumer,) if seen_since is None else (consumer, seen_since)
        found = tx.execute(
            f"SELECT id, seen_at, items FROM {self._table} WHERE {where} ORDER BY id", params
        ).fetchall()
        return [(int(i), float(seen), _items(items)) for i, seen, items in found]


def _items(value: Any) -> dict[str, tuple[str, int]]:
    """A row's items, as psycopg (already decoded) or SQLite (JSON text) gives them."""
    decoded = _items_decoder.decode(value) if isinstance(value, str | bytes) else value
    return {k: (str(v[0]), int(v[1])) for k, v in decoded.items()}


_items_decoder = msgspec.json.Decoder(dict[str, tuple[str, int]])
