"""SQLAlchemy 2: a tidings unit of work inside the caller's Session or Connection transaction.

    with Session(engine) as session, session.begin():
        session.add(order_row)
        with tidings.adapters.sqlalchemy.unit_of_work(store, session) as uow:
            uow.track(order)
    # committed: the events are off the aggregate (and, without an outbox, handed to the
    # bus); after a rollback nothing was written or published and they stay pending.

The unit of work writes events, outbox rows and messages through the DBAPI connection
SQLAlchemy's transaction runs on, so they commit or roll back with your own rows. What
follows a commit (taking the events off the aggregates, handing them to the bus, waking an
in-process relay) runs from SQLAlchemy's commit of that connection: nothing is left to
finish by hand, and nothing runs after a rollback, also of a ``begin_nested()`` savepoint.

Needs the ``sqlalchemy`` extra and an engine on the same database as the store
(``postgresql+psycopg://`` or ``sqlite://``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Protocol
from weakref import WeakKeyDictionary, ref

from tidings.adapters.extras import require
from tidings.application.causation import Cause
from tidings.application.unit_of_work import UnitOfWork
from tidings.domain.aggregate import Aggregate
from tidings.errors import ConfigurationError, StorageError
from tidings.ports import Database, Params, Transaction

require("sqlalchemy", "tidings.adapters.sqlalchemy")  # one line, not a traceback

from sqlalchemy import event  # noqa: E402  (after the check above)
from sqlalchemy.engine import Connection  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402


class JoinableStore(Protocol):
    """What this adapter needs of a store (``tidings.Store`` is one): its database, and
    units of work inside a transaction someone else commits."""

    database: Database

    def unit_of_work_in(
        self,
        tx: Transaction,
        cause: Cause | None = None,
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> UnitOfWork: ...


def unit_of_work(
    store: JoinableStore,
    target: Session | Connection,
    metadata: Mapping[str, Any] | None = None,
    *,
    correlation_id: str | None = None,
    causation_id: str | None = None,
) -> UnitOfWork:
    """A unit of work joined to ``target``'s current transaction (begun if none is open).

    Use it as a ``with`` block and ``track`` (or ``send``) as with ``store.unit_of_work()``;
    at the end of the block it writes, and the rest happens when SQLAlchemy commits.
    ``metadata``, ``correlation_id`` and ``causation_id`` mean what they mean there."""
    dialect = store.database.dialect
    if dialect not in ("sqlite", "postgresql"):
        raise ConfigurationError(
            f"SQLAlchemy works with the SQLite and PostgreSQL stores only, not {dialect}"
        )
    cause = None
    if correlation_id is not None:
        cause = Cause(correlation_id, causation_id or correlation_id, {})
    return store.unit_of_work_in(joined(target), cause, metadata=metadata)


def save(store: JoinableStore, target: Session | Connection, *aggregates: Aggregate) -> UnitOfWork:
    """Write the pending events of ``aggregates`` in ``target``'s transaction: a unit of
    work that tracks just them (see ``unit_of_work``). Returns it, finished writing."""
    with unit_of_work(store, target) as uow:
        uow.track(*aggregates)
    return uow


def joined(target: Session | Connection) -> SqlAlchemyTransaction:
    """The ``Transaction`` over ``target``'s connection, with its current transaction open."""
    connection = target.connection() if isinstance(target, Session) else target
    if not connection.in_transaction():
        connection.begin()  # what SQLAlchemy's own first statement would do (autobegin)
    tx = _JOINED.get(connection)
    if tx is None:
        tx = _JOINED[connection] = SqlAlchemyTransaction(connection)
    tx.check_open()
    return tx


class SqlAlchemyTransaction:
    """The ``Transaction`` port over a SQLAlchemy ``Connection``'s DBAPI connection.

    One per ``Connection``, kept for its life: it follows that connection's transactions
    through SQLAlchemy's events, keeping the commit callbacks of the one that is open.
    """

    def __init__(self, connection: Connection) -> None:
        # Weak: the connection holds this object through its listeners, not the reverse,
        # so a closed Connection is freed (and dropped from _JOINED) as usual.
        self._connection = ref(connection)
        self._after: list[Callable[[], None]] = []
        self._marks: list[
            tuple[str | None, int]
        ] = []  # SQLAlchemy savepoint -> callbacks before it
        self._depth = 0
        event.listen(connection, "commit", self._committing)
        event.listen(connection, "rollback", self._rolled_back)
        event.listen(connection, "savepoint", self._savepoint_begun)
        event.listen(connection, "rollback_savepoint", self._savepoint_rolled_back)
        event.listen(connection, "release_savepoint", self._savepoint_released)

    @property
    def connection(self) -> Any:
        """The DBAPI connection SQLAlchemy's transaction runs on."""
        connection = self._connection()
        if connection is None:
            raise StorageError("the SQLAlchemy Connection of this transaction is gone")
        return connection.connection.driver_connection

    def check_open(self) -> None:
        """Refuse a connection whose statements would each commit on their own."""
        driver = self.connection
        if isinstance(driver, sqlite3.Connection):
            autocommit = driver.isolation_level is None and not driver.in_transaction
        else:
            autocommit = bool(getattr(driver, "autocommit", False))
        if autocommit:
            raise ConfigurationError(
                "the SQLAlchemy connection is in autocommit mode, so tidings' writes could "
                "not commit or roll back with yours: use a transaction (on SQLite with "
                "isolation_level=None, emit BEGIN IMMEDIATE from a 'begin' event listener; "
                "see docs/sqlalchemy.md)"
            )

    def execute(self, sql: str, params: Params = ()) -> Any:
        """Run one statement in SQLAlchemy's transaction; driver errors become ours."""
        cursor = self.connection.cursor()
        try:
            cursor.execute(sql, params)
        except sqlite3.Error as exc:
            from tidings.adapters.sqlite.database import storage_error

            raise storage_error(exc, "writing in a SQLAlchemy transaction") from exc
        except Exception as exc:
            if not type(exc).__module__.startswith("psycopg"):
                raise
            from tidings.adapters.postgres.database import storage_error as pg_error

            raise pg_error(exc, "writing in a SQLAlchemy transaction", "PostgreSQL") from exc
        return cursor

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once SQLAlchemy's transaction has committed (never after a
        rollback of it, or of a savepoint it was registered in)."""
        self._after.append(callback)

    def pipeline(self) -> AbstractContextManager[None]:
        """Statements wait for their results here anyway: nothing to change."""
        return nullcontext()

    def last_statement(self) -> bool:
        """The transaction is SQLAlchemy's: its owner decides when it commits."""
        return False

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """SAVEPOINT inside SQLAlchemy's transaction."""
        self._depth += 1
        name, after_mark = f"tidings_sp{self._depth}", len(self._after)
        self.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            self.execute(f"ROLLBACK TO SAVEPOINT {name}")
            del self._after[after_mark:]
            raise
        else:
            self.execute(f"RELEASE SAVEPOINT {name}")
        finally:
            self._depth -= 1

    def _committing(self, _: Connection) -> None:
        """SQLAlchemy's ``commit`` event fires *before* it commits the DBAPI connection, and
        nothing fires after. So the commit is made here, and the callbacks run only once it
        succeeded; SQLAlchemy's own commit that follows finds nothing left to commit (a
        no-op in sqlite3 and psycopg). This holds whoever drives the connection: a bare
        ``Connection``, a ``Session`` (also one joined to an outer transaction, whose
        ``after_commit`` fires before anything is committed) or ``engine.begin()``."""
        callbacks, self._after, self._marks = self._after, [], []
        if not callbacks:
            return
        driver = self.connection
        try:
            driver.commit()
        except Exception as exc:
            raise StorageError(
                f"the commit of the SQLAlchemy transaction failed, so nothing of it was "
                f"kept or published: {exc}"
            ) from exc
        for callback in callbacks:
            callback()

    def _rolled_back(self, _: Connection) -> None:
        self._after, self._marks = [], []

    def _savepoint_begun(self, connection: Connection, name: str | None) -> None:
        if name is None:
            # The event fires before SQLAlchemy names the savepoint; it will be the next
            # of its own sequence (the name ROLLBACK TO and RELEASE will give).
            seq = getattr(connection, "_Connection__savepoint_seq", None)
            name = f"sa_savepoint_{seq + 1}" if isinstance(seq, int) else None
        self._marks.append((name, len(self._after)))

    def _savepoint_rolled_back(self, _: Connection, name: str, __: Any) -> None:
        """Drop the callbacks registered since the savepoint, and its inner ones' marks."""
        n = self._mark_of(name)
        kept = self._marks[n][1] if self._marks else 0
        del self._after[kept:], self._marks[n:]

    def _savepoint_released(self, _: Connection, name: str, __: Any) -> None:
        del self._marks[self._mark_of(name) :]

    def _mark_of(self, name: str) -> int:
        """Where savepoint ``name`` is in the marks. One not found began before this object
        listened (or could not be named): it holds all of them, so all are its own; for a
        rollback that errs on the side of publishing nothing that was undone."""
        for n in range(len(self._marks) - 1, -1, -1):
            if self._marks[n][0] == name:
                return n
        return 0


# The one SqlAlchemyTransaction of each live Connection (its listeners stay on it).
_JOINED: WeakKeyDictionary[Connection, SqlAlchemyTransaction] = WeakKeyDictionary()
