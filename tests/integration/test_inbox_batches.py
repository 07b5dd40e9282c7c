"""A consumer's batch in one pass (pipelined on PostgreSQL) behaves as one by one."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

import tidings
from tidings.application import merging
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


def merged_counts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of each run the batch pass sends as one executemany, as it is sent."""
    sizes: list[int] = []
    real = merging.execute_many

    def counting(uow: object, sql: str, params: Sequence[object]) -> None:
        sizes.append(len(params))
        real(uow, sql, params)  # type: ignore[arg-type]

    monkeypatch.setattr(merging, "execute_many", counting)
    return sizes


def test_a_handler_failing_after_others_merged_keeps_none_of_its_writes(
    store: tidings.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three handlers per message write the same statement, merged across messages; the
    second one raises after its write on the second message: its writes there are undone,
    the others' (and its own on the other messages) all kept, each once, and the events a
    handler recorded commit with them."""
    sizes = merged_counts(monkeypatch)
    streams: list[str] = []

    def write(name: str, fail_on: str = "") -> object:
        def handle(event: Counted, uow: UnitOfWork) -> None:
            uow.execute("INSERT INTO ledger VALUES (?, ?)", (f"{name}-{event.note}", event.step))
            if event.note == fail_on:
                raise ValueError("refused after its write")

        return handle

    def record(event: Counted, uow: UnitOfWork) -> None:
        uow.execute("INSERT INTO ledger VALUES (?, ?)", (f"rec-{event.note}", event.step))
        counter = Counter(new_id("echo"))
        counter.increment(event.step)
        uow.track(counter)
        streams.append(counter.id)

    handlers = Handlers()
    handlers.add(Counted, "first", write("first"))  # type: ignore[arg-type]
    handlers.add(Counted, "second", write("second", fail_on="b"))  # type: ignore[arg-type]
    handlers.add(Counted, "third", write("third"), idempotent=True)  # type: ignore[arg-type]
    handlers.add(Counted, "record", record)
    batch = [delivered(store, step, note) for step, note in ((1, "a"), (2, "b"), (3, "c"))]
    proc = store.processor(handlers, backoff=Backoff(base=1.0, jitter=0.0))
    assert [v.ack for v in proc.process(batch)] == [True, False, True]
    kept = {f"{name}-{note}" for name in ("first", "third", "rec") for note in "abc"}
    assert set(ledger(store)) == kept | {"taken", "second-a", "second-c"}
    with store.unit_of_work() as uow:  # the one-by-one pass's events: once each
        assert sum(uow.stream_version(s) for s in set(streams)) == 3

    sizes.clear()  # the message again, the second handler now taking it: one pass, merged
    handlers = Handlers()
    handlers.add(Counted, "second", write("second"))  # type: ignore[arg-type]
    again = [delivered(store, step, f"{note}2") for step, note in ((1, "a"), (2, "b"))]
    assert all(v.ack for v in store.processor(handlers).process([batch[1], *again]))
    assert {"second-b", "second-a2", "second-b2"} <= set(ledger(store))
    assert sizes == [3]


def test_a_handler_reading_after_a_held_write_sees_it(store: tidings.Store) -> None:
    """A handler's SELECT comes after the writes held before it, its own and an earlier
    handler's: the running totals are as one statement at a time would give."""
    totals: list[int] = []

    def book(event: Counted, uow: UnitOfWork) -> None:
        uow.execute("INSERT INTO ledger VALUES (?, ?)", (event.note, event.step))

    def total(event: Counted, uow: UnitOfWork) -> None:
        uow.execute("INSERT INTO ledger VALUES (?, ?)", (f"{event.note}'", event.step))
        totals.append(uow.execute("SELECT sum(amount) FROM ledger").fetchone()[0])

    handlers = Handlers()
    handlers.add(Counted, "book", book)  # type: ignore[arg-type]
    handlers.add(Counted, "total", total)  # type: ignore[arg-type]
    batch = [delivered(store, step, f"n{step}") for step in (1, 2, 3)]
    assert all(v.ack for v in store.processor(handlers).process(batch))
    assert totals == [2, 6, 12]


def test_a_savepoint_of_a_handler_undoes_its_held_write(store: tidings.Store) -> None:
    """A handler's own savepoint rolls back the write it made inside: once the handler
    took the transaction nothing of it is held, so no write of the savepoint is sent
    after it ended; the one it makes after the savepoint is kept."""

    def book(event: Counted, uow: UnitOfWork) -> None:
        try:
            with uow.transaction.savepoint():
                uow.execute("INSERT INTO ledger VALUES (?, ?)", (f"undone-{event.note}", 0))
                raise ValueError("changed its mind")
        except ValueError:
            pass
        uow.execute("INSERT INTO ledger VALUES (?, ?)", (event.note, event.step))

    batch = [delivered(store, step, f"s{step}") for step in (1, 2)]
    assert all(v.ack for v in processor(store, book).process(batch))
    assert ledger(store) == {"taken": 0, "s1": 1, "s2": 2}


def test_a_result_read_after_the_next_write_runs_the_handler_one_by_one(
    store: tidings.Store,
) -> None:
    """Reading a held write's rowcount after the next write cannot be answered in a merged
    pass; the handler is not blamed for it: it runs again unmerged and applies, once."""

    def book(event: Counted, uow: UnitOfWork) -> None:
        first = uow.execute("UPDATE ledger SET amount = amount + 1 WHERE entry = 'taken'")
        uow.execute("INSERT INTO ledger VALUES (?, ?)", (event.note, event.step))
        assert first.rowcount == 1

    batch = [delivered(store, step, f"r{step}") for step in (1, 2)]
    assert all(v.ack for v in processor(store, book).process(batch))
    assert ledger(store) == {"taken": 2, "r1": 1, "r2": 2}
