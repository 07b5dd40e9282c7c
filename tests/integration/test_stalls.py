"""A server that stalls (SIGSTOP, then SIGCONT) under a running worker: a slow or briefly
silent broker or database is an outage to wait out, never a reason to dead-letter a good
event. Each test pauses only the processes it found, and resumes them in a ``finally``;
like the other outage tests, they never run beside others.
"""

from __future__ import annotations

import os
import pwd
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import tidings
from tidings.adapters.brokers import open_publisher
from tidings.application.backoff import Backoff
from tidings.workers.relay import Relay

from .faults import (
    PATIENCE,
    REGISTRY,
    Wire,
    Writer,
    assert_each_committed_event_arrived,
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
