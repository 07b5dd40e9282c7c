"""Uniquely named places on the local servers for one benchmark run, removed afterwards.

Other engineers run test suites on the same servers: every schema, stream, exchange and
queue a benchmark makes carries a random suffix, and each context manager here deletes
what it made, also when the run fails half-way.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import nats
import pika
import psycopg

PG_URL = os.environ.get("TIDINGS_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
AMQP = os.environ.get("TIDINGS_BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
NATS = os.environ.get("TIDINGS_BENCH_NATS", "nats://127.0.0.1:4222")


def unique(stem: str) -> str:
    """``stem`` with a random suffix: a name no other run uses."""
    return f"{stem}_{uuid.uuid4().hex[:8]}"


@contextmanager
def pg_schema() -> Iterator[str]:
    """A fresh PostgreSQL schema in the test database, dropped at the end."""
    name = unique("bench")
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    try:
        yield name
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


@contextmanager
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database (for handlers whose own tables are not schema-qualified);
    yields its URL and drops it at the end."""
    name = unique("tidings_bench")
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield PG_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextmanager
def sqlite_file() -> Iterator[str]:
    """An SQLite URL in a fresh temporary folder, removed at the end."""
    folder = tempfile.mkdtemp(prefix="tidings-bench-")
    try:
        yield f"sqlite:///{folder}/bench.db"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True)
class NatsPlace:
    """A JetStream stream and the subject prefix it stores (``<prefix>.>``)."""

    stream: str
    prefix: str


async def _jetstream(work: str, place: NatsPlace) -> None:
    client = await nats.connect(NATS)
    try:
        js = client.jetstream()
        if work == "add":
            await js.add_stream(name=place.stream, subjects=[f"{place.prefix}.>"])
        else:
            await js.delete_stream(place.stream)
    finally:
        await client.close()


@contextmanager
def nats_stream() -> Iterator[NatsPlace]:
    """A fresh JetStream stream on file storage, deleted at the end."""
    name = unique("BENCH")
    place = NatsPlace(name, name.lower())
    asyncio.run(_jetstream("add", place))
    try:
        yield place
    finally:
        asyncio.run(_jetstream("delete", place))


@dataclass(frozen=True)
class RabbitPlace:
    """A durable topic exchange and the quorum queues bound to it with ``#``."""

    exchange: str
    queues: tuple[str, ...]


def _channel() -> tuple[pika.BlockingConnection, object]:
    connection = pika.BlockingConnection(pika.URLParameters(AMQP))
    return connection, connection.channel()


def bind_queue(exchange: str, queue: str) -> None:
    """Declare a durable quorum queue bound to ``exchange`` with ``#``."""
    connection, channel = _channel()
    channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})  # type: ignore[attr-defined]
    channel.queue_bind(queue, exchange, "#")  # type: ignore[attr-defined]
    connection.close()


def purge_queue(queue: str) -> None:
    """Drop every message of ``queue``."""
    connection, channel = _channel()
    channel.queue_purge(queue)  # type: ignore[attr-defined]
    connection.close()


def delete_queues(queues: list[str]) -> None:
    """Delete queues (and their delay queues' leftovers are not ours to keep)."""
    connection, channel = _channel()
    for queue in queues:
        channel.queue_delete(queue)  # type: ignore[attr-defined]
    connection.close()


@contextmanager
def rabbit_exchange(queues: int = 1) -> Iterator[RabbitPlace]:
    """A fresh exchange with ``queues`` bound quorum queues, all deleted at the end.

    The relay publishes ``mandatory`` messages: a bound queue makes them routable, as in
    production, and its quorum-queue confirms are the ones a real deployment waits for.
    """
    exchange = unique("bench")
    names = tuple(f"{exchange}-q{i}" for i in range(queues))
    connection, channel = _channel()
    channel.exchange_declare(exchange, "topic", durable=True)  # type: ignore[attr-defined]
    connection.close()
    for queue in names:
        bind_queue(exchange, queue)
    try:
        yield RabbitPlace(exchange, names)
    finally:
        delete_queues(list(names))
        connection, channel = _channel()
        channel.exchange_delete(exchange)  # type: ignore[attr-defined]
        connection.close()
