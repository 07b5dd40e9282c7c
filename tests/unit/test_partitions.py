"""Partitioned publishing: the partition goes in front of the routing key, the count in a
header; each partition's subscription is its own queue or durable consumer."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tidings import ConfigurationError
from tidings.adapters.brokers import open_partition
from tidings.adapters.nats import NatsSubscription
from tidings.adapters.rabbitmq import RabbitSubscription
from tidings.application.partitions import (
    PARTITIONS_HEADER,
    check_header,
    check_partitions,
    partitioned,
)
from tidings.records import EventRecord, partition_of
from tidings.serialization.cloudevents import to_message


def record(stream_id: str, version: int = 1) -> EventRecord:
    """An event of ``stream_id``."""
    return EventRecord(
        event_id=f"{stream_id}-{version}",
        stream_id=stream_id,
        version=version,
        event_type="order.placed",
        schema_version=1,
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
        data=b"{}",
    )


def test_the_partition_of_the_aggregate_goes_in_front_of_the_routing_key() -> None:
    """Every event of one aggregate gets the same partition, the stable hash of its id;
    the count rides in a header; the body is the unpartitioned message's."""
    encode = partitioned(lambda r: to_message(r, "shop"), 8)
    first, second = encode(record("order-1", 1)), encode(record("order-1", 2))
    part = partition_of("order-1", 8)
    assert first.routing_key == second.routing_key == f"{part}.order.placed"
    assert first.headers[PARTITIONS_HEADER] == "8"
    assert first.body == to_message(record("order-1", 1), "shop").body
    parts = {encode(record(f"order-{n}")).routing_key.split(".")[0] for n in range(200)}
    assert parts == {str(p) for p in range(8)}


@pytest.mark.parametrize("count", [0, -1, 1025, True, "3", 2.0])
def test_a_count_of_partitions_that_cannot_work_is_refused_with_what_to_give(
    count: object,
) -> None:
    """Not a whole number from 1 to 1024: a ``ConfigurationError`` naming the range."""
    with pytest.raises(ConfigurationError, match="whole number from 1 to 1024"):
        check_partitions(count)


def test_a_message_published_into_another_count_of_partitions_is_refused() -> None:
    """A consumer of 6 partitions refuses a message of 3, naming both counts; a message
    without the header (published by hand) passes."""
    with pytest.raises(ConfigurationError, match=r"into 3 partitions.*--partitions 6"):
        check_header({PARTITIONS_HEADER: "3"}, 6)
    check_header({PARTITIONS_HEADER: "6"}, 6)
    check_header({}, 6)


def test_each_partition_is_a_queue_or_a_durable_consumer_of_its_own() -> None:
    """RabbitMQ: queue ``<name>.<p>``, each binding key behind the partition's token, a
    single active consumer. NATS: durable ``<name>-<p>`` filtered on ``<p>.<filter>``."""
    rabbit = open_partition("amqp://127.0.0.1/", "inventory", 3, binding_keys="order.*")
    nats = open_partition("nats://127.0.0.1:4222", "inventory", 3, filter_subject="order.*")
    try:
        assert isinstance(rabbit, RabbitSubscription)
        assert rabbit.queue == "inventory.3"
        assert rabbit.binding_keys == ("3.order.*",)
        assert rabbit.queue_arguments["x-single-active-consumer"] is True
        assert isinstance(nats, NatsSubscription)
        assert (nats.durable, nats.filter_subject) == ("inventory-3", "3.order.*")
    finally:
        rabbit.close()
        nats.close()
