"""``tidings demo`` sections 3 and 4: the outbox and relay, the inbox and the levels.

The Order and Inventory contexts each have their own SQLite file; an in-process broker
stands between them (``tidings relay`` and ``tidings consume`` do the same over NATS or
RabbitMQ).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import tidings
from tidings.adapters.memory_broker import MemoryPublisher, MemoryQueue, MemorySubscription
from tidings.cli.demo import console, say
from tidings.cli.options import outbox_of
from tidings.errors import BrokerUnavailableError
from tidings.examples.shop.inventory import decrease_stock, handlers, stock
from tidings.examples.shop.orders import SHOP_EVENTS, Order, OrderPlaced
from tidings.ports import OutgoingMessage
from tidings.serialization.cloudevents import to_message


class Broker(MemoryPublisher):
    """The in-process broker, with a switch to take it down; keeps what it confirmed."""

    down = False

    def __init__(self, queue: MemoryQueue) -> None:
        super().__init__(queue)
        self.sent: list[OutgoingMessage] = []

    def publish(self, messages: Sequence[OutgoingMessage]) -> list[str | None]:
        """Refuse to connect while down."""
        if self.down:
            raise BrokerUnavailableError("the broker is down (connection refused)")
        results = super().publish(messages)
        self.sent += [m for m, r in zip(messages, results, strict=True) if r is None]
        return results


def messaging(folder: Path) -> None:
    """Play sections 3 and 4 with the databases in ``folder``."""
    registry = tidings.EventRegistry(SHOP_EVENTS)
    orders = tidings.connect(
        f"sqlite:///{folder / 'orders.db'}", registry=registry, outbox=True, source="orders"
    )
    inventory = tidings.connect(f"sqlite:///{folder / 'inventory.db'}", registry=registry)
    queue = MemoryQueue()
    broker = Broker(queue)
    try:
        outbox_and_relay(orders, broker)
        inbox_and_levels(orders, inventory, broker)
    finally:
        orders.close()
        inventory.close()


def outbox_and_relay(orders: tidings.Store, broker: Broker) -> None:
    """Spec 6.1.2: the event is a row of the order's transaction; the relay publishes it."""
    console.rule("3. The outbox and its relay (spec 6.1.2)")
    outbox = outbox_of(orders)
    say("Orders now connect with outbox=True (level 2): the unit of work writes an outbox row")
    say("with every event, and a relay publishes it, at least once, in per-aggregate order.")
    place(orders, "o-3001", "carol@example.com", 2)
    say(
        f"Carol places o-3001: order, event and outbox row in one transaction "
        f"(backlog {outbox.stats(time.time()).backlog}).",
        2,
    )
    relay = orders.relay(broker)
    broker.down = True
    try:
        relay.run_once()
    except BrokerUnavailableError as exc:
        say(f"The broker is down; the relay's pass fails ({exc}) and marks nothing.", 2)
    say(
        f"Backlog {outbox.stats(time.time()).backlog}: the event waits in the outbox, "
        "not lost (spec scenario 1).",
        2,
    )
    broker.down = False
    relay.run_once()
    say(
        f"The broker is back: published {relay.stats.published} with its confirmation, "
        f"backlog {outbox.stats(time.time()).backlog}.",
        2,
    )
    try:
        with orders.unit_of_work() as uow:
            doomed = Order("o-3002", "dave@example.com")
            doomed.add_line("LAMP-3", 1, 4_900)
            doomed.place()
            uow.track(doomed)
            raise RuntimeError("card declined")
    except RuntimeError:
        pass
    relay.run_once()
    relay.release()
    say(
        f"Dave's order rolls back (card declined): backlog "
        f"{outbox.stats(time.time()).backlog}, published still {relay.stats.published}: "
        "no phantom event (spec scenario 2).",
        2,
    )


def inbox_and_levels(orders: tidings.Store, inventory: tidings.Store, broker: Broker) -> None:
    """Spec 6.1.3 and 6.1.4: OrderPlaced three times; the stock drops once behind the inbox."""
    console.rule("4. The inbox and the decision matrix (spec 6.1.3, 6.1.4)")
    say("OrderPlaced for 2 x BOOK-42 arrives three times (a relay re-sent it after two crashes).")
    event = next(iter(orders.read_stream("o-3001")))

    reset(inventory)
    plain = tidings.InMemoryBus()
    plain.subscribe(OrderPlaced, lambda e: in_own_unit_of_work(inventory, e))
    plain.publish([event, event, event])
    say(f"level 1, in-memory bus, no inbox:        BOOK-42 100 -> {on_hand(inventory)}", 2)

    reset(inventory)
    inventory.subscribe_inbox(handlers())
    inventory.bus.publish([event, event, event])
    say(f"level 3, inbox behind the bus:           BOOK-42 100 -> {on_hand(inventory)}", 2)

    reset(inventory)
    [message] = broker.sent  # the relay's copy waits in the queue; two re-sends follow
    broker.publish([message, garbage(), message, unknown_type(orders)])
    consumer = inventory.consumer(MemorySubscription(broker.queue), handlers(), fetch_timeout=0.1)
    while consumer.run_once():
        pass
    say(
        f"level 5, outbox -> broker -> inbox:       BOOK-42 100 -> {on_hand(inventory)} "
        f"(Orders and Inventory in two databases)",
        2,
    )
    say("Two bad messages came with them; each is a dead letter with its reason, and the")
    say("good ones around them were handled:")
    for letter in inventory.inbox.dead_letters() if inventory.inbox else ():
        say(f"- {letter.reason[:110]}", 2)


def place(store: tidings.Store, order_id: str, customer: str, quantity: int) -> None:
    """Place an order for ``quantity`` x BOOK-42."""
    order = Order(order_id, customer)
    order.add_line("BOOK-42", quantity, 1_950)
    order.place()
    with store.unit_of_work() as uow:
        uow.track(order)


def in_own_unit_of_work(store: tidings.Store, event: OrderPlaced) -> None:
    """The inventory handler without an inbox: every copy takes stock."""
    with store.unit_of_work() as uow:
        decrease_stock(event, uow)


def reset(store: tidings.Store) -> None:
    """Start a level with 100 on hand and an empty inbox."""
    with store.unit_of_work() as uow:
        uow.execute("DROP TABLE IF EXISTS shop_stock")
        uow.execute(f"DELETE FROM {store.database.tables['inbox']}")  # type: ignore[attr-defined]


def on_hand(store: tidings.Store) -> int:
    """BOOK-42 on hand."""
    with store.unit_of_work() as uow:
        return stock(uow, "BOOK-42")


def garbage() -> OutgoingMessage:
    """Bytes that are not JSON at all."""
    return OutgoingMessage("bad-1", "order.placed", "o-?", b"\x00\xff not json")


def unknown_type(orders: tidings.Store) -> OutgoingMessage:
    """A well-formed CloudEvent of a type Inventory has never heard of."""
    record = tidings.EventRecord(
        event_id="evt-teleported",
        stream_id="o-3001",
        version=2,
        event_type="OrderTeleported",
        schema_version=1,
        occurred_at=tidings.utc_now(),
        data=b"{}",
    )
    return to_message(record, orders.source)
