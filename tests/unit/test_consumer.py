"""The consumer's loop over the in-memory broker: what it does with input it cannot read."""

from __future__ import annotations

import logging

import pytest

import tidings
from tidings.adapters.memory_broker import MemoryPublisher, MemoryQueue, MemorySubscription
from tidings.application.handling import Handlers
from tidings.records import EventRecord
from tidings.serialization.cloudevents import from_message
from tidings.testing.contract import Counted, Counter
from tidings.workers.consumer import Consumer


def test_a_reader_that_fails_on_a_message_buries_it_and_the_consumer_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A reader raising something other than BadMessageError (a bug met on odd input) costs
    that message a dead letter naming the error; the messages around it are handled."""
    store = tidings.connect("memory://", registry=tidings.EventRegistry([Counted]))
    counter = Counter("c-1")
    for _ in range(3):
        counter.increment()
    messages = [store.encode(store.codec.encode(e)) for e in counter.pending_events]
    queue = MemoryQueue()
    MemoryPublisher(queue).publish(messages)
    seen: list[str] = []
    handlers = Handlers()
    handlers.add(Counted, "count", lambda event, uow: seen.append(event.event_id))

    def read(body: bytes) -> EventRecord:
        if body == messages[1].body:
            raise OverflowError("date value out of range")
        return from_message(body)

    consumer = Consumer(store.processor(handlers), MemorySubscription(queue), read)
    with caplog.at_level(logging.ERROR, "tidings.workers.consumer"):
        assert consumer.run_once() == 3
    assert seen == [messages[0].message_id, messages[2].message_id]
    assert store.inbox is not None
    [letter] = store.inbox.dead_letters()
    assert letter.body == messages[1].body
    assert letter.reason == "the reader failed: OverflowError: date value out of range"
    assert "the reader failed on a message" in caplog.text
    assert consumer.run_once() == 0  # acknowledged: nothing comes again
