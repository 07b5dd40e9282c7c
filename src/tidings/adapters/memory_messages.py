"""MemoryMessages: the reference ``Messages`` adapter over Python objects."""

from __future__ import annotations

from collections.abc import Sequence

from tidings.adapters.memory import MemoryDatabase, MemoryTransaction
from tidings.errors import UnitOfWorkError
from tidings.ports import EventWriter, Transaction
from tidings.records import EventRecord


class MemoryMessages:
    """Key sequences and scheduled messages in dicts; every write is undone with its
    transaction, and released messages go to ``outbox``."""

    def __init__(self, database: MemoryDatabase, outbox: EventWriter) -> None:
        self._db, self._outbox = database, outbox
        self._last: dict[str, int] = {}
        self._due: list[tuple[float, int, EventRecord]] = []
        self._number = 0

    def next_versions(self, tx: Transaction, key: str, count: int) -> int:
        """Add ``count`` to the key's last number; return the first reserved."""
        memory = _memory(tx)
        before = self._last.get(key)
        self._last[key] = (before or 0) + count

        def undo() -> None:
            if before is None:
                self._last.pop(key, None)
            else:
                self._last[key] = before

        memory.on_rollback(undo)
        return (before or 0) + 1

    def schedule(
        self, tx: Transaction, records: Sequence[EventRecord], due: Sequence[float]
    ) -> None:
        """Keep the records with their due times."""
        memory = _memory(tx)
        added = []
        for record, at in zip(records, due, strict=True):
            self._number += 1
            added.append((at, self._number, record))
        self._due.extend(added)

        def undo() -> None:
            for entry in added:
                self._due.remove(entry)

        memory.on_rollback(undo)

    def release_due(self, now: float, limit: int) -> int:
        """Move the earliest due messages to the outbox."""
        with self._db.transaction() as tx:
            due = sorted(entry for entry in self._due if entry[0] <= now)[:limit]
            if not due:
                return 0
            self._outbox.write(tx, [record for _, _, record in due])
            for entry in due:
                self._due.remove(entry)

            def undo() -> None:
                self._due.extend(due)

            tx.on_rollback(undo)
            return len(due)

    def scheduled(self) -> int:
        """Messages waiting for their time."""
        with self._db.lock:
            return len(self._due)


def _memory(tx: Transaction) -> MemoryTransaction:
    if not isinstance(tx, MemoryTransaction):
        raise UnitOfWorkError("the memory backend writes only in a memory transaction")
    return tx
