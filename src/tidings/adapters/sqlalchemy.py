"""SQLAlchemy 2: events and outbox rows in the caller's own Session or Connection transaction.

    with Session(engine) as session, session.begin():
        session.add(order_row)
        tidings.adapters.sqlalchemy.save(store, session, order)
    # committed: the events are taken off the aggregate (and, without an outbox, handed to
    # the bus); after a rollback they stay pending, as with a unit of work.

Needs the ``sqlalchemy`` extra, and an engine on the same database as the store
(``postgresql+psycopg://`` or ``sqlite://``). The store's tables are written through the
DBAPI connection SQLAlchemy is using, so they share its transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from tidings.application.unit_of_work import write_pending
from tidings.domain.aggregate import Aggregate
from tidings.errors import ConfigurationError, StorageError
from tidings.ports import Params
from tidings.store import Store


class SqlAlchemyTransaction:
    """The ``Transaction`` port over the DBAPI connection of a SQLAlchemy ``Connection``."""

    def __init__(self, connection: Connection) -> None:
        self._driver: Any = connection.connection.driver_connection
        self.after_commit: list[Callable[[], None]] = []
        self._depth = 0

    @property
    def connection(self) -> Any:
        """The DBAPI connection SQLAlchemy's transaction runs on."""
        return self._driver

    def execute(self, sql: str, params: Params = ()) -> Any:
        """Run one statement in SQLAlchemy's transaction; driver errors become ours."""
        cursor = self._driver.cursor()
        try:
            cursor.execute(sql, params)
        except Exception as exc:
            if isinstance(exc, sqlite3.Error) or type(exc).__module__.startswith("psycopg"):
                raise StorageError(f"the database refused a tidings statement: {exc}") from exc
            raise
        return cursor

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` after SQLAlchemy's transaction commits."""
        self.after_commit.append(callback)

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
        name, after_mark = f"tidings_sp{self._depth}", len(self.after_commit)
        self.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            self.execute(f"ROLLBACK TO SAVEPOINT {name}")
            del self.after_commit[after_mark:]
            raise
        else:
            self.execute(f"RELEASE SAVEPOINT {name}")
        finally:
            self._depth -= 1


class Saved:
    """What ``save`` wrote; ``committed()`` finishes the job once the transaction committed.

    With a ``Session`` it is called for you (``after_commit``); with a bare ``Connection``
    call it yourself right after your commit.
    """

    def __init__(self, store: Store, tx: SqlAlchemyTransaction, aggregates: tuple[Aggregate, ...]):
        self._store, self._tx, self._aggregates = store, tx, aggregates
        self.done = False

    def committed(self) -> None:
        """Take the events off the aggregates, run commit callbacks, publish (level 1)."""
        if self.done:
            return
        self.done = True
        events = [e for aggregate in self._aggregates for e in aggregate.pull_events()]
        for callback in self._tx.after_commit:
            callback()
        if self._store.outbox is None and events:
            self._store.bus.publish(events)


def save(store: Store, target: Session | Connection, *aggregates: Aggregate) -> Saved:
    """Write the pending events of ``aggregates`` (event log, outbox rows) in ``target``'s
    current transaction; see the module docstring for what happens at commit."""
    if store.database.dialect not in ("sqlite", "postgresql"):
        raise ConfigurationError("SQLAlchemy works with the SQLite and PostgreSQL stores only")
    connection = target.connection() if isinstance(target, Session) else target
    tx = SqlAlchemyTransaction(connection)
    write_pending(tx, aggregates, store.events, store.codec, store.writers)
    saved = Saved(store, tx, aggregates)
    if isinstance(target, Session):
        _finish_with(target, saved)
    return saved


PENDING = "tidings.saved"  # key in Session.info: what awaits this transaction's outcome


def _finish_with(session: Session, saved: Saved) -> None:
    """Call ``saved.committed`` after this transaction commits; forget it on a rollback.

    One pair of listeners per session settles every ``Saved`` of its transaction
    (SQLAlchemy does not let a listener remove itself while the event runs).
    """
    pending: list[Saved] | None = session.info.get(PENDING)
    if pending is None:
        pending = session.info[PENDING] = []
        event.listen(session, "after_commit", _committed)
        event.listen(session, "after_rollback", _rolled_back)
    pending.append(saved)


def _committed(session: Session) -> None:
    pending: list[Saved] = session.info.get(PENDING, [])
    done, pending[:] = list(pending), []
    for saved in done:
        saved.committed()


def _rolled_back(session: Session) -> None:
    session.info.get(PENDING, []).clear()
