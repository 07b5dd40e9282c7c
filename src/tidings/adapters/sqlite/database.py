"""SqliteDatabase: WAL, FULL sync by default, one connection per thread, BEGIN IMMEDIATE."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from types import TracebackType
from typing import Any

from tidings.adapters.sql import (
    ddl_names,
    ensure_parts,
    schema_text,
    table_names,
    table_prefix,
)
from tidings.errors import ConfigurationError, DataRefusedError, StorageError, UnitOfWorkError
from tidings.ports import Params

SYNCHRONOUS_MODES = ("FULL", "EXTRA", "NORMAL")


def storage_error(exc: sqlite3.Error, doing: str) -> StorageError:
    """Translate a sqlite3 error into ours, with what to do about the common ones."""
    text = str(exc)
    if isinstance(exc, sqlite3.DataError) or "too big" in text or "datatype mismatch" in text:
        return DataRefusedError(
            f"SQLite refused the data while {doing}: {text} (a value or a size in the data "
            "itself; writing it again fails again)"
        )
    if "locked" in text or "busy" in text:
        hint = "another process held the write lock past the busy timeout; raise busy_timeout"
    elif isinstance(exc, sqlite3.IntegrityError):
        hint = "a constraint of the table refused the write; nothing of the transaction was kept"
    else:
        hint = "see the chained sqlite3 error"
    return StorageError(f"SQLite failed while {doing}: {text} ({hint})")


class SqliteTransaction:
    """An open ``BEGIN IMMEDIATE`` transaction on this thread's connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._after: list[Callable[[], None]] = []
        self._depth = 0

    @property
    def connection(self) -> sqlite3.Connection:
        """The ``sqlite3.Connection`` the transaction runs on."""
        return self._conn

    def execute(self, sql: str, params: Params = ()) -> sqlite3.Cursor:
        """Run one statement; sqlite3 errors arrive as ``StorageError``."""
        try:
            return self._conn.execute(sql, params)
        except sqlite3.Error as exc:
            raise storage_error(exc, "running your statement") from exc

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` after the commit."""
        self._after.append(callback)

    def pipeline(self) -> AbstractContextManager[None]:
        """Statements wait for their results here anyway: nothing to change."""
        return nullcontext()

    def last_statement(self) -> bool:
        """SQLite runs in this process: a transaction of one statement saves nothing."""
        return False

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """SAVEPOINT; ROLLBACK TO it (and drop its commit callbacks) when the block raises."""
        self._depth += 1
        name, after_mark = f"tidings_sp{self._depth}", len(self._after)
        self.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            self.execute(f"ROLLBACK TO {name}")
            self.execute(f"RELEASE {name}")
            del self._after[after_mark:]
            raise
        else:
            self.execute(f"RELEASE {name}")
        finally:
            self._depth -= 1


class SqliteTransactionScope:
    """The ``with`` block of one write transaction (a class rather than a generator: it
    opens and closes every unit of work, so its own cost counts)."""

    __slots__ = ("_conn", "_db", "_tx", "_writing")

    def __init__(
        self, conn: sqlite3.Connection, writing: threading.Lock, db: SqliteDatabase
    ) -> None:
        self._conn, self._writing, self._db = conn, writing, db
        self._tx: SqliteTransaction | None = None

    def __enter__(self) -> SqliteTransaction:
        conn = self._conn
        if conn.in_transaction:
            raise UnitOfWorkError(
                "a transaction is already open on this thread's SQLite connection: finish it "
                "before opening another unit of work"
            )
        # Writers of this process take turns on a lock first: a waiting thread then starts
        # the moment the write lock is free, where SQLite's busy handler would sleep up to
        # 100 ms between tries (a relay thread beside a busy writer waited that long).
        writing = self._writing  # first without a timeout: the usual, free lock costs less
        if not (writing.acquire(False) or writing.acquire(timeout=self._db.busy_timeout_ms / 1000)):
            raise StorageError(
                f"SQLite {self._db.path}: another thread of this process kept the write lock "
                f"longer than the busy timeout ({self._db.busy_timeout_ms} ms); raise "
                "busy_timeout"
            )
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._writing.release()
            raise storage_error(exc, "starting a write transaction") from exc
        self._tx = SqliteTransaction(conn)
        return self._tx

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, tx = self._conn, self._tx
        try:
            if exc_type is not None:
                conn.rollback()
                return
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as failure:
                conn.rollback()
                raise storage_error(failure, "committing") from failure
        finally:
            self._writing.release()
        if tx is not None:
            for callback in tx._after:
                callback()


class SqliteDatabase:
    """An SQLite file in WAL mode, safe to share across threads.

    Each thread gets its own connection. Writers take the write lock at ``BEGIN
    IMMEDIATE`` (waiting up to ``busy_timeout_ms``), so a transaction never fails late on
    a lock upgrade; writers of one process queue for it on a lock of their own first.
    ``synchronous`` is FULL by default: a committed transaction survives a power cut;
    NORMAL is faster and may lose the last commits on power loss, so it is an explicit
    opt-in.
    """

    dialect = "sqlite"

    def __init__(
        self,
        path: str | Path,
        *,
        prefix: str = "tidings_",
        synchronous: str = "FULL",
        busy_timeout_ms: int = 10_000,
    ) -> None:
        self.path = Path(path)
        if str(path) in ("", ":memory:"):
            raise ConfigurationError(
                "SQLite needs a file path (each connection to :memory: is a separate empty "
                "database); use memory:// for an in-process store"
            )
        mode = synchronous.upper()
        if mode not in SYNCHRONOUS_MODES:
            raise ConfigurationError(
                f"synchronous={synchronous!r} is not one of {', '.join(SYNCHRONOUS_MODES)}"
            )
        self.prefix = table_prefix(prefix)
        self.synchronous = mode
        self.busy_timeout_ms = busy_timeout_ms
        self.tables = table_names(self.prefix)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._writing = threading.Lock()

    def connection(self) -> sqlite3.Connection:
        """This thread's connection, opened and configured on first use."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._open()
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def _open(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path,
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,  # one per thread; close() may run on another
                timeout=self.busy_timeout_ms / 1000,
            )
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            raise StorageError(
                f"cannot open SQLite database {self.path}: {exc} (check that the folder "
                "exists and is writable)"
            ) from exc
        if str(mode).lower() != "wal":
            raise ConfigurationError(f"{self.path} cannot use WAL mode (got {mode!r})")
        return conn

    def transaction(self) -> SqliteTransactionScope:
        """A write transaction: BEGIN IMMEDIATE, COMMIT on success, ROLLBACK on error."""
        return SqliteTransactionScope(self.connection(), self._writing, self)

    def query(self, sql: str, params: Params = ()) -> list[Any]:
        """Run a read on this thread's connection (one statement: one consistent snapshot)."""
        try:
            return self.connection().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise storage_error(exc, "reading") from exc

    def create_schema(self) -> None:
        """Create the missing tables and record their versions (idempotent)."""
        with self.transaction() as tx:
            conn = tx.connection
            ensure_parts(
                tx.execute,
                lambda part: self._schema_version(conn, part),
                package=__package__ or "tidings.adapters.sqlite",
                names=ddl_names(self.prefix),
                mark="?",
                where=self.describe(),
            )

    def _schema_version(self, conn: sqlite3.Connection, part: str) -> int | None:
        table = self.tables["schema_version"]
        exists = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
        if not exists:
            return None
        row = conn.execute(f"SELECT version FROM {table} WHERE component = ?", (part,)).fetchone()
        return None if row is None else int(row[0])

    def schema_sql(self) -> str:
        """The DDL this database runs, for teams that apply their own migrations."""
        return sqlite_schema(self.prefix)

    def describe(self) -> str:
        """The file path."""
        return f"SQLite database {self.path}"

    def close(self) -> None:
        """Close every thread's connection."""
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
        self._local = threading.local()


def sqlite_schema(prefix: str = "tidings_") -> str:
    """The SQLite DDL for a table prefix."""
    return schema_text("tidings.adapters.sqlite", ddl_names(table_prefix(prefix)))
