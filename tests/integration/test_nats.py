"""NATS JetStream specifics: a nats-py consumer, duplicates, streams, consumers, limits."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from cloudevents.core.formats.json import JSONFormat
from nats.js import JetStreamContext
from nats.js.api import AckPolicy

from tests.integration.brokers import (
    NatsHarness,
    cleaned_up,
    drain,
    event,
    run_nats,
    silent_publisher,
    unique,
)
from tidings import BrokerBusyError, BrokerUnavailableError, TransportError
from tidings.adapters.nats import NatsPublisher, NatsSubscription
from tidings.ports import HELD_BACK

pytestmark = pytest.mark.nats


@pytest.fixture
def harness(nats_url: str) -> Iterator[NatsHarness]:
    """A unique stream, deleted afterwards."""
    yield from cleaned_up(NatsHarness(nats_url))


def test_a_nats_py_consumer_with_the_cloudevents_sdk_reads_what_we_publish(
    harness: NatsHarness,
) -> None:
    """Only nats-py and the official SDK: subject, Nats-Msg-Id, attributes and data match."""
    message = event("order-7", 4)
    assert harness.publisher().publish([message]) == [None]
    seen: dict[str, Any] = {}

    async def consume(js: JetStreamContext) -> None:
        subscription = await js.pull_subscribe(f"{harness.prefix}.>", stream=harness.stream)
        [received] = await subscription.fetch(1, timeout=5)
        await received.ack()
        seen.update(subject=received.subject, headers=received.headers, body=received.data)

    run_nats(harness.url, consume)
    assert seen["subject"] == f"{harness.prefix}.order.placed"
    assert seen["headers"]["Nats-Msg-Id"] == message.message_id
    parsed = JSONFormat().read(None, seen["body"])
    assert parsed.get_id() == message.message_id
    assert parsed.get_source() == "orders"
    assert parsed.get_type() == "order.placed"
    assert parsed.get_subject() == "order-7"
    assert parsed.get_extension("schemaversion") == 1
    assert parsed.get_extension("aggregateversion") == 4
    assert parsed.get_data() == {"n": 4, "pad": ""}


def test_a_message_published_again_inside_the_duplicate_window_is_stored_once(
    harness: NatsHarness,
) -> None:
    """A relay's retry of a confirmed event is confirmed again, and JetStream keeps one copy."""
    message = event("order-1", 1)
    publisher = harness.publisher()
    assert publisher.publish([message]) == [None]
    assert publisher.publish([message, event("order-1", 2)]) == [None, None]
    subscription = harness.subscription()
    received = drain(subscription, 2)
    subscription.ack(received)
    assert received[0].message_id == message.message_id
    assert subscription.fetch(10, 0.3) == []


def test_a_subject_no_stream_stores_is_no_answer_naming_both_causes(nats_url: str) -> None:
    """Without its stream NATS answers 503 (no responders), which also happens while
    JetStream is not answering: a transient BrokerBusyError, not a refusal of the message,
    and the message names both causes and the fix."""
    publisher = NatsPublisher(nats_url, subject_prefix=unique("nowhere"), ensure_stream=False)
    try:
        with pytest.raises(BrokerBusyError) as caught:
            publisher.publish([event("order-1", 1)])
    finally:
        publisher.close()
    assert caught.value.answered == {}
    message = str(caught.value)
    assert "no JetStream stream stores that subject" in message
    assert "ensure_stream=True" in message
    assert "JetStream is not answering now" in message


def test_a_message_over_the_servers_max_payload_is_refused_before_it_is_sent(
    harness: NatsHarness,
) -> None:
    """The server's max_payload (1 MiB by default) is checked client-side, per message."""
    answers = harness.publisher().publish([event("big-1", 1, size=2 * 1024 * 1024)])
    assert "max_payload" in (answers[0] or "")


def test_the_publisher_creates_its_stream_when_it_is_missing(nats_url: str) -> None:
    """Stream <NAME> with subjects <prefix>.> on file storage and the duplicate window."""
    stream = unique("TIDINGS_TEST_")
    publisher = NatsPublisher(
        nats_url, stream=stream, subject_prefix=stream.lower(), duplicate_window=30
    )
    info: dict[str, Any] = {}

    async def inspect(js: JetStreamContext) -> None:
        config = (await js.stream_info(stream)).config
        info.update(subjects=config.subjects, window=config.duplicate_window)
        await js.delete_stream(stream)

    try:
        assert publisher.publish([event("order-1", 1)]) == [None]
    finally:
        publisher.close()
        run_nats(nats_url, inspect)
    assert info == {"subjects": [f"{stream.lower()}.>"], "window": 30}


def test_the_durable_consumer_has_explicit_acks_and_the_configured_limits(
    harness: NatsHarness,
) -> None:
    """ack_wait, max_deliver and the filter subject are what the subscription was given."""
    subscription = NatsSubscription(
        harness.url,
        "limited",
        stream=harness.stream,
        subject_prefix=harness.prefix,
        filter_subject="order.*",
        ack_wait=7,
        max_deliver=5,
    )
    info: dict[str, Any] = {}

    async def inspect(js: JetStreamContext) -> None:
        config = (await js.consumer_info(harness.stream, "limited")).config
        info.update(
            ack=config.ack_policy,
            wait=config.ack_wait,
            most=config.max_deliver,
            filter=config.filter_subject,
        )

    try:
        assert subscription.fetch(1, 0.05) == []
        run_nats(harness.url, inspect)
    finally:
        subscription.close()
    assert info == {
        "ack": AckPolicy.EXPLICIT,
        "wait": 7,
        "most": 5,
        "filter": f"{harness.prefix}.order.*",
    }


def test_a_closed_port_is_broker_unavailable_with_how_to_start_nats() -> None:
    """Publisher and subscription both say where they tried and how to start the server."""
    url = "nats://127.0.0.1:1"
    publisher = NatsPublisher(url, connect_timeout=1)
    subscription = NatsSubscription(url, "nowhere", connect_timeout=1)
    try:
        with pytest.raises(BrokerUnavailableError, match=r"127\.0\.0\.1:1 .*nats-server -js"):
            publisher.publish([event("order-1", 1)])
        with pytest.raises(BrokerUnavailableError, match="cannot be reached"):
            subscription.fetch(1, 0.1)
    finally:
        publisher.close()
        subscription.close()


def test_waves_in_one_call_hold_back_the_later_events_of_a_refused_aggregate(
    harness: NatsHarness,
) -> None:
    """Three waves of two aggregates in one call: order-1's first event is refused, so its
    later events are held back, not sent; order-2's all go out, wave after wave, and the
    stream stores exactly those, in order."""
    refused = replace(harness.refused(), ordering_key="order-1")
    waves = [
        [refused, event("order-2", 1)],
        [event("order-1", 2), event("order-2", 2)],
        [event("order-1", 3), event("order-2", 3)],
    ]
    answers = harness.publisher().publish_waves(waves)
    assert isinstance(answers[0], str)
    assert answers[1:] == [None, HELD_BACK, None, HELD_BACK, None]
    subscription = harness.subscription()
    stored = drain(subscription, 3, ack=True)
    assert subscription.fetch(10, 0.3) == []
    assert [(m.body.count(b'"subject":"order-2"'), m.message_id) for m in stored] == [
        (1, waves[k][1].message_id) for k in range(3)
    ]


def test_a_publish_without_an_ack_in_time_is_no_answer_keeping_the_answers_it_got(
    nats_url: str,
) -> None:
    """Of two messages, the stream stores one; a plain subscriber swallows the other, so no
    ack comes: BrokerBusyError (transient, not a refusal) that says so and keeps the
    first message's confirmation, so it need not be sent again."""
    stored = event("order-1", 1)
    swallowed = replace(event("order-2", 1), routing_key="silent.placed")
    with (
        silent_publisher(nats_url, "partly") as publisher,
        pytest.raises(BrokerBusyError, match=r"1 of 2 messages unanswered") as caught,
    ):
        publisher.publish([stored, swallowed])
    assert caught.value.answered == {0: None}
    assert "no acknowledgement within ack_timeout 0.3 s" in str(caught.value)


def test_a_stream_that_cannot_be_made_is_a_transport_error_naming_the_conflict(
    harness: NatsHarness,
) -> None:
    """Another stream already holds the subjects: not an outage, and the reason is given."""
    publisher = NatsPublisher(
        harness.url, stream=unique("TIDINGS_TEST_"), subject_prefix=harness.prefix
    )
    try:
        with pytest.raises(TransportError, match="subjects overlap") as caught:
            publisher.publish([event("order-1", 1)])
    finally:
        publisher.close()
    assert not isinstance(caught.value, BrokerUnavailableError)


def deliver_late(harness: NatsHarness, subscription: NatsSubscription) -> None:
    """Have JetStream deliver the next message into the subscription's inbox while no
    pull of its own waits (a pull request sent beside it), and wait until it is there."""
    puller = subscription._puller
    assert puller is not None, "fetch once first: the puller is made on connecting"

    async def stray_pull(js: JetStreamContext) -> None:
        request = b'{"batch": 1, "no_wait": true}'
        await js._nc.publish(puller.subject, request, reply=puller.inbox + "stray")
        await js._nc.flush()

    run_nats(harness.url, stray_pull)
    deadline = time.monotonic() + 5
    while not puller.arrived and time.monotonic() < deadline:
        time.sleep(0.01)
    assert puller.arrived, "the stray pull's message did not come"


def test_a_message_that_comes_while_no_pull_waits_is_handed_out_by_the_next_fetch(
    harness: NatsHarness,
) -> None:
    """A message JetStream delivers for a pull request no longer waited for (here one sent
    beside the subscription, into its inbox) is kept and handed out first, not lost."""
    first, second = event("order-1", 1), event("order-1", 2)
    assert harness.publisher().publish([first, second]) == [None, None]
    subscription = harness.subscription()
    assert subscription.fetch(1, 0.5)[0].message_id == first.message_id  # connected
    deliver_late(harness, subscription)
    assert [m.message_id for m in subscription.fetch(10, 0.3)] == [second.message_id]


def test_a_pull_request_the_server_refuses_is_an_error_naming_its_reason(
    harness: NatsHarness,
) -> None:
    """A durable consumer that takes at most 5 messages a request: a fetch of 10 is a
    TransportError with JetStream's reason, not an empty batch or a hang."""

    async def limited(js: JetStreamContext) -> None:
        # nats-py's ConsumerConfig has no max_batch: JetStream's own API takes it.
        config = {"durable_name": harness.durable, "ack_policy": "explicit", "max_batch": 5}
        body = json.dumps({"stream_name": harness.stream, "config": config}).encode()
        subject = f"$JS.API.CONSUMER.DURABLE.CREATE.{harness.stream}.{harness.durable}"
        answer = await js._nc.request(subject, body, timeout=5)
        assert b'"error"' not in answer.data, answer.data

    run_nats(harness.url, limited)
    subscription = harness.subscription()
    with pytest.raises(TransportError, match="409 .*[Bb]atch"):
        subscription.fetch(10, 0.3)


def test_a_batch_given_back_comes_again_before_a_message_that_came_late(
    harness: NatsHarness,
) -> None:
    """The consumer gives a batch back (its database failed) while a later message came
    late for a pull and waits in the subscription: that one goes back too, so the next
    fetch hands out the batch first, in order."""
    first, second = event("order-1", 1), event("order-1", 2)
    assert harness.publisher().publish([first, second]) == [None, None]
    subscription = harness.subscription()
    batch = subscription.fetch(1, 0.5)
    assert [m.message_id for m in batch] == [first.message_id]
    deliver_late(harness, subscription)
    subscription.give_back(batch)
    again = drain(subscription, 2)
    assert [m.message_id for m in again] == [first.message_id, second.message_id]
