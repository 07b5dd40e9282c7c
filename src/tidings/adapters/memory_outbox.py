"""MemoryOutbox: the reference outbox, over Python objects in one process."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace

from tidings.adapters.memory import MemoryDatabase, MemoryTransaction
from tidings.errors import UnitOfWorkError
from tidings.ports import (
    OUTBOX_LANES,
    DeadLetter,
    Leases,
    OutboxEntry,
    OutboxStats,
    Settlement,
    Transaction,
)
from tidings.records import EventRecord, shard_of
from tidings.serialization.cloudevents import with_position


@dataclass
class _Row:
    record: EventRecord
    shard: int
    created_at: float
    published_at: float | None = None
    retry_count: int = 0
    next_attempt_at: float = 0.0
    last_error: str = ""


class MemoryOutbox:
    """Outbox rows and dead letters kept in dicts under the memory backend's lock; the
    lanes are leased from ``leases`` (the set ``OUTBOX_LANES``)."""

    def __init__(
        self, database: MemoryDatabase, leases: Leases, clock: Callable[[], float] = time.time
    ) -> None:
        self._db = database
        self._leases = leases
        self._clock = clock
        self._rows: dict[int, _Row] = {}
        self._dead: dict[int, tuple[_Row, str, float]] = {}
        self._next_position = 1
        self._signal = threading.Event()

    def write(self, tx: Transaction, records: Sequence[EventRecord]) -> None:
        """Add rows; a rollback takes them away again."""
        if not isinstance(tx, MemoryTransaction):
            raise UnitOfWorkError("the memory outbox writes only in a memory transaction")
        added = []
        for record in records:
            position = self._next_position
            self._next_position += 1
            metadata = with_position(record.metadata, record.position)  # for the wire
            row = _Row(
                replace(record, position=position, metadata=metadata),
                shard_of(record.stream_id),
                self._clock(),
            )
            self._rows[position] = row
            added.append(position)

        def undo() -> None:
            for position in added:
                self._rows.pop(position, None)

        tx.on_rollback(undo)
        tx.on_commit(self._signal.set)

    def claim(
        self,
        leases: Mapping[int, int],
        lanes: int,
        limit: int,
        now: float,
        skip: Collection[int] = (),
    ) -> list[OutboxEntry]:
        """Due rows of leased lanes, oldest first, skipping parked aggregates and ``skip``."""
        skip = frozenset(skip)
        with self._db.lock:
            dead = {row.record.stream_id for row, _, _ in self._dead.values()}
            waiting: set[str] = set()
            claimed = []
            for position in sorted(self._rows):
                row = self._rows[position]
                stream = row.record.stream_id
                if row.published_at is not None or row.shard % lanes not in leases:
                    continue
                if row.next_attempt_at > now:
                    waiting.add(stream)
                elif stream not in waiting and stream not in dead and position not in skip:
                    claimed.append(OutboxEntry(row.record, row.shard % lanes, row.retry_count))
                    if len(claimed) == limit:
                        break
            return claimed

    def settle(self, relay_id: str, leases: Mapping[int, int], outcome: Settlement) -> bool:
        """Apply the outcome if every lease still holds (checked in the same transaction)."""
        with self._db.transaction() as tx:
            if not self._leases.holds(tx, relay_id, OUTBOX_LANES, leases):
                return False
            now = self._clock()
            for position in outcome.published:
                self._rows[position].published_at = now
            for position, next_attempt_at, error in outcome.retry:
                row = self._rows[position]
                row.retry_count += 1
                row.next_attempt_at, row.last_error = next_attempt_at, error
            for position, error in outcome.dead:
                row = self._rows.pop(position)
                row.retry_count += 1
                self._dead[position] = (row, error, now)
            return True

    def stats(self, now: float) -> OutboxStats:
        """Backlog, oldest age, dead letters."""
        with self._db.lock:
            waiting = [r.created_at for r in self._rows.values() if r.published_at is None]
            age = now - min(waiting) if waiting else 0.0
            return OutboxStats(len(waiting), age, len(self._dead))

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Dead letters in write order."""
        with self._db.lock:
            return [
                DeadLetter(row.record, row.retry_count, error, str(dead_at))
                for _, (row, error, dead_at) in sorted(self._dead.items())[:limit]
            ]

    def retry_dead(self, event_ids: Sequence[str] | None = None) -> int:
        """Back into the outbox, due at once."""
        with self._db.lock:
            chosen = self._chosen(event_ids)
            for position in chosen:
                row = self._dead.pop(position)[0]
                self._rows[position] = replace(row, retry_count=0, next_attempt_at=0.0)
            self._signal.set()
            return len(chosen)

    def purge_dead(self, event_ids: Sequence[str] | None = None) -> int:
        """Forget dead letters."""
        with self._db.lock:
            chosen = self._chosen(event_ids)
            for position in chosen:
                del self._dead[position]
            return len(chosen)

    def _chosen(self, event_ids: Sequence[str] | None) -> list[int]:
        return [
            p
            for p, (row, _, _) in self._dead.items()
            if event_ids is None or row.record.event_id in event_ids
        ]

    def delete_published(self, older_than_seconds: float, batch: int) -> int:
        """Forget published rows older than the retention."""
        with self._db.lock:
            cutoff = self._clock() - older_than_seconds
            old = [
                p
                for p, r in sorted(self._rows.items())
                if r.published_at is not None and r.published_at < cutoff
            ][:batch]
            for position in old:
                del self._rows[position]
            return len(old)

    def wait_for_work(self, timeout: float) -> None:
        """Wake on a commit that wrote rows, or after ``timeout``."""
        self._signal.wait(timeout)
        self._signal.clear()

    def close(self) -> None:
        """Nothing to release."""
