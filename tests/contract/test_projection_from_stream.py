"""Projections fed by a broker stream, over the in-memory broker, on every backend:
service A writes counters (outbox, relay), service B applies them through its inbox."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import msgspec
import pytest

import tidings
from tidings.adapters.memory_broker import MemoryPublisher, MemoryQueue, MemorySubscription
from tidings.application.projections import Projection, SourceToken
from tidings.errors import ProjectionError, ProjectionTimeoutError
from tidings.ports import IncomingMessage, OutgoingMessage
from tidings.serialization.cloudevents import to_message
from tidings.testing.contract import Counted, Counter, new_id

from ..conftest import MakeStore
from .stream_kit import (
    SOURCE,
    Watched,
    consumer_of,
    new_table,
    read_model,
    relay_all,
    wait_while_held,
    write,
)

NAME = "counter-totals"


@pytest.fixture(autouse=True)
def _unique_tables() -> None:
    new_table()


def services(make_store: MakeStore) -> tuple[tidings.Store, tidings.Store]:
    """Service A (an outbox, source ``counters``) and service B (its own database)."""
    a = make_store(tidings.EventRegistry([Counted]), outbox=True, source=SOURCE)
    return a, make_store()


def position(token: str | None) -> int:
    """The position a token names."""
    assert token is not None
    return SourceToken.parse(token).position


class Recording:
    """A transport that keeps what it is given, to deliver it in an order of our choosing."""

    def __init__(self) -> None:
        self.messages: list[OutgoingMessage] = []

    def publish(self, messages: Sequence[OutgoingMessage]) -> list[str | None]:
        """Keep the messages; each is confirmed."""
        self.messages += messages
        return [None] * len(messages)

    def close(self) -> None:
        """Nothing to release."""


class Crash(BaseException):
    """Stands for a SIGKILL of the consumer after its commit, before its ack."""


class DyingBeforeAck(MemorySubscription):
    """A subscription whose consumer dies before it acknowledges anything."""

    def ack(self, messages: Sequence[IncomingMessage]) -> None:
        """Die instead."""
        raise Crash


def test_a_stream_projection_applies_another_services_events_and_checkpoints_its_positions(
    make_store: MakeStore,
) -> None:
    """The read model gets A's events; B's checkpoint of source ``counters`` is the highest
    position A wrote, and a wait on A's token returns it."""
    a, b = services(make_store)
    queue = MemoryQueue()
    first, second = Counter(new_id()), Counter(new_id())
    write(a, first, 1, 2)
    token = write(a, second, 5)
    assert relay_all(a, MemoryPublisher(queue)) == 3
    consumer_of(b, MemorySubscription(queue)).run_once()
    assert read_model(b) == {first.id: (3, "1,2"), second.id: (5, "1")}
    [status] = b.stream_status()
    assert (status.name, status.source, status.position, status.events) == (
        NAME,
        SOURCE,
        position(token),
        3,
    )
    assert f"position {position(token)}" in status.describe()
    assert b.wait_for(token, NAME, timeout=1.0) == position(token)
    assert b.forget_stream_positions(older_than=3600) == 0
    assert b.forget_stream_positions(older_than=-1) == 3  # all, applied before "now + 1 s"
    with pytest.raises(ProjectionTimeoutError, match=f"highest position from {SOURCE} is"):
        b.wait_for(token, NAME, timeout=0.05)
    [kept] = b.stream_status()
    assert (kept.position, kept.events) == (status.position, status.events)  # it stays


def test_a_batch_delivered_again_after_a_crash_before_the_ack_changes_nothing(
    make_store: MakeStore,
) -> None:
    """B commits a batch and dies before acking it; the broker delivers it again to a
    new consumer: every message is a duplicate, and the read model and the checkpoint
    are as they were."""
    a, b = services(make_store)
    queue = MemoryQueue()
    counter = Counter(new_id())
    write(a, counter, 1, 2, 3)
    relay_all(a, MemoryPublisher(queue))
    dying = DyingBeforeAck(queue)
    with pytest.raises(Crash):
        consumer_of(b, dying).run_once()
    model, [status] = read_model(b), b.stream_status()
    dying.close()  # unacknowledged: the broker gives them back
    again = consumer_of(b, MemorySubscription(queue))
    assert again.run_once() == 3
    assert again.stats.duplicates == 3
    assert read_model(b) == model == {counter.id: (6, "1,2,3")}
    [after] = b.stream_status()
    assert (after.position, after.events) == (status.position, status.events) == (3, 3)
    assert queue.depth() == 0


def test_an_aggregates_events_are_applied_in_order_whatever_order_they_arrive_in(
    make_store: MakeStore,
) -> None:
    """v3, v2, v1 of one counter arrive in that order: the projection applies v1, v2, v3,
    and the checkpoint is the highest position."""
    a, b = services(make_store)
    counter = Counter(new_id())
    write(a, counter, 1)
    write(a, counter, 2)
    token = write(a, counter, 3)
    recording, queue = Recording(), MemoryQueue()
    relay_all(a, recording)
    MemoryPublisher(queue).publish(list(reversed(recording.messages)))
    consumer_of(b, MemorySubscription(queue)).run_once()
    assert read_model(b) == {counter.id: (6, "1,2,3")}
    [status] = b.stream_status()
    assert status.position == position(token)


def test_a_waiter_in_b_returns_once_b_applied_as_write_and_not_before(
    make_store: MakeStore,
) -> None:
    """The waiter is asleep on A's token while B's consumer is held; once the consumer
    ran, the waiter returns and reads A's write in B's read model."""
    a, b = services(make_store)
    b.projection_progress = Watched()
    queue = MemoryQueue()
    counter = Counter(new_id())
    token = write(a, counter, 1, 2)
    relay_all(a, MemoryPublisher(queue))
    consumer = consumer_of(b, MemorySubscription(queue))
    seen = wait_while_held(b, token, NAME, lambda: read_model(b), consumer.run_once)
    assert seen == {"position": position(token), "read": {counter.id: (3, "1,2")}}


def test_a_message_without_a_position_is_applied_and_its_lag_shows_as_unknown(
    make_store: MakeStore,
) -> None:
    """An older producer sends no tidingsposition: the event is applied, the status says
    the position is unknown, and a wait on that source says why it cannot end."""
    a, b = services(make_store)
    queue = MemoryQueue()
    counter = Counter(new_id())
    counter.increment(4)
    [event] = counter.pending_events
    record = a.codec.encode(event)
    MemoryPublisher(queue).publish([to_message(record, "legacy")])
    consumer_of(b, MemorySubscription(queue)).run_once()
    assert read_model(b) == {counter.id: (4, "1")}
    [status] = b.stream_status()
    assert (status.source, status.position, status.events) == ("legacy", None, 1)
    assert "position unknown" in status.describe()
    with pytest.raises(ProjectionTimeoutError, match="carry no tidingsposition"):
        b.wait_for("legacy:1", NAME, timeout=0.05)


def test_a_message_with_a_malformed_position_is_a_dead_letter_saying_so(
    make_store: MakeStore,
) -> None:
    """A tidingsposition that is no position is bad input: buried with its reason, and
    the line goes on."""
    a, b = services(make_store)
    queue = MemoryQueue()
    counter = Counter(new_id())
    counter.increment(4)
    [event] = counter.pending_events
    message = to_message(a.codec.encode(event), "legacy")
    document = msgspec.json.decode(message.body)
    document["tidingsposition"] = "-3"
    bad = replace(message, body=msgspec.json.encode(document))
    MemoryPublisher(queue).publish([bad])
    consumer_of(b, MemorySubscription(queue)).run_once()
    assert b.inbox is not None
    [letter] = b.inbox.dead_letters()
    assert "tidingsposition is '-3'" in letter.reason
    assert read_model(b) == {}


def test_tokens_that_do_not_fit_the_projection_are_refused_with_what_to_do(
    make_store: MakeStore,
) -> None:
    """A token of another source names the sources the projection is fed by; a local
    int token on a stream projection, a foreign token on a log projection and a token
    that is no token are refused at once."""
    a, b = services(make_store)
    queue = MemoryQueue()
    token = write(a, Counter(new_id()), 1)
    relay_all(a, MemoryPublisher(queue))
    consumer_of(b, MemorySubscription(queue)).run_once()
    elsewhere = "nothing from source 'payments'; it is fed by counters"
    with pytest.raises(ProjectionTimeoutError, match=elsewhere):
        b.wait_for("payments:1", NAME, timeout=0.05)
    with pytest.raises(ProjectionError, match="fed by a broker stream"):
        b.wait_for(position(token), NAME, timeout=0.05)
    with pytest.raises(ProjectionError, match="'<source>:<position>'"):
        b.wait_for("counters-7", NAME, timeout=0.05)
    runner = a.projections([Projection("local", {Counted: lambda uow, event: None})])
    runner.run_once()
    with pytest.raises(ProjectionError, match="reads this store's own log"):
        a.wait_for("payments:1", "local", timeout=0.05)
    assert a.wait_for(token, "local", timeout=1.0) == position(token)  # its own source
    runner.close()


def test_a_consumer_killed_mid_batch_leaves_neither_the_read_model_nor_the_checkpoint_moved(
    make_store: MakeStore,
) -> None:
    """The consumer dies on the third message of its batch, before its commit: the two
    applied before it are not in the read model, and the checkpoint has not moved; the
    batch delivered again is applied whole, once."""
    a, b = services(make_store)
    queue = MemoryQueue()
    counter = Counter(new_id())
    token = write(a, counter, 1, 2, 3)
    relay_all(a, MemoryPublisher(queue))
    dying = MemorySubscription(queue)
    consumer = consumer_of(b, dying)
    real = consumer.processor.handlers.for_class(Counted)[0]

    def dies_on_the_third(event: Counted, uow: object) -> None:
        if event.aggregate_version == 3:
            raise Crash
        real.fn(event, uow)

    consumer.processor.handlers.for_class(Counted)[0] = replace(real, fn=dies_on_the_third)
    with pytest.raises(Crash):
        consumer.run_once()
    assert read_model(b) == {}
    assert b.stream_status() == []
    dying.close()
    consumer_of(b, MemorySubscription(queue)).run_once()
    assert read_model(b) == {counter.id: (6, "1,2,3")}
    [status] = b.stream_status()
    assert (status.position, status.events) == (position(token), 3)
