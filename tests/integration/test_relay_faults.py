"""The outbox relay under fire, on PostgreSQL and real brokers: killed, outnumbered,
poisoned, rolled back. What reached the broker is read back with the broker's own client."""

from __future__ import annotations

import itertools
import os
import random
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import pytest

import tidings
from tests.conftest import NATS_START, reachable
from tidings.adapters.brokers import open_publisher
from tidings.application.backoff import Backoff
from tidings.cli.options import outbox_of
from tidings.domain.aggregate import Aggregate
from tidings.domain.events import DomainEvent
from tidings.errors import ConcurrencyError
from tidings.ports import Transaction
from tidings.records import EventRecord
from tidings.testing.contract import Counter
from tidings.workers.relay import Relay

from .faults import (
    PATIENCE,
    REGISTRY,
    NatsWire,
    RabbitWire,
    Wire,
    Writer,
    assert_each_committed_event_arrived,
    committed,
    jetstream_serves,
    kill_mid_work,
    open_wire,
    outbox_counts,
    rabbitmq_serves,
    sent_messages,
    start_relay,
    stop,
    wait_until,
)
from .test_outages import nats_server_pid, rabbitmqctl

RABBITMQ, NATS = pytest.mark.rabbitmq, pytest.mark.nats
KILLS = 20  # under -m slow; the suite kills 8 times
EVENTS_PER_KILL = 500
BATCH = 100


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
        pytest.param("rabbitmq", marks=RABBITMQ),
        pytest.param("nats", marks=NATS),
    ]
)
def wire(request: pytest.FixtureRequest) -> Iterator[Wire]:
    """Fresh topology on the broker, read back raw, deleted afterwards."""
    made = open_wire(request.param, request)
    yield made
    made.cleanup()


@pytest.mark.postgres
@pytest.mark.parametrize(
    "kills",
    [pytest.param(8, id="8-kills"), pytest.param(KILLS, id="20-kills", marks=pytest.mark.slow)],
)
def test_a_relay_killed_again_and_again_while_events_flow_publishes_each_in_order(
    pg_url: str,
    schema: str,
    outbox: tidings.Store,
    wire: Wire,
    tmp_path: Path,
    *,
    kills: int,
) -> None:
    """500 events per kill (10,000 under ``-m slow``, 4,000 in the suite) and a command
    sent with each commit, a relay SIGKILLed 20 times (8 in the suite): every
    other kill at a random moment while events are written, the others mid-batch on
    purpose (its settle waits for outbox rows the test holds locked). Each event and
    command reaches the broker, in order per aggregate and per key; each killed relay
    leaves at most one batch published but unsettled, to be sent again, and the kills
    mid-batch leave some."""
    rng, count = random.Random(4), EVENTS_PER_KILL * kills
    writer = Writer(outbox, aggregates=200, seed=4, messages=True)
    log = tmp_path / "relay.log"
    records = [tmp_path / f"confirmed-{kill}.txt" for kill in range(kills + 1)]
    # A short lease, so each new relay takes over its killed predecessor's lanes quickly
    # (one relay lives at a time, so no other can take a lane from a live one).
    options = {"batch_size": BATCH, "lease_ttl": 0.5}
    left: list[int] = []  # per kill: rows the killed relay published and did not settle
    for kill, record in enumerate(records[:kills]):
        if kill % 2:
            writer.write(count // kills, 10, 0.01)  # a backlog: the relay claims full batches
            with rows_held(pg_url, outbox) as holder:
                relay = start_relay(
                    pg_url, schema, wire, log, killed=True, record=record, **options
                )
                wait_until(
                    lambda: settle_waits_for(outbox, holder),
                    "the relay's settle waits for the rows the test holds",
                    alive=[relay],
                    log=log,
                )
                os.kill(relay.pid, signal.SIGKILL)
                relay.wait()
                left.append(published_not_settled(outbox, record))
            continue
        writing = threading.Thread(target=writer.write, args=(count // kills, 10, 0.01))
        writing.start()
        before = outbox_counts(outbox)[0]
        relay = start_relay(pg_url, schema, wire, log, killed=True, record=record, **options)
        kill_mid_work(
            relay,
            lambda: outbox_counts(outbox)[0],
            before,
            "the relay published a batch",
            rng=rng,
            most=0.5,
            log=log,
        )
        writing.join()
        left.append(published_not_settled(outbox, record))
    assert writer.written == count
    # The docs' promise: a relay killed at any moment sends at most one batch again.
    assert max(left) <= BATCH, f"rows published and not settled, per kill: {left}"
    assert min(left[1::2]) > 0, f"a kill meant to land mid-batch did not: {left}"
    final = tmp_path / "final-relay.log"
    last = start_relay(pg_url, schema, wire, final, record=records[kills], **options)
    wait_until(lambda: "ready" in final.read_text(), "the last relay runs", alive=[last], log=final)
    rows = count + writer.sent
    wait_until(lambda: outbox_counts(outbox) == (rows, 0), "the outbox is drained", alive=[last])
    assert stop(last) == 0, final.read_text()
    arrivals, events, commands = wire.received(), committed(outbox), sent_messages(outbox)
    assert len(events) == count
    assert len(commands) == writer.sent > 0
    assert_each_committed_event_arrived(arrivals, {**events, **commands})
    # The relays' own record of confirmed sends (a kill may cut off its last lines).
    sent = Tally(i for record in records for i in record.read_text().split())
    resent = sum(n - 1 for n in sent.values())
    assert resent <= kills * BATCH, f"{resent} re-sends for {kills} kills of {BATCH}-event batches"
    duplicates = len(arrivals) - rows
    if isinstance(wire, NatsWire):
        # JetStream drops a re-send whose message id (the event id) it already stores.
        assert duplicates == 0
    else:
        assert duplicates <= kills * BATCH, f"{duplicates} duplicates for {kills} kills"


@contextmanager
def rows_held(pg_url: str, store: tidings.Store) -> Iterator[int]:
    """Lock every unpublished outbox row (FOR UPDATE) in a transaction of its own for the
    block, which gets that connection's backend pid: a relay may claim and publish the
    rows (a claim reads without locking) but its settle waits until the block ends."""
    import psycopg

    table = store.database.tables["outbox"]  # type: ignore[attr-defined]
    with psycopg.connect(pg_url) as conn:
        conn.execute(f"SELECT position FROM {table} WHERE NOT published FOR UPDATE").fetchall()
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert pid is not None
        try:
            yield int(pid[0])
        finally:
            conn.rollback()


def settle_waits_for(store: tidings.Store, holder: int) -> bool:
    """True once a relay's settle (its UPDATE marking rows published) waits for ``holder``."""
    with store.unit_of_work() as uow:
        row = uow.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE ? = ANY(pg_blocking_pids(pid)) "
            "AND query LIKE ?",
            (holder, "UPDATE %SET published = TRUE%"),
        ).fetchone()
    return bool(row[0])


def published_not_settled(store: tidings.Store, record: Path) -> int:
    """How many rows a killed relay had confirmed by the broker (its record) but not yet
    marked published: the next relay sends them again."""
    confirmed = record.read_text().split() if record.exists() else []
    if not confirmed:
        return 0
    table = store.database.tables["outbox"]  # type: ignore[attr-defined]
    with store.unit_of_work() as uow:
        row = uow.execute(
            f"SELECT count(*) FROM {table} WHERE NOT published AND event_id = ANY(?)",
            (confirmed,),
        ).fetchone()
    return int(row[0])


class WatchedBackoff:
    """The relay's outage backoff, noting the attempt number of every pause it asks for."""

    def __init__(self) -> None:
        self.attempts: list[int] = []
        self.inner = Backoff(base=0.2, cap=2.0)

    def delay(self, attempt: int, rng: random.Random) -> float:
        """The inner backoff's delay; the attempt is noted."""
        self.attempts.append(attempt)
        return self.inner.delay(attempt, rng)


def rabbitmq_outage() -> tuple[Callable[[], None], Callable[[], None]]:
    """stop_app, and start_app that returns once RabbitMQ serves again."""

    def start() -> None:
        rabbitmqctl("start_app")
        wait_until(rabbitmq_serves, "RabbitMQ serves again", timeout=PATIENCE)

    return lambda: rabbitmqctl("stop_app"), start


def nats_outage() -> tuple[Callable[[], None], Callable[[], None]]:
    """SIGTERM to nats-server, and a start that returns once JetStream serves again."""

    def halt() -> None:
        os.kill(nats_server_pid(), signal.SIGTERM)
        wait_until(lambda: not reachable("127.0.0.1", 4222), "nats-server has stopped")

    def start() -> None:
        subprocess.run(shlex.split(NATS_START), check=True, timeout=60)
        wait_until(jetstream_serves, "JetStream serves again", timeout=PATIENCE)

    return halt, start


@pytest.mark.outage
@pytest.mark.postgres
def test_a_relay_backs_off_while_the_broker_is_down_and_then_loses_nothing(
    outbox: tidings.Store, wire: Wire
) -> None:
    """RabbitMQ stopped (stop_app) or NATS restarted while events flow: the relay backs off
    with growing pauses, resumes by itself, and every event arrives in order."""
    halt, start = rabbitmq_outage() if isinstance(wire, RabbitWire) else nats_outage()
    backoff = WatchedBackoff()
    relay = outbox.relay(
        open_publisher(wire.url, **wire.publisher_options()),
        batch_size=BATCH,
        outage_backoff=backoff,
    )
    writer, done = Writer(outbox, aggregates=50, seed=5), threading.Event()

    def keep_writing() -> None:
        while not done.is_set():
            writer.write(10, pause=0.05)

    relay.start()
    writing = threading.Thread(target=keep_writing)
    writing.start()
    try:
        wait_until(lambda: relay.stats.published >= 500, "the relay is publishing")
        try:
            halt()
            wait_until(lambda: len(backoff.attempts) >= 3, "the relay backed off three times")
            assert outbox_counts(outbox)[1] > 0  # events wait while the broker is down
        finally:
            start()
        back = relay.stats.published
        wait_until(lambda: relay.stats.published >= back + 500, "the relay publishes again")
        done.set()
        writing.join()
        total = writer.written
        wait_until(lambda: outbox_counts(outbox) == (total, 0), "the outbox is drained")
    finally:
        done.set()
        writing.join()
        relay.stop()
        relay.transport.close()
    # Each pause of one outage is longer than the last; a working pass starts over at 1.
    assert backoff.attempts[0] == 1
    assert all(b in (a + 1, 1) for a, b in itertools.pairwise(backoff.attempts))
    assert max(backoff.attempts) >= 3
    assert_each_committed_event_arrived(wire.received(), committed(outbox))


@pytest.mark.postgres
def test_four_relay_processes_share_the_outbox_without_publishing_an_event_twice(
    pg_url: str, schema: str, outbox: tidings.Store, wire: Wire, tmp_path: Path
) -> None:
    """Four relays on one PostgreSQL outbox, two lanes each, while two writers commit:
    each event is published by exactly one relay, once, in per-aggregate order."""
    records = [tmp_path / f"relay-{n}.txt" for n in range(4)]
    log = tmp_path / "relays.log"
    relays = [
        start_relay(pg_url, schema, wire, log, record=record, batch_size=50, lease_ttl=10.0)
        for record in records
    ]
    try:
        wait_until(
            lambda: sorted(lanes_held(outbox).values()) == [2, 2, 2, 2],
            "the four relays hold two lanes each",
            alive=relays,
            log=log,
        )
        writers = [Writer(outbox, aggregates=100, seed=seed) for seed in (6, 7)]
        writing = [threading.Thread(target=w.write, args=(2000, 10, 0.005)) for w in writers]
        for thread in writing:
            thread.start()
        for thread in writing:
            thread.join()
        wait_until(
            lambda: outbox_counts(outbox) == (4000, 0),
            "the outbox is drained",
            alive=relays,
            log=log,
        )
    finally:
        codes = [stop(relay) for relay in relays]
    assert codes == [0, 0, 0, 0], log.read_text()
    arrivals, events = wire.received(), committed(outbox)
    assert len(arrivals) == len(events) == 4000  # no duplicates: no kills, no outages
    assert_each_committed_event_arrived(arrivals, events)
    sent = [record.read_text().split() for record in records]
    assert all(sent), "a relay published nothing"
    assert sum(len(ids) for ids in sent) == 4000
    assert set().union(*sent) == set(events)  # so no id is in two records


def lanes_held(store: tidings.Store) -> dict[str, int]:
    """How many lanes each relay holds now (the slots of the lease set 'outbox')."""
    table = store.database.tables["leases"]  # type: ignore[attr-defined]
    with store.unit_of_work() as uow:
        rows = uow.execute(
            f"SELECT owner, count(*) FROM {table} WHERE name = 'outbox' AND owner IS NOT NULL "
            "AND lease_until > extract(epoch FROM clock_timestamp()) GROUP BY owner"
        ).fetchall()
    return {owner: int(count) for owner, count in rows}


@dataclass(frozen=True, kw_only=True)
class Noted(DomainEvent):
    """Something noted on a ledger (routed as ``order.noted``)."""

    event_type: ClassVar[str] = "order.noted"
    text: str


@dataclass(frozen=True, kw_only=True)
class Refunded(DomainEvent):
    """A refund, routed as ``refund.noted``: no queue of the test is bound for it at first."""

    event_type: ClassVar[str] = "refund.noted"


@dataclass(frozen=True, kw_only=True)
class Garbled(DomainEvent):
    """An event whose type cannot be a routing key or a subject (a space, a '!')."""

    event_type: ClassVar[str] = "order noted!"


class Ledger(Aggregate):
    """An aggregate that records any of the events above."""

    def note(self, text: str = "") -> None:
        """Record a routable event."""
        self.record(Noted(text=text))

    def poison(self, kind: str) -> None:
        """Record the event the broker refuses, or the relay cannot encode."""
        if kind == "unroutable":
            self.record(Refunded())
        elif kind == "oversize":
            self.record(Noted(text="x" * 100_000))  # the broker takes 64 KiB at most
        else:
            self.record(Garbled())


class Poison(NamedTuple):
    """A way an event can be poison, where, what its dead letter says, and the release."""

    kind: str
    broker: str
    error: str
    release: str
    publisher: tuple[tuple[str, Any], ...] = ()  # options of the relay's publisher


POISONS = [
    pytest.param(
        Poison("unroutable", "rabbitmq", "unroutable", "retry"), marks=RABBITMQ, id="unroutable"
    ),
    pytest.param(Poison("oversize", "nats", "maximum", "purge"), marks=NATS, id="oversize"),
    pytest.param(
        # RabbitMQ would close the channel over it (max_message_size), failing every
        # message of the batch: the publisher refuses it alone, before it is sent.
        Poison(
            "oversize", "rabbitmq", "max_message_bytes", "purge", (("max_message_bytes", 65536),)
        ),
        marks=RABBITMQ,
        id="oversize-rabbitmq",
    ),
    pytest.param(
        Poison("unencodable", "rabbitmq", "cannot be encoded", "purge"),
        marks=RABBITMQ,
        id="unencodable",
    ),
]


def outbox_cli(*args: str) -> str:
    """Run ``python -m tidings outbox ARGS`` and return what it printed."""
    done = subprocess.run(
        [sys.executable, "-m", "tidings", "outbox", *args],
        capture_output=True,
        text=True,
        timeout=PATIENCE,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def relay_until(
    relay: Relay, done: Callable[[], bool], what: str, between: Callable[[], None] | None = None
) -> None:
    """Run relay passes until ``done()`` holds, calling ``between()`` before each pass."""

    def passed() -> bool:
        if between is not None:
            between()
        relay.run_once()
        return done()

    wait_until(passed, what)


def poison_wire(poison: Poison, request: pytest.FixtureRequest) -> RabbitWire | NatsWire:
    """A RabbitMQ exchange that routes only ``order.#``, or a stream of 64 KiB messages."""
    if poison.broker == "rabbitmq":
        return RabbitWire(request.getfixturevalue("rabbitmq_url"), binding_key="order.#")
    return NatsWire(request.getfixturevalue("nats_url"), max_msg_size=64 * 1024)


def write_poisoned(store: tidings.Store, kind: str) -> list[str]:
    """Commit v1 fine, v2 poison, v3 and v4 fine on one ledger; return their event ids."""
    poisoned = Ledger("poisoned")
    poisoned.note()
    poisoned.poison(kind)
    poisoned.note()
    poisoned.note()
    with store.unit_of_work() as uow:
        uow.track(poisoned)
    return [e.event_id for e in store.read_stream("poisoned")]


def write_others(store: tidings.Store, relay: Relay) -> None:
    """Three rounds of an event on five other ledgers, a relay pass after each."""
    others = [Ledger(f"other-{n}") for n in range(5)]
    for round_ in range(3):
        for ledger in others:
            ledger.note(f"round {round_}")
        with store.unit_of_work() as uow:
            uow.track(*others)
        relay.run_once()


@pytest.mark.postgres
@pytest.mark.parametrize("poison", POISONS)
def test_a_poison_event_is_dead_lettered_while_the_rest_flows_until_an_operator_acts(
    pg_url: str, schema: str, poison: Poison, request: pytest.FixtureRequest
) -> None:
    """The refused (or unencodable) event goes to the dead letters after three attempts;
    its aggregate's later events wait, other aggregates flow; retry or purge frees them."""
    registry = tidings.EventRegistry([Noted, Refunded, Garbled])
    store = tidings.connect(pg_url, schema=schema, outbox=True, registry=registry)
    box = outbox_of(store)
    wire = poison_wire(poison, request)
    transport = open_publisher(wire.url, **wire.publisher_options(), **dict(poison.publisher))
    now = [time.time()]  # the relay's clock, moved on by hand to make retries due
    relay = store.relay(
        transport, max_attempts=3, backoff=Backoff(base=10.0, jitter=0.0), clock=lambda: now[0]
    )

    def later() -> None:
        now[0] += 60.0

    try:
        first, bad, *behind = write_poisoned(store, poison.kind)
        write_others(store, relay)
        # The rest flowed while the poison waits for its second attempt, its followers too.
        assert (outbox_counts(store), box.stats(0).dead_letters) == ((16, 3), 0)
        relay_until(relay, lambda: box.stats(0).dead_letters == 1, "a dead letter", later)
        [letter] = box.dead_letters()
        assert (letter.record.event_id, letter.attempts) == (bad, 3)
        assert poison.error in letter.error
        arrived = [a.event_id for a in wire.received()]
        assert len(arrived) == 16  # v1 of the poisoned ledger, three rounds of five others
        assert first in arrived
        assert not {bad, *behind} & set(arrived)

        db = ["--db", pg_url, "--schema", schema]
        if poison.release == "retry":
            assert isinstance(wire, RabbitWire)
            wire.bind("refund.#")  # the cause is fixed: a queue now takes refunds
            assert "1 dead letter(s) back" in outbox_cli("retry", *db, bad)
        else:
            assert "1 dead letter(s) deleted" in outbox_cli("purge", *db, bad, "--yes")
        relay_until(relay, lambda: outbox_counts(store)[1] == 0, "the outbox is drained", later)
        assert [a.event_id for a in wire.received() if a.event_id in behind] == behind
        if isinstance(wire, RabbitWire) and poison.release == "retry":
            assert [a.event_id for a in wire.received(wire.queues[1])] == [bad]
        assert box.stats(0).dead_letters == 0
    finally:
        relay.release()
        transport.close()
        store.close()
        wire.cleanup()


class HeldThenFailed:
    """An extra writer after the outbox: it holds the transaction open (its outbox rows
    written) until released, then fails it, so the whole transaction rolls back."""

    def __init__(self) -> None:
        self.holding, self.release = threading.Event(), threading.Event()

    def write(self, tx: Transaction, records: Sequence[EventRecord]) -> None:
        """Hold, then fail."""
        self.holding.set()
        self.release.wait(PATIENCE)
        raise RuntimeError("rolled back after the outbox rows were written")


def fail_in_the_block(store: tidings.Store) -> Counter:
    """An exception inside the unit of work, after the aggregate changed."""
    thrown = Counter("thrown")
    thrown.increment()
    with pytest.raises(RuntimeError), store.unit_of_work() as uow:
        uow.track(thrown)
        raise RuntimeError("the command failed after the aggregate changed")
    return thrown


def fail_after_the_outbox_write(store: tidings.Store, relay: Relay) -> Counter:
    """A failure after the outbox rows (and PostgreSQL's NOTIFY) went into the
    transaction; the relay runs passes while it is open and finds nothing."""
    held = HeldThenFailed()
    store.writers.append(held)
    failed = Counter("failed")
    failed.increment()
    outcome: list[BaseException] = []

    def commit() -> None:
        try:
            with store.unit_of_work() as uow:
                uow.track(failed)
        except RuntimeError as exc:
            outcome.append(exc)

    holder = threading.Thread(target=commit)
    holder.start()
    try:
        assert held.holding.wait(PATIENCE)
        assert [relay.run_once() for _ in range(3)] == [0, 0, 0]
    finally:
        held.release.set()
        holder.join()
        store.writers.remove(held)
    assert len(outcome) == 1
    return failed


def fail_as_a_stale_writer(store: tidings.Store) -> Counter:
    """A writer of version 1 of a stream that already has it: ConcurrencyError."""
    stale = Counter("kept")
    stale.increment()
    with pytest.raises(ConcurrencyError), store.unit_of_work() as uow:
        uow.track(stale)
    return stale


def commit_one(store: tidings.Store, stream: str) -> str:
    """Commit one event on a new counter; return its id."""
    counter = Counter(stream)
    counter.increment()
    [event] = counter.pending_events
    with store.unit_of_work() as uow:
        uow.track(counter)
    return event.event_id


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_a_rolled_back_transaction_leaves_no_outbox_row_and_publishes_nothing(
    backend: str, wire: Wire, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """An exception in the block, a failure after the outbox write (while a relay runs
    passes), a stale writer: none leaves a row, and the broker gets only committed events."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'o.db'}"
        store = tidings.connect(url, outbox=True, registry=tidings.EventRegistry(REGISTRY))
    else:
        store = request.getfixturevalue("outbox")
    transport = open_publisher(wire.url, **wire.publisher_options())
    relay = store.relay(transport)
    try:
        kept = commit_one(store, "kept")
        relay_until(relay, lambda: outbox_counts(store) == (1, 0), "the first event is out")
        rolled_back = [
            fail_in_the_block(store),
            fail_after_the_outbox_write(store, relay),
            fail_as_a_stale_writer(store),
        ]
        later = commit_one(store, "later")
        relay_until(relay, lambda: outbox_counts(store) == (2, 0), "the last event is out")
        assert [a.event_id for a in wire.received()] == [kept, later]
        ghosts = {e.event_id for c in rolled_back for e in c.pending_events}
        assert len(ghosts) == 3  # still pending on their aggregates: never handed on
        assert outbox_ids(store) == {kept, later}
    finally:
        relay.release()
        transport.close()
        if backend == "sqlite":
            store.close()


def outbox_ids(store: tidings.Store) -> set[str]:
    """Event ids of every outbox row and dead letter."""
    tables = store.database.tables  # type: ignore[attr-defined]
    with store.unit_of_work() as uow:
        rows = uow.execute(
            f"SELECT event_id FROM {tables['outbox']} UNION ALL "
            f"SELECT event_id FROM {tables['outbox_dead_letters']}"
        ).fetchall()
    return {row[0] for row in rows}
