"""Partitioned publishing: every event goes to one of P partitions of its stream, chosen
by its aggregate, so P consumers can share a stream and keep each aggregate's order.

The partition is the stable hash of the aggregate id modulo P (``partition_of``: the
projections' parts use the same). It is the first token of the routing key: an event of
type ``order.placed`` in partition 3 goes to the routing key ``3.order.placed`` (RabbitMQ)
or the subject ``<prefix>.3.order.placed`` (NATS), where one queue or durable consumer
per partition takes it. Each message also carries P in the ``tidings-partitions`` header,
so a consumer started with another count says so instead of reading the wrong share.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

from tidings.errors import ConfigurationError
from tidings.ports import OutgoingMessage
from tidings.records import EventRecord, partition_of

PARTITIONS_HEADER = "tidings-partitions"
MAX_PARTITIONS = 1024  # a queue or durable consumer each: more is a mistake, not a plan

Encode = Callable[[EventRecord], OutgoingMessage]


def check_partitions(partitions: object) -> int:
    """The count of partitions, or ``ConfigurationError`` saying what to give."""
    if (
        isinstance(partitions, bool)
        or not isinstance(partitions, int)
        or not 1 <= partitions <= MAX_PARTITIONS
    ):
        raise ConfigurationError(
            f"--partitions must be a whole number from 1 to {MAX_PARTITIONS} (got "
            f"{partitions!r}); give the relay and every consumer of the stream the same count"
        )
    return partitions


def partitioned(encode: Encode, partitions: int) -> Encode:
    """``encode``, with the aggregate's partition put in front of the routing key and the
    count of partitions in a header."""
    check_partitions(partitions)
    count = str(partitions)

    def encode_partitioned(record: EventRecord) -> OutgoingMessage:
        message = encode(record)
        part = partition_of(record.stream_id, partitions)
        return replace(
            message,
            routing_key=f"{part}.{message.routing_key}",
            headers={**message.headers, PARTITIONS_HEADER: count},
        )

    return encode_partitioned


def check_header(headers: Mapping[str, str], partitions: int) -> None:
    """Refuse a message published for another count of partitions than ``partitions``."""
    found = headers.get(PARTITIONS_HEADER)
    if found is not None and found != str(partitions):
        raise ConfigurationError(
            f"a message was published into {found} partitions and this consumer was "
            f"started with --partitions {partitions}: give the relay and every consumer of "
            f"the stream the same count (--partitions {found})"
        )
