"""Test harnesses over the in-memory broker, RabbitMQ and NATS: one shape, three brokers.

Each harness owns uniquely named topology (exchange and queue, or stream and consumer),
makes publishers and subscriptions on it, knows a message its broker refuses, and
removes everything it made when the test ends.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from nats.js import JetStreamContext

from tidings.adapters.memory_broker import MemoryPublisher, MemoryQueue, MemorySubscription
from tidings.adapters.nats import NatsPublisher, NatsSubscription
from tidings.adapters.rabbitmq import RabbitPublisher, RabbitSubscription
from tidings.ports import IncomingMessage, OutgoingMessage, Subscription, Transport
from tidings.records import EventRecord
from tidings.serialization.cloudevents import to_message

REFUSED_SIZE = 64 * 1024  # the memory and NATS harnesses refuse bodies over this


def unique(prefix: str) -> str:
    """A name no earlier run used."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def event(
    stream_id: str, version: int, event_type: str = "order.placed", size: int = 0
) -> OutgoingMessage:
    """The CloudEvent of one recorded event, with a payload of about ``size`` bytes."""
    data = f'{{"n":{version},"pad":"{"x" * size}"}}'.encode()
    record = EventRecord(
        event_id=str(uuid.uuid4()),
        stream_id=stream_id,
        version=version,
        event_type=event_type,
        schema_version=1,
        occurred_at=datetime.now(UTC),
        data=data,
    )
    return to_message(record, "orders")


def drain(
    subscription: Subscription, count: int, *, ack: bool = False, timeout: float = 10.0
) -> list[IncomingMessage]:
    """Fetch until ``count`` messages arrived or time ran out, acking each batch if told.

    Unsettled messages count against a RabbitMQ prefetch, so large batches are acked.
    """
    received: list[IncomingMessage] = []
    deadline = time.monotonic() + timeout
    while len(received) < count and time.monotonic() < deadline:
        batch = subscription.fetch(count - len(received), 0.5)
        if ack:
            subscription.ack(batch)
        received += batch
    return received


class Harness(Protocol):
    """What the transport suite needs of a broker."""

    def publisher(self) -> Transport:
        """A new publisher onto the harness's topology."""

    def subscription(self) -> Subscription:
        """A new subscriber of the harness's one queue or durable consumer."""

    def refused(self) -> OutgoingMessage:
        """A message this broker refuses while it takes the rest of its batch."""

    def cleanup(self) -> None:
        """Close what was opened and delete what was declared."""


class _Closing:
    def __init__(self) -> None:
        self.opened: list[Transport | Subscription] = []

    def _keep(self, thing: Transport | Subscription) -> None:
        self.opened.append(thing)

    def close_all(self) -> None:
        for thing in reversed(self.opened):
            thing.close()


class MemoryHarness(_Closing):
    """The in-memory broker: refuses bodies over ``REFUSED_SIZE``."""

    def __init__(self) -> None:
        super().__init__()
        self.queue = MemoryQueue()

    def publisher(self) -> MemoryPublisher:
        """A publisher onto the shared queue."""
        publisher = MemoryPublisher(self.queue, max_message_bytes=REFUSED_SIZE)
        self._keep(publisher)
        return publisher

    def subscription(self) -> MemorySubscription:
        """A consumer of the shared queue."""
        subscription = MemorySubscription(self.queue)
        self._keep(subscription)
        return subscription

    def refused(self) -> OutgoingMessage:
        """Too large for the queue."""
        return event("big-1", 1, size=REFUSED_SIZE)

    def cleanup(self) -> None:
        """Close everything."""
        self.close_all()


class RabbitHarness(_Closing):
    """A unique exchange and quorum queue bound with ``order.#``: other types are unroutable."""

    def __init__(self, url: str, queue_type: str = "quorum", **options: Any) -> None:
        super().__init__()
        self.url = url
        self.exchange = unique("tidings-test-")
        self.queue = f"{self.exchange}-orders"
        self.queue_type = queue_type
        self.options = options
        self.subscriptions: list[RabbitSubscription] = []
        # Declare and bind before anything is published, as a deployed consumer would.
        declaring = self.subscription()
        declaring.fetch(1, 0.01)
        declaring.close()

    def publisher(self) -> RabbitPublisher:
        """A publisher with confirms onto the test exchange."""
        publisher = RabbitPublisher(self.url, exchange=self.exchange)
        self._keep(publisher)
        return publisher

    def subscription(self) -> RabbitSubscription:
        """A consumer of the test queue."""
        subscription = RabbitSubscription(
            self.url,
            self.queue,
            exchange=self.exchange,
            binding_keys=["order.#"],
            queue_type=self.queue_type,
            **self.options,
        )
        self.subscriptions.append(subscription)
        self._keep(subscription)
        return subscription

    def refused(self) -> OutgoingMessage:
        """An event type no queue is bound for: returned as unroutable."""
        return event("pay-1", 1, event_type="payment.captured")

    def cleanup(self) -> None:
        """Close everything, then delete the queues and the exchange."""
        import pika

        self.close_all()
        queues = {self.queue}.union(*(s.delay_queues for s in self.subscriptions))
        connection = pika.BlockingConnection(pika.URLParameters(self.url))
        try:
            channel = connection.channel()
            for queue in sorted(queues):
                channel.queue_delete(queue)
            channel.exchange_delete(self.exchange)
        finally:
            connection.close()


class NatsHarness(_Closing):
    """A unique stream that refuses messages over ``REFUSED_SIZE``, and one durable consumer."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.stream = unique("TIDINGS_TEST_")
        self.prefix = self.stream.lower()
        self.durable = "orders"
        run_nats(self.url, self._create)

    async def _create(self, js: JetStreamContext) -> None:
        await js.add_stream(
            name=self.stream, subjects=[f"{self.prefix}.>"], max_msg_size=REFUSED_SIZE
        )

    def publisher(self) -> NatsPublisher:
        """A publisher onto the test stream."""
        publisher = NatsPublisher(self.url, stream=self.stream, subject_prefix=self.prefix)
        self._keep(publisher)
        return publisher

    def subscription(self) -> NatsSubscription:
        """A subscriber of the test stream's durable consumer."""
        subscription = NatsSubscription(
            self.url, self.durable, stream=self.stream, subject_prefix=self.prefix
        )
        self._keep(subscription)
        return subscription

    def refused(self) -> OutgoingMessage:
        """Larger than the stream's max_msg_size: JetStream answers with an error."""
        return event("big-1", 1, size=REFUSED_SIZE)

    def cleanup(self) -> None:
        """Close everything, then delete the stream (and with it the consumer)."""
        self.close_all()
        run_nats(self.url, self._delete)

    async def _delete(self, js: JetStreamContext) -> None:
        await js.delete_stream(self.stream)


def run_nats(url: str, work: Callable[[JetStreamContext], Awaitable[object]]) -> None:
    """Run one admin coroutine function (taking a JetStream context) on a fresh connection."""

    async def main() -> None:
        import nats

        client = await nats.connect(url)
        try:
            await work(client.jetstream())
        finally:
            await client.close()

    asyncio.run(main())


@contextmanager
def silent_publisher(url: str, stem: str) -> Iterator[NatsPublisher]:
    """A publisher (ack timeout 0.3 s) onto a fresh stream of ``<prefix>.order.>``, where
    a plain subscriber hears ``<prefix>.silent.>``: a message routed ``silent.placed``
    reaches no stream and gets no ack, and no 503 either."""
    prefix = unique(stem)
    stream = prefix.upper()
    listening, stop = threading.Event(), threading.Event()

    def swallow() -> None:
        async def main() -> None:
            import nats

            client = await nats.connect(url)
            await client.subscribe(f"{prefix}.silent.>")
            await client.flush()
            listening.set()
            while not stop.is_set():
                await asyncio.sleep(0.02)
            await client.close()

        asyncio.run(main())

    async def create(js: JetStreamContext) -> None:
        await js.add_stream(name=stream, subjects=[f"{prefix}.order.>"])

    async def delete(js: JetStreamContext) -> None:
        await js.delete_stream(stream)

    run_nats(url, create)
    thread = threading.Thread(target=swallow)
    thread.start()
    publisher = NatsPublisher(
        url, stream=stream, subject_prefix=prefix, ensure_stream=False, ack_timeout=0.3
    )
    try:
        assert listening.wait(10), "the plain subscriber never listened"
        yield publisher
    finally:
        publisher.close()
        stop.set()
        thread.join()
        run_nats(url, delete)


H = TypeVar("H", bound=Harness)


def cleaned_up(harness: H) -> Iterator[H]:
    """Yield ``harness``, then remove what it made (a fixture's body: ``yield from``)."""
    try:
        yield harness
    finally:
        harness.cleanup()
