"""The in-memory backend: the reference adapter, and fast unit tests.

One re-entrant lock serialises transactions; every write keeps an undo entry so a
rollback restores exactly what was there, like the SQL backends do.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import replace
from datetime import datetime

from tidings.errors import ConcurrencyError, StorageError, UnitOfWorkError
from tidings.ports import ANY_VERSION, Params, Transaction
from tidings.records import EventRecord, SnapshotRecord, StreamInfo, require_aware

PAGE = 1000


class MemoryTransaction:
    """A transaction of the memory backend: undo entries and after-commit callbacks.

    Your own statements (``uow.execute``) run on an in-memory SQLite database of the
    backend, in a transaction that commits and rolls back with this one, so application
    code that keeps its state in tables runs unchanged on ``memory://`` in tests."""

    def __init__(self, tables: sqlite3.Connection | None = None) -> None:
        self._undo: list[Callable[[], None]] = []
        self._after: list[Callable[[], None]] = []
        self._tables = tables
        self._sql_open = False
        self._savepoints = 0

    @property
    def connection(self) -> sqlite3.Connection | None:
        """The in-memory SQLite connection your statements run on."""
        return self._tables

    def execute(self, sql: str, params: Params = ()) -> sqlite3.Cursor:
        """Run one of your statements on the backend's in-memory SQLite database."""
        if self._tables is None:
            raise UnitOfWorkError("this memory transaction has no tables: open it from a database")
        if not self._sql_open:
            self._tables.execute("BEGIN")
            self._sql_open = True
            self.on_rollback(self._roll_back_sql)
        try:
            return self._tables.execute(sql, params)
        except sqlite3.Error as exc:
            raise StorageError(f"the in-memory store's SQLite failed: {exc}") from exc

    def _roll_back_sql(self) -> None:
        if self._sql_open and self._tables is not None:
            self._tables.execute("ROLLBACK")
        self._sql_open = False

    def commit_sql(self) -> None:
        """Commit your statements (the database does, before the commit callbacks)."""
        if self._sql_open and self._tables is not None:
            self._tables.execute("COMMIT")
        self._sql_open = False

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` after commit."""
        self._after.append(callback)

    def pipeline(self) -> AbstractContextManager[None]:
        """Statements wait for their results here anyway: nothing to change."""
        return nullcontext()

    def last_statement(self) -> bool:
        """The memory backend has no round trips to save."""
        return False

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """Undo only what the block wrote when it raises."""
        undo_mark, after_mark = len(self._undo), len(self._after)
        name = None
        if self._sql_open and self._tables is not None:  # your statements' own savepoint
            self._savepoints += 1
            name = f"tidings_sp{self._savepoints}"
            self._tables.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            for undo in reversed(self._undo[undo_mark:]):
                undo()
            del self._undo[undo_mark:], self._after[after_mark:]
            if name is not None and self._sql_open and self._tables is not None:
                self._tables.execute(f"ROLLBACK TO {name}")
                self._tables.execute(f"RELEASE {name}")
            raise
        if name is not None and self._sql_open and self._tables is not None:
            self._tables.execute(f"RELEASE {name}")

    def on_rollback(self, undo: Callable[[], None]) -> None:
        """Run ``undo`` if the transaction rolls back (newest first)."""
        self._undo.append(undo)


class MemoryDatabase:
    """Transactions over Python objects, one at a time."""

    dialect = "memory"

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._open = threading.local()
        self._tables: sqlite3.Connection | None = None  # your statements' tables, on first use

    @contextmanager
    def transaction(self) -> Iterator[MemoryTransaction]:
        """Hold the lock for the whole transaction; undo everything on an exception."""
        if getattr(self._open, "tx", None) is not None:
            raise UnitOfWorkError(
                "a transaction is already open on this thread: finish it before opening another"
            )
        with self.lock:
            if self._tables is None:
                # One connection for every thread, used under the lock only.
                self._tables = sqlite3.connect(
                    ":memory:", check_same_thread=False, isolation_level=None
                )
            tx = MemoryTransaction(self._tables)
            self._open.tx = tx
            try:
                yield tx
                tx.commit_sql()
            except BaseException:
                for undo in reversed(tx._undo):
                    undo()
                raise
            finally:
                self._open.tx = None
        for callback in tx._after:
            callback()

    def create_schema(self) -> None:
        """Nothing to create."""

    def describe(self) -> str:
        """Name the backend."""
        return "the in-memory store"

    def close(self) -> None:
        """Close the in-memory SQLite database of your statements."""
        if self._tables is not None:
            self._tables.close()
            self._tables = None


class MemoryEventStore:
    """The reference event store: a list of records and a version per stream."""

    def __init__(self, database: MemoryDatabase) -> None:
        self._db = database
        self._log: list[EventRecord] = []
        self._streams: dict[str, list[EventRecord]] = {}

    def append(
        self,
        tx: Transaction,
        records: Sequence[EventRecord],
        expected_version: int,
        *,
        last: bool = False,
    ) -> list[EventRecord]:
        """Append one stream's records, or raise ``ConcurrencyError`` and keep nothing."""
        if not isinstance(tx, MemoryTransaction):
            raise UnitOfWorkError("the memory event store writes only in a memory transaction")
        if not records:
            return []
        stream_id = records[0].stream_id
        stream = self._streams.setdefault(stream_id, [])
        actual = len(stream)
        if expected_version not in (ANY_VERSION, actual):
            raise ConcurrencyError(stream_id, expected_version, actual)
        stored = [
            replace(record, version=actual + i, position=len(self._log) + i)
            for i, record in enumerate(records, start=1)
        ]
        self._log.extend(stored)
        stream.extend(stored)
        count = len(stored)

        def undo() -> None:
            del self._log[-count:]
            del stream[-count:]

        tx.on_rollback(undo)
        return stored

    def stream_version(self, stream_id: str, tx: Transaction | None = None) -> int:
        """Version of the stream's last event (0 when it has none)."""
        with self._db.lock:
            return len(self._streams.get(stream_id, ()))

    def stream_info(self, stream_id: str, as_of: datetime | None = None) -> StreamInfo:
        """Version and first and last event times, now or as of ``as_of``."""
        with self._db.lock:
            stream = self._streams.get(stream_id, [])
            version = len(stream) if as_of is None else _prefix_length(stream, as_of)
            if not version:
                return StreamInfo(stream_id)
            return StreamInfo(
                stream_id, version, stream[0].occurred_at, stream[version - 1].occurred_at
            )

    def read_stream(
        self,
        stream_id: str,
        from_version: int = 1,
        to_version: int | None = None,
        *,
        as_of: datetime | None = None,
    ) -> Iterator[EventRecord]:
        """Records of one stream in version order, a page at a time (the lock is not held
        while the caller works through a page)."""
        if as_of is not None:
            version_then = self.stream_info(stream_id, as_of).version
            to_version = version_then if to_version is None else min(to_version, version_then)
        version = max(from_version, 1)
        while True:
            with self._db.lock:
                stream = self._streams.get(stream_id, [])
                end = len(stream) if to_version is None else max(min(to_version, len(stream)), 0)
                page = stream[version - 1 : min(end, version - 1 + PAGE)]
            yield from page
            if len(page) < PAGE:
                return
            version += PAGE

    def count(self) -> int:
        """How many events the log holds."""
        with self._db.lock:
            return len(self._log)

    def read_all(self, after_position: int = 0, limit: int = 1000) -> list[EventRecord]:
        """Records after ``after_position``, oldest first."""
        with self._db.lock:
            return self._log[after_position : after_position + limit]


def _prefix_length(stream: list[EventRecord], as_of: datetime) -> int:
    """How many events lead the stream before the first that occurred after ``as_of``."""
    require_aware(as_of)
    return next((i for i, r in enumerate(stream) if r.occurred_at > as_of), len(stream))


class MemorySnapshotStore:
    """The reference snapshot store: per stream, the snapshots by version."""

    def __init__(self, database: MemoryDatabase) -> None:
        self._db = database
        self._streams: dict[str, dict[int, SnapshotRecord]] = {}

    def save(self, tx: Transaction, snapshot: SnapshotRecord) -> None:
        """Keep ``snapshot`` (replacing one at the same version) unless ``tx`` rolls back."""
        if not isinstance(tx, MemoryTransaction):
            raise UnitOfWorkError("the memory snapshot store writes only in a memory transaction")
        versions = self._streams.setdefault(snapshot.stream_id, {})
        previous = versions.get(snapshot.version)
        versions[snapshot.version] = snapshot

        def undo() -> None:
            if previous is None:
                del versions[snapshot.version]
            else:
                versions[snapshot.version] = previous

        tx.on_rollback(undo)

    def load_latest(
        self,
        stream_id: str,
        aggregate_type: str,
        snapshot_version: int,
        max_version: int | None = None,
    ) -> SnapshotRecord | None:
        """The newest matching snapshot at or below ``max_version``."""
        with self._db.lock:
            candidates = [
                snapshot
                for version, snapshot in self._streams.get(stream_id, {}).items()
                if (max_version is None or version <= max_version)
                and snapshot.aggregate_type == aggregate_type
                and snapshot.snapshot_version == snapshot_version
            ]
        return max(candidates, key=lambda snapshot: snapshot.version, default=None)
