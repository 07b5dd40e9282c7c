"""The decision matrix's five levels, each as configuration, on the spec's example:
OrderPlaced (2 units) delivered three times. Without an inbox (levels 1, 2) the stock
drops three times, the problem the spec describes; with it (levels 3, 4, 5) once."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import pytest

import tidings
from tidings.adapters.bus_transport import BusTransport
from tidings.application.backoff import Backoff
from tidings.application.handling import Handlers
from tidings.application.unit_of_work import UnitOfWork
from tidings.domain.aggregate import Aggregate
from tidings.domain.events import DomainEvent
from tidings.ports import OutgoingMessage, Transport
from tidings.testing.inbox_contract import StockMoved, decrease_stock, stock_of

from ..conftest import MakeStore
from .brokers import Harness, MemoryHarness, NatsHarness, RabbitHarness


@dataclass(frozen=True, kw_only=True)
class OrderPlaced(DomainEvent):
    """An order for ``step`` units (the name the test brokers route)."""

    event_type: ClassVar[str] = "order.placed"
    step: int


class Order(Aggregate):
    """Just enough of an order to place one."""

    def place(self, units: int) -> None:
        """Record OrderPlaced."""
        self.record(OrderPlaced(step=units))


REGISTRY = [OrderPlaced, StockMoved]


def place_order(store: tidings.Store) -> Order:
    """Commit an order whose OrderPlaced asks for 2 units."""
    order = Order(f"order-{uuid.uuid4().hex[:8]}")
    order.place(2)
    with store.unit_of_work() as uow:
        uow.track(order)
    return order


def relayed(store: tidings.Store, transport: Transport) -> list[OutgoingMessage]:
    """Drain the outbox into ``transport`` and return the OrderPlaced messages it carried."""
    sent: list[OutgoingMessage] = []

    class Keep:
        def publish(self, messages: list[OutgoingMessage]) -> list[str | None]:
            sent.extend(messages)
            return transport.publish(messages)

        def close(self) -> None:
            transport.close()

    relay = store.relay(Keep())  # type: ignore[arg-type]
    while relay.run_once():
        pass
    relay.release()
    return [m for m in sent if m.routing_key == "order.placed"]  # not the handlers' events


def plain_handler(product: str) -> Callable[[OrderPlaced], None]:
    """A bus handler without an inbox: every delivery takes stock."""
    handle = decrease_stock(product)

    def on_event(event: OrderPlaced) -> None:
        with_store = on_event.store  # type: ignore[attr-defined]
        with with_store.unit_of_work() as uow:
            handle(event, uow)

    return on_event


@pytest.fixture
def store(make_store: MakeStore) -> Any:
    """Yields a factory: ``store(outbox=...)`` on the parametrised backend."""
    return lambda **options: make_store(tidings.EventRegistry(REGISTRY), **options)


def test_level_1_in_memory_bus_applies_every_duplicate(store: Any) -> None:
    """Level 1: handlers after commit, no inbox: three deliveries, 100 -> 94."""
    shop = store()
    product = f"sku-{uuid.uuid4().hex[:6]}"
    handler = plain_handler(product)
    handler.store = shop  # type: ignore[attr-defined]
    shop.bus.subscribe(OrderPlaced, handler)
    order = place_order(shop)
    event = next(iter(shop.read_stream(order.id)))
    shop.bus.publish([event, event])  # two duplicates of what the commit delivered
    assert stock_of(shop, product) == 94


def test_level_2_outbox_delivers_at_least_once_and_duplicates_apply(store: Any) -> None:
    """Level 2: the relay delivers from the outbox; a re-sent message applies again."""
    shop = store(outbox=True)
    product = f"sku-{uuid.uuid4().hex[:6]}"
    handler = plain_handler(product)
    handler.store = shop  # type: ignore[attr-defined]
    shop.bus.subscribe(OrderPlaced, handler)
    place_order(shop)
    bus = BusTransport(shop.bus, shop.decode)
    [message] = relayed(shop, bus)
    bus.publish([message, message])  # a relay that re-sends after a crash
    assert stock_of(shop, product) == 94


def test_level_3_inbox_behind_the_bus_applies_once(store: Any) -> None:
    """Level 3: the same handler behind the inbox: 100 -> 98 however often it comes."""
    shop = store()
    product = f"sku-{uuid.uuid4().hex[:6]}"
    handlers = Handlers()
    handlers.add(OrderPlaced, "inventory.decrease", decrease_stock(product))
    shop.subscribe_inbox(handlers)
    order = place_order(shop)
    event = next(iter(shop.read_stream(order.id)))
    shop.bus.publish([event, event])
    assert stock_of(shop, product) == 98


def test_level_4_outbox_and_inbox_in_one_database_apply_once(store: Any) -> None:
    """Level 4: outbox, in-process relay, inbox: three deliveries, 100 -> 98."""
    shop = store(outbox=True)
    product = f"sku-{uuid.uuid4().hex[:6]}"
    handlers = Handlers()
    handlers.add(OrderPlaced, "inventory.decrease", decrease_stock(product))
    shop.subscribe_inbox(handlers)
    place_order(shop)
    bus = BusTransport(shop.bus, shop.decode)
    [message] = relayed(shop, bus)
    assert bus.publish([message, message]) == [None, None]
    assert stock_of(shop, product) == 98


def test_level_4_a_failing_handler_is_delivered_again_by_the_relay(store: Any) -> None:
    """Level 4: the handler fails once; the relay sees a refusal and delivers it again."""
    shop = store(outbox=True)
    product = f"sku-{uuid.uuid4().hex[:6]}"
    calls: list[int] = []

    def flaky(event: OrderPlaced, uow: UnitOfWork) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("warehouse offline")
        decrease_stock(product)(event, uow)

    handlers = Handlers()
    handlers.add(OrderPlaced, "inventory.flaky", flaky)
    shop.subscribe_inbox(handlers)
    place_order(shop)
    relay = shop.relay(backoff=Backoff(base=0.0, jitter=0.0))
    relay.run_once()
    assert stock_of(shop, product) == 100
    relay.run_once()
    relay.release()
    assert stock_of(shop, product) == 98


@pytest.fixture(
    params=[
        "memory",
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
        pytest.param("nats", marks=pytest.mark.nats),
    ]
)
def broker(request: pytest.FixtureRequest) -> Iterator[Harness]:
    """Fresh broker topology for this test, removed afterwards."""
    harness: Harness
    if request.param == "memory":
        harness = MemoryHarness()
    elif request.param == "rabbitmq":
        harness = RabbitHarness(request.getfixturevalue("rabbitmq_url"), queue_type="classic")
    else:
        harness = NatsHarness(request.getfixturevalue("nats_url"))
    yield harness
    harness.cleanup()


def test_level_5_outbox_broker_inbox_between_two_databases_apply_once(
    make_sql_store: MakeStore, broker: Harness
) -> None:
    """Level 5: Order's outbox -> relay -> broker -> consumer -> Inventory's inbox. The
    relay sends the event again twice more, as after two crashes, each time under a new
    broker message id (a re-send after JetStream's duplicate window has passed, which the
    broker cannot drop): all three copies reach the consumer, its inbox skips two, and the
    stock drops once."""
    publisher, subscription = broker.publisher(), broker.subscription()
    orders = make_sql_store(tidings.EventRegistry(REGISTRY), outbox=True, source="orders")
    inventory = make_sql_store(tidings.EventRegistry(REGISTRY))
    product = f"sku-{uuid.uuid4().hex[:6]}"
    handlers = Handlers()
    handlers.add(OrderPlaced, "inventory.decrease", decrease_stock(product))
    place_order(orders)
    [message] = relayed(orders, publisher)
    again = [replace(message, message_id=str(uuid.uuid4())) for _ in range(2)]
    assert publisher.publish(again) == [None, None]
    consumer = inventory.consumer(subscription, handlers, fetch_timeout=0.5)
    while consumer.run_once():
        pass
    assert (consumer.stats.received, consumer.stats.duplicates) == (3, 2)
    assert consumer.stats.applied == 1
    assert stock_of(inventory, product) == 98
