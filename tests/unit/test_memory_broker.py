"""The in-memory broker's own rules, beyond the transport suite it passes with the others."""

from __future__ import annotations

import threading

import pytest

from tests.integration.brokers import event
from tidings import TransportError
from tidings.adapters.memory_broker import MemoryPublisher, MemoryQueue, MemorySubscription


def test_competing_subscribers_never_get_the_same_message() -> None:
    """Two consumers of one queue split its messages between them."""
    queue = MemoryQueue()
    MemoryPublisher(queue).publish([event("order-1", v) for v in range(1, 7)])
    first, second = MemorySubscription(queue), MemorySubscription(queue)
    a, b = first.fetch(3, 0), second.fetch(10, 0)
    assert len(a) == 3
    assert len(b) == 3
    assert not {m.message_id for m in a} & {m.message_id for m in b}
    assert queue.depth() == 6
    first.ack(a)
    second.ack(b)
    assert queue.depth() == 0


def test_a_waiting_fetch_wakes_when_a_message_is_published() -> None:
    """fetch blocks for the first message only until one arrives."""
    queue = MemoryQueue()
    subscription = MemorySubscription(queue)
    publisher = MemoryPublisher(queue)
    fetched: list[int] = []
    fetching = threading.Thread(target=lambda: fetched.append(len(subscription.fetch(5, 10))))
    fetching.start()
    fetching.join(timeout=0.2)
    assert fetching.is_alive(), "fetch returned from an empty queue before its timeout"
    publisher.publish([event("order-1", 1)])
    fetching.join(10)
    assert fetched == [1]


def test_a_closed_publisher_or_subscription_refuses_to_work() -> None:
    """Calls after close raise TransportError; closing twice is harmless."""
    queue = MemoryQueue()
    publisher, subscription = MemoryPublisher(queue), MemorySubscription(queue)
    publisher.close()
    subscription.close()
    subscription.close()
    with pytest.raises(TransportError, match="closed"):
        publisher.publish([event("order-1", 1)])
    with pytest.raises(TransportError, match="closed"):
        subscription.fetch(1, 0)
