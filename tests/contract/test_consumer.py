"""The consumer worker over the in-memory broker, on every backend."""

from __future__ import annotations

import time

import tidings
from tidings.adapters.memory_broker import MemoryPublisher, MemoryQueue, MemorySubscription
from tidings.application.backoff import Backoff
from tidings.application.handling import Handlers
from tidings.application.unit_of_work import UnitOfWork
from tidings.serialization.cloudevents import to_message
from tidings.testing.contract import Counted, Counter, new_id

from ..conftest import MakeStore


def publish_events(store: tidings.Store, queue: MemoryQueue, counter: Counter) -> None:
    """Commit the counter's events and put their CloudEvents on the queue."""
    with store.unit_of_work() as uow:
        uow.track(counter)
    records = [store.codec.encode(e) for e in uow.published]
    MemoryPublisher(queue).publish([to_message(r, "test") for r in records])


def test_a_retried_event_keeps_the_later_events_of_its_aggregate_behind_it_across_batches(
    make_store: MakeStore,
) -> None:
    """One message per batch: v1 fails once, v2 arrives meanwhile and must wait; the
    handler sees v1 then v2, and each once."""
    store = make_store(tidings.EventRegistry([Counted]))
    queue = MemoryQueue()
    applied: list[int] = []
    failures = [1]

    def handle(event: Counted, uow: UnitOfWork) -> None:
        if event.aggregate_version == 1 and failures[0]:
            failures[0] -= 1
            raise TimeoutError("payment service slow")
        applied.append(event.aggregate_version)

    handlers = Handlers()
    handlers.add(Counted, "ordered", handle)
    counter = Counter(new_id())
    counter.increment(1)
    counter.increment(2)
    publish_events(store, queue, counter)
    consumer = store.consumer(
        MemorySubscription(queue),
        handlers,
        batch_size=1,
        fetch_timeout=0.05,
        backoff=Backoff(base=0.2, jitter=0.0),
    )
    deadline = time.monotonic() + 20
    while len(applied) < 2 and time.monotonic() < deadline:
        consumer.run_once()
    assert applied == [1, 2]
    assert consumer.stats.retried >= 2  # v1 once, v2 at least once while it waited
    assert queue.depth() == 0
