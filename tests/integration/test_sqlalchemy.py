"""SQLAlchemy 2: a tidings unit of work joined to the caller's Session or Connection
transaction; what follows the commit runs from SQLAlchemy's commit, and nothing after a
rollback."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, create_engine, event
from sqlalchemy import insert as sa_insert
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

import tidings
from tidings.adapters.sqlalchemy import joined, save, unit_of_work
from tidings.domain.events import DomainEvent
from tidings.testing.contract import Counted, Counter

KINDS = ["session", "connection"]


def counters_table(schema: str | None) -> Table:
    """The caller's own table, in the given PostgreSQL schema (or SQLite's main)."""
    return Table(
        "counters",
        MetaData(schema=schema),
        Column("counter_id", String, primary_key=True),
        Column("version", Integer, nullable=False),
    )


def sqlite_engine(path: Path) -> Engine:
    """SQLAlchemy's recipe for SQLite transactions that begin where SQLAlchemy says so:
    BEGIN IMMEDIATE takes the write lock up front, as tidings' own transactions do."""
    engine = create_engine(f"sqlite:///{path}")

    @event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_connection: Any, _: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Engine, Any, Table]]:
    """(engine, store factory, the caller's table, created) on one database."""
    stores: list[tidings.Store] = []
    if request.param == "sqlite":
        path = tmp_path / "sa.db"
        engine = sqlite_engine(path)
        url, options, table = f"sqlite:///{path}", {}, counters_table(None)
    else:
        url = request.getfixturevalue("pg_url")
        schema = f"t_{uuid.uuid4().hex[:12]}"
        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        options, table = {"schema": schema}, counters_table(schema)

    def make(**extra: Any) -> tidings.Store:
        store = tidings.connect(url, registry=tidings.EventRegistry([Counted]), **options, **extra)
        stores.append(store)
        return store

    make()  # creates the schema the caller's table goes in
    table.metadata.create_all(engine)
    yield engine, make, table
    for store in stores:
        store.close()
    engine.dispose()
    if request.param == "postgresql":
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {options['schema']} CASCADE")


@contextmanager
def transaction(engine: Engine, kind: str) -> Iterator[Session | Connection]:
    """The caller's transaction: a Session's, or a bare Connection's committed by hand
    (``conn.commit()``, SQLAlchemy 2's commit as you go). An exception rolls it back."""
    if kind == "session":
        with Session(engine) as session, session.begin():
            yield session
    else:
        with engine.connect() as connection:
            yield connection
            connection.commit()


def backlog(store: tidings.Store) -> int:
    assert store.outbox is not None
    return store.outbox.stats(time.time()).backlog


@pytest.mark.parametrize("kind", KINDS)
def test_a_commit_keeps_row_events_and_outbox_together_and_leaves_nothing_pending(
    setup: tuple[Engine, Any, Table], kind: str
) -> None:
    """Your row, the event and its outbox row commit in one transaction; the commit alone
    takes the events off the aggregate."""
    engine, make, table = setup
    store = make(outbox=True)
    counter = Counter("c-1")
    counter.increment(4)
    with transaction(engine, kind) as target:
        target.execute(sa_insert(table).values(counter_id="c-1", version=counter.version))
        with unit_of_work(store, target) as uow:
            uow.track(counter)
        assert counter.pending_events != ()  # not taken off before the commit
    assert counter.pending_events == ()
    assert [e.step for e in store.read_stream("c-1")] == [4]  # type: ignore[attr-defined]
    assert backlog(store) == 1
    with engine.connect() as connection:
        assert connection.execute(table.select()).all() == [("c-1", 1)]


@pytest.mark.parametrize("kind", KINDS)
def test_a_rollback_writes_and_publishes_nothing_and_the_events_stay_pending(
    setup: tuple[Engine, Any, Table], kind: str
) -> None:
    """After a rollback: no row, no event, no outbox row, no handler run; a later commit on
    the same session or connection does not take the events off either."""
    engine, make, table = setup
    store = make()
    delivered: list[DomainEvent] = []
    store.bus.subscribe(Counted, delivered.append)
    counter = Counter("c-2")
    counter.increment()
    with Session(engine) if kind == "session" else engine.connect() as target:
        with pytest.raises(RuntimeError), target.begin():
            target.execute(sa_insert(table).values(counter_id="c-2", version=1))
            save(store, target, counter)
            raise RuntimeError("the payment failed")
        with target.begin():
            target.execute(sa_insert(table).values(counter_id="other", version=0))
    assert len(counter.pending_events) == 1
    assert delivered == []
    assert list(store.read_stream("c-2")) == []
    with engine.connect() as connection:
        assert connection.execute(table.select()).all() == [("other", 0)]


@pytest.mark.parametrize("kind", KINDS)
def test_a_second_save_after_a_commit_goes_on_from_the_committed_version(
    setup: tuple[Engine, Any, Table], kind: str
) -> None:
    """The commit settles the first save, so the aggregate's next change is saved at the
    next version (it used to stay pending on a bare Connection, and fail as a conflict)."""
    engine, make, _ = setup
    store = make(outbox=True)
    counter = Counter("c-3")
    counter.increment(1)
    with transaction(engine, kind) as target:
        save(store, target, counter)
    counter.increment(2)
    with transaction(engine, kind) as target:
        save(store, target, counter)
    assert [e.step for e in store.read_stream("c-3")] == [1, 2]  # type: ignore[attr-defined]
    assert counter.pending_events == ()
    assert backlog(store) == 2


@pytest.mark.parametrize("kind", KINDS)
def test_without_an_outbox_handlers_run_after_the_commit_and_never_before(
    setup: tuple[Engine, Any, Table], kind: str
) -> None:
    """Level 1 with SQLAlchemy: the bus gets the event once SQLAlchemy committed, and the
    handler sees the committed row from another connection."""
    engine, make, table = setup
    store = make()
    seen: list[tuple[str, list[Any]]] = []

    def handler(event: DomainEvent) -> None:
        with engine.connect() as other:
            seen.append((event.aggregate_id, list(other.execute(table.select()).all())))

    store.bus.subscribe(Counted, handler)
    counter = Counter("c-4")
    counter.increment()
    with transaction(engine, kind) as target:
        target.execute(sa_insert(table).values(counter_id="c-4", version=1))
        with unit_of_work(store, target) as uow:
            uow.track(counter)
        assert seen == []
    assert seen == [("c-4", [("c-4", 1)])]


@pytest.mark.parametrize("kind", KINDS)
def test_a_rolled_back_savepoint_drops_its_events_and_keeps_the_rest(
    setup: tuple[Engine, Any, Table], kind: str
) -> None:
    """Events saved inside ``begin_nested()`` that rolls back are neither kept nor
    published; those saved outside it are both, at the outer commit."""
    engine, make, _ = setup
    store = make()
    delivered: list[str] = []
    store.bus.subscribe(Counted, lambda e: delivered.append(e.aggregate_id))
    kept, dropped = Counter("c-5"), Counter("c-6")
    kept.increment()
    dropped.increment()
    with transaction(engine, kind) as target:
        save(store, target, kept)
        with pytest.raises(RuntimeError), target.begin_nested():
            save(store, target, dropped)
            raise RuntimeError("this part fails")
    assert delivered == ["c-5"]
    assert list(store.read_stream("c-6")) == []
    assert len(dropped.pending_events) == 1
    assert kept.pending_events == ()


@pytest.mark.parametrize("kind", KINDS)
def test_a_stale_aggregate_is_refused_inside_the_callers_transaction(
    setup: tuple[Engine, Any, Table], kind: str
) -> None:
    """Optimistic concurrency holds through SQLAlchemy too: ConcurrencyError, nothing kept."""
    engine, make, _ = setup
    store = make()
    first, second = Counter("c-7"), Counter("c-7")
    first.increment()
    second.increment()
    with transaction(engine, kind) as target:
        save(store, target, first)
    with pytest.raises(tidings.ConcurrencyError), transaction(engine, kind) as target:
        save(store, target, second)
    assert len(list(store.read_stream("c-7"))) == 1
    assert len(second.pending_events) == 1


def test_metadata_and_a_correlation_id_are_stored_with_the_events(
    setup: tuple[Engine, Any, Table],
) -> None:
    """The unit of work takes the same metadata and correlation as store.unit_of_work()."""
    engine, make, _ = setup
    store = make()
    counter = Counter("c-8")
    counter.increment()
    with (
        transaction(engine, "connection") as target,
        unit_of_work(store, target, {"user": "ann"}, correlation_id="conv-1") as uow,
    ):
        uow.track(counter)
    [record] = store.events.read_stream("c-8")
    metadata = json.loads(record.metadata)
    assert (metadata["user"], metadata["correlation_id"]) == ("ann", "conv-1")


def test_a_connection_in_autocommit_mode_is_refused_with_what_to_do(
    setup: tuple[Engine, Any, Table], tmp_path: Path
) -> None:
    """Statements that each commit on their own cannot join a transaction: refused, and
    the message says to use one. (SQLite: the driver's autocommit with nothing emitting
    BEGIN; PostgreSQL: SQLAlchemy's AUTOCOMMIT isolation level.)"""
    engine, make, _ = setup
    store = make()
    if engine.dialect.name == "sqlite":
        engine = create_engine(f"sqlite:///{tmp_path / 'sa.db'}")
        event.listen(engine, "connect", lambda dbapi, _: setattr(dbapi, "isolation_level", None))
    else:
        engine = engine.execution_options(isolation_level="AUTOCOMMIT")
    with (
        engine.connect() as connection,
        pytest.raises(tidings.ConfigurationError, match="autocommit mode.*use a transaction"),
    ):
        unit_of_work(store, connection)
    engine.dispose()


def test_a_store_that_is_not_sql_is_refused(setup: tuple[Engine, Any, Table]) -> None:
    """A memory:// store has no tables SQLAlchemy could share a transaction with."""
    engine, _, _ = setup
    with (
        tidings.connect("memory://") as store,
        engine.connect() as connection,
        pytest.raises(tidings.ConfigurationError, match="SQLite and PostgreSQL"),
    ):
        unit_of_work(store, connection)


@pytest.mark.parametrize("kind", KINDS)
def test_a_released_savepoint_keeps_its_events_for_the_outer_commit(
    setup: tuple[Engine, Any, Table], kind: str
) -> None:
    """Events saved inside a ``begin_nested()`` that is released are published once the
    outer transaction commits, not at the release."""
    engine, make, _ = setup
    store = make()
    delivered: list[str] = []
    store.bus.subscribe(Counted, lambda e: delivered.append(e.aggregate_id))
    counter = Counter("c-9")
    counter.increment()
    with transaction(engine, kind) as target:
        with target.begin_nested():
            save(store, target, counter)
        assert delivered == []
    assert delivered == ["c-9"]


def test_a_commit_that_fails_publishes_nothing(setup: tuple[Engine, Any, Table]) -> None:
    """A constraint checked only at COMMIT refuses it: StorageError, nothing kept, no
    handler run, the events still pending."""
    engine, make, table = setup
    store = make()
    delivered: list[DomainEvent] = []
    store.bus.subscribe(Counted, delivered.append)
    counter = Counter("c-10")
    counter.increment()
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", lambda dbapi, _: dbapi.execute("PRAGMA foreign_keys=ON"))
        engine.dispose()  # new connections, with the pragma
        ddl = [
            "CREATE TABLE parents (id INTEGER PRIMARY KEY)",
            "CREATE TABLE children (parent INTEGER REFERENCES parents (id) "
            "DEFERRABLE INITIALLY DEFERRED)",
        ]
        orphan = "INSERT INTO children VALUES (1)"
    else:
        name = f"{table.schema}.deferred"  # dropped with the test's schema
        ddl = [f"CREATE TABLE {name} (id INTEGER UNIQUE DEFERRABLE INITIALLY DEFERRED)"]
        orphan = f"INSERT INTO {name} VALUES (1), (1)"
    with engine.begin() as connection:
        for statement in ddl:
            connection.exec_driver_sql(statement)
    with (
        pytest.raises(tidings.StorageError, match="nothing of it was kept or published"),
        engine.connect() as connection,
    ):
        connection.exec_driver_sql(orphan)
        save(store, connection, counter)
        connection.commit()
    assert delivered == []
    assert list(store.read_stream("c-10")) == []
    assert len(counter.pending_events) == 1


def test_a_statement_the_database_refuses_is_a_storage_error(
    setup: tuple[Engine, Any, Table],
) -> None:
    """Your own statement through ``uow.execute`` fails as tidings' StorageError, with the
    driver's error chained."""
    engine, make, _ = setup
    store = make()
    with (
        pytest.raises(tidings.StorageError) as failure,
        transaction(engine, "connection") as target,
        unit_of_work(store, target) as uow,
    ):
        uow.execute("INSERT INTO no_such_table VALUES (:x)", {"x": 1})
    assert failure.value.__cause__ is not None


def test_the_transaction_port_over_sqlalchemy_undoes_a_failed_savepoint(
    setup: tuple[Engine, Any, Table],
) -> None:
    """``joined(...)`` is a full ``Transaction``: a savepoint whose block raises undoes its
    writes and its commit callbacks; the rest commits with the caller's transaction."""
    engine, _, table = setup
    ran: list[str] = []
    name = f"{table.schema}.counters" if table.schema else "counters"
    with transaction(engine, "connection") as connection:
        tx = joined(connection)
        assert not tx.last_statement()
        with tx.pipeline():
            tx.execute(f"INSERT INTO {name} VALUES ('kept', 1)")
        tx.on_commit(lambda: ran.append("kept"))
        with pytest.raises(RuntimeError), tx.savepoint():
            tx.execute(f"INSERT INTO {name} VALUES ('undone', 1)")
            tx.on_commit(lambda: ran.append("undone"))
            raise RuntimeError("undo this part")
        with tx.savepoint():
            tx.on_commit(lambda: ran.append("released"))
    assert ran == ["kept", "released"]
    with engine.connect() as other:
        assert other.execute(table.select()).all() == [("kept", 1)]
