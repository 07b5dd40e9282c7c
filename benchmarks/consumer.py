"""Consumer throughput with and without the inbox, beside the raw limits, in one run.

    make bench-consumer                   # or: .venv/bin/python benchmarks/consumer.py
    .venv/bin/python benchmarks/consumer.py --messages 20000 --runs 3

For each broker (NATS JetStream, RabbitMQ) and database (PostgreSQL, SQLite): a backlog
of ``--messages`` OrderPlaced CloudEvents (one order line each, as the relay publishes
them) is consumed by ``store.consumer(...)`` with its default options, pass after pass
(``run_once``), by the Inventory handler:

- **with the inbox**: the handler registered normally: its inbox row, its write and the
  status commit together (exactly once);
- **without the inbox**: the same handler registered ``idempotent=True`` (no inbox row,
  the spec's upsert alternative), everything else equal.

The handler is the shop's ``decrease_stock`` upsert (``tidings.examples.shop.inventory``)
without its ``CREATE TABLE IF NOT EXISTS``: the table is made once before the run.
Beside them, in the same run: the raw client's consume rate (nats-py pull ``fetch`` of
500 with an ack each; pika ``basic_consume`` with a prefetch of 500 and an ack each) and
the database's commit rate (the same upsert, one transaction each, psycopg 3 /
sqlite3 with ``synchronous=FULL``; ``synchronous_commit`` stays on).

Every configuration runs ``--runs`` times; tables show the median. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
import msgspec
import nats
import pika
import psycopg
import servers
from report import Series, load, per_second, table, verdict

import tidings
from tidings.adapters.nats import NatsSubscription
from tidings.adapters.rabbitmq import RabbitSubscription
from tidings.application.handling import Handlers
from tidings.application.unit_of_work import UnitOfWork
from tidings.examples.shop.inventory import OPENING_STOCK, STOCK_DDL
from tidings.examples.shop.orders import SHOP_EVENTS, Order, OrderPlaced
from tidings.ports import Subscription
from tidings.serialization.cloudevents import CONTENT_TYPE, to_message
from tidings.serialization.codec import JsonCodec
from tidings.serialization.registry import EventRegistry

TARGET_LOOP = 0.8  # with the inbox, over the hand-written loop on PostgreSQL
TARGET_COST = 0.30  # the inbox's time over the same handler without it
_decode = msgspec.json.decode
_encode = msgspec.json.encode
UPSERT = (
    "INSERT INTO shop_stock (sku, on_hand) VALUES ({p}, {p}) ON CONFLICT (sku) "
    "DO UPDATE SET on_hand = shop_stock.on_hand - {p}"
)


def decrease_stock(event: OrderPlaced, uow: UnitOfWork) -> None:
    """The shop's Inventory handler: take each line's quantity off its product's stock."""
    sql = UPSERT.format(p="?")  # the unit of work takes ? on every backend
    for line in event.lines:
        uow.execute(sql, (line.sku, OPENING_STOCK - line.quantity, line.quantity))


def handlers(inbox: bool) -> Handlers:
    """The handler behind the inbox, or the same one opted out of it."""
    registry = Handlers()
    registry.add(OrderPlaced, "inventory.decrease-stock", decrease_stock, idempotent=not inbox)
    return registry


def bodies(count: int, products: int = 100) -> list[tuple[str, bytes]]:
    """``count`` OrderPlaced CloudEvents over ``products`` products: (event id, body)."""
    codec = JsonCodec(EventRegistry(SHOP_EVENTS))
    made = []
    for i in range(count):
        order = Order(f"order-{i}", "alice@example.com")
        order.add_line(f"sku-{i % products}", 1, 3_900)
        order.place()
        record = codec.encode(order.pending_events[0])
        made.append((record.event_id, to_message(record, "shop").body))
    return made


# ---- filling the brokers with the raw clients ------------------------------------------


def fill_nats(place: servers.NatsPlace, messages: list[tuple[str, bytes]]) -> None:
    """Publish the messages to the stream with async acks."""

    async def main() -> None:
        client = await nats.connect(servers.NATS)
        js = client.jetstream()
        subject = f"{place.prefix}.OrderPlaced"
        acks = [
            await js.publish_async(subject, body, headers={"Nats-Msg-Id": event_id})
            for event_id, body in messages
        ]
        await asyncio.gather(*acks)
        await client.close()

    asyncio.run(main())


def fill_rabbit(exchange: str, messages: list[tuple[str, bytes]]) -> None:
    """Publish the messages with confirms, 1,000 in flight (to every bound queue)."""

    async def main() -> None:
        connection = await aio_pika.connect(servers.AMQP)
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.get_exchange(exchange)
        window = asyncio.Semaphore(1000)

        async def one(event_id: str, body: bytes) -> None:
            async with window:
                message = aio_pika.Message(
                    body,
                    content_type=CONTENT_TYPE,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    message_id=event_id,
                )
                await target.publish(message, "OrderPlaced")

        await asyncio.gather(*(one(i, b) for i, b in messages))
        await connection.close()

    asyncio.run(main())


# ---- the raw limits ------------------------------------------------------------------


def raw_nats_consume(
    place: servers.NatsPlace, count: int, handle: Callable[[list[bytes]], None] | None = None
) -> float:
    """nats-py: a new durable pull consumer, fetch 500, ``handle`` the batch's bodies (when
    given), then an ack each (written out without waiting); messages/s."""

    async def main() -> float:
        client = await nats.connect(servers.NATS)
        pull = await client.jetstream().pull_subscribe(
            f"{place.prefix}.>", servers.unique("raw"), stream=place.stream
        )
        start, seen = time.perf_counter(), 0
        while seen < count:
            batch = await pull.fetch(500, timeout=5)
            if handle is not None:
                handle([msg.data for msg in batch])
            for msg in batch:
                await msg.ack()
            seen += len(batch)
        await client.flush()
        elapsed = time.perf_counter() - start
        await pull.unsubscribe()
        await client.close()
        return count / elapsed

    return asyncio.run(main())


def raw_pika_consume(queue: str, count: int) -> float:
    """pika: basic_consume with a prefetch of 500, an ack each; messages/s."""
    connection = pika.BlockingConnection(pika.URLParameters(servers.AMQP))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=500)
    start, seen = time.perf_counter(), 0
    for method, _, _ in channel.consume(queue, inactivity_timeout=10):
        if method is None:
            break
        channel.basic_ack(method.delivery_tag)
        seen += 1
        if seen >= count:
            break
    elapsed = time.perf_counter() - start
    channel.cancel()
    connection.close()
    assert seen == count, f"raw consumer saw {seen} of {count}"
    return count / elapsed


def commit_rate(db: str, url: str, count: int = 2_000) -> float:
    """Commits/s of the handler's upsert, one transaction each, with the bare driver."""
    if db == "postgresql":
        with psycopg.connect(url, autocommit=True) as conn:
            sql = UPSERT.format(p="%s")
            start = time.perf_counter()
            for i in range(count):
                with conn.transaction():
                    conn.execute(sql, (f"sku-{i % 100}", 99, 1))
            return count / (time.perf_counter() - start)
    conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    sql = UPSERT.format(p="?")
    start = time.perf_counter()
    for i in range(count):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(sql, (f"sku-{i % 100}", 99, 1))
        conn.execute("COMMIT")
    rate = count / (time.perf_counter() - start)
    conn.close()
    return rate


# ---- the hand-written loops: the same work with the raw clients ----------------------

LOOP_INBOX = "loop_inbox"
LOOP_INBOX_INSERT = (
    f"INSERT INTO {LOOP_INBOX} (event_id, handler_name, event_type, aggregate_id, "
    "aggregate_version, status, payload, attempts, processed_at) SELECT e, "
    "'inventory.decrease-stock', t, a, v, 'processed', p::jsonb, 1, now() "
    "FROM unnest(%s::text[], %s::text[], %s::text[], %s::int[], %s::text[]) AS x(e, t, a, v, p) "
    "ON CONFLICT (event_id, handler_name) DO NOTHING RETURNING event_id"
)


def make_loop_inbox(pg_url: str, inbox_table: str) -> None:
    """The loops' own inbox table, shaped as tidings' (same columns, key and index)."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {LOOP_INBOX} (LIKE {inbox_table} INCLUDING ALL)")


def loop_batch(conn: psycopg.Connection[Any], bodies: list[bytes]) -> None:
    """One batch of the hand-written loop, in one transaction: read each CloudEvent, insert
    every (event, handler) inbox row in one statement, run the handler's upsert for each
    fresh event (pipelined by ``executemany``), commit."""
    events = [_decode(body) for body in bodies]
    upsert = UPSERT.format(p="%s")
    with conn.transaction():
        fresh = {
            row[0]
            for row in conn.execute(
                LOOP_INBOX_INSERT,
                (
                    [e["id"] for e in events],
                    [e["type"] for e in events],
                    [e["subject"] for e in events],
                    [e["aggregateversion"] for e in events],
                    [_encode(e["data"]).decode() for e in events],
                ),
            ).fetchall()
        }
        rows = [
            (line["sku"], OPENING_STOCK - line["quantity"], line["quantity"])
            for e in events
            if e["id"] in fresh
            for line in e["data"]["lines"]
        ]
        if rows:
            conn.cursor().executemany(upsert, rows)


def loop_nats_pg(place: servers.NatsPlace, pg_url: str, count: int) -> float:
    """nats-py: fetch 500, one PostgreSQL transaction per batch (``loop_batch``), then
    an ack each (written out without waiting); messages/s."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        return raw_nats_consume(place, count, lambda batch: loop_batch(conn, batch))


def loop_pika_pg(queue: str, pg_url: str, count: int) -> float:
    """pika: basic_consume with a prefetch of 1,000 (tidings' default), up to 500 of what
    has arrived per batch, one PostgreSQL transaction (``loop_batch``), then one ack with
    ``multiple=True``; messages/s."""
    connection = pika.BlockingConnection(pika.URLParameters(servers.AMQP))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=1000)
    arrived: list[tuple[int, bytes]] = []
    channel.basic_consume(queue, lambda _c, m, _p, body: arrived.append((m.delivery_tag, body)))
    with psycopg.connect(pg_url, autocommit=True) as conn:
        start, seen = time.perf_counter(), 0
        while seen < count:
            connection.process_data_events(time_limit=None if not arrived else 0)
            batch, arrived[:500] = arrived[:500], []
            if not batch:
                continue
            loop_batch(conn, [body for _, body in batch])
            channel.basic_ack(batch[-1][0], multiple=True)
            seen += len(batch)
        elapsed = time.perf_counter() - start
    connection.close()
    return count / elapsed


# ---- tidings -------------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    """Where one run reads and writes."""

    pg_url: str
    sqlite_url: str
    nats: servers.NatsPlace
    rabbit: servers.RabbitPlace

    def url(self, db: str) -> str:
        """The URL of ``postgresql`` or ``sqlite``."""
        return self.pg_url if db == "postgresql" else self.sqlite_url


def open_store(setup: Setup, db: str) -> tidings.Store:
    """The Inventory context's store, its stock table made and emptied, its inbox empty."""
    store = tidings.connect(setup.url(db), registry=EventRegistry(SHOP_EVENTS))
    with store.database.transaction() as tx:
        tx.execute(STOCK_DDL)
    return store


def consume(store: tidings.Store, subscription: Subscription, inbox: bool, count: int) -> float:
    """Messages/s of one consumer taking the whole backlog through the handler."""
    consumer = store.consumer(subscription, handlers(inbox))
    start = time.perf_counter()
    while consumer.stats.received < count:
        if consumer.run_once() == 0:
            raise RuntimeError(f"the backlog ran dry at {consumer.stats.received} of {count}")
    elapsed = time.perf_counter() - start
    assert consumer.stats.applied == count, f"applied {consumer.stats.applied} of {count}"
    return count / elapsed


def subscription_of(broker: str, setup: Setup, queue: str) -> Subscription:
    """A tidings subscription reading the run's stream (a new durable) or ``queue``."""
    if broker == "nats":
        return NatsSubscription(
            servers.NATS,
            servers.unique("bench"),
            stream=setup.nats.stream,
            subject_prefix=setup.nats.prefix,
        )
    return RabbitSubscription(servers.AMQP, queue, exchange=setup.rabbit.exchange)


CONFIGS = [(db, inbox) for db in ("postgresql", "sqlite") for inbox in (True, False)]


def measure(
    setup: Setup, count: int, runs: int, configs: list[tuple[str, bool]]
) -> dict[tuple[str, ...], Series]:
    """Every series of the tables, by (broker, what[, db, inbox])."""
    found: dict[tuple[str, ...], Series] = {}

    def add(key: tuple[str, ...], value: float) -> None:
        found.setdefault(key, Series(" ".join(key))).add(value)

    with ExitStack() as stores:
        store = {db: stores.enter_context(open_store(setup, db)) for db in ("postgresql", "sqlite")}
        inbox_table = store["postgresql"].database.tables["inbox"]  # type: ignore[attr-defined]
        make_loop_inbox(setup.pg_url, inbox_table)
        loop_queue, raw_queue, *queues = setup.rabbit.queues
        for run in range(runs):
            messages = bodies(count)
            fill_nats(setup.nats, messages)
            add(("nats", "raw"), raw_nats_consume(setup.nats, count))
            reset_loop(setup.pg_url)
            add(("nats", "loop"), loop_nats_pg(setup.nats, setup.pg_url, count))
            for db, inbox in configs:
                reset(store[db])
                subscription = subscription_of("nats", setup, "")
                try:
                    add(("nats", db, str(inbox)), consume(store[db], subscription, inbox, count))
                finally:
                    subscription.close()
            fill_rabbit(setup.rabbit.exchange, messages)
            add(("rabbitmq", "raw"), raw_pika_consume(raw_queue, count))
            reset_loop(setup.pg_url)
            add(("rabbitmq", "loop"), loop_pika_pg(loop_queue, setup.pg_url, count))
            for queue, (db, inbox) in zip(queues, configs, strict=False):
                reset(store[db])
                subscription = subscription_of("rabbitmq", setup, queue)
                try:
                    add(
                        ("rabbitmq", db, str(inbox)), consume(store[db], subscription, inbox, count)
                    )
                finally:
                    subscription.close()
            for db in dict.fromkeys(db for db, _ in configs):
                add(("commit", db), commit_rate(db, setup.url(db)))
            print(f"  run {run + 1}: {load()}")
            for key, series in found.items():
                print(f"    {' '.join(key)}: {series.spread()}")
    return found


def reset_loop(pg_url: str) -> None:
    """Empty the loop's inbox and the stock table before a loop runs."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"DELETE FROM {LOOP_INBOX}")
        conn.execute("DELETE FROM shop_stock")


def reset(store: tidings.Store) -> None:
    """Empty the inbox and the stock table before a configuration runs."""
    with store.database.transaction() as tx:
        tx.execute("DELETE FROM shop_stock")
        tx.execute(f"DELETE FROM {store.database.tables['inbox']}")  # type: ignore[attr-defined]


def print_table(found: dict[tuple[str, ...], Series], configs: list[tuple[str, bool]]) -> None:
    """The README's consumer table: absolute figures, ratios and the targets."""
    rows = []
    for broker in ("nats", "rabbitmq"):
        raw, loop = found[(broker, "raw")].median, found[(broker, "loop")].median
        for db in dict.fromkeys(db for db, _ in configs):
            with_inbox = found[(broker, db, "True")].median
            without = found[(broker, db, "False")].median
            commits = found[("commit", db)].median
            cost = without / with_inbox - 1  # extra time per message, relative
            targets = [f"cost <= 30%: {verdict(cost <= TARGET_COST)}"]
            by_loop = "-"
            if db == "postgresql":
                by_loop = f"{with_inbox / loop:.2f}"
                targets.insert(0, f">= 0.8x loop: {verdict(with_inbox / loop >= TARGET_LOOP)}")
            rows.append(
                [
                    f"{broker} -> {db}",
                    per_second(with_inbox),
                    per_second(without),
                    f"{cost:+.0%}",
                    per_second(loop) if db == "postgresql" else "-",
                    by_loop,
                    per_second(raw),
                    f"{with_inbox / raw:.2f}",
                    per_second(commits),
                    "; ".join(targets),
                ]
            )
    header = [
        "path",
        "with inbox",
        "without inbox",
        "inbox cost",
        "hand-written loop",
        "÷ loop",
        "raw consume",
        "÷ raw",
        "DB commits/s",
        "targets",
    ]
    print("\nConsumer throughput, messages/s (median of runs)\n")
    print(table(header, rows))


def main() -> None:
    """Measure everything and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--postgres-only", action="store_true", help="skip the SQLite configurations"
    )
    args = parser.parse_args()
    configs = [c for c in CONFIGS if c[0] == "postgresql" or not args.postgres_only]
    print(f"tidings consumer benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {load()}")
    with ExitStack() as stack:
        setup = Setup(
            stack.enter_context(servers.pg_database()),
            stack.enter_context(servers.sqlite_file()),
            stack.enter_context(servers.nats_stream()),
            stack.enter_context(servers.rabbit_exchange(queues=2 + len(configs))),
        )
        found = measure(setup, args.messages, args.runs, configs)
    print_table(found, configs)
    print(f"\nfinished {datetime.now(UTC):%H:%M} UTC, {load()}")


if __name__ == "__main__":
    main()
