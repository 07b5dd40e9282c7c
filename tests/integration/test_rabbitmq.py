"""RabbitMQ specifics: what a pika consumer sees, nacks and returns, classic queues, topology
errors, and the publisher's connection after an idle close or a timeout."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pika
import pytest
from cloudevents.core.bindings.rabbitmq import RabbitMQMessage, from_rabbitmq
from cloudevents.core.formats.json import JSONFormat
from cloudevents.v1.http import from_json

from tests.integration.brokers import RabbitHarness, drain, event, unique
from tests.integration.faults import wait_until
from tests.integration.test_outages import rabbitmqctl
from tidings import BrokerBusyError, BrokerUnavailableError, TransportError
from tidings.adapters import pika_confirms
from tidings.adapters.rabbitmq import RabbitPublisher, RabbitSubscription, delivery_count
from tidings.adapters.rabbitmq import _delay_ms as delay_ms
from tidings.ports import IncomingMessage

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
def harness(rabbitmq_url: str) -> Iterator[RabbitHarness]:
    """A unique exchange and quorum queue, deleted afterwards."""
    made = RabbitHarness(rabbitmq_url)
    try:
        yield made
    finally:
        made.cleanup()


@pytest.fixture
def pika_channel(rabbitmq_url: str) -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
    """A plain pika channel: the tools of a consumer that never heard of tidings."""
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    try:
        yield connection.channel()
    finally:
        connection.close()


def test_a_pika_consumer_with_the_cloudevents_sdk_reads_what_we_publish(
    harness: RabbitHarness, pika_channel: pika.adapters.blocking_connection.BlockingChannel
) -> None:
    """Only pika and the official SDK: id, source, type, subject, extensions and data match."""
    queue = unique("tidings-test-pika-")
    pika_channel.queue_declare(queue, exclusive=True)
    pika_channel.queue_bind(queue, harness.exchange, "order.*")
    message = event("order-7", 4)
    assert harness.publisher().publish([message]) == [None]

    method, properties, body = pika_channel.basic_get(queue, auto_ack=True)
    assert method is not None
    assert method.routing_key == "order.placed"
    assert properties.content_type == "application/cloudevents+json"
    assert properties.delivery_mode == 2
    assert properties.message_id == message.message_id

    parsed = from_rabbitmq(
        RabbitMQMessage(headers={}, content_type=properties.content_type, body=body),
        JSONFormat(),
    )
    assert parsed.get_id() == message.message_id
    assert parsed.get_source() == "orders"
    assert parsed.get_type() == "order.placed"
    assert parsed.get_subject() == "order-7"
    assert parsed.get_extension("schemaversion") == 1
    assert parsed.get_extension("aggregateversion") == 4
    assert parsed.get_data() == {"n": 4, "pad": ""}
    assert from_json(body)["id"] == message.message_id


def test_a_message_a_full_queue_rejects_is_refused_by_nack(
    harness: RabbitHarness, pika_channel: pika.adapters.blocking_connection.BlockingChannel
) -> None:
    """A queue at x-max-length with reject-publish nacks; the reason says so."""
    queue = unique("tidings-test-full-")
    arguments = {"x-max-length": 1, "x-overflow": "reject-publish"}
    pika_channel.queue_declare(queue, exclusive=True, arguments=arguments)
    pika_channel.queue_bind(queue, harness.exchange, "order.#")
    answers = harness.publisher().publish([event("order-1", 1), event("order-1", 2)])
    assert answers[0] is None
    assert "basic.nack" in (answers[1] or "")


def test_without_mandatory_an_unroutable_message_is_confirmed_and_dropped(
    harness: RabbitHarness,
) -> None:
    """mandatory=False is the explicit opt-in to RabbitMQ's silent drop."""
    publisher = RabbitPublisher(harness.url, exchange=harness.exchange, mandatory=False)
    try:
        assert publisher.publish([event("pay-1", 1, event_type="payment.captured")]) == [None]
    finally:
        publisher.close()


def test_on_a_classic_queue_delivery_counts_come_from_our_header_and_the_redelivered_flag(
    rabbitmq_url: str,
) -> None:
    """A classic queue has no x-delivery-count: a retry and a redelivery still count."""
    harness = RabbitHarness(rabbitmq_url, queue_type="classic")
    try:
        harness.publisher().publish([event("order-1", 1)])
        first = harness.subscription()
        [message] = drain(first, 1)
        first.retry_later(message, 0.05)
        [again] = drain(first, 1)
        assert again.delivery_count == 2
        first.close()
        second = harness.subscription()
        [third] = drain(second, 1)
        assert third.delivery_count == 3
        second.ack([third])
    finally:
        harness.cleanup()


def test_an_exchange_declared_with_another_type_is_a_transport_error_naming_it(
    rabbitmq_url: str, pika_channel: pika.adapters.blocking_connection.BlockingChannel
) -> None:
    """A topology conflict is not an outage: TransportError, with what to check."""
    exchange = unique("tidings-test-direct-")
    pika_channel.exchange_declare(exchange, "direct")
    publisher = RabbitPublisher(rabbitmq_url, exchange=exchange)
    try:
        with pytest.raises(TransportError, match="declared with other options") as caught:
            publisher.publish([event("order-1", 1)])
        assert not isinstance(caught.value, BrokerUnavailableError)
    finally:
        publisher.close()
        pika_channel.exchange_delete(exchange)


def test_a_closed_port_is_broker_unavailable_with_how_to_start_rabbitmq() -> None:
    """Publisher and subscription both say where they tried and how to start the broker."""
    url = "amqp://guest:guest@127.0.0.1:1/"
    publisher = RabbitPublisher(url, connect_timeout=2)
    subscription = RabbitSubscription(url, "nowhere", connect_timeout=2)
    try:
        with pytest.raises(BrokerUnavailableError, match=r"127\.0\.0\.1:1 .*rabbitmq-server"):
            publisher.publish([event("order-1", 1)])
        with pytest.raises(BrokerUnavailableError, match="cannot be reached"):
            subscription.fetch(1, 0.1)
    finally:
        publisher.close()
        subscription.close()


def test_delays_are_rounded_to_two_significant_digits_of_milliseconds() -> None:
    """Few delay queues, each delay within 5 % of what was asked."""
    assert [delay_ms(d) for d in (0, -1, 0.037, 1.234, 65.432, 0.1)] == [
        0,
        0,
        37,
        1200,
        65000,
        100,
    ]


def test_the_delivery_count_adds_our_header_to_the_queues_own_count() -> None:
    """x-delivery-count wins over the redelivered flag; our header adds earlier deliveries."""
    assert delivery_count({}, redelivered=False) == 1
    assert delivery_count({}, redelivered=True) == 2
    assert delivery_count({"x-delivery-count": 3}, redelivered=True) == 4
    assert delivery_count({"tidings-delivered": 2}, redelivered=False) == 3
    assert delivery_count({"tidings-delivered": "x"}, redelivered=False) == 1


def test_headers_that_are_not_text_or_are_the_brokers_own_are_not_handed_on(
    harness: RabbitHarness,
) -> None:
    """x-death and friends stay inside the adapter; the message keeps its own headers."""
    harness.publisher().publish([event("order-1", 1)])
    subscription = harness.subscription()
    [message] = drain(subscription, 1)
    subscription.retry_later(message, 0.0)
    [again] = drain(subscription, 1)
    subscription.ack([again])
    assert not [name for name in again.headers if name.startswith("x-")]
    assert json.loads(again.body)["id"] == message.message_id


def test_with_a_single_active_consumer_a_standby_gets_messages_only_after_the_first_goes(
    rabbitmq_url: str,
) -> None:
    """Order with failover: the standby sees nothing while the active one runs, then all."""
    harness = RabbitHarness(rabbitmq_url, single_active_consumer=True)
    try:
        batch = [event("order-1", v) for v in (1, 2, 3)]
        harness.publisher().publish(batch)
        active, standby = harness.subscription(), harness.subscription()
        held = drain(active, 3)
        assert standby.fetch(10, 0.3) == []
        active.ack(held[:1])
        active.close()
        taken_over = drain(standby, 2)
        standby.ack(taken_over)
        assert [m.message_id for m in taken_over] == [m.message_id for m in batch[1:]]
    finally:
        harness.cleanup()


def test_in_a_batch_each_unroutable_message_is_refused_and_the_others_confirmed(
    harness: RabbitHarness,
) -> None:
    """Returns carry no delivery tag: each is matched to its own message of the batch."""
    batch = [
        event("order-1", 1),
        event("pay-1", 1, event_type="payment.captured"),
        event("order-2", 1),
        event("pay-2", 1, event_type="payment.captured"),
        event("order-3", 1),
    ]
    answers = harness.publisher().publish(batch)
    assert [answer is None for answer in answers] == [True, False, True, False, True]
    assert all("unroutable" in (answers[i] or "") for i in (1, 3))
    assert "'payment.captured'" in (answers[1] or "")


def test_a_connection_the_broker_closed_while_idle_is_reopened_before_the_next_publish(
    harness: RabbitHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No heartbeats run between publishes, so a connection the broker closed meanwhile is
    found by polling it first: the publish succeeds instead of failing as an outage."""
    monkeypatch.setattr(pika_confirms, "IDLE_CHECK_SECONDS", 0.0)
    publisher = harness.publisher()
    assert publisher.publish([event("order-1", 1)]) == [None]
    name = f"tidings publisher to {harness.exchange}"
    close_rabbitmq_connections(name)
    # The broker has sent its close once the connection is no longer "running" (it then
    # waits for the client's answer, which only the next poll of the loop gives).
    wait_until(
        lambda: "running" not in rabbitmq_connections(name).values(),
        "RabbitMQ closed the connection",
    )
    assert publisher.publish([event("order-1", 2)]) == [None]


def test_a_publish_whose_confirms_time_out_is_an_outage_and_the_next_one_works(
    harness: RabbitHarness,
) -> None:
    """Unconfirmed messages are unknown: BrokerBusyError (an outage, not a refusal), so
    they go again later, and only what was confirmed in time is kept as answered; the next
    publish opens a fresh connection, where late answers cannot land."""
    publisher = harness.publisher()
    publisher.confirm_timeout = 1e-6
    with pytest.raises(BrokerBusyError, match="unconfirmed within confirm_timeout") as caught:
        publisher.publish([event("order-1", 1)] * 50)
    assert len(caught.value.answered) < 50
    assert set(caught.value.answered.values()) <= {None}
    publisher.confirm_timeout = 30.0
    assert publisher.publish([event("order-2", 1), event("order-2", 2)]) == [None, None]


def test_a_message_acked_just_before_the_process_dies_is_not_delivered_again(
    harness: RabbitHarness,
) -> None:
    """pika writes only while its loop runs: ``ack`` returns once its frame is on the wire,
    so a process that exits right after it (no close, no further fetch) settled it."""
    batch = [event("order-1", v) for v in (1, 2, 3)]
    harness.publisher().publish(batch)
    child = textwrap.dedent(
        f"""
        import os, time
        from tidings.adapters.rabbitmq import RabbitSubscription
        subscription = RabbitSubscription(
            {harness.url!r}, {harness.queue!r}, exchange={harness.exchange!r},
            binding_keys=["order.#"],
        )
        held, deadline = [], time.monotonic() + 10
        while len(held) < 3 and time.monotonic() < deadline:
            held += subscription.fetch(3 - len(held), 0.5)
        subscription.ack(held)
        print(len(held), flush=True)
        os._exit(0)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stdout.strip()) == (0, "3"), done.stderr
    assert harness.subscription().fetch(10, 1.0) == []


def test_a_retry_copy_the_delay_queue_refuses_leaves_the_original_to_come_again(
    harness: RabbitHarness,
) -> None:
    """The original is settled only once its copy is confirmed in the delay queue: a copy
    the broker nacks (a policy caps the delay queues at no message) is a TransportError,
    and the original is delivered again instead of being lost."""
    policy = unique("tidings-test-no-retry-")
    rabbitmqctl(
        "set_policy",
        policy,
        f"^{harness.queue}\\.retry\\.",
        '{"max-length": 0, "overflow": "reject-publish"}',
        "--apply-to",
        "queues",
    )
    try:
        harness.publisher().publish([event("order-1", 1)])
        subscription = harness.subscription()
        [message] = drain(subscription, 1)
        with pytest.raises(TransportError, match="refused it") as caught:
            subscription.retry_later(message, 0.05)
        assert not isinstance(caught.value, BrokerUnavailableError)
        [again] = drain(subscription, 1)
        assert again.message_id == message.message_id
        assert again.delivery_count == 2
        subscription.ack([again])
    finally:
        rabbitmqctl("clear_policy", policy)


def test_a_subscription_whose_connection_the_broker_closed_reconnects_and_gets_it_all_again(
    harness: RabbitHarness,
) -> None:
    """The unsettled messages of a lost connection come again, in order; acking the old
    ones afterwards is skipped, and the next fetch connects again (at most one call
    reports the outage)."""
    batch = [event("order-1", v) for v in (1, 2, 3)]
    harness.publisher().publish(batch)
    subscription = harness.subscription()
    held = drain(subscription, 3)
    name = f"tidings subscription of {harness.queue}"
    close_rabbitmq_connections(name)
    wait_until(
        lambda: "running" not in rabbitmq_connections(name).values(),
        "RabbitMQ closed the connection",
    )
    again: list[IncomingMessage] = []
    try:
        again = drain(subscription, 3)
    except BrokerUnavailableError:
        again = drain(subscription, 3)
    subscription.ack(held)  # of the lost connection: skipped
    assert [m.message_id for m in again] == [m.message_id for m in batch]
    assert [m.delivery_count for m in again] == [2, 2, 2]
    subscription.ack(again)
    assert subscription.fetch(10, 0.3) == []


def rabbitmq_connections(name: str) -> dict[str, str]:
    """Process id (as rabbitmqctl prints it) -> state of the connections named like ``name``."""
    listing = rabbitmqctl(
        "list_connections", "-q", "--no-table-headers", "pid", "state", "client_properties"
    )
    rows = [line.split("\t") for line in listing.splitlines() if name in line]
    return {row[0]: row[1] for row in rows}


def close_rabbitmq_connections(name: str) -> None:
    """Have RabbitMQ close every connection named like ``name``."""
    for pid, state in rabbitmq_connections(name).items():
        if state == "running":
            rabbitmqctl("close_connection", pid, "closed by a test")


def test_a_closed_publisher_refuses_to_publish_and_says_to_make_a_new_one(
    harness: RabbitHarness,
) -> None:
    """After close() nothing reconnects behind the caller's back."""
    publisher = harness.publisher()
    assert publisher.publish([event("order-1", 1)]) == [None]
    publisher.close()
    with pytest.raises(TransportError, match="closed: create a new one"):
        publisher.publish([event("order-1", 2)])
    publisher.close()  # closing twice is harmless


def test_a_message_above_max_message_bytes_is_refused_alone_and_never_sent(
    harness: RabbitHarness,
) -> None:
    """RabbitMQ would close the channel over a message above its max_message_size and
    fail the batch; refused up front, it is that message's answer and the rest goes."""
    publisher = RabbitPublisher(harness.url, exchange=harness.exchange, max_message_bytes=4096)
    batch = [event("order-1", 1), event("order-2", 1, size=8192), event("order-3", 1)]
    try:
        answers = publisher.publish(batch)
    finally:
        publisher.close()
    assert answers[0] is None
    assert answers[2] is None
    assert "larger than max_message_bytes (4096)" in (answers[1] or "")
    arrived = drain(harness.subscription(), 3, ack=True, timeout=2.0)
    assert sorted(m.message_id for m in arrived) == sorted(
        [batch[0].message_id, batch[2].message_id]
    )
