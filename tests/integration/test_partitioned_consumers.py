"""Partitioned consumers on real brokers: the events of a stream published into P
partitions, handled by several consumer processes that share the partitions through
leases; one of them SIGKILLed and restarted again and again while the events flow, a
handler recording every version it sees (``ordered_handlers``)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import tidings
from tidings import ConfigurationError
from tidings.adapters.brokers import open_partition
from tidings.application.partitions import partitioned
from tidings.ports import OutgoingMessage
from tidings.serialization.cloudevents import to_message
from tidings.serialization.codec import JsonCodec
from tidings.testing.contract import Counted, Counter, new_id
from tidings.workers.partitioned_consumer import PartitionedConsumer, lease_set

from .faults import PATIENCE, pika_channel, wait_until
from .ordered_handlers import handlers as ordered
from .test_consumer_faults import Feed, feed, in_schema, inbox_rows, start_consumer
from .test_consumer_order import seen_versions

__all__ = ["feed"]  # the broker fixture, parametrised over RabbitMQ and NATS

HANDLERS = "tests.integration.ordered_handlers:handlers"
PARTITIONS = 6
REGISTRY = tidings.EventRegistry([Counted])


def partitioned_events(aggregates: int, versions: int, partitions: int) -> list[OutgoingMessage]:
    """Every aggregate's versions as partitioned CloudEvents, versions in order and the
    aggregates interleaved."""
    codec = JsonCodec(tidings.EventRegistry([Counted]))
    encode = partitioned(lambda record: to_message(record, "counters"), partitions)
    counters = [Counter(new_id("parted")) for _ in range(aggregates)]
    for counter in counters:
        for step in range(versions):
            counter.increment(step)
    streams = [[encode(codec.encode(e)) for e in c.pull_events()] for c in counters]
    return [stream[v] for v in range(versions) for stream in streams]


def declare_partitions(feed: Feed, partitions: int) -> None:
    """Make the partitions' queues (RabbitMQ) before anything is published, as their
    consumers declare them: a message no queue is bound for would be refused."""
    if feed.kind != "rabbitmq":
        return
    with pika_channel(feed.url) as channel:
        for part in range(partitions):
            queue = f"{feed.name}.{part}"
            arguments = {"x-queue-type": "quorum", "x-single-active-consumer": True}
            channel.queue_declare(queue, durable=True, arguments=arguments)
            channel.queue_bind(queue, feed.topic, routing_key=f"{part}.#")


def remove_partitions(feed: Feed, partitions: int) -> None:
    """Delete the partitions' queues and their delay queues (the stream goes with the
    feed on NATS)."""
    if feed.kind != "rabbitmq":
        return
    with pika_channel(feed.url) as channel:
        for part in range(partitions):
            channel.queue_delete(f"{feed.name}.{part}")


@pytest.fixture
def parted(feed: Feed) -> Iterator[Feed]:
    """The feed with its partitions' queues declared, and removed afterwards."""
    declare_partitions(feed, PARTITIONS)
    yield feed
    remove_partitions(feed, PARTITIONS)


@pytest.fixture
def store(pg_url: str, schema: str) -> Iterator[tidings.Store]:
    """A PostgreSQL store with the table the ordered handlers write."""
    made = tidings.connect(in_schema(pg_url, schema), schema=schema, registry=REGISTRY)
    with made.unit_of_work() as uow:
        uow.execute(
            "CREATE TABLE seen_versions (n BIGSERIAL PRIMARY KEY, aggregate_id TEXT NOT NULL, "
            "version INTEGER NOT NULL)"
        )
    yield made
    made.close()


def partition_options(feed: Feed) -> dict[str, object]:
    """The feed's subscription options; on NATS, what a consumer held comes back after
    two seconds (as for ``tidings consume`` in ``Feed.cli_options``)."""
    return dict(feed.options) if feed.kind == "rabbitmq" else {**feed.options, "ack_wait": 2}


def consumer_in_process(
    store: tidings.Store, feed: Feed, owner: str, *, ttl: float = 15.0, clock: object = None
) -> PartitionedConsumer:
    """A partitioned consumer of the feed in this process, named ``owner`` in the leases."""
    worker = store.partitioned_consumer(
        lambda part: open_partition(feed.url, feed.name, part, **partition_options(feed)),
        ordered,
        name=feed.name,
        partitions=PARTITIONS,
        ttl=ttl,
        owner=owner,
        batch_size=50,
        fetch_timeout=0.2,
    )
    if clock is not None:
        worker.clock = clock  # type: ignore[assignment]
    return worker


def assert_each_once_in_order(store: tidings.Store, aggregates: int, versions: int) -> None:
    """The handler saw every aggregate's versions 1..versions, each once, in order."""
    seen = seen_versions(store)
    wrong = {a: v for a, v in seen.items() if v != list(range(1, versions + 1))}
    assert len(seen) == aggregates, f"{len(seen)} of {aggregates} aggregates seen"
    assert not wrong, (
        f"{len(wrong)} aggregates out of order or twice, e.g. {list(wrong.items())[:2]}"
    )
    assert store.inbox is not None
    assert store.inbox.dead_letters() == []


@pytest.mark.postgres
def test_two_consumers_share_the_partitions_and_apply_each_event_once_in_order(
    store: tidings.Store, parted: Feed
) -> None:
    """Two partitioned consumers in one process (two owners) split the six partitions
    three and three; 600 events of 30 aggregates are each handled once, in order."""
    events = partitioned_events(30, 20, PARTITIONS)
    first = consumer_in_process(store, parted, "first")
    second = consumer_in_process(store, parted, "second")
    first.start()
    second.start()
    try:
        parted.publish(events)
        wait_until(lambda: inbox_rows(store) == len(events), "every event is applied")
        wait_until(
            lambda: sorted([len(first.held), len(second.held)]) == [3, 3],
            "the partitions are shared three and three",
        )
        assert sorted(first.held + second.held) == list(range(PARTITIONS))
    finally:
        first.stop()
        second.stop()
    assert_each_once_in_order(store, 30, 20)
    assert first.stats.applied + second.stats.applied == len(events)


@pytest.mark.postgres
def test_a_consumer_whose_partitions_were_taken_over_commits_nothing(
    store: tidings.Store, parted: Feed
) -> None:
    """A consumer whose leases ran out (its clock stands still) and were taken over by
    another owner handles nothing more: each partition's transaction finds its fencing
    token gone, rolls back and stops that partition."""
    now = 1_000_000.0
    stale = consumer_in_process(store, parted, "stale", ttl=10.0, clock=lambda: now)
    assert stale.rebalance() == list(range(PARTITIONS))
    try:
        assert store.leases is not None
        taken = store.leases.lease("thief", lease_set(parted.name), PARTITIONS, 10.0, now + 11)
        assert sorted(taken) == list(range(PARTITIONS))
        events = partitioned_events(60, 2, PARTITIONS)
        parts = {int(e.routing_key.split(".", 1)[0]) for e in events}
        assert parts == set(range(PARTITIONS)), "some partition got no event: use more"
        parted.publish(events)
        wait_until(
            lambda: stale.lost_partitions == PARTITIONS or inbox_rows(store) > 0,
            "every partition hit the fence (or wrote past it)",
        )
        assert inbox_rows(store) == 0
        assert stale.lost_partitions == PARTITIONS
        assert seen_versions(store) == {}
    finally:
        stale.release()


@pytest.mark.postgres
def test_a_consumer_given_another_count_of_partitions_stops_and_says_which(
    store: tidings.Store, parted: Feed
) -> None:
    """Events published into 3 partitions reach a consumer of 6: it stops with a
    ``ConfigurationError`` naming both counts, having handled none of them."""
    worker = consumer_in_process(store, parted, "miscounted")
    parted.publish(partitioned_events(30, 1, 3))
    stop = threading.Event()
    timer = threading.Timer(30, stop.set)  # a consumer that reads on stops here
    timer.start()
    try:
        with pytest.raises(ConfigurationError, match=r"into 3 partitions.*--partitions 6"):
            worker.run(stop)
    finally:
        timer.cancel()
    assert inbox_rows(store) == 0
    assert worker.held == []


PROCESS = ("--handlers", HANDLERS, "--batch", "100", "--partitions", str(PARTITIONS))


@pytest.mark.postgres
@pytest.mark.parametrize(
    "run",
    [
        pytest.param((20, 30, 1), id="600-events-1-kill"),
        pytest.param((100, 100, 15), id="10000-events-15-kills", marks=pytest.mark.slow),
    ],
)
def test_three_consumer_processes_one_killed_again_and_again_apply_each_event_once_in_order(
    store: tidings.Store, parted: Feed, pg_url: str, tmp_path: Path, run: tuple[int, int, int]
) -> None:
    """Three ``tidings consume --partitions 6`` processes while the events of many
    aggregates flow; one of them, chosen at random each time, is SIGKILLed at a random
    moment and started again, ``kills`` times. Every event is handled once and every
    aggregate's versions in order. The suite runs 600 events and 1 kill; ``-m slow``
    runs 10,000 and 15."""
    aggregates, versions, kills = run
    rng = random.Random(kills)
    schema = store.database.schema  # type: ignore[attr-defined]
    db = in_schema(pg_url, schema)
    events = partitioned_events(aggregates, versions, PARTITIONS)
    logs = [tmp_path / f"consumer-{n}.log" for n in range(3)]
    workers = [start_consumer(db, schema, parted, log, killed=True, extra=PROCESS) for log in logs]
    try:
        size = len(events) // (kills + 1) + 1
        chunks = [events[i : i + size] for i in range(0, len(events), size)]
        for chunk in chunks[:-1]:
            publishing = threading.Thread(target=parted.publish, args=(chunk,))
            publishing.start()
            before = inbox_rows(store)
            wait_until(lambda b=before: inbox_rows(store) > b, "the consumers applied a batch")
            time.sleep(rng.uniform(0.0, 0.5))
            victim = rng.randrange(3)
            workers[victim].kill()
            workers[victim].wait()
            workers[victim] = start_consumer(
                db, schema, parted, logs[victim], killed=True, extra=PROCESS
            )
            publishing.join()
        parted.publish(chunks[-1])
        wait_until(
            lambda: inbox_rows(store) == len(events),
            "every event is applied",
            alive=workers,
            timeout=PATIENCE * 2,
        )
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(PATIENCE)
    assert_each_once_in_order(store, aggregates, versions)
