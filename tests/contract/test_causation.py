"""Correlation and causation ids (and the trace context) on every event, on every backend:
a conversation keeps one correlation id, and each event names the message that caused it."""

from __future__ import annotations

import json
from typing import Any

import tidings
from tidings.adapters.memory_broker import MemoryPublisher, MemoryQueue, MemorySubscription
from tidings.application.handling import Handlers
from tidings.application.unit_of_work import UnitOfWork
from tidings.serialization.cloudevents import from_message, to_message
from tidings.testing.contract import Counted, Counter, Named, new_id

from ..conftest import MakeStore

TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def metadata_of(store: tidings.Store, stream: str) -> list[dict[str, Any]]:
    """The stored metadata of a stream's events, in order."""
    return [json.loads(r.metadata) for r in store.events.read_stream(stream)]


def test_a_unit_of_work_with_no_message_behind_it_starts_a_conversation(
    make_store: MakeStore,
) -> None:
    """Its events share one new correlation id, which is also their causation id (the
    command's); the next unit of work starts another."""
    store = make_store(tidings.EventRegistry([Counted]))
    counter = Counter(new_id())
    counter.increment(1)
    counter.increment(2)
    with store.unit_of_work() as uow:
        uow.track(counter)
    counter.increment(3)
    with store.unit_of_work() as uow:
        uow.track(counter)
    first, second, third = metadata_of(store, counter.id)
    assert first["correlation_id"] == first["causation_id"] == second["correlation_id"]
    assert third["correlation_id"] != first["correlation_id"]


def test_given_ids_are_kept_beside_your_own_metadata(make_store: MakeStore) -> None:
    """``correlation_id=`` (a request id, say) is the conversation's; metadata stays."""
    store = make_store(tidings.EventRegistry([Counted]))
    counter = Counter(new_id())
    counter.increment(1)
    with store.unit_of_work({"traceparent": TRACE, "user": "ann"}, correlation_id="req-7") as uow:
        uow.track(counter)
    [stored] = metadata_of(store, counter.id)
    assert stored == {
        "correlation_id": "req-7",
        "causation_id": "req-7",
        "traceparent": TRACE,
        "user": "ann",
    }


def test_a_consumers_handler_continues_the_conversation_of_the_event_it_handles(
    make_store: MakeStore,
) -> None:
    """Through a broker (the CloudEvents round trip) and the inbox: the event a handler
    records has the handled event's correlation id, the handled event's id as causation,
    and its trace context."""
    store = make_store(tidings.EventRegistry([Counted, Named]))
    counter = Counter(new_id())
    counter.increment(1)
    with store.unit_of_work({"traceparent": TRACE}, correlation_id="order-42") as uow:
        uow.track(counter)
    [record] = store.events.read_stream(counter.id)
    message = to_message(record, "orders")
    wire = json.loads(message.body)
    assert (wire["correlationid"], wire["causationid"]) == ("order-42", "order-42")
    assert json.loads(from_message(message.body).metadata)["correlation_id"] == "order-42"
    queue = MemoryQueue()
    MemoryPublisher(queue).publish([message])
    follower = Counter(new_id("follower"))

    def rename(event: Counted, uow: UnitOfWork) -> None:
        follower.rename(f"after {event.event_id}")
        uow.track(follower)

    handlers = Handlers()
    handlers.add(Counted, "follow", rename)
    consumer = store.consumer(MemorySubscription(queue), handlers, fetch_timeout=0.05)
    assert consumer.run_once() == 1
    [caused] = metadata_of(store, follower.id)
    assert caused["correlation_id"] == "order-42"
    assert caused["causation_id"] == record.event_id
    assert caused["traceparent"] == TRACE


def test_a_bus_handlers_own_unit_of_work_continues_the_conversation(
    make_store: MakeStore,
) -> None:
    """A plain bus subscriber that opens ``store.unit_of_work()`` itself after the commit
    records events caused by the event it was handed."""
    store = make_store(tidings.EventRegistry([Counted, Named]))
    follower = Counter(new_id("follower"))

    def rename(event: Counted) -> None:
        follower.rename("followed")
        with store.unit_of_work() as uow:
            uow.track(follower)

    store.bus.subscribe(Counted, rename)
    counter = Counter(new_id())
    counter.increment(1)
    with store.unit_of_work(correlation_id="checkout-1") as uow:
        uow.track(counter)
    [first] = uow.published
    [caused] = metadata_of(store, follower.id)
    assert caused["correlation_id"] == "checkout-1"
    assert caused["causation_id"] == first.event_id
