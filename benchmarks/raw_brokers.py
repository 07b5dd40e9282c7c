"""Raw broker client limits beside tidings' adapters, measured in one run on this machine.

    .venv/bin/python benchmarks/raw_brokers.py [--scale 1.0]

Every figure is messages per second with the same CloudEvents body (about 330 bytes),
on fresh, uniquely named streams, exchanges and queues that are deleted afterwards:

- NATS JetStream publish: nats-py ``publish_async`` with async acks, and awaiting each
  ack; ours: ``NatsPublisher.publish`` in batches of 1,000 (as the relay sends them) and
  of 1.
- RabbitMQ publish with confirms: aio-pika and pika (``SelectConnection``) with 1,000 in
  flight, and pika one at a time; ours: ``RabbitPublisher.publish`` (pika, in the caller's
  thread) in batches of 1,000 and of 1.
- Pull-consume with acks: nats-py ``fetch`` of 500 and an ack each; pika ``basic_consume``
  with a prefetch and an ack each; ours: ``fetch(500)`` then ``ack(batch)``.

Not a test: nothing is asserted. Needs the local RabbitMQ and NATS servers.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aio_pika
import nats
import pika

from tidings.adapters.nats import NatsPublisher, NatsSubscription
from tidings.adapters.rabbitmq import RabbitPublisher, RabbitSubscription
from tidings.ports import OutgoingMessage
from tidings.records import EventRecord
from tidings.serialization.cloudevents import CONTENT_TYPE, to_message

AMQP = "amqp://guest:guest@127.0.0.1:5672/"
NATS = "nats://127.0.0.1:4222"


def messages(count: int) -> list[OutgoingMessage]:
    """``count`` OrderPlaced CloudEvents over 100 aggregates."""
    now = datetime.now(UTC)
    return [
        to_message(
            EventRecord(
                event_id=str(uuid.uuid4()),
                stream_id=f"order-{i % 100}",
                version=i // 100 + 1,
                event_type="order.placed",
                schema_version=1,
                occurred_at=now,
                data=b'{"customer_id":"alice@example.com","total_cents":3900,"lines":3}',
            ),
            "orders",
        )
        for i in range(count)
    ]


def rate(count: int, run: Callable[[], object]) -> float:
    """Messages per second of ``run()`` handling ``count`` messages."""
    start = time.perf_counter()
    run()
    return count / (time.perf_counter() - start)


def batches(items: list[OutgoingMessage], size: int) -> list[list[OutgoingMessage]]:
    """``items`` cut into lists of ``size``."""
    return [items[i : i + size] for i in range(0, len(items), size)]


# ---- NATS -----------------------------------------------------------------------------


async def nats_admin(work: Callable[..., object]) -> None:
    """Run ``work(js)`` on a fresh connection."""
    client = await nats.connect(NATS)
    try:
        await work(client.jetstream())  # type: ignore[misc]
    finally:
        await client.close()


def new_stream() -> tuple[str, str]:
    """A fresh stream and its subject prefix."""
    name = f"BENCH_{uuid.uuid4().hex[:8]}"

    async def create(js: nats.js.JetStreamContext) -> None:
        await js.add_stream(name=name, subjects=[f"{name.lower()}.>"])

    asyncio.run(nats_admin(create))
    return name, name.lower()


def drop_stream(name: str) -> None:
    """Delete a stream."""

    async def delete(js: nats.js.JetStreamContext) -> None:
        await js.delete_stream(name)

    asyncio.run(nats_admin(delete))


def raw_nats_publish(
    prefix: str, batch: list[OutgoingMessage], each: bool, msg_id: bool = True
) -> None:
    """nats-py: publish with async acks, or awaiting each ack; with Nats-Msg-Id or not."""

    async def main() -> None:
        client = await nats.connect(NATS)
        js = client.jetstream()
        acks = []
        for m in batch:
            subject = f"{prefix}.{m.routing_key}"
            headers = {"Nats-Msg-Id": m.message_id} if msg_id else None
            if each:
                await js.publish(subject, m.body, headers=headers)
            else:
                acks.append(await js.publish_async(subject, m.body, headers=headers))
        await asyncio.gather(*acks)
        await client.close()

    asyncio.run(main())


def nats_round_trips(
    prefix: str, batch: list[OutgoingMessage], per_second: float = 0.0
) -> list[float]:
    """nats-py: seconds from each publish to its JetStream ack, one message at a time (at
    most ``per_second`` of them a second, if given)."""
    taken: list[float] = []

    async def main() -> None:
        client = await nats.connect(NATS)
        js = client.jetstream()
        begin = time.perf_counter()
        for i, m in enumerate(batch):
            if per_second:
                await asyncio.sleep(max(0.0, begin + i / per_second - time.perf_counter()))
            start = time.perf_counter()
            await js.publish(
                f"{prefix}.{m.routing_key}", m.body, headers={"Nats-Msg-Id": m.message_id}
            )
            taken.append(time.perf_counter() - start)
        await client.close()

    asyncio.run(main())
    return taken


def pika_round_trips(
    exchange: str, batch: list[OutgoingMessage], per_second: float = 0.0
) -> list[float]:
    """pika: seconds from each persistent publish to its confirm, one message at a time (at
    most ``per_second`` of them a second, if given)."""
    connection = pika.BlockingConnection(pika.URLParameters(AMQP))
    channel = connection.channel()
    channel.confirm_delivery()
    taken = []
    begin = time.perf_counter()
    for i, m in enumerate(batch):
        if per_second:
            time.sleep(max(0.0, begin + i / per_second - time.perf_counter()))
        properties = pika.BasicProperties(
            content_type=CONTENT_TYPE, delivery_mode=2, message_id=m.message_id
        )
        start = time.perf_counter()
        channel.basic_publish(exchange, m.routing_key, m.body, properties, mandatory=True)
        taken.append(time.perf_counter() - start)
    connection.close()
    return taken


def raw_nats_consume(stream: str, prefix: str, count: int) -> None:
    """nats-py: durable pull consumer, fetch 500, ack each."""

    async def main() -> None:
        client = await nats.connect(NATS)
        pull = await client.jetstream().pull_subscribe(f"{prefix}.>", "raw", stream=stream)
        seen = 0
        while seen < count:
            for msg in await pull.fetch(500, timeout=5):
                await msg.ack()
                seen += 1
        await client.flush()
        await client.close()

    asyncio.run(main())


NOTES: list[str] = []


def bench_nats(scale: float) -> list[tuple[str, float, float]]:
    """The NATS rows of the table."""
    n, n_each = int(50_000 * scale), int(5_000 * scale)
    rows = []
    stream, prefix = new_stream()
    try:
        batch = messages(n)
        raw = rate(n, lambda: raw_nats_publish(prefix, batch, each=False))
        raw_consume = rate(n, lambda: raw_nats_consume(stream, prefix, n))
        publisher = NatsPublisher(NATS, stream=stream, subject_prefix=prefix)
        batch = messages(n)
        ours = rate(n, lambda: [publisher.publish(b) for b in batches(batch, 1000)])
        subscription = NatsSubscription(NATS, "ours", stream=stream, subject_prefix=prefix)
        ours_consume = rate(2 * n, lambda: consume(subscription, 2 * n))
        rows.append(("NATS publish, async acks (ours: batches of 1,000)", raw, ours))
        batch = messages(n_each)
        raw_each = rate(n_each, lambda: raw_nats_publish(prefix, batch, each=True))
        batch = messages(n_each)
        ours_each = rate(n_each, lambda: [publisher.publish([m]) for m in batch])
        rows.append(("NATS publish, awaiting each ack (ours: batches of 1)", raw_each, ours_each))
        rows.append(("NATS pull-consume + ack, batches of 500", raw_consume, ours_consume))
        batch = messages(n)
        bare = rate(n, lambda: raw_nats_publish(prefix, batch, each=False, msg_id=False))
        NOTES.append(f"raw NATS publish with async acks and no Nats-Msg-Id: {bare:,.0f} msgs/s")
        publisher.close()
        subscription.close()
    finally:
        drop_stream(stream)
    return rows


# ---- RabbitMQ -------------------------------------------------------------------------


def declare(exchange: str, queue: str) -> None:
    """A durable topic exchange and a quorum queue bound with '#'."""
    connection = pika.BlockingConnection(pika.URLParameters(AMQP))
    channel = connection.channel()
    channel.exchange_declare(exchange, "topic", durable=True)
    channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    channel.queue_bind(queue, exchange, "#")
    connection.close()


def undeclare(exchange: str, queue: str) -> None:
    """Delete what ``declare`` made."""
    connection = pika.BlockingConnection(pika.URLParameters(AMQP))
    channel = connection.channel()
    channel.queue_delete(queue)
    channel.exchange_delete(exchange)
    connection.close()


def raw_aio_pika_publish(exchange: str, batch: list[OutgoingMessage]) -> None:
    """aio-pika with confirms, 1,000 in flight."""

    async def main() -> None:
        connection = await aio_pika.connect(AMQP)
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.get_exchange(exchange)
        window = asyncio.Semaphore(1000)

        async def one(m: OutgoingMessage) -> None:
            async with window:
                await target.publish(
                    aio_pika.Message(
                        m.body,
                        content_type=CONTENT_TYPE,
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        message_id=m.message_id,
                    ),
                    m.routing_key,
                )

        await asyncio.gather(*map(one, batch))
        await connection.close()

    asyncio.run(main())


def raw_pika_pipelined(
    exchange: str, batch: list[OutgoingMessage], window: int = 1000, *, waves: bool = False
) -> None:
    """pika's SelectConnection with confirms, ``window`` messages in flight: as many are
    sent as the window allows, and every confirm (``multiple`` or not) lets more go; with
    ``waves``, more go only once everything sent is confirmed."""
    sent = confirmed = 0

    def send_more(channel: Any) -> None:
        nonlocal sent
        while sent < len(batch) and sent - confirmed < window:
            m = batch[sent]
            properties = pika.BasicProperties(
                content_type=CONTENT_TYPE, delivery_mode=2, message_id=m.message_id
            )
            channel.basic_publish(exchange, m.routing_key, m.body, properties, mandatory=True)
            sent += 1

    def on_confirm(frame: Any) -> None:
        nonlocal confirmed
        confirmed = frame.method.delivery_tag  # tags count from 1; multiple covers all below
        if confirmed == len(batch):
            connection.close()
        elif not waves or confirmed == sent:
            send_more(channel_of[0])

    channel_of: list[Any] = []

    def on_channel(channel: Any) -> None:
        channel_of.append(channel)
        channel.confirm_delivery(on_confirm, callback=lambda _frame: send_more(channel))

    connection = pika.SelectConnection(
        pika.URLParameters(AMQP),
        on_open_callback=lambda c: c.channel(on_open_callback=on_channel),
        on_close_callback=lambda c, _reason: c.ioloop.stop(),
    )
    connection.ioloop.start()
    connection.ioloop.close()
    if confirmed != len(batch):
        raise RuntimeError(f"pika confirmed {confirmed} of {len(batch)} messages")


def raw_pika_waves(exchange: str, batch: list[OutgoingMessage], size: int) -> None:
    """pika's SelectConnection with confirms, in waves of ``size``: a wave is sent once
    every message of the last one is confirmed (one message per aggregate in flight,
    for ``size`` aggregates). The ceiling of a relay that keeps per-aggregate order by
    waiting, with nothing else to do."""
    raw_pika_pipelined(exchange, batch, size, waves=True)


def raw_nats_waves(prefix: str, batch: list[OutgoingMessage], size: int) -> None:
    """nats-py: publish ``size`` messages with async acks, await them all, then the next
    ``size`` (one message per aggregate in flight, for ``size`` aggregates)."""

    async def main() -> None:
        client = await nats.connect(NATS)
        js = client.jetstream()
        for start in range(0, len(batch), size):
            acks = [
                await js.publish_async(
                    f"{prefix}.{m.routing_key}", m.body, headers={"Nats-Msg-Id": m.message_id}
                )
                for m in batch[start : start + size]
            ]
            await asyncio.gather(*acks)
        await client.close()

    asyncio.run(main())


def raw_pika_publish(exchange: str, batch: list[OutgoingMessage]) -> None:
    """pika with confirms, one message at a time."""
    connection = pika.BlockingConnection(pika.URLParameters(AMQP))
    channel = connection.channel()
    channel.confirm_delivery()
    for m in batch:
        properties = pika.BasicProperties(
            content_type=CONTENT_TYPE, delivery_mode=2, message_id=m.message_id
        )
        channel.basic_publish(exchange, m.routing_key, m.body, properties, mandatory=True)
    connection.close()


def raw_pika_consume(queue: str, count: int) -> None:
    """pika: basic_consume with a prefetch of 500, manual ack each."""
    connection = pika.BlockingConnection(pika.URLParameters(AMQP))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=500)
    for seen, (method, _, _) in enumerate(channel.consume(queue, inactivity_timeout=5), 1):
        if method is None:
            break
        channel.basic_ack(method.delivery_tag)
        if seen >= count:
            break
    channel.cancel()
    connection.close()


def consume(subscription: RabbitSubscription | NatsSubscription, count: int) -> None:
    """Ours: fetch up to 500, ack the batch."""
    seen = 0
    while seen < count:
        # Never more than asked: the queue may hold messages for a later measurement.
        batch = subscription.fetch(min(500, count - seen), 5)
        if not batch:
            raise RuntimeError(f"the queue ran dry after {seen} of {count} messages")
        subscription.ack(batch)
        seen += len(batch)


def bench_rabbitmq(scale: float) -> list[tuple[str, float, float]]:
    """The RabbitMQ rows of the table."""
    n, n_each = int(20_000 * scale), int(3_000 * scale)
    exchange = f"bench-{uuid.uuid4().hex[:8]}"
    queue = f"{exchange}-q"
    declare(exchange, queue)
    rows = []
    try:
        batch = messages(n)
        raw = rate(n, lambda: raw_aio_pika_publish(exchange, batch))
        batch = messages(n)
        raw_pika = rate(n, lambda: raw_pika_pipelined(exchange, batch))
        raw_consume = rate(n, lambda: raw_pika_consume(queue, n))
        publisher = RabbitPublisher(AMQP, exchange=exchange)
        batch = messages(n)
        ours = rate(n, lambda: [publisher.publish(b) for b in batches(batch, 1000)])
        subscription = RabbitSubscription(AMQP, queue, exchange=exchange, prefetch=1000)
        ours_consume = rate(n, lambda: consume(subscription, n))
        batch = messages(n_each)
        raw_each = rate(n_each, lambda: raw_pika_publish(exchange, batch))
        batch = messages(n_each)
        ours_each = rate(n_each, lambda: [publisher.publish([m]) for m in batch])
        consume(subscription, n + 2 * n_each)
        rows += [
            ("RabbitMQ publish, confirms, 1,000 in flight (raw: aio-pika)", raw, ours),
            ("RabbitMQ publish, confirms, 1,000 in flight (raw: pika)", raw_pika, ours),
            ("RabbitMQ publish, confirms, one at a time (raw: pika)", raw_each, ours_each),
            ("RabbitMQ consume + manual ack (raw: pika, prefetch 500)", raw_consume, ours_consume),
        ]
        publisher.close()
        subscription.close()
    finally:
        undeclare(exchange, queue)
    return rows


def main() -> None:
    """Run every measurement and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply message counts")
    scale = parser.parse_args().scale
    rows = bench_nats(scale) + bench_rabbitmq(scale)
    width = max(len(name) for name, _, _ in rows)
    print(f"| {'measurement':<{width}} | raw msgs/s | ours msgs/s | ours/raw |")
    print(f"|{'-' * (width + 2)}|-----------:|------------:|---------:|")
    for name, raw, ours in rows:
        print(f"| {name:<{width}} | {raw:>10,.0f} | {ours:>11,.0f} | {ours / raw:>8.2f} |")
    for note in NOTES:
        print(f"\n{note}")


if __name__ == "__main__":
    main()
