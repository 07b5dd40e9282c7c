"""One conversation across two services and a real broker (level 5): the same correlation
id, a causation chain, and the W3C trace context on everything, from the first command in
service A to the event and the command that service B's handler writes."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import tidings
from tidings import Message
from tidings.adapters.brokers import open_publisher
from tidings.application.handling import Handlers
from tidings.application.unit_of_work import UnitOfWork
from tidings.domain.events import DomainEvent
from tidings.ports import Subscription, Transport
from tidings.testing import RecordingTransport
from tidings.testing.contract import Counted, Counter, Named, new_id

from .test_consumer_faults import Feed, feed

__all__ = ["feed"]  # the broker fixture, parametrised over RabbitMQ and NATS

TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@dataclass(frozen=True, kw_only=True)
class ChargePayment(Message):
    """The command service B sends on."""

    counter: str


def count_and_relay(
    a: tidings.Store,
    publisher: Transport,
    metadata: dict[str, str] | None = None,
    correlation_id: str | None = None,
) -> tuple[Counter, DomainEvent]:
    """A's unit of work records Counted on a new counter; A's relay publishes it. Return
    the counter and the event."""
    counter = Counter(new_id("cart"))
    counter.increment(1)
    with a.unit_of_work(metadata, correlation_id=correlation_id) as uow:
        uow.track(counter)
    relay = a.relay(publisher)
    assert relay.run_once() == 1
    relay.release()
    return counter, uow.published[0]


def follow_in_b(b: tidings.Store, subscription: Subscription) -> Counter:
    """B's consumer handles A's Counted event: its handler renames a new counter (a Named
    event) and sends ChargePayment. Return that counter once the handler has run."""
    follower = Counter(new_id("payment"))

    def follow(event: Counted, uow: UnitOfWork) -> None:
        follower.rename(f"for {event.aggregate_id}")
        uow.track(follower)
        uow.send(ChargePayment(counter=event.aggregate_id), key=event.aggregate_id)

    handlers = Handlers()
    handlers.add(Counted, "payments.follow", follow)
    consumer = b.consumer(subscription, handlers, fetch_timeout=0.5)
    deadline = time.monotonic() + 30
    while consumer.stats.applied < 1:
        consumer.run_once()
        assert time.monotonic() < deadline, "B never handled A's event"
    return follower


def test_a_conversation_keeps_its_correlation_id_and_causation_chain_across_services(
    feed: Feed, tmp_path: Path
) -> None:
    """A's unit of work (correlation ``checkout-1``, a traceparent) records Counted; its
    relay publishes it to the broker; B's consumer handles it, and the handler records a
    Named event and sends ChargePayment. Both carry checkout-1, name A's event as their
    cause, and carry A's traceparent, in B's database and on the wire."""
    registry = [Counted, Named, ChargePayment]
    a = tidings.connect(
        f"sqlite:///{tmp_path / 'a.db'}",
        outbox=True,
        source="orders",
        registry=tidings.EventRegistry(registry),
    )
    b = tidings.connect(
        f"sqlite:///{tmp_path / 'b.db'}",
        outbox=True,
        source="payments",
        registry=tidings.EventRegistry(registry),
    )
    options = {"exchange": feed.topic} if feed.kind == "rabbitmq" else dict(feed.options)
    publisher = open_publisher(feed.url, **options)
    subscription = feed.subscription()
    try:
        counter, first = count_and_relay(a, publisher, {"traceparent": TRACE}, "checkout-1")

        follower = follow_in_b(b, subscription)

        [stored] = list(b.events.read_stream(follower.id))
        metadata = json.loads(stored.metadata)
        assert metadata["correlation_id"] == "checkout-1"
        assert metadata["causation_id"] == first.event_id
        assert metadata["traceparent"] == TRACE

        out = RecordingTransport()
        relay_b = b.relay(out)
        assert relay_b.run_once() == 2
        relay_b.release()
        sent = {m["type"]: m for m in (json.loads(x.body) for x in out.confirmed)}
        assert set(sent) == {"Named", "ChargePayment"}
        for message in sent.values():
            assert message["correlationid"] == "checkout-1"
            assert message["causationid"] == first.event_id
            assert message["traceparent"] == TRACE
            assert message["source"] == "payments"
        assert sent["ChargePayment"]["subject"] == counter.id
    finally:
        subscription.close()
        publisher.close()
        a.close()
        b.close()
