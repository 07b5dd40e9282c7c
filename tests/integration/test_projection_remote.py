"""Read-your-writes across services, over RabbitMQ and NATS JetStream: service A (SQLite,
outbox and relay) writes; service B (PostgreSQL) keeps a document-shaped read model of
A's counters (a JSONB row each, the spec's pattern 2) through its consumer and inbox."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

import tidings
from tests.contract.stream_kit import (
    SOURCE,
    Watched,
    relay_all,
    totals_projection,
    wait_while_held,
    write,
)
from tests.integration.brokers import Harness, NatsHarness, RabbitHarness
from tests.integration.cli import run_cli
from tidings.adapters.memory_broker import MemoryPublisher, MemoryQueue, MemorySubscription
from tidings.adapters.nats import NatsSubscription
from tidings.adapters.rabbitmq import RabbitSubscription
from tidings.application.projections import Projection, SourceToken
from tidings.ports import IncomingMessage, Subscription
from tidings.serialization.cloudevents import to_message
from tidings.testing.contract import Counted, Counter, new_id

NAME = "counter-documents"


class EveryTypeHarness(RabbitHarness):
    """The RabbitMQ harness with its queue bound for every event type."""

    def subscription(self) -> RabbitSubscription:
        """A consumer of the test queue, bound with '#'."""
        subscription = RabbitSubscription(
            self.url, self.queue, exchange=self.exchange, binding_keys=["#"]
        )
        self.subscriptions.append(subscription)
        self._keep(subscription)
        return subscription


class QuickNatsHarness(NatsHarness):
    """The NATS harness whose durable consumer redelivers after 2 s, not 30."""

    def subscription(self) -> NatsSubscription:
        """A subscriber of the test stream's durable consumer."""
        subscription = NatsSubscription(
            self.url, self.durable, stream=self.stream, subject_prefix=self.prefix, ack_wait=2.0
        )
        self._keep(subscription)
        return subscription


@pytest.fixture(
    params=[
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
        pytest.param("nats", marks=pytest.mark.nats),
    ]
)
def broker(request: pytest.FixtureRequest) -> Iterator[Harness]:
    """Fresh topology on each real broker, removed afterwards."""
    harness: Harness
    if request.param == "rabbitmq":
        harness = EveryTypeHarness(request.getfixturevalue("rabbitmq_url"))
    else:
        harness = QuickNatsHarness(request.getfixturevalue("nats_url"))
    try:
        yield harness
    finally:
        harness.cleanup()


@pytest.fixture
def services(tmp_path: Path, pg_url: str, schema: str) -> Iterator[tuple[tidings.Store, ...]]:
    """Service A on SQLite with an outbox; service B on PostgreSQL."""
    a = tidings.connect(
        f"sqlite:///{tmp_path / 'a.db'}",
        registry=tidings.EventRegistry([Counted]),
        outbox=True,
        source=SOURCE,
    )
    b = tidings.connect(pg_url, schema=schema)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def documents(table: str) -> Projection:
    """One JSONB document per counter: its total and the versions in the order applied."""

    def counted(uow: Any, event: Counted) -> None:
        uow.execute(
            f"INSERT INTO {table} (id, doc) VALUES (:id, jsonb_build_object('total',"
            " CAST(:step AS integer), 'versions', jsonb_build_array(CAST(:v AS integer))))"
            f" ON CONFLICT (id) DO UPDATE SET doc = jsonb_build_object('total',"
            f" CAST({table}.doc->>'total' AS integer) + CAST(:step AS integer), 'versions',"
            f" ({table}.doc->'versions') || to_jsonb(CAST(:v AS integer)))",
            {"id": event.aggregate_id, "step": event.step, "v": event.aggregate_version},
        )

    return Projection(
        NAME,
        {Counted: counted},
        schema=[f"CREATE TABLE IF NOT EXISTS {table} (id TEXT PRIMARY KEY, doc JSONB NOT NULL)"],
    )


def read(store: tidings.Store, table: str) -> dict[str, Any]:
    """The documents, by counter id."""
    with store.unit_of_work() as uow:
        rows = uow.execute(f"SELECT id, doc::text FROM {table}").fetchall()
    return {r[0]: json.loads(r[1]) for r in rows}


def consume(consumer: Any, count: int, what: str = "applied", timeout: float = 30.0) -> None:
    """Run the consumer until ``count`` messages were ``what`` (a figure of its stats);
    a NATS subscription after a crash holds messages for a few seconds first."""
    deadline = time.monotonic() + timeout
    while getattr(consumer.stats, what) < count and time.monotonic() < deadline:
        consumer.run_once()
    assert getattr(consumer.stats, what) >= count, f"{consumer.stats} after {timeout} s"


class AcksLost:
    """A real subscription whose acknowledgements never reach the broker, as when the
    consumer is killed between its commit and its ack."""

    def __init__(self, real: Subscription) -> None:
        self.real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def ack(self, messages: Sequence[IncomingMessage]) -> None:
        """Lose them."""


@pytest.mark.postgres
def test_a_reader_in_b_waits_for_as_write_and_returns_once_b_applied_it(
    broker: Harness, services: tuple[tidings.Store, tidings.Store]
) -> None:
    """A writes and relays; B's reader waits on A's token while B's consumer is held,
    then returns once the consumer applied the write, and reads it."""
    a, b = services
    table = f"docs_{uuid.uuid4().hex[:10]}"
    b.projection_progress = Watched()
    consumer = b.consumer(
        broker.subscription(),
        b.projection_handlers(documents(table)),
        name="docs",
        fetch_timeout=0.2,
    )
    counter = Counter(new_id())
    token = write(a, counter, 1, 2)
    assert token is not None
    assert relay_all(a, broker.publisher()) == 2
    seen = wait_while_held(b, token, NAME, lambda: read(b, table), lambda: consume(consumer, 2))
    position = SourceToken.parse(token).position
    applied = {counter.id: {"total": 3, "versions": [1, 2]}}
    assert seen == {"position": position, "read": applied}
    [status] = b.stream_status()
    assert (status.source, status.position, status.events) == (SOURCE, position, 2)


@pytest.mark.postgres
def test_messages_delivered_again_after_the_consumer_died_before_its_ack_change_nothing(
    broker: Harness, services: tuple[tidings.Store, tidings.Store]
) -> None:
    """B's consumer commits its batches but its acks are lost (killed before each ack);
    the broker delivers the messages again to the next consumer: all duplicates, the
    documents and the checkpoint as they were."""
    a, b = services
    table = f"docs_{uuid.uuid4().hex[:10]}"
    handlers = b.projection_handlers(documents(table))
    counter = Counter(new_id())
    write(a, counter, 1, 2, 3)
    relay_all(a, broker.publisher())
    dying = broker.subscription()
    first = b.consumer(AcksLost(dying), handlers, name="docs", fetch_timeout=0.2)
    consume(first, 3)
    model, before = read(b, table), b.stream_status()
    assert model == {counter.id: {"total": 6, "versions": [1, 2, 3]}}
    dying.close()  # unacknowledged: the broker delivers them again
    again = b.consumer(broker.subscription(), handlers, name="docs", fetch_timeout=0.2)
    consume(again, 3, "duplicates")
    assert (again.stats.duplicates, again.stats.applied) == (3, 0)
    assert read(b, table) == model
    assert [(s.position, s.events) for s in b.stream_status()] == [
        (s.position, s.events) for s in before
    ]


def test_projections_status_shows_a_stream_projections_position_and_lag_per_source(
    tmp_path: Path,
) -> None:
    """``tidings projections status`` gives a stream projection a line per source (its
    position, its lag) instead of a position in the database's own log; a source whose
    messages carry no position shows it as unknown."""
    a = tidings.connect(
        f"sqlite:///{tmp_path / 'a.db'}",
        registry=tidings.EventRegistry([Counted]),
        outbox=True,
        source=SOURCE,
    )
    db = f"sqlite:///{tmp_path / 'b.db'}"
    b = tidings.connect(db)
    queue = MemoryQueue()
    token = write(a, Counter(new_id()), 1, 2)
    relay_all(a, MemoryPublisher(queue))
    legacy = Counter(new_id())
    legacy.increment(1)
    MemoryPublisher(queue).publish([to_message(a.codec.encode(legacy.pending_events[0]), "old")])
    handlers = b.projection_handlers(totals_projection())
    b.consumer(MemorySubscription(queue), handlers, fetch_timeout=0.2).run_once()
    a.close()
    b.close()
    shown = run_cli("projections", "status", "--db", db)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert len(lines) == 2, shown.stdout
    assert lines[0].startswith(f"counter-totals <- {SOURCE}  stream  position {position_of(token)}")
    assert "lag " in lines[0]
    assert "2 events" in lines[0]
    assert lines[1].startswith("counter-totals <- old  stream  position unknown")
    as_json = run_cli("projections", "status", "--db", db, "--json")
    assert [json.loads(line)["position"] for line in as_json.stdout.splitlines()] == [
        position_of(token),
        None,
    ]


def position_of(token: str | None) -> int:
    """The position a token names."""
    assert token is not None
    return SourceToken.parse(token).position
