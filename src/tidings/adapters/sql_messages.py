"""SqlMessages: the sequence of each message key, and scheduled messages (SQLite and
PostgreSQL; the SQL differs only in the parameter mark and a row lock)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from tidings.ports import EventWriter, Transaction
from tidings.records import EventRecord

COLUMNS = (
    "event_id, event_type, aggregate_id, aggregate_version, schema_version, occurred_at, "
    "payload, headers"
)


class SqlMessages:
    """The ``Messages`` port on the ``message_keys`` and ``scheduled_messages`` tables.

    ``outbox`` writes the released messages: moving one is a single transaction that
    writes its outbox row and deletes its scheduled row, so a crash either leaves it
    scheduled or has it in the outbox, never both nor neither.
    """

    def __init__(
        self,
        tables: dict[str, str],
        *,
        mark: str,
        transaction: Callable[[], AbstractContextManager[Transaction]],
        outbox: EventWriter,
        lock_due: str = "",
    ) -> None:
        self._keys, self._scheduled = tables["message_keys"], tables["scheduled_messages"]
        self._mark, self._transaction, self._outbox = mark, transaction, outbox
        self._lock_due = lock_due  # PostgreSQL: relays skip the rows another one is moving

    def next_versions(self, tx: Transaction, key: str, count: int) -> int:
        """One upsert that adds ``count`` to the key's last number; the first reserved."""
        m = self._mark
        row = tx.execute(
            f"INSERT INTO {self._keys} AS k (message_key, last_version) VALUES ({m}, {m}) "
            "ON CONFLICT (message_key) DO UPDATE SET last_version = k.last_version + "
            "excluded.last_version RETURNING last_version",
            (key, count),
        ).fetchone()
        return int(row[0]) - count + 1

    def schedule(
        self, tx: Transaction, records: Sequence[EventRecord], due: Sequence[float]
    ) -> None:
        """One row per record, with its due time."""
        m = self._mark
        for record, at in zip(records, due, strict=True):
            tx.execute(
                f"INSERT INTO {self._scheduled} (due_at, {COLUMNS}) "
                f"VALUES ({m}, {m}, {m}, {m}, {m}, {m}, {m}, {m}, {m})",
                (
                    at,
                    record.event_id,
                    record.event_type,
                    record.stream_id,
                    record.version,
                    record.schema_version,
                    record.occurred_at.isoformat(),
                    record.data.decode(),
                    record.metadata.decode(),
                ),
            )

    def release_due(self, now: float, limit: int) -> int:
        """Write the due messages to the outbox and delete them here, in one transaction."""
        m = self._mark
        with self._transaction() as tx:
            rows = tx.execute(
                f"SELECT id, {COLUMNS} FROM {self._scheduled} WHERE due_at <= {m} "
                f"ORDER BY due_at, id LIMIT {m}{self._lock_due}",
                (now, limit),
            ).fetchall()
            if not rows:
                return 0
            self._outbox.write(tx, [_record(row) for row in rows])
            ids = [int(row[0]) for row in rows]
            tx.execute(
                f"DELETE FROM {self._scheduled} WHERE id IN ({', '.join([m] * len(ids))})",
                ids,
            )
            return len(rows)

    def scheduled(self) -> int:
        """Messages waiting for their time."""
        with self._transaction() as tx:
            return int(tx.execute(f"SELECT count(*) FROM {self._scheduled}").fetchone()[0])


def _record(row: Sequence[Any]) -> EventRecord:
    """The record of a scheduled row (without its id)."""
    return EventRecord(
        event_id=row[1],
        event_type=row[2],
        stream_id=row[3],
        version=int(row[4]),
        schema_version=int(row[5]),
        occurred_at=datetime.fromisoformat(row[6]),
        data=row[7].encode(),
        metadata=row[8].encode(),
    )
