"""The key store logic both SQL backends share; each supplies how it forgets for good."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from tidings.ports import Params, Transaction
from tidings.records import SubjectKey

PAGE = 1000


class SqlKeyStore:
    """Subjects' keys in one table keyed by subject.

    Subclasses set ``mark`` and implement ``forget``, the one part where the backends
    differ: what it takes for a deleted row to leave no readable copy behind.
    """

    mark = "?"

    def __init__(self, table: str, query: Callable[[str, Params], list[Any]]) -> None:
        self.table = table
        self._query = query
        m = self.mark
        self._find_sql = f"SELECT subject, key_id, key FROM {table} WHERE subject = {m}"
        self._create_sql = (
            f"INSERT INTO {table} (subject, key_id, key) VALUES ({m}, {m}, {m}) "
            "ON CONFLICT (subject) DO NOTHING"
        )
        self._delete_sql = f"DELETE FROM {table} WHERE subject = {m}"
        self._page_sql = (
            f"SELECT subject, key_id, key FROM {table} WHERE subject > {m} "
            f"ORDER BY subject LIMIT {PAGE}"
        )

    def find(self, subject: str, tx: Transaction | None = None) -> SubjectKey | None:
        """The subject's key, committed or as ``tx`` sees it."""
        if tx is None:
            rows = self._query(self._find_sql, (subject,))
        else:
            rows = tx.execute(self._find_sql, (subject,)).fetchall()
        return _key(rows[0]) if rows else None

    def create(self, tx: Transaction, key: SubjectKey) -> SubjectKey:
        """Insert ``key`` unless the subject has one; a concurrent writer's key wins (the
        insert waits for its transaction, then finds its row)."""
        tx.execute(self._create_sql, (key.subject, key.key_id, key.key))
        found = self.find(key.subject, tx)
        if found is None:  # pragma: no cover - the row was just written or found
            raise RuntimeError(f"the key of {key.subject!r} vanished inside its transaction")
        return found

    def all_keys(self) -> Iterator[SubjectKey]:
        """Every key in subject order, a page at a time."""
        after = ""
        while True:
            rows = self._query(self._page_sql, (after,))
            yield from (_key(row) for row in rows)
            if len(rows) < PAGE:
                return
            after = rows[-1][0]

    def forget(self, subject: str) -> bool:
        """Delete the subject's key for good."""
        raise NotImplementedError


def _key(row: Sequence[Any]) -> SubjectKey:
    return SubjectKey(row[0], row[1], bytes(row[2]))
