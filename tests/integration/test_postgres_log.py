"""PostgreSQL: iterating the log passes a gap a rolled-back writer left, in one pass."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence

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


def test_iterating_the_log_passes_a_gap_left_by_a_rolled_back_writer(
    store: tidings.Store,
) -> None:
    """Positions 1, (2 rolled back), 3: a reader that never saw the gap, starting after 1,
    first gets nothing (the gap might still fill); iter_log then reaches 3, nothing lost.
    (That iter_log asks again after an empty page is tested in tests/unit/test_event_log.py.)

    Whether the gap is final is decided against every transaction running on the server,
    so one that is older (another test run, say) makes the reader wait, never skip: the
    test retries for a while rather than assuming a quiet server.
    """
    save(store, "first")
    store.writers.append(RollBack())
    with pytest.raises(RuntimeError):
        save(store, "rolled-back")
    store.writers.clear()
    save(store, "third")
    reader = PostgresEventStore(store.database)  # type: ignore[arg-type]
    assert reader.read_all(1) == []  # first sight of the gap: not yet known to be final
    deadline = time.monotonic() + 30
    while not (found := list(iter_log(reader, 1))) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [(r.stream_id, r.position) for r in found] == [("third", 3)]
