"""SQLAlchemy 2: events and outbox rows go into the caller's own transaction."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, create_engine, event
from sqlalchemy import insert as sa_insert
from sqlalchemy.orm import Session

import tidings
from tidings.adapters.sqlalchemy import save
from tidings.domain.events import DomainEvent
from tidings.testing.contract import Counted, Counter


def counters_table(schema: str | None) -> Table:
    """The caller's own table, in the given PostgreSQL schema (or SQLite's main)."""
    return Table(
        "counters",
        MetaData(schema=schema),
        Column("counter_id", String, primary_key=True),
        Column("version", Integer, nullable=False),
    )


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Engine, Any, Table]]:
    """(engine, store factory, the caller's table) on one database."""
    stores: list[tidings.Store] = []
    if request.param == "sqlite":
        path = tmp_path / "sa.db"
        engine = create_engine(f"sqlite:///{path}")

        @event.listens_for(engine, "connect")
        def _no_implicit_transactions(dbapi_connection: Any, _: Any) -> None:
            dbapi_connection.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin_immediate(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

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

    yield engine, make, table
    for store in stores:
        store.close()
    engine.dispose()
    if request.param == "postgresql":
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {options['schema']} CASCADE")


def test_a_commit_keeps_row_events_and_outbox_together(setup: tuple[Engine, Any, Table]) -> None:
    """Your row, the event and its outbox row commit in one Session transaction."""
    engine, make, table = setup
    store = make(outbox=True)
    table.metadata.create_all(engine)
    counter = Counter("c-1")
    counter.increment(4)
    with Session(engine) as session, session.begin():
        session.execute(sa_insert(table).values(counter_id="c-1", version=counter.version))
        save(store, session, counter)
        assert counter.pending_events != ()  # not taken off before the commit
    assert counter.pending_events == ()
    assert [e.step for e in store.read_stream("c-1")] == [4]  # type: ignore[attr-defined]
    assert store.outbox is not None
    assert store.outbox.stats(time.time()).backlog == 1


def test_a_rollback_keeps_nothing_and_the_events_stay_pending(
    setup: tuple[Engine, Any, Table],
) -> None:
    """After a rollback: no row, no event, no outbox row; a later commit of the same
    session does not take the events off either."""
    engine, make, table = setup
    store = make(outbox=True)
    table.metadata.create_all(engine)
    counter = Counter("c-2")
    counter.increment()
    with Session(engine) as session:
        with pytest.raises(RuntimeError), session.begin():
            session.execute(sa_insert(table).values(counter_id="c-2", version=1))
            save(store, session, counter)
            raise RuntimeError("the payment failed")
        with session.begin():
            session.execute(sa_insert(table).values(counter_id="other", version=0))
    assert len(counter.pending_events) == 1
    assert list(store.read_stream("c-2")) == []
    assert store.outbox is not None
    assert store.outbox.stats(time.time()).backlog == 0


def test_without_an_outbox_handlers_run_after_the_commit(
    setup: tuple[Engine, Any, Table],
) -> None:
    """Level 1 with SQLAlchemy: the bus gets the event once the Session committed."""
    engine, make, table = setup
    store = make()
    table.metadata.create_all(engine)
    delivered: list[DomainEvent] = []
    store.bus.subscribe(Counted, delivered.append)
    counter = Counter("c-3")
    counter.increment()
    with Session(engine) as session, session.begin():
        save(store, session, counter)
        assert delivered == []
    assert [e.aggregate_id for e in delivered] == ["c-3"]


def test_a_stale_aggregate_is_refused_inside_the_callers_transaction(
    setup: tuple[Engine, Any, Table],
) -> None:
    """Optimistic concurrency holds through SQLAlchemy too: ConcurrencyError, nothing kept."""
    engine, make, _ = setup
    store = make()
    first, second = Counter("c-4"), Counter("c-4")
    first.increment()
    second.increment()
    with Session(engine) as session, session.begin():
        save(store, session, first)
    with (
        pytest.raises(tidings.ConcurrencyError),
        Session(engine) as session,
        session.begin(),
    ):
        save(store, session, second)
    assert len(list(store.read_stream("c-4"))) == 1
