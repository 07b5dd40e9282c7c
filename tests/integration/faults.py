"""What the fault-injection tests share: broker topology they read back raw, a writer of
events, worker processes to kill, and the checks of the relay's guarantees.

A ``Wire`` is uniquely named topology on a real broker that keeps everything a relay
publishes (a classic queue bound to ``#`` on its own exchange, or a JetStream stream),
and reads it back with the broker's own client, never through tidings, so what the
tests count is what the broker holds.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import pytest

import tidings
from tests.conftest import NATS_URL, RABBIT_URL
from tidings import Message
from tidings.testing.contract import Counted, Counter

from .brokers import run_nats, unique

RELAY = Path(__file__).with_name("relay_process.py")


@dataclass(frozen=True, kw_only=True)
class Nudge(Message):
    """A command the Writer sends beside its events (``messages=True``), on a key of its
    own per counter: the outbox's guarantees hold for messages too."""

    step: int


REGISTRY = [Counted, Nudge]  # what the Writer commits and sends
PATIENCE = 120.0  # seconds anything may take on a loaded two-core machine


class Arrival(NamedTuple):
    """One message as the broker holds it: which event of which aggregate."""

    event_id: str
    subject: str
    version: int


def arrival_of(body: bytes) -> Arrival:
    """The event a CloudEvent body carries."""
    document = json.loads(body)
    return Arrival(document["id"], document["subject"], document["aggregateversion"])


class Wire(Protocol):
    """Broker topology that keeps what is published, for a relay to publish to."""

    url: str

    def publisher_options(self) -> dict[str, Any]:
        """Options of ``open_publisher`` that aim at this topology."""

    def received(self) -> list[Arrival]:
        """Everything published so far, in the order the broker keeps it."""

    def cleanup(self) -> None:
        """Delete the topology."""


class RabbitWire:
    """A unique topic exchange and a durable classic queue bound to ``binding_key``.

    The queue keeps each copy a relay publishes, duplicates included, in publish order;
    what no queue is bound for is unroutable.
    """

    def __init__(self, url: str, binding_key: str = "#") -> None:
        self.url = url
        self.exchange = unique("tidings-faults-")
        self.queue = f"{self.exchange}-kept"
        self.queues = [self.queue]
        self._kept: list[Arrival] = []
        with pika_channel(self.url) as channel:
            channel.exchange_declare(self.exchange, exchange_type="topic", durable=True)
        self.bind(binding_key, self.queue)

    def bind(self, binding_key: str, queue: str | None = None) -> None:
        """Route ``binding_key`` to a durable queue (the kept one, or another made here)."""
        queue = queue or f"{self.exchange}-{len(self.queues)}"
        with pika_channel(self.url) as channel:
            channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "classic"})
            channel.queue_bind(queue, self.exchange, routing_key=binding_key)
        if queue not in self.queues:
            self.queues.append(queue)

    def publisher_options(self) -> dict[str, Any]:
        """The relay publishes to the test exchange."""
        return {"exchange": self.exchange}

    def received(self, queue: str | None = None) -> list[Arrival]:
        """Take every message off the kept queue (adding to what earlier calls took), or
        return what another of the wire's queues holds."""
        if queue is not None and queue != self.queue:
            return self._take(queue)
        self._kept += self._take(self.queue)
        return list(self._kept)

    def _take(self, queue: str) -> list[Arrival]:
        taken: list[Arrival] = []
        with pika_channel(self.url) as channel:
            channel.basic_qos(prefetch_count=1000)
            waiting = channel.queue_declare(queue, passive=True).method.message_count
            if not waiting:
                return taken
            for method, _properties, body in channel.consume(queue, inactivity_timeout=30):
                if method is None:
                    pytest.fail(f"{queue} said it held {waiting} messages; {len(taken)} came")
                taken.append(arrival_of(body))
                if len(taken) == waiting or len(taken) % 500 == 0:
                    channel.basic_ack(method.delivery_tag, multiple=True)
                if len(taken) == waiting:
                    break
            channel.cancel()
        return taken

    def cleanup(self) -> None:
        """Delete the queues and the exchange."""
        with pika_channel(self.url) as channel:
            for queue in self.queues:
                channel.queue_delete(queue)
            channel.exchange_delete(self.exchange)


@contextmanager
def pika_channel(url: str) -> Iterator[Any]:
    """A pika channel on a connection of its own, closed at the end of the block; while
    RabbitMQ is down (another run's outage test may stop it) it tries again."""
    import pika
    import pika.exceptions

    deadline = time.monotonic() + PATIENCE
    while True:
        try:
            connection = pika.BlockingConnection(pika.URLParameters(url))
            break
        except pika.exceptions.AMQPConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    try:
        yield connection.channel()
    finally:
        connection.close()


class NatsWire:
    """A unique JetStream stream; it keeps each event once (its id is the message id)."""

    def __init__(self, url: str, **stream_options: Any) -> None:
        self.url = url
        self.stream = unique("TIDINGS_FAULTS_")
        self.prefix = self.stream.lower()
        self.options = stream_options

        async def create(js: Any) -> None:
            await js.add_stream(name=self.stream, subjects=[f"{self.prefix}.>"], **self.options)

        run_nats(url, create)

    def publisher_options(self) -> dict[str, Any]:
        """The relay publishes to the test stream, which it must not create itself."""
        return {"stream": self.stream, "subject_prefix": self.prefix, "ensure_stream": False}

    def received(self) -> list[Arrival]:
        """Every message in the stream, in stream sequence order."""
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        bodies: dict[int, bytes] = {}

        async def read(js: Any) -> None:
            total = (await js.stream_info(self.stream)).state.messages
            config = ConsumerConfig(
                ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, inactive_threshold=60
            )
            pull = await js.pull_subscribe(f"{self.prefix}.>", stream=self.stream, config=config)
            while len(bodies) < total:
                for message in await pull.fetch(min(1000, total - len(bodies)), timeout=30):
                    bodies[message.metadata.sequence.stream] = message.data
            await pull.unsubscribe()

        run_nats(self.url, read)
        return [arrival_of(bodies[sequence]) for sequence in sorted(bodies)]

    def cleanup(self) -> None:
        """Delete the stream."""

        async def delete(js: Any) -> None:
            await js.delete_stream(self.stream)

        run_nats(self.url, delete)


def open_wire(kind: str, request: pytest.FixtureRequest) -> Wire:
    """A fresh wire on RabbitMQ or NATS (the fixture of that broker checks it is up)."""
    if kind == "rabbitmq":
        return RabbitWire(request.getfixturevalue("rabbitmq_url"))
    return NatsWire(request.getfixturevalue("nats_url"))


class Writer:
    """Commits Counted events on a fixed set of counters, a few counters per transaction,
    so a batch holds several versions of one aggregate and an aggregate spans batches."""

    def __init__(
        self, store: tidings.Store, aggregates: int, seed: int, *, messages: bool = False
    ) -> None:
        self.store = store
        self.rng = random.Random(seed)
        self.counters = [Counter(f"agg-{uuid.uuid4().hex[:10]}") for _ in range(aggregates)]
        self.written = 0
        self.messages = messages
        self.sent = 0

    def write(self, events: int, per_commit: int = 10, pause: float = 0.0) -> None:
        """Commit ``events`` events, ``per_commit`` at a time, up to ``pause`` s apart."""
        left = events
        while left > 0:
            chosen = self.rng.sample(self.counters, self.rng.randint(1, 4))
            count = min(per_commit, left)
            for i in range(count):
                chosen[i % len(chosen)].increment()
            with self.store.unit_of_work() as uow:
                uow.track(*chosen)
                if self.messages:  # one command per commit, keyed by its first counter
                    uow.send(Nudge(step=self.sent), key=f"{chosen[0].id}.nudges")
            self.sent += 1 if self.messages else 0
            left -= count
            self.written += count
            if pause:
                time.sleep(self.rng.uniform(0, pause))


def committed(store: tidings.Store) -> dict[str, Arrival]:
    """Every event in the store's log, by id (a plain SELECT, not the gap-aware reader)."""
    table = store.database.tables["events"]  # type: ignore[attr-defined]
    with store.unit_of_work() as uow:
        rows = uow.execute(f"SELECT event_id, stream_id, version FROM {table}").fetchall()
    return {row[0]: Arrival(row[0], row[1], int(row[2])) for row in rows}


def sent_messages(store: tidings.Store) -> dict[str, Arrival]:
    """Every Nudge the Writer sent (its outbox rows), by id."""
    table = store.database.tables["outbox"]  # type: ignore[attr-defined]
    with store.unit_of_work() as uow:
        rows = uow.execute(
            f"SELECT event_id, aggregate_id, aggregate_version FROM {table} "
            "WHERE event_type = 'Nudge'"
        ).fetchall()
    return {row[0]: Arrival(row[0], row[1], int(row[2])) for row in rows}


def outbox_counts(store: tidings.Store) -> tuple[int, int]:
    """(published, unpublished) rows in the store's outbox."""
    table = store.database.tables["outbox"]  # type: ignore[attr-defined]
    with store.unit_of_work() as uow:
        row = uow.execute(
            f"SELECT count(*) FILTER (WHERE published), count(*) FILTER (WHERE NOT published) "
            f"FROM {table}"
        ).fetchone()
    return int(row[0]), int(row[1])


def assert_in_order_per_aggregate(arrivals: Iterable[Arrival]) -> dict[str, int]:
    """Per aggregate, first arrivals come in version order and no version comes before
    its predecessor came at least once; return the highest version of each aggregate."""
    top: dict[str, int] = defaultdict(int)
    for arrival in arrivals:
        highest = top[arrival.subject]
        assert arrival.version <= highest + 1, (
            f"{arrival.subject} v{arrival.version} arrived before v{highest + 1}"
        )
        top[arrival.subject] = max(highest, arrival.version)
    return dict(top)


def assert_each_committed_event_arrived(
    arrivals: list[Arrival], events: dict[str, Arrival]
) -> None:
    """At least once, nothing else, and each copy matches the committed event."""
    assert {a.event_id for a in arrivals} == set(events), "an event is missing or unknown"
    assert all(events[a.event_id] == a for a in arrivals), "a message differs from its event"
    highest: dict[str, int] = defaultdict(int)
    for event in events.values():
        highest[event.subject] = max(highest[event.subject], event.version)
    assert assert_in_order_per_aggregate(arrivals) == highest


def to_be_killed() -> dict[str, str]:
    """The environment for a process the test will SIGKILL: without coverage measurement,
    which would only slow it down, as a killed process never writes its coverage data."""
    return {
        name: value
        for name, value in os.environ.items()
        if name not in ("COVERAGE_PROCESS_CONFIG", "COVERAGE_PROCESS_START")
    }


def start_relay(
    store_url: str,
    schema: str,
    wire: Wire,
    log: Path,
    *,
    record: Path | None = None,
    killed: bool = False,
    **relay_options: Any,
) -> subprocess.Popen[bytes]:
    """A relay process from the PostgreSQL outbox to ``wire``; its output goes to ``log``
    (``killed``: the test will SIGKILL it)."""
    config = {
        "db": store_url,
        "schema": schema,
        "broker": wire.url,
        "broker_options": wire.publisher_options(),
        "relay_options": relay_options,
        "record": str(record) if record else None,
    }
    with log.open("ab") as output:
        return subprocess.Popen(
            [sys.executable, str(RELAY), json.dumps(config)],
            stdout=output,
            stderr=output,
            env=to_be_killed() if killed else None,
        )


def wait_until(
    check: Callable[[], bool],
    what: str,
    *,
    timeout: float = PATIENCE,
    alive: Iterable[subprocess.Popen[bytes]] = (),
    log: Path | None = None,
) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` on timeout or if a process died."""
    watched = list(alive)
    deadline = time.monotonic() + timeout
    while not check():
        for process in watched:
            if process.poll() is not None:
                output = log.read_text(errors="replace")[-3000:] if log else ""
                pytest.fail(f"a worker exited ({process.returncode}) before {what}\n{output}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.02)


def kill_mid_work(
    worker: subprocess.Popen[bytes],
    progress: Callable[[], int],
    before: int,
    what: str,
    *,
    rng: random.Random,
    most: float,
    log: Path,
) -> None:
    """Once ``progress()`` has moved past ``before`` (the worker is doing ``what``), wait a
    random moment of up to ``most`` seconds, SIGKILL the worker and reap it."""
    wait_until(lambda: progress() > before, what, alive=[worker], log=log)
    time.sleep(rng.uniform(0.0, most))
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()


def stop(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM, then the exit code (the worker finishes its batch first)."""
    process.terminate()
    return process.wait(timeout=PATIENCE)


def rabbitmq_serves(url: str = RABBIT_URL) -> bool:
    """True once RabbitMQ accepts a connection and opens a channel."""
    import pika
    import pika.exceptions

    try:
        connection = pika.BlockingConnection(pika.URLParameters(url))
    except pika.exceptions.AMQPError:
        return False
    try:
        connection.channel()
        return True
    except pika.exceptions.AMQPError:
        return False
    finally:
        if connection.is_open:
            connection.close()


def jetstream_serves(url: str = NATS_URL) -> bool:
    """True once NATS accepts a connection and JetStream answers."""

    async def ask() -> bool:
        import nats

        try:
            client = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
        except Exception:  # any failure to connect means: not yet
            return False
        try:
            await client.jetstream().account_info()
            return True
        except Exception:  # JetStream still starting
            return False
        finally:
            await client.close()

    return asyncio.run(ask())
