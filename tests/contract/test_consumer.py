"""The consumer worker over the in-memory broker, on every backend."""

from __future__ import annotations

import time
from typing import Any

import pytest

import tidings
from tidings.adapters.memory_broker import MemoryPublisher, MemoryQueue, MemorySubscription
from tidings.application.backoff import Backoff
from tidings.application.handling import Handlers
from tidings.application.unit_of_work import UnitOfWork
from tidings.errors import ServerUnavailableError
from tidings.ports import InFlightMessage
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


class Crash(BaseException):
    """Stands for a SIGKILL: nothing of the batch commits and nothing is settled."""


def test_a_consumer_after_a_crash_holds_later_events_until_the_earlier_ones_come_back(
    make_store: MakeStore,
) -> None:
    """Consumer A fetches v1 and v2 of an aggregate and dies mid-batch; the broker will
    give them back only later. Consumer B, started meanwhile under the same name, fetches
    v3 and v4 first: it holds them (and handles another aggregate's events), and once A's
    messages come back the handler has seen v1, v2, v3, v4 in that order, each once."""
    store = make_store(tidings.EventRegistry([Counted]))
    queue = MemoryQueue()
    seen: list[tuple[str, int]] = []
    crashing = [True]

    def handle(event: Counted, uow: UnitOfWork) -> None:
        if crashing[0]:
            raise Crash
        seen.append((event.aggregate_id, event.aggregate_version))

    handlers = Handlers()
    handlers.add(Counted, "ordered", handle)
    first, other = Counter(new_id()), Counter(new_id())
    for step in range(4):
        first.increment(step)
    other.increment(1)
    publish_events(store, queue, first)
    publish_events(store, queue, other)
    dying = MemorySubscription(queue)
    a = store.consumer(dying, handlers, name="inventory", batch_size=2, fetch_timeout=0.05)
    with pytest.raises(Crash):
        a.run_once()  # noted v1 and v2 as fetched, then died before its commit
    crashing[0] = False
    b = store.consumer(
        MemorySubscription(queue), handlers, name="inventory", batch_size=10, fetch_timeout=0.05
    )
    b.run_once()  # v3, v4 of the first aggregate and the other's v1
    assert seen == [(other.id, 1)]
    assert b.stats.held == 2
    dying.close()  # the broker gives A's messages back (NATS: after ack_wait)
    deadline = time.monotonic() + 20
    while len(seen) < 5 and time.monotonic() < deadline:
        b.run_once()
    assert [v for s, v in seen if s == first.id] == [1, 2, 3, 4]
    assert queue.depth() == 0


def test_consumers_of_different_names_do_not_hold_each_other_back(make_store: MakeStore) -> None:
    """Messages in flight for one consumer never hold back another consumer's, which may
    receive other event types of the same aggregates (and so versions with gaps)."""
    store = make_store(tidings.EventRegistry([Counted]))
    queue = MemoryQueue()
    seen: list[int] = []
    handlers = Handlers()
    handlers.add(Counted, "ordered", lambda event, uow: seen.append(event.aggregate_version))
    counter = Counter(new_id())
    counter.increment(1)
    counter.increment(2)
    publish_events(store, queue, counter)
    assert store.in_flight is not None
    store.in_flight.note(
        "billing", [InFlightMessage("elsewhere", counter.id, 1)], time.time(), 600.0
    )
    consumer = store.consumer(MemorySubscription(queue), handlers, name="inventory")
    consumer.run_once()
    assert seen == [1, 2]
    assert consumer.stats.held == 0


class FailingOnce:
    """An in-flight record whose first note meets a database that went away."""

    def __init__(self, real: Any) -> None:
        self.real, self.failed = real, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def note(self, *args: Any) -> Any:
        if not self.failed:
            self.failed = True
            raise ServerUnavailableError("the database went away (a test's outage)")
        return self.real.note(*args)


def test_a_batch_met_by_an_outage_is_given_back_and_comes_before_later_events(
    make_store: MakeStore,
) -> None:
    """The database fails before anything of the batch is recorded: the consumer gives the
    batch back to the broker at once (it would otherwise come back only after ack_wait,
    behind the aggregate's later events), and the handler sees v1, v2, v3 in order."""
    store = make_store(tidings.EventRegistry([Counted]))
    queue = MemoryQueue()
    seen: list[int] = []
    handlers = Handlers()
    handlers.add(Counted, "ordered", lambda event, uow: seen.append(event.aggregate_version))
    counter = Counter(new_id())
    for step in range(3):
        counter.increment(step)
    publish_events(store, queue, counter)
    consumer = store.consumer(MemorySubscription(queue), handlers, batch_size=1, fetch_timeout=0.05)
    consumer.in_flight = FailingOnce(consumer.in_flight)
    with pytest.raises(ServerUnavailableError):
        consumer.run_once()
    while consumer.run_once():
        pass
    assert seen == [1, 2, 3]
