"""Commands and integration messages through the outbox, on every backend: committed with
the unit of work, ordered per key, delayed delivery, and handled by consumers like events."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

import tidings
from tidings import ConfigurationError, Message
from tidings.adapters.memory_broker import MemoryPublisher, MemoryQueue, MemorySubscription
from tidings.application.handling import Handlers
from tidings.application.unit_of_work import UnitOfWork
from tidings.testing import RecordingTransport
from tidings.testing.contract import Counted, Counter, new_id

from ..conftest import MakeStore


@dataclass(frozen=True, kw_only=True)
class ChargePayment(Message):
    """A command to the Payment context."""

    order_id: str
    amount_cents: int


REGISTRY = [Counted, ChargePayment]


def wire(transport: RecordingTransport) -> list[dict[str, object]]:
    """The CloudEvents the relay published, in order."""
    return [json.loads(m.body) for m in transport.confirmed]


def relay_all(store: tidings.Store, transport: RecordingTransport, now: float) -> None:
    """One relay pass at the time ``now`` (a fake clock), settled."""
    relay = store.relay(transport, clock=lambda: now)
    relay.run_once()
    relay.release()


def test_a_sent_command_leaves_with_its_transaction_and_never_without_it(
    make_store: MakeStore,
) -> None:
    """Committed beside the aggregate's event, it is relayed with its own type, key and
    data; a rolled-back unit of work sends nothing."""
    store = make_store(tidings.EventRegistry(REGISTRY), outbox=True)
    counter = Counter(new_id())
    counter.increment(1)
    with store.unit_of_work() as uow:
        uow.track(counter)
        uow.send(ChargePayment(order_id="o-1", amount_cents=990), key="order-o-1")
    [sent] = uow.sent
    with pytest.raises(RuntimeError), store.unit_of_work() as uow:
        uow.send(ChargePayment(order_id="o-2", amount_cents=1), key="order-o-2")
        raise RuntimeError("the command failed")
    transport = RecordingTransport()
    relay_all(store, transport, datetime.now(UTC).timestamp())
    published = wire(transport)
    assert [m["type"] for m in published] == ["Counted", "ChargePayment"]
    command = published[1]
    assert (command["id"], command["subject"], command["aggregateversion"]) == (
        sent.event_id,
        "order-o-1",
        1,
    )
    assert command["data"] == {"order_id": "o-1", "amount_cents": 990}
    assert command["correlationid"] == published[0]["correlationid"]


def test_messages_of_one_key_are_numbered_and_delivered_in_the_order_sent(
    make_store: MakeStore,
) -> None:
    """Each key counts its own messages across units of work; keys do not share numbers."""
    store = make_store(tidings.EventRegistry(REGISTRY), outbox=True)
    for amount in (1, 2):
        with store.unit_of_work() as uow:
            uow.send(ChargePayment(order_id="a", amount_cents=amount), key="saga-a")
            uow.send(ChargePayment(order_id="b", amount_cents=amount), key="saga-b")
    with store.unit_of_work() as uow:
        uow.send(ChargePayment(order_id="a", amount_cents=3), key="saga-a")
        uow.send(ChargePayment(order_id="free", amount_cents=0))  # ordered with nothing
    transport = RecordingTransport()
    relay_all(store, transport, datetime.now(UTC).timestamp())
    by_key: dict[str, list[tuple[int, int]]] = {}
    for message in wire(transport):
        data = message["data"]
        assert isinstance(data, dict)
        by_key.setdefault(str(message["subject"]), []).append(
            (int(str(message["aggregateversion"])), data["amount_cents"])
        )
    assert by_key.pop("saga-a") == [(1, 1), (2, 2), (3, 3)]
    assert by_key.pop("saga-b") == [(1, 1), (2, 2)]
    [(free_key, free)] = by_key.items()
    assert free == [(1, 0)]
    assert free_key != "saga-a"


def test_a_delayed_message_is_not_delivered_before_it_is_due(make_store: MakeStore) -> None:
    """With a fake clock: the relay holds it at 59 s and delivers it at 60 s, once."""
    store = make_store(tidings.EventRegistry(REGISTRY), outbox=True)
    t0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    with store.unit_of_work() as uow:
        uow.send(
            ChargePayment(order_id="o-9", amount_cents=5), deliver_at=t0 + timedelta(minutes=1)
        )
        uow.send(ChargePayment(order_id="o-now", amount_cents=1))
    assert store.messages is not None
    assert store.messages.scheduled() == 1
    transport = RecordingTransport()
    relay_all(store, transport, (t0 + timedelta(seconds=59)).timestamp())
    assert [m["data"] for m in wire(transport)] == [{"order_id": "o-now", "amount_cents": 1}]
    relay_all(store, transport, (t0 + timedelta(seconds=60)).timestamp())
    relay_all(store, transport, (t0 + timedelta(seconds=61)).timestamp())
    assert [m["data"] for m in wire(transport)][1:] == [{"order_id": "o-9", "amount_cents": 5}]
    assert store.messages.scheduled() == 0


def test_a_rolled_back_unit_of_work_schedules_nothing(make_store: MakeStore) -> None:
    """A delayed message is in the transaction too."""
    store = make_store(tidings.EventRegistry(REGISTRY), outbox=True)
    with pytest.raises(RuntimeError), store.unit_of_work() as uow:
        uow.send(ChargePayment(order_id="x", amount_cents=1), delay=timedelta(seconds=1))
        raise RuntimeError("no")
    assert store.messages is not None
    assert store.messages.scheduled() == 0


def test_without_an_outbox_a_message_goes_to_the_bus_and_cannot_wait(
    make_store: MakeStore,
) -> None:
    """Level 1: the bus's subscribers get it after the commit; a delay is refused, since
    nothing would keep the message while it waits."""
    store = make_store(tidings.EventRegistry(REGISTRY))
    got: list[ChargePayment] = []
    store.bus.subscribe(ChargePayment, got.append)
    with store.unit_of_work() as uow:
        uow.send(ChargePayment(order_id="o-1", amount_cents=3), key="k")
        assert got == []
    assert [(m.order_id, m.aggregate_id) for m in got] == [("o-1", "k")]
    with store.unit_of_work() as uow, pytest.raises(ConfigurationError, match="needs the outbox"):
        uow.send(ChargePayment(order_id="o-2", amount_cents=3), delay=5)


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ({"key": ""}, "key must be 1 to 256 characters"),
        ({"key": "k" * 257}, "key must be 1 to 256 characters, not 257"),
        ({"deliver_at": datetime(2030, 1, 1)}, "has no time zone"),
        ({"delay": -1}, "must not be negative"),
        ({"delay": 1, "deliver_at": datetime(2030, 1, 1, tzinfo=UTC)}, "not both"),
    ],
)
def test_a_send_with_bad_options_says_what_is_wrong(
    make_store: MakeStore, options: dict[str, object], complaint: str
) -> None:
    """Refused at once, in the caller's code, not later in a relay."""
    store = make_store(tidings.EventRegistry(REGISTRY), outbox=True)
    with store.unit_of_work() as uow, pytest.raises(ConfigurationError, match=complaint):
        uow.send(ChargePayment(order_id="o", amount_cents=1), **options)  # type: ignore[arg-type]


def test_a_consumer_handles_a_command_like_an_event_behind_the_inbox(
    make_store: MakeStore,
) -> None:
    """Delivered twice, the command's handler runs once."""
    store = make_store(tidings.EventRegistry(REGISTRY), outbox=True)
    with store.unit_of_work() as uow:
        uow.send(ChargePayment(order_id="o-1", amount_cents=990), key="order-o-1")
    transport = RecordingTransport()
    relay_all(store, transport, datetime.now(UTC).timestamp())
    queue = MemoryQueue()
    MemoryPublisher(queue).publish(transport.confirmed * 2)
    charged: list[int] = []

    def charge(command: ChargePayment, uow: UnitOfWork) -> None:
        charged.append(command.amount_cents)

    handlers = Handlers()
    handlers.add(ChargePayment, "payment.charge", charge)
    payments = make_store(tidings.EventRegistry(REGISTRY))
    consumer = payments.consumer(MemorySubscription(queue), handlers, fetch_timeout=0.05)
    while consumer.run_once():
        pass
    assert charged == [990]
    assert consumer.stats.duplicates == 1


def test_a_command_whose_handler_keeps_failing_is_a_dead_letter(make_store: MakeStore) -> None:
    """Like an event: after max_attempts the command is kept with the last error."""
    store = make_store(tidings.EventRegistry(REGISTRY), outbox=True)
    with store.unit_of_work() as uow:
        uow.send(ChargePayment(order_id="o-1", amount_cents=990), key="order-o-1")
    [sent] = uow.sent
    transport = RecordingTransport()
    relay_all(store, transport, datetime.now(UTC).timestamp())
    queue = MemoryQueue()
    MemoryPublisher(queue).publish(transport.confirmed)

    def decline(command: ChargePayment, uow: UnitOfWork) -> None:
        raise RuntimeError("card declined by the test")

    handlers = Handlers()
    handlers.add(ChargePayment, "payment.charge", decline)
    payments = make_store(tidings.EventRegistry(REGISTRY))
    consumer = payments.consumer(
        MemorySubscription(queue), handlers, fetch_timeout=0.05, max_attempts=1
    )
    consumer.run_once()
    assert payments.inbox is not None
    [letter] = payments.inbox.dead_letters()
    assert letter.event_id == sent.event_id
    assert "card declined by the test" in letter.reason
