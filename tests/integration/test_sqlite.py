"""SQLite specifics: durability settings, threads, the write lock, nested units of work."""

from __future__ import annotations

import re
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import tidings
from tidings.adapters.sqlite import SqliteDatabase, SqliteEventStore
from tidings.testing.contract import Counted, Counter


def open_store(path: Path, **options: str) -> tidings.Store:
    """A store on an SQLite file that knows the contract's Counted event."""
    return tidings.connect(
        f"sqlite:///{path}", registry=tidings.EventRegistry([Counted]), **options
    )


def pragma(store: tidings.Store, name: str) -> object:
    """Read one PRAGMA on this thread's connection."""
    return store.database.connection().execute(f"PRAGMA {name}").fetchone()[0]  # type: ignore[attr-defined]


def test_wal_and_full_sync_are_the_default_and_normal_is_an_opt_in(tmp_path: Path) -> None:
    """A new store runs in WAL with synchronous=FULL (2); NORMAL (1) only when asked."""
    with open_store(tmp_path / "a.db") as store:
        assert (pragma(store, "journal_mode"), pragma(store, "synchronous")) == ("wal", 2)
    with open_store(tmp_path / "b.db", synchronous="normal") as store:
        assert pragma(store, "synchronous") == 1
    with pytest.raises(tidings.ConfigurationError, match="OFF"):
        open_store(tmp_path / "c.db", synchronous="OFF")


def test_threads_writing_at_once_leave_a_log_without_holes(tmp_path: Path) -> None:
    """Six threads, fifty commits each: positions are exactly 1..300, every event present."""
    store = open_store(tmp_path / "threads.db")

    def write(n: int) -> None:
        for i in range(50):
            counter = Counter(f"t{n}", version=i)
            counter.increment(i)
            with store.unit_of_work() as uow:
                uow.track(counter)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log = store.events.read_all(0, 1000)
    assert [r.position for r in log] == list(range(1, 301))
    assert {store.events.stream_version(f"t{n}") for n in range(6)} == {50}
    store.close()


def test_a_writer_blocked_past_the_busy_timeout_gets_a_clear_error(tmp_path: Path) -> None:
    """Another connection holds the write lock: StorageError says to raise busy_timeout."""
    path = tmp_path / "busy.db"
    database = SqliteDatabase(path, busy_timeout_ms=200)
    database.create_schema()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(tidings.StorageError, match="busy_timeout"), database.transaction():
            pass
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    with database.transaction() as tx:  # the lock is free again: writing works
        SqliteEventStore(database).append(tx, [], 0)
    database.close()


def test_a_thread_of_the_same_process_holding_a_write_past_the_timeout_is_reported(
    tmp_path: Path,
) -> None:
    """Writers of one process queue on a lock before SQLite's: held past the busy timeout,
    the waiting writer gets the same clear StorageError."""
    database = SqliteDatabase(tmp_path / "queue.db", busy_timeout_ms=200)
    database.create_schema()
    inside, done = threading.Event(), threading.Event()

    def hold() -> None:
        with database.transaction():
            inside.set()
            done.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert inside.wait(10)
        with pytest.raises(tidings.StorageError, match="busy_timeout"), database.transaction():
            pass
    finally:
        done.set()
        holder.join(10)
    with database.transaction() as tx:  # the turn is free again
        SqliteEventStore(database).append(tx, [], 0)
    database.close()


def test_a_second_unit_of_work_on_the_same_thread_is_refused(tmp_path: Path) -> None:
    """Nesting would deadlock on SQLite's single writer: it is a UnitOfWorkError instead."""
    with (
        open_store(tmp_path / "nested.db") as store,
        store.unit_of_work(),
        pytest.raises(tidings.UnitOfWorkError, match="already open"),
        store.unit_of_work(),
    ):
        pass


@pytest.mark.parametrize("count", [1, 150])
def test_every_event_gets_recorded_at_in_the_columns_own_format(tmp_path: Path, count: int) -> None:
    """recorded_at (when the row was written, by the store's clock) is UTC with
    milliseconds and a Z, as the column's default writes it, whether the store fills it in
    (a batch) or leaves it to the default (one event)."""
    store = open_store(tmp_path / "recorded.db")
    counter = Counter("c-1")
    for step in range(count):
        counter.increment(step)
    before = datetime.now(UTC) - timedelta(seconds=1)
    with store.unit_of_work() as uow:
        uow.track(counter)
    after = datetime.now(UTC) + timedelta(seconds=1)
    rows = store.database.query(f"SELECT recorded_at FROM {store.database.tables['events']}")  # type: ignore[attr-defined]
    assert len(rows) == count
    for (text,) in rows:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", text)
        assert before <= datetime.fromisoformat(text) <= after
    store.close()


def test_a_large_unit_of_work_is_written_in_chunks_with_consecutive_positions(
    tmp_path: Path,
) -> None:
    """250 events in one append (three multi-row INSERTs): positions and versions run on
    without a gap, and a stale writer of the same stream is refused before any chunk."""
    store = tidings.connect(
        f"sqlite:///{tmp_path / 'big.db'}", registry=tidings.EventRegistry([Counted])
    )
    counter = Counter("c-1")
    for step in range(250):
        counter.increment(step)
    with store.database.transaction() as tx:
        records = [store.codec.encode(e, tx=tx) for e in counter.pending_events]
        written = store.events.append(tx, records, 0)
    assert [r.position for r in written] == list(range(1, 251))
    assert [r.version for r in store.events.read_stream("c-1")] == list(range(1, 251))
    with pytest.raises(tidings.ConcurrencyError), store.database.transaction() as tx:
        store.events.append(tx, records, 0)
    assert store.events.count() == 250
    store.close()
