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
    """The ``InFlight`` port on the ``inbox_in_flight`` table (SQLite and PostgreSQL).

    On PostgreSQL a batch's note is one statement in a transaction of its own (one round
    trip) and its finish one more in the handling transaction, each with every message in
    one JSON parameter: as multi-row ``VALUES`` in chunks they cost a batch of 500 nine
    statements of up to a thousand parameters, which psycopg parses anew each time."""

    def __init__(
        self,
        tables: dict[str, str],
        *,
        mark: str,
        transaction: Callable[[], AbstractContextManager[Transaction]],
    ) -> None:
        self._table, self._mark, self._transaction = tables["inbox_in_flight"], mark, transaction
        t = self._table
        # The upsert's rows are not visible to the SELECT of the same statement: the
        # batch's own messages are found only if noted before, and the caller skips
        # them either way (it looks for the other messages of their aggregates).
        self._note_document = (
            f"WITH fetched AS (SELECT x->>0 AS event_id, x->>1 AS aggregate_id, "
            f"(x->>2)::int AS aggregate_version FROM json_array_elements(%s::json) AS x), "
            f"noted AS (INSERT INTO {t} (consumer, event_id, aggregate_id, aggregate_version, "
            f"seen_at) SELECT %s, event_id, aggregate_id, aggregate_version, %s FROM fetched "
            "ORDER BY event_id ON CONFLICT (consumer, event_id) DO UPDATE SET seen_at = "
            f"excluded.seen_at) SELECT event_id, aggregate_id, aggregate_version FROM {t} "
            "WHERE consumer = %s AND seen_at >= %s AND aggregate_id IN "
            "(SELECT aggregate_id FROM fetched)"
        )
        self._finish_document = (
            f"DELETE FROM {t} WHERE consumer = %s AND event_id IN "
            "(SELECT json_array_elements_text(%s::json))"
        )

    def note(
        self, consumer: str, messages: Sequence[InFlightMessage], now: float, stale_after: float
    ) -> list[InFlightMessage]:
        """Upsert the fetched messages, then read back their aggregates' messages in flight."""
        if self._mark == "%s":
            document = _encoder.encode([(x.event_id, x.stream_id, x.version) for x in messages])
            with self._transaction() as tx:
                tx.last_statement()
                rows = tx.execute(
                    self._note_document,
                    (document.decode(), consumer, now, consumer, now - stale_after),
                ).fetchall()
            return [InFlightMessage(e, a, int(v)) for e, a, v in rows]
        m, found = self._mark, list[InFlightMessage]()
        with self._transaction() as tx:
            for chunk in _chunks(messages, SQLITE_ROWS):
                tx.execute(
                    f"INSERT INTO {self._table} (consumer, event_id, aggregate_id, "
                    f"aggregate_version, seen_at) VALUES "
                    + ", ".join([f"({m}, {m}, {m}, {m}, {m})"] * len(chunk))
                    + " ON CONFLICT (consumer, event_id) DO UPDATE SET seen_at = excluded.seen_at",
                    [v for x in chunk for v in (consumer, x.event_id, x.stream_id, x.version, now)],
                )
            streams = sorted({x.stream_id for x in messages})
            for chunk in _chunks(streams, SQLITE_ROWS):
                rows = tx.execute(
                    f"SELECT event_id, aggregate_id, aggregate_version FROM {self._table} "
                    f"WHERE consumer = {m} AND seen_at >= {m} AND aggregate_id IN ("
                    + ", ".join([m] * len(chunk))
                    + ")",
                    (consumer, now - stale_after, *chunk),
                ).fetchall()
                found.extend(InFlightMessage(e, a, int(v)) for e, a, v in rows)
        return found

    def finish(self, tx: Transaction, consumer: str, event_ids: Sequence[str]) -> None:
        """Delete the rows of the handled messages, in the handling transaction."""
        if self._mark == "%s":
            if event_ids:
                document = _encoder.encode(sorted(set(event_ids)))
                tx.execute(self._finish_document, (consumer, document.decode()))
            return
        m = self._mark
        for chunk in _chunks(sorted(set(event_ids)), SQLITE_ROWS):
            tx.execute(
                f"DELETE FROM {self._table} WHERE consumer = {m} AND event_id IN ("
                + ", ".join([m] * len(chunk))
                + ")",
                (consumer, *chunk),
            )

    def delete_stale(self, consumer: str, older_than: float) -> int:
        """Delete the consumer's rows last seen before ``older_than``."""
        m = self._mark
        with self._transaction() as tx:
            gone = tx.execute(
                f"DELETE FROM {self._table} WHERE consumer = {m} AND seen_at < {m}",
                (consumer, older_than),
            )
            return int(gone.rowcount)


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    """``items`` in slices of at most ``size`` (SQLite limits a statement's parameters)."""
    return [items[i : i + size] for i in range(0, len(items), size)]
