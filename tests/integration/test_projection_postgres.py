"""Projections on PostgreSQL, where positions can commit out of order: held transactions
arrange late commits of earlier positions, and the projection never skips one; two
runners of one projection never apply a batch twice."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

import tidings
from tidings.application.projections import Projection
from tidings.ports import Transaction
from tidings.records import EventRecord
from tidings.testing.contract import Counted, Counter

pytestmark = pytest.mark.postgres
WRITERS = 8


def ordered(
    tag: str, gate: threading.Event | None = None, entered: threading.Event | None = None
) -> Projection:
    """Keeps each applied event id in the order applied (``n``); with a ``gate``, its
    first handler call sets ``entered`` and waits for the gate."""
    table = f"applied_{tag}"

    def counted(uow: Any, e: Counted) -> None:
        if gate is not None and entered is not None and not gate.is_set():
            entered.set()
            gate.wait(30)
        uow.execute(f"INSERT INTO {table} (event_id) VALUES (:e)", {"e": e.event_id})

    return Projection(
        f"ordered-{tag}",
        {Counted: counted},
        schema=[
            f"CREATE TABLE IF NOT EXISTS {table} (n BIGINT GENERATED ALWAYS AS IDENTITY,"
            " event_id TEXT)"
        ],
    )


def applied(store: tidings.Store, tag: str) -> list[str]:
    with store.unit_of_work() as uow:
        return [r[0] for r in uow.execute(f"SELECT event_id FROM applied_{tag} ORDER BY n")]


@pytest.fixture
def store(pg_url: str, schema: str) -> Iterator[tidings.Store]:
    with tidings.connect(
        pg_url, schema=schema, registry=tidings.EventRegistry([Counted]), outbox=True
    ) as opened:
        yield opened


class Held:
    """An extra writer that keeps each unit of work open after its events took their
    positions: it waits at ``taken`` with the others, then for its own release."""

    def __init__(self, writers: int) -> None:
        self.taken = threading.Barrier(writers + 1)
        self.positions: dict[int, list[int]] = {}  # thread id -> its positions
        self.release: dict[int, threading.Event] = {}
        self.lock = threading.Lock()

    def write(self, tx: Transaction, records: Sequence[EventRecord]) -> None:
        me = threading.get_ident()
        with self.lock:
            self.positions[me] = [r.position for r in records]
            self.release[me] = threading.Event()
        self.taken.wait(30)
        assert self.release[me].wait(60)


def test_eight_writers_committing_in_reverse_never_make_the_live_projection_skip(
    store: tidings.Store,
) -> None:
    """Eight units of work take their positions, then commit last position first while a
    runner follows the log live: it applies nothing while the first position is still
    open, then every event once, in position order."""
    tag = uuid.uuid4().hex[:8]
    held = Held(WRITERS)
    store.writers.insert(0, held)
    reads = [0]
    read_all = store.events.read_all

    def counting(after: int = 0, limit: int = 1000) -> list[EventRecord]:
        found = read_all(after, limit)
        reads[0] += 1
        return found

    store.events.read_all = counting  # type: ignore[method-assign]
    runner = store.projections([ordered(tag)], poll=0.05)
    runner.run_once()  # tables and checkpoint made before the writers start

    def write(n: int) -> None:
        counter = Counter(f"w{n}-{tag}")
        for step in range(1 + n % 3):
            counter.increment(step)
        with store.unit_of_work() as uow:
            uow.track(counter)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    held.taken.wait(30)  # every writer holds its positions, none has committed
    stop = threading.Event()
    live = threading.Thread(target=runner.run, args=(stop,))
    live.start()
    try:
        by_first = sorted(held.positions, key=lambda t: held.positions[t][0], reverse=True)
        done = {t.ident: t for t in threads}
        for ident in by_first:
            held.release[ident].set()
            done[ident].join(30)
            looked = reads[0]
            deadline = time.monotonic() + 30
            while reads[0] < looked + 2 and time.monotonic() < deadline:
                time.sleep(0.005)  # the runner has looked at the log since this commit
            assert reads[0] >= looked + 2
            if ident != by_first[-1]:
                assert applied(store, tag) == [], "the runner passed a position still open"
        expected = [r.event_id for r in sorted(
            (r for rs in (store.events.read_stream(f"w{n}-{tag}") for n in range(WRITERS))
             for r in rs),
            key=lambda r: r.position,
        )]  # fmt: skip
        deadline = time.monotonic() + 30
        while len(applied(store, tag)) < len(expected) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert applied(store, tag) == expected
    finally:
        for release in held.release.values():  # on a failure, let the writers end
            release.set()
        stop.set()
        live.join(30)
        runner.close()


def test_two_runners_of_one_projection_never_apply_a_batch_twice(
    store: tidings.Store,
) -> None:
    """Runner A reads a batch and is held in its handler while runner B applies the same
    batch and commits; A's checkpoint move then finds the checkpoint moved, and A's whole
    batch rolls back."""
    tag = uuid.uuid4().hex[:8]
    counter = Counter(f"race-{tag}")
    for step in range(5):
        counter.increment(step)
    with store.unit_of_work() as uow:
        uow.track(counter)
    gate, entered = threading.Event(), threading.Event()
    first = store.projections([ordered(tag, gate, entered)])
    second = store.projections([ordered(tag)])
    second.start()
    result: list[int] = []
    a = threading.Thread(target=lambda: result.append(first.run_once()))
    a.start()
    assert entered.wait(30)  # A has read the batch and holds its transaction open
    assert second.run_once() == 5
    gate.set()
    a.join(30)
    assert result == [0]  # its batch lost the race and was rolled back
    assert len(applied(store, tag)) == 5
    assert first.run_once() == 0
