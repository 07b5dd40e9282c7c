"""The transport suite: the same behaviour on the in-memory broker, RabbitMQ and NATS JetStream.

Publishing waits for the broker's confirmation and reports a refusal per message;
a subscription hands messages out in order, forgets acked ones, delivers again (with a
higher delivery count) what is retried later or left unsettled by a closed subscriber.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest

from tests.integration.brokers import (
    Harness,
    MemoryHarness,
    NatsHarness,
    RabbitHarness,
    drain,
    event,
)
from tidings.ports import IncomingMessage

BROKERS = [
    "memory",
    pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
    pytest.param("nats", marks=pytest.mark.nats),
]


@pytest.fixture(params=BROKERS)
def broker(request: pytest.FixtureRequest) -> Iterator[Harness]:
    """A harness with fresh topology on each broker, removed afterwards."""
    harness: Harness
    if request.param == "memory":
        harness = MemoryHarness()
    elif request.param == "rabbitmq":
        harness = RabbitHarness(request.getfixturevalue("rabbitmq_url"))
    else:
        harness = NatsHarness(request.getfixturevalue("nats_url"))
    try:
        yield harness
    finally:
        harness.cleanup()


def payload_n(message: IncomingMessage) -> int:
    """The sequence number the test put in the payload."""
    n: int = json.loads(message.body)["data"]["n"]
    return n


def test_a_published_batch_is_confirmed_and_received_in_order_per_aggregate(
    broker: Harness,
) -> None:
    """Every message is confirmed (None); each aggregate's events arrive in version order."""
    batch = [event(f"order-{i % 4}", i // 4 + 1) for i in range(400)]
    assert broker.publisher().publish(batch) == [None] * 400
    subscription = broker.subscription()
    received = drain(subscription, 400, ack=True)
    assert [m.message_id for m in received] == [m.message_id for m in batch]
    for i in range(4):
        versions = [
            json.loads(m.body)["aggregateversion"]
            for m in received
            if json.loads(m.body)["subject"] == f"order-{i}"
        ]
        assert versions == list(range(1, 101))
    assert {m.delivery_count for m in received} == {1}


def test_publishing_nothing_confirms_nothing(broker: Harness) -> None:
    """An empty batch is an empty answer, without a round trip."""
    assert broker.publisher().publish([]) == []


def test_a_refused_message_gets_a_reason_while_the_rest_of_the_batch_goes_through(
    broker: Harness,
) -> None:
    """The broker's refusal is reported for that message alone."""
    batch = [event("order-1", 1), broker.refused(), event("order-1", 2)]
    answers = broker.publisher().publish(batch)
    assert answers[0] is None
    assert answers[2] is None
    assert isinstance(answers[1], str)
    assert answers[1]
    subscription = broker.subscription()
    received = drain(subscription, 2)
    assert [payload_n(m) for m in received] == [1, 2]
    subscription.ack(received)
    assert subscription.fetch(10, 0.3) == []


def test_acked_messages_are_not_delivered_again(broker: Harness) -> None:
    """Once acked, a message is gone, also for a later subscriber."""
    broker.publisher().publish([event("order-1", v) for v in (1, 2, 3)])
    first = broker.subscription()
    first.ack(drain(first, 3))
    first.close()
    assert broker.subscription().fetch(10, 0.3) == []


def test_retry_later_delivers_again_after_the_delay_with_a_higher_count(
    broker: Harness,
) -> None:
    """The retried message is not back at once; after about the delay it is, counted twice."""
    broker.publisher().publish([event("order-1", 1)])
    subscription = broker.subscription()
    [message] = drain(subscription, 1)
    assert message.delivery_count == 1
    subscription.retry_later(message, 1.0)
    assert subscription.fetch(1, 0.2) == []
    [again] = drain(subscription, 1)
    assert again.message_id == message.message_id
    assert again.delivery_count == 2
    subscription.retry_later(again, 0.1)
    [third] = drain(subscription, 1)
    assert third.delivery_count == 3
    subscription.ack([third])
    assert subscription.fetch(1, 0.3) == []


def test_messages_left_unsettled_by_a_closed_subscriber_go_to_the_next_one(
    broker: Harness,
) -> None:
    """Closing without ack hands the messages on, in order, with their count raised."""
    batch = [event("order-1", v) for v in (1, 2, 3)]
    broker.publisher().publish(batch)
    first = broker.subscription()
    held = drain(first, 3)
    first.ack(held[:1])
    first.close()
    second = broker.subscription()
    again = drain(second, 2)
    assert [m.message_id for m in again] == [m.message_id for m in batch[1:]]
    assert [m.delivery_count for m in again] == [2, 2]
    second.ack(again)


def test_settling_a_message_twice_is_harmless(broker: Harness) -> None:
    """A second ack (or an ack after retry_later) changes nothing and raises nothing."""
    broker.publisher().publish([event("order-1", 1)])
    subscription = broker.subscription()
    held = drain(subscription, 1)
    subscription.ack(held)
    subscription.ack(held)
    subscription.retry_later(held[0], 0.0)
    assert subscription.fetch(1, 0.3) == []


def test_headers_of_a_message_reach_the_subscriber(broker: Harness) -> None:
    """Headers given to the publisher travel with the message."""
    message = event("order-1", 1)
    traced = type(message)(
        message.message_id,
        message.routing_key,
        message.ordering_key,
        message.body,
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
    )
    broker.publisher().publish([traced])
    subscription = broker.subscription()
    [received] = drain(subscription, 1)
    subscription.ack([received])
    assert received.headers["traceparent"].startswith("00-0af76519")


def test_acking_part_of_a_batch_leaves_the_rest_for_the_next_subscriber(
    broker: Harness,
) -> None:
    """Settling the middle message only: the first and last come again, in order."""
    batch = [event("order-1", v) for v in (1, 2, 3)]
    broker.publisher().publish(batch)
    first = broker.subscription()
    held = drain(first, 3)
    first.ack([held[1]])
    first.close()
    second = broker.subscription()
    again = drain(second, 2)
    second.ack(again)
    assert [m.message_id for m in again] == [batch[0].message_id, batch[2].message_id]


def test_one_publisher_serves_several_threads_at_once(broker: Harness) -> None:
    """Four threads publish through one publisher: every message is confirmed and arrives."""
    publisher = broker.publisher()
    batches = [[event(f"order-{t}", v) for v in range(1, 51)] for t in range(4)]
    answers: list[list[str | None]] = []
    threads = [
        threading.Thread(target=lambda b=batch: answers.append(publisher.publish(b)))
        for batch in batches
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [[None] * 50] * 4
    received = drain(broker.subscription(), 200, ack=True)
    assert sorted(m.message_id for m in received) == sorted(
        m.message_id for batch in batches for m in batch
    )
