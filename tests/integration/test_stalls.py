"""A server that stalls (SIGSTOP, then SIGCONT) under a running worker: a slow or briefly
silent broker or database is an outage to wait out, never a reason to dead-letter a good
event. Each test pauses only the processes it found, and resumes them in a ``finally``;
like the other outage tests, they never run beside others.
"""

from __future__ import annotations

import os
import pwd
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import tidings
from tidings.adapters.brokers import open_publisher, open_subscription
from tidings.application.backoff import Backoff
from tidings.testing.contract import Counted
from tidings.workers.relay import Relay

from .faults import (
    PATIENCE,
    REGISTRY,
    Arrival,
    NatsWire,
    Wire,
    Writer,
    assert_each_committed_event_arrived,
    assert_in_order_per_aggregate,
    committed,
    open_wire,
    outbox_counts,
    wait_until,
)
from .test_outages import nats_server_pid

pytestmark = pytest.mark.outage

MAX_ATTEMPTS = 2
ANSWER_TIMEOUT = 1.0  # the broker's ack / confirm timeout, and the reconnect timeout
STALLS = MAX_ATTEMPTS + 2  # the relay meets the stall this often before it ends
AGGREGATES = 20
STALL_PATIENCE = 30.0  # the longest a test keeps a shared server paused


def refused(relay: Relay) -> bool:
    """Whether the relay has counted a refusal (an attempt) of any event."""
    return relay.stats.retried + relay.stats.dead_lettered > 0


@contextmanager
def paused(pids: list[int]) -> Iterator[None]:
    """SIGSTOP each process for the block, SIGCONT each in the end, whatever happened."""
    stopped: list[int] = []
    try:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
        yield
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)


def rabbitmq_server_pid() -> int:
    """The process id of the RabbitMQ node (the beam.smp that runs ``-s rabbit boot``; a
    ``rabbitmqctl`` run by someone else is a beam.smp too, and is left alone)."""
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"beam.smp") and any(
            argv[i : i + 3] == [b"-s", b"rabbit", b"boot"] for i in range(len(argv))
        ):
            return int(proc.name)
    pytest.fail("no RabbitMQ node (beam.smp -s rabbit boot) runs: cannot pause it")


def broker_pid(wire: Wire) -> int:
    """The server process behind ``wire``."""
    return nats_server_pid() if wire.url.startswith("nats") else rabbitmq_server_pid()


def answer_timeouts(wire: Wire) -> dict[str, float]:
    """Publisher options that make a stalled broker show within about a second."""
    timeout = "ack_timeout" if wire.url.startswith("nats") else "confirm_timeout"
    return {timeout: ANSWER_TIMEOUT, "connect_timeout": ANSWER_TIMEOUT}


@pytest.fixture
def outbox(pg_url: str, schema: str) -> Iterator[tidings.Store]:
    """A store with an outbox in the test's schema."""
    store = tidings.connect(
        pg_url, schema=schema, outbox=True, registry=tidings.EventRegistry(REGISTRY)
    )
    yield store
    store.close()


@pytest.fixture(
    params=[
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
        pytest.param("nats", marks=pytest.mark.nats),
    ]
)
def wire(request: pytest.FixtureRequest) -> Iterator[Wire]:
    """Fresh topology on the broker, read back raw, deleted afterwards."""
    made = open_wire(request.param, request)
    try:
        yield made
    finally:
        made.cleanup()


def quick_relay(store: tidings.Store, wire: Wire) -> Relay:
    """A relay that gives up on an event after two refusals and retries outages soon."""
    transport = open_publisher(wire.url, **wire.publisher_options(), **answer_timeouts(wire))
    return store.relay(
        transport,
        max_attempts=MAX_ATTEMPTS,
        batch_size=50,
        backoff=Backoff(base=0.05, cap=0.1),
        outage_backoff=Backoff(base=0.2, cap=1.0),
        idle_wait=0.05,
    )


def thread_stacks() -> str:
    """Where every thread of this process is, for a failure that a stuck worker explains."""
    frames = sys._current_frames()
    return "\n".join(
        f"--- thread {t.name}\n" + "".join(traceback.format_stack(frames[t.ident]))
        for t in threading.enumerate()
        if t.ident in frames
    )


@contextmanager
def writing(writer: Writer) -> Iterator[None]:
    """Commit events in a thread for as long as the block runs."""
    stop, failures = threading.Event(), []

    def write() -> None:
        try:
            while not stop.is_set():
                writer.write(5, per_commit=5, pause=0.02)
        except Exception as exc:  # reported by the test, not lost in the thread
            failures.append(exc)

    thread = threading.Thread(target=write, name="writer")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(PATIENCE)
    assert not failures, f"the writer failed: {failures[0]!r}"


def test_a_broker_stalled_longer_than_max_attempts_dead_letters_nothing(
    outbox: tidings.Store, wire: Wire
) -> None:
    """The broker's server is paused while events flow, for as long as the relay (two
    attempts, one-second answer timeout) meets the stall four times: no answer is no
    refusal, so after SIGCONT every committed event arrives, in order per aggregate, and
    nothing is dead-lettered."""
    writer = Writer(outbox, AGGREGATES, seed=7)
    relay = quick_relay(outbox, wire)
    relay.start()
    try:
        with writing(writer):
            wait_until(lambda: relay.stats.published >= 100, "the relay published 100 events")
            with paused([broker_pid(wire)]):
                wait_until(
                    lambda: relay.stats.broker_errors >= STALLS or refused(relay),
                    f"the relay met the stalled broker {STALLS} times",
                    timeout=STALL_PATIENCE,
                )
            assert not refused(relay), f"the stall counted as refusals: {relay.stats}"
        wait_until(lambda: outbox_counts(outbox)[1] == 0, "the relay published every event")
    finally:
        relay.stop()
        relay.transport.close()
    assert outbox.outbox is not None
    assert outbox.outbox.stats(time.time()).dead_letters == 0
    assert relay.stats.dead_lettered == 0
    assert_each_committed_event_arrived(wire.received(), committed(outbox))


def postgres_pids(*, postmaster: bool) -> list[int]:
    """The postmaster of the PostgreSQL server (``postmaster=True``), or every other
    process of the user ``postgres`` (its backends and helpers). Pause the postmaster
    first, then list the rest: a paused postmaster forks no new backend."""
    uid = pwd.getpwnam("postgres").pw_uid
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or proc.stat().st_uid != uid:
                continue
            argv0 = (proc / "cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if argv0.endswith(b"/postgres") == postmaster:
            found.append(int(proc.name))
    if not found:
        pytest.fail("no PostgreSQL server process runs as user postgres: cannot pause it")
    return found


@contextmanager
def postgres_paused() -> Iterator[None]:
    """The whole PostgreSQL server paused for the block, resumed at its end."""
    with paused(postgres_pids(postmaster=True)), paused(postgres_pids(postmaster=False)):
        yield


class Sink:
    """A consumer's side in the test's schema: an inbox store whose handler writes each
    event it applies to a table, in the order it applied them."""

    def __init__(self, pg_url: str, schema: str) -> None:
        self.store = tidings.connect(
            pg_url, schema=schema, prefix="sink_", registry=tidings.EventRegistry(REGISTRY)
        )
        self.table = f"{schema}.stall_seen"
        with self.store.unit_of_work() as uow:
            uow.execute(
                f"CREATE TABLE {self.table} (n BIGSERIAL PRIMARY KEY, event_id TEXT NOT "
                "NULL, stream_id TEXT NOT NULL, version INT NOT NULL)"
            )
        self.handlers = tidings.Handlers()
        self.handlers.add(Counted, "stall.seen", self._apply)

    def _apply(self, event: tidings.DomainEvent, uow: tidings.UnitOfWork) -> None:
        uow.execute(
            f"INSERT INTO {self.table} (event_id, stream_id, version) VALUES (?, ?, ?)",
            (event.event_id, event.aggregate_id, event.aggregate_version),
        )

    def applied(self) -> list[Arrival]:
        """Every event the handler applied, in the order it applied them."""
        rows = self.store.database.query(
            f"SELECT event_id, stream_id, version FROM {self.table} ORDER BY n"
        )
        return [Arrival(row[0], row[1], int(row[2])) for row in rows]

    def count(self) -> int:
        """How many events the handler applied."""
        return int(self.store.database.query(f"SELECT count(*) FROM {self.table}")[0][0])


@pytest.mark.nats
def test_postgresql_paused_under_a_relay_and_a_consumer_dead_letters_nothing(
    pg_url: str, schema: str, outbox: tidings.Store, nats_url: str
) -> None:
    """The whole PostgreSQL server is paused while a relay (outbox -> NATS) and a
    consumer (NATS -> inbox -> a handler writing to a table) are mid-stream, until both
    have reported the outage (each round trip waits two seconds at most): after SIGCONT
    both carry on, every committed event is published and applied in order per aggregate
    and once, and nothing is dead-lettered."""
    wire = NatsWire(nats_url)
    sink = Sink(pg_url, schema)
    for store in (outbox, sink.store):
        store.database.response_timeout = ANSWER_TIMEOUT * 2  # type: ignore[attr-defined]
    subscription = open_subscription(
        nats_url, "sink", stream=wire.stream, subject_prefix=wire.prefix
    )
    consumer = sink.store.consumer(subscription, sink.handlers, max_attempts=MAX_ATTEMPTS)
    consumer.outage_backoff = Backoff(base=0.2, cap=1.0)
    relay = quick_relay(outbox, wire)
    writer = Writer(outbox, AGGREGATES, seed=11)
    writer.write(3000, per_commit=20)
    relay.start()
    consumer.start()
    try:
        wait_until(lambda: sink.count() >= 100, "the consumer applied 100 events")
        with postgres_paused():
            try:
                wait_until(
                    lambda: relay.stats.broker_errors >= 1 and consumer.stats.outages >= 1,
                    "the relay and the consumer both reported the stalled database",
                    # One of them was once seen to stay silent for 30 s after a long run;
                    # the message below says which, should it happen again.
                    timeout=STALL_PATIENCE * 2,
                )
            except BaseException as failed:  # say which of the two stayed silent, and where
                raise AssertionError(
                    f"{failed}: relay {relay.stats}, consumer {consumer.stats}\n" + thread_stacks()
                ) from failed
        writer.write(200, per_commit=20)
        wait_until(lambda: outbox_counts(outbox)[1] == 0, "the relay published every event")
        wait_until(lambda: sink.count() >= writer.written, "the consumer applied every event")
        events = committed(outbox)
        assert_each_committed_event_arrived(wire.received(), events)
        applied = sink.applied()
        assert len(applied) == len(events), "an event was applied twice"
        assert {a.event_id for a in applied} == set(events), "an event was not applied"
        # A batch whose transaction failed in the outage was given back at once (left
        # unsettled, NATS would deliver it again only after ack_wait, behind the
        # aggregates' later events): the handler saw each aggregate's events in order.
        assert_in_order_per_aggregate(applied)
        assert outbox.outbox is not None
        assert outbox.outbox.stats(time.time()).dead_letters == 0
        assert relay.stats.dead_lettered == consumer.stats.buried == 0
    finally:
        consumer.stop()
        relay.stop()
        relay.transport.close()
        subscription.close()
        sink.store.close()
        wire.cleanup()
