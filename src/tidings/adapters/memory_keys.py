"""MemoryKeyStore: the reference key store, a dict of subject to key."""

from __future__ import annotations

from collections.abc import Iterator

from tidings.adapters.memory import MemoryDatabase, MemoryTransaction
from tidings.errors import UnitOfWorkError
from tidings.ports import Transaction
from tidings.records import SubjectKey


class MemoryKeyStore:
    """Keys live in this process only; forgetting drops the dict entry."""

    def __init__(self, database: MemoryDatabase) -> None:
        self._db = database
        self._keys: dict[str, SubjectKey] = {}

    def find(self, subject: str, tx: Transaction | None = None) -> SubjectKey | None:
        """The subject's key, or None."""
        with self._db.lock:
            return self._keys.get(subject)

    def create(self, tx: Transaction, key: SubjectKey) -> SubjectKey:
        """Keep ``key`` unless the subject has one (undone if ``tx`` rolls back)."""
        if not isinstance(tx, MemoryTransaction):
            raise UnitOfWorkError("the memory key store writes only in a memory transaction")
        known = self._keys.get(key.subject)
        if known is not None:
            return known
        self._keys[key.subject] = key

        def undo() -> None:
            del self._keys[key.subject]

        tx.on_rollback(undo)
        return key

    def forget(self, subject: str) -> bool:
        """Drop the subject's key."""
        with self._db.transaction():
            return self._keys.pop(subject, None) is not None

    def all_keys(self) -> Iterator[SubjectKey]:
        """Every key, in subject order."""
        with self._db.lock:
            keys = sorted(self._keys.values(), key=lambda k: k.subject)
        yield from keys
