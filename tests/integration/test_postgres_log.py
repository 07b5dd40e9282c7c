"""PostgreSQL: readers of the log pass a hole a rolled-back writer left, whether they
are new or long-lived, and say what holds them at a hole that may still fill."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator, Sequence

import psycopg
import pytest

import tidings
from tidings.adapters.postgres import PostgresEventStore
from tidings.application.event_log import iter_log
from tidings.ports import Transaction
from tidings.records import EventRecord
from tidings.testing.contract import Counted, Counter

pytestmark = pytest.mark.postgres


@pytest.fixture
def store(pg_url: str) -> Iterator[tidings.Store]:
    """A store in a PostgreSQL schema of its own, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    opened = tidings.connect(pg_url, schema=schema, registry=tidings.EventRegistry([Counted]))
    yield opened
    opened.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


class RollBack:
    """An extra writer that fails the unit of work after its events took their positions."""

    def write(self, tx: Transaction, records: Sequence[EventRecord]) -> None:
        """Fail, so the transaction rolls back and leaves a hole in the positions."""
        raise RuntimeError("rolled back on purpose")


def save(store: tidings.Store, stream: str) -> None:
    """Commit one Counted event to a new stream."""
    counter = Counter(stream)
    counter.increment()
    with store.unit_of_work() as uow:
        uow.track(counter)


def fresh_reader(store: tidings.Store, **options: float) -> PostgresEventStore:
    """A log reader that has never seen this log: a new process reading from a checkpoint."""
    return PostgresEventStore(store.database, **options)  # type: ignore[arg-type]


def until_found(read: Callable[[], list[EventRecord]], what: str) -> list[EventRecord]:
    """``read()`` until it gives records, for up to 30 s, else fail naming ``what``.

    Passing a hole waits for every transaction on the server older than the hole's bound,
    and other people's tests share this server: one of theirs may be running, so a read
    that is held is asked again rather than failing the test at once.
    """
    deadline = time.monotonic() + 30
    while not (found := read()):
        if time.monotonic() > deadline:
            pytest.fail(f"gave nothing for 30 s: {what}")
        time.sleep(0.05)
    return found


def leave_a_rolled_back_hole(store: tidings.Store) -> None:
    """Positions 1, 2 (its writer rolled back after taking it), 3."""
    save(store, "first")
    store.writers.append(RollBack())
    with pytest.raises(RuntimeError):
        save(store, "rolled-back")
    store.writers.clear()
    save(store, "third")


def test_a_fresh_store_for_every_read_passes_a_hole_left_by_a_rolled_back_writer(
    store: tidings.Store,
) -> None:
    """Positions 1, (2 rolled back), 3: a reader that starts from a checkpoint in a new
    store each time (a restarted worker, a projection runner) reads 3 after 1. Whether
    the hole can still fill is decided from the transactions running on the server, not
    from what one store object saw on an earlier call."""
    leave_a_rolled_back_hole(store)
    found = until_found(lambda: fresh_reader(store).read_all(1), "a fresh reader after 1")
    assert [(r.stream_id, r.position) for r in found] == [("third", 3)]


def test_iterating_the_log_passes_a_gap_left_by_a_rolled_back_writer(
    store: tidings.Store,
) -> None:
    """Positions 1, (2 rolled back), 3: one long-lived reader that never saw the gap,
    iterating from 1, reaches 3 with nothing lost. (That iter_log asks again after an
    empty page is tested in tests/unit/test_event_log.py.)"""
    leave_a_rolled_back_hole(store)
    reader = fresh_reader(store)
    found = until_found(lambda: list(iter_log(reader, 1)), "iter_log after 1")
    assert [(r.stream_id, r.position) for r in found] == [("third", 3)]


def test_a_fresh_reader_stops_at_a_hole_whose_writer_is_open_and_says_what_holds_it(
    store: tidings.Store, caplog: pytest.LogCaptureFixture
) -> None:
    """Position 2 is taken by a transaction still open, 3 is committed: a fresh reader
    after 1 gets nothing, however often it asks; ``reader_hold`` names position 2 and an
    open transaction no newer than the holder, and one warning on ``tidings.event_store``
    says how long and behind what (not one per read). Once the holder commits, a fresh
    reader gets 2 and 3."""
    save(store, "first")
    held = Counter("held")
    held.increment()
    records = [store.codec.encode(e) for e in held.pending_events]
    reader = fresh_reader(store, warn_after=0.0, warn_every=3600.0)
    with store.database.transaction() as tx:
        store.events.append(tx, records, 0)  # takes position 2 and keeps it open
        holder_xid = int(tx.execute("SELECT pg_current_xact_id()::text").fetchone()[0])
        save(store, "third")
        with caplog.at_level(logging.WARNING, logger="tidings.adapters.postgres.reader_hold"):
            assert reader.read_all(1) == []
            assert fresh_reader(store).read_all(1) == []
            assert reader.read_all(1) == []
        hold = reader.reader_hold
        assert hold is not None
        assert hold.position == 2
        assert hold.oldest_xid is not None
        assert hold.oldest_xid <= holder_xid
        assert reader.reader_held_seconds == hold.held_seconds >= 0.0
        warnings = [
            r.getMessage()
            for r in caplog.records
            if r.name == "tidings.adapters.postgres.reader_hold"
        ]
        assert len(warnings) == 1, warnings
        assert "held for" in warnings[0]
        assert "before position 2" in warnings[0]
        # The warning was logged at the first held read; other sessions on the server may
        # have begun or ended since, so it names the oldest transaction of that moment.
        named = re.search(r"transaction (\d+)", warnings[0])
        assert named is not None, warnings[0]
        assert int(named.group(1)) <= holder_xid
    found = until_found(lambda: fresh_reader(store).read_all(1), "a fresh reader after 1")
    assert [(r.stream_id, r.position) for r in found] == [("held", 2), ("third", 3)]
    assert fresh_reader(store).reader_hold is None


def test_a_reader_that_passed_the_hole_is_no_longer_held(store: tidings.Store) -> None:
    """``reader_hold`` describes the last read: after a read that was not held it is None
    and ``reader_held_seconds`` is 0.0."""
    leave_a_rolled_back_hole(store)
    reader = fresh_reader(store)
    until_found(lambda: reader.read_all(1), "the reader after 1")
    assert reader.reader_hold is None
    assert reader.reader_held_seconds == 0.0


def test_a_negative_wait_is_refused_with_its_name(store: tidings.Store) -> None:
    """``hole_wait``, ``warn_after`` and ``warn_every`` are seconds, 0 or more."""
    for option in ("hole_wait", "warn_after", "warn_every"):
        with pytest.raises(ValueError, match=f"{option} is in seconds and must be 0 or more"):
            fresh_reader(store, **{option: -1.0})
