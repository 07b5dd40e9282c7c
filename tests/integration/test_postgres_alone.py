"""PostgreSQL: a unit of work that only appends to one stream runs as one statement.

Its INSERT is then a transaction of its own (autocommit, one round trip instead of BEGIN,
INSERT, COMMIT). These tests check when that happens, and that such an append still writes
all of its events or none, checks the expected version, and keeps the global log readable
in order without skipping an event.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import replace

import psycopg
import pytest

import tidings
from tidings.adapters.postgres.database import PostgresTransaction
from tidings.ports import Transaction
from tidings.records import EventRecord
from tidings.testing.contract import Counted, Counter

pytestmark = pytest.mark.postgres


@pytest.fixture
def store(pg_url: str, schema: str) -> Iterator[tidings.Store]:
    """A store on the test's schema."""
    opened = tidings.connect(pg_url, schema=schema, registry=tidings.EventRegistry([Counted]))
    yield opened
    opened.close()


def counter(steps: int) -> Counter:
    """A new counter with ``steps`` pending events."""
    made = Counter(f"c-{uuid.uuid4().hex[:10]}")
    for step in range(steps):
        made.increment(step)
    return made


def versions(pg_url: str, schema: str, stream: str) -> list[int]:
    """The committed versions of a stream, read on a connection of the test's own."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT version FROM {schema}.tidings_events WHERE stream_id = %s ORDER BY version",
            (stream,),
        ).fetchall()
    return [row[0] for row in rows]


def test_a_last_statement_commits_by_itself_only_when_nothing_ran_before_it(
    store: tidings.Store, pg_url: str, schema: str
) -> None:
    """With nothing run yet, ``last_statement`` is True and the append is committed the
    moment it ran, before the block ends; after another statement it is False and the
    append waits for the commit with the rest."""
    alone, joined = counter(1), counter(1)
    with store.database.transaction() as tx:
        assert tx.last_statement() is True
        store.events.append(tx, store.codec.encode_all(alone.pending_events, b"{}", tx), 0)
        assert versions(pg_url, schema, alone.id) == [1]
    with store.database.transaction() as tx:
        tx.execute("SELECT 1")
        assert tx.last_statement() is False
        store.events.append(tx, store.codec.encode_all(joined.pending_events, b"{}", tx), 0)
        assert versions(pg_url, schema, joined.id) == []
    assert versions(pg_url, schema, joined.id) == [1]


def test_units_of_work_go_alone_only_when_the_append_is_all_they_do(
    store: tidings.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One aggregate and nothing else: alone. A statement of the caller's first, or an
    extra writer (the outbox): in the transaction, as before."""
    answers: list[bool] = []
    asked = PostgresTransaction.last_statement

    def spy(self: PostgresTransaction) -> bool:
        answers.append(asked(self))
        return answers[-1]

    monkeypatch.setattr(PostgresTransaction, "last_statement", spy)
    with store.unit_of_work() as uow:
        uow.track(counter(3))
    assert answers == [True]
    with store.unit_of_work() as uow:
        uow.execute("SELECT 1")
        uow.track(counter(1))
    assert answers == [True, False]

    class Noting:
        def write(self, tx: Transaction, records: Sequence[EventRecord]) -> None:
            tx.execute("SELECT 1")

    store.writers.append(Noting())
    with store.unit_of_work() as uow:
        uow.track(counter(1))
    assert answers == [True, False]  # not even asked: the writer runs after the append


class HeldOpen:
    """An extra writer that keeps the transaction open, its rows written, until released."""

    def __init__(self) -> None:
        self.inside = threading.Event()
        self.release = threading.Event()

    def write(self, tx: Transaction, records: Sequence[EventRecord]) -> None:
        self.inside.set()
        assert self.release.wait(30), "the test never released the transaction"


def wait_for_session(pg_url: str, condition: str, what: str) -> None:
    """Return once some session of the database matches ``condition`` (on
    ``pg_stat_activity``); fail naming ``what`` after 30 s."""
    end = time.monotonic() + 30
    with psycopg.connect(pg_url, autocommit=True) as conn:
        while time.monotonic() < end:
            found = conn.execute(
                "SELECT count(*) FROM pg_stat_activity "
                f"WHERE datname = current_database() AND {condition}"
            ).fetchone()
            if found and found[0]:
                return
            time.sleep(0.01)
    raise AssertionError(f"no session ever {what}")


def test_an_append_alone_that_loses_a_race_writes_none_of_its_events(
    pg_url: str, schema: str, store: tidings.Store
) -> None:
    """Writer A has written versions 1-2 and not committed; writer B, alone, appends three
    events to the same new stream, passes the version check (A is not visible yet) and
    waits on A's rows. When A commits, B fails with ConcurrencyError and none of its rows
    stays: an INSERT that skipped the taken versions (ON CONFLICT DO NOTHING) would have
    committed its third event by itself."""
    held = HeldOpen()
    other = tidings.connect(pg_url, schema=schema, registry=tidings.EventRegistry([Counted]))
    other.writers.append(held)
    stream = f"race-{uuid.uuid4().hex[:8]}"
    first, second = Counter(stream), Counter(stream)
    first.increment(1), first.increment(2)
    for step in range(3):
        second.increment(10 + step)
    errors: list[BaseException] = []

    def write_first() -> None:
        with other.unit_of_work() as uow:
            uow.track(first)

    def write_second() -> None:
        try:
            with store.unit_of_work() as uow:
                uow.track(second)
        except BaseException as exc:
            errors.append(exc)

    a = threading.Thread(target=write_first)
    a.start()
    assert held.inside.wait(30)
    b = threading.Thread(target=write_second)
    b.start()
    wait_for_session(pg_url, "wait_event_type = 'Lock'", "waited for the held rows")
    held.release.set()
    a.join(), b.join()
    other.close()
    assert len(errors) == 1, errors
    assert isinstance(errors[0], tidings.ConcurrencyError), errors
    assert (errors[0].expected_version, errors[0].actual_version) == (0, 2)
    assert versions(pg_url, schema, stream) == [1, 2]
    assert second.pending_events  # kept for a retry, as after any failed unit of work


def test_a_duplicate_event_id_alone_is_a_storage_error_not_a_conflict(
    store: tidings.Store, pg_url: str, schema: str
) -> None:
    """An append alone whose event id is taken fails as the database's refusal, and keeps
    nothing: it is not mistaken for a version race."""
    with store.unit_of_work() as uow:
        uow.track(counter(1))
    copy = counter(2)
    with store.database.transaction() as tx:
        records = store.codec.encode_all(copy.pending_events, b"{}", tx)
    taken = [records[0], replace(records[1], event_id=uow.published[0].event_id)]
    with pytest.raises(tidings.StorageError) as caught, store.database.transaction() as tx:
        store.events.append(tx, taken, 0, last=True)
    assert not isinstance(caught.value, tidings.ConcurrencyError)
    assert versions(pg_url, schema, copy.id) == []


def test_a_reader_waits_for_a_slow_append_alone_instead_of_passing_its_hole(
    store: tidings.Store, pg_url: str, schema: str
) -> None:
    """An append alone draws its position, then (a trigger) waits for an advisory lock the
    test holds before storing its row; meanwhile a later append commits. A reader meets
    the hole, looks again while the slow statement still runs, and must wait: the
    statement holds its transaction id from before its position (the guard's subquery
    asks for it first), so the second look finds it running. Passing the hole then would
    lose the event for good."""
    key = uuid.uuid4().int % 2**62  # an advisory lock no other test takes
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            f"CREATE FUNCTION {schema}.dawdle() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF NEW.stream_id LIKE 'slow-%' THEN PERFORM pg_advisory_xact_lock({key}); "
            "END IF; RETURN NEW; END $$"
        )
        conn.execute(
            f"CREATE TRIGGER dawdle BEFORE INSERT ON {schema}.tidings_events "
            f"FOR EACH ROW EXECUTE FUNCTION {schema}.dawdle()"
        )
    with store.unit_of_work() as uow:
        uow.track(counter(1))  # the position before the hole
    slow, quick = Counter(f"slow-{uuid.uuid4().hex[:8]}"), counter(1)
    slow.increment(1)

    def write_slow() -> None:
        with store.unit_of_work() as uow:
            uow.track(slow)

    writer = threading.Thread(target=write_slow)
    with psycopg.connect(pg_url, autocommit=True) as gate:  # closing it frees the lock
        gate.execute("SELECT pg_advisory_lock(%s)", (key,))
        writer.start()
        wait_for_session(pg_url, "wait_event = 'advisory'", "reached the held trigger")
        with store.unit_of_work() as uow:
            uow.track(quick)
        assert store.events.read_all(1, 10) == []  # first sight of the hole
        assert store.events.read_all(1, 10) == []  # the slow statement still runs: wait
    writer.join()
    assert [r.stream_id for r in store.events.read_all(1, 10)] == [slow.id, quick.id]
