"""A consumer's batch in one pass (pipelined on PostgreSQL) behaves as one by one."""

from __future__ import annotations

import pytest

import tidings
from tidings.application.backoff import Backoff
from tidings.application.handling import Delivery, Handlers, InboxProcessor
from tidings.application.unit_of_work import UnitOfWork
from tidings.serialization.registry import EventRegistry
from tidings.testing.contract import Counted, Counter, new_id

from ..conftest import MakeStore

LEDGER = "CREATE TABLE IF NOT EXISTS ledger (entry TEXT PRIMARY KEY, amount INTEGER NOT NULL)"


@pytest.fixture
def store(make_sql_store: MakeStore) -> tidings.Store:
    """A store with the ledger table of these tests, holding the entry 'taken'."""
    opened = make_sql_store(EventRegistry([Counted]))
    with opened.unit_of_work() as uow:
        uow.execute(LEDGER)
        uow.execute("DELETE FROM ledger")
        uow.execute("INSERT INTO ledger VALUES ('taken', 0)")
    return opened


def delivered(store: tidings.Store, step: int, note: str) -> Delivery:
    """A committed Counted event of a new aggregate, as a delivery."""
    counter = Counter(new_id("order"))
    counter.increment(step, note)
    with store.unit_of_work() as uow:
        uow.track(counter)
    record = store.codec.encode(uow.published[0])
    return Delivery(record.data, record)


def processor(store: tidings.Store, handle: object) -> InboxProcessor:
    """A processor running ``handle`` behind the inbox, without jitter."""
    handlers = Handlers()
    handlers.add(Counted, "ledger.book", handle)  # type: ignore[arg-type]
    return store.processor(handlers, backoff=Backoff(base=1.0, jitter=0.0))


def mark(uow: UnitOfWork) -> str:
    """The driver's own placeholder (for statements sent on ``uow.connection``)."""
    return "?" if uow.dialect == "sqlite" else "%s"


def ledger(store: tidings.Store) -> dict[str, int]:
    """Every entry of the ledger."""
    with store.unit_of_work() as uow:
        return dict(uow.execute("SELECT entry, amount FROM ledger").fetchall())


@pytest.mark.parametrize("through", ["unit of work", "driver connection"])
def test_a_statement_failing_in_a_batch_undoes_only_its_message(
    store: tidings.Store, through: str
) -> None:
    """A handler's insert fails for one message (without the handler reading its result;
    the driver's own error or ours): the batch is handled again one by one, the others
    apply once, the failure counts once."""

    def book(event: Counted, uow: UnitOfWork) -> None:
        if through == "unit of work":
            uow.execute("INSERT INTO ledger VALUES (?, ?)", (event.note, event.step))
        else:
            p = mark(uow)
            uow.connection.execute(
                f"INSERT INTO ledger VALUES ({p}, {p})", (event.note, event.step)
            )

    batch = [delivered(store, 1, "a"), delivered(store, 2, "taken"), delivered(store, 3, "c")]
    verdicts = processor(store, book).process(batch)
    assert [v.ack for v in verdicts] == [True, False, True]
    assert ledger(store) == {"taken": 0, "a": 1, "c": 3}
    failed = batch[1].record
    assert failed is not None
    with store.unit_of_work() as uow:
        row = uow.execute(
            f"SELECT status, attempts FROM {store.database.tables['inbox']} "  # type: ignore[attr-defined]
            "WHERE event_id = ?",
            (failed.event_id,),
        ).fetchone()
    assert tuple(row) == ("failed", 1)


def test_rowcount_reads_as_without_a_batch(store: tidings.Store) -> None:
    """``rowcount`` of a handler's statement is right inside a batch (PostgreSQL pipelines
    the batch, and waits for the statement when its rowcount is read)."""

    def upsert(event: Counted, uow: UnitOfWork) -> None:
        cursor = uow.execute(
            "UPDATE ledger SET amount = amount + ? WHERE entry = ?", (event.step, event.note)
        )
        if cursor.rowcount == 0:
            p = mark(uow)
            direct = uow.connection.cursor()
            direct.execute(f"INSERT INTO ledger VALUES ({p}, {p})", (event.note, event.step))
            assert direct.rowcount == 1

    batch = [delivered(store, step, "x") for step in (1, 2, 3)]
    assert all(v.ack for v in processor(store, upsert).process(batch))
    assert ledger(store) == {"taken": 0, "x": 6}
