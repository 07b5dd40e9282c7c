"""MemoryInbox: the reference inbox over Python objects."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tidings.adapters.memory import MemoryDatabase, MemoryTransaction
from tidings.errors import UnitOfWorkError
from tidings.ports import InboxDeadLetter, InFlightMessage, Transaction
from tidings.records import EventRecord


@dataclass
class _Entry:
    status: str
    attempts: int
    processed_at: float | None = None
    error: str = ""


class MemoryInbox:
    """Rows in a dict; every write is undone if its transaction (or savepoint) rolls back."""

    def __init__(self, database: MemoryDatabase, clock: Callable[[], float] = time.time) -> None:
        self._db = database
        self._clock = clock
        self._rows: dict[tuple[str, str], _Entry] = {}
        self._dead: dict[int, InboxDeadLetter] = {}
        self._next_dead = 1

    def _set(self, tx: Transaction, key: tuple[str, str], entry: _Entry) -> None:
        if not isinstance(tx, MemoryTransaction):
            raise UnitOfWorkError("the memory inbox writes only in a memory transaction")
        before = self._rows.get(key)
        self._rows[key] = entry

        def undo() -> None:
            if before is None:
                self._rows.pop(key, None)
            else:
                self._rows[key] = before

        tx.on_rollback(undo)

    def begin(self, tx: Transaction, record: EventRecord, handler: str) -> bool:
        """Mark processed; False if it already was."""
        key = (record.event_id, handler)
        before = self._rows.get(key)
        if before is not None and before.status == "processed":
            return False
        attempts = (before.attempts if before else 0) + 1
        self._set(tx, key, _Entry("processed", attempts, self._clock()))
        return True

    def begin_many(self, tx: Transaction, keys: Sequence[tuple[EventRecord, str]]) -> list[bool]:
        """``begin`` for each pair, in order."""
        return [self.begin(tx, record, handler) for record, handler in keys]

    def fail(self, tx: Transaction, record: EventRecord, handler: str, error: str) -> int:
        """Count a failed attempt."""
        key = (record.event_id, handler)
        before = self._rows.get(key)
        if before is not None and before.status == "processed":
            return before.attempts
        attempts = (before.attempts if before else 0) + 1
        self._set(tx, key, _Entry("failed", attempts, None, error))
        return attempts

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
        """Keep the message with its reason."""
        if not isinstance(tx, MemoryTransaction):
            raise UnitOfWorkError("the memory inbox writes only in a memory transaction")
        number = self._next_dead
        self._next_dead += 1
        self._dead[number] = InboxDeadLetter(
            number,
            record.event_id if record else None,
            handler,
            record.event_type if record else None,
            body,
            reason,
            attempts,
            str(self._clock()),
        )

        def undo() -> None:
            self._dead.pop(number, None)

        tx.on_rollback(undo)

    def dead_letters(self, limit: int = 100) -> list[InboxDeadLetter]:
        """Dead letters, oldest first."""
        with self._db.lock:
            return [self._dead[n] for n in sorted(self._dead)][:limit]

    def remove_dead(
        self, tx: Transaction, ids: Sequence[int] | None = None
    ) -> list[InboxDeadLetter]:
        """Take dead letters out (they come back if ``tx`` rolls back)."""
        if not isinstance(tx, MemoryTransaction):
            raise UnitOfWorkError("the memory inbox writes only in a memory transaction")
        chosen = sorted(self._dead) if ids is None else [n for n in ids if n in self._dead]
        taken = [self._dead.pop(n) for n in chosen]

        def undo() -> None:
            self._dead.update({letter.id: letter for letter in taken})

        tx.on_rollback(undo)
        return taken

    def delete_processed(self, older_than_seconds: float, batch: int) -> int:
        """Forget old processed rows."""
        with self._db.lock:
            cutoff = self._clock() - older_than_seconds
            old = [
                key
                for key, entry in self._rows.items()
                if entry.status == "processed" and (entry.processed_at or 0) < cutoff
            ][:batch]
            for key in old:
                del self._rows[key]
            return len(old)


class MemoryInFlight:
    """The ``InFlight`` port in this process's memory: the reference, and the record of a
    consumer on a backend without tables. Finished messages are forgotten when the handling
    transaction commits, whatever its backend."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[tuple[str, str], tuple[InFlightMessage, float]] = {}

    def note(
        self, consumer: str, messages: Sequence[InFlightMessage], now: float, stale_after: float
    ) -> list[InFlightMessage]:
        """Keep the messages (seen now) and return their aggregates' messages in flight."""
        with self._lock:
            for message in messages:
                self._rows[(consumer, message.event_id)] = (message, now)
            streams = {m.stream_id for m in messages}
            return [
                message
                for (owner, _), (message, seen) in self._rows.items()
                if owner == consumer and message.stream_id in streams and seen >= now - stale_after
            ]

    def finish(self, tx: Transaction, consumer: str, event_ids: Sequence[str]) -> None:
        """Forget the messages once ``tx`` commits."""
        done = [(consumer, event_id) for event_id in event_ids]

        def forget() -> None:
            with self._lock:
                for key in done:
                    self._rows.pop(key, None)

        tx.on_commit(forget)

    def delete_stale(self, consumer: str, older_than: float) -> int:
        """Forget the consumer's messages last seen before ``older_than``."""
        with self._lock:
            stale = [
                k for k, (_, seen) in self._rows.items() if k[0] == consumer and seen < older_than
            ]
            for key in stale:
                del self._rows[key]
            return len(stale)
