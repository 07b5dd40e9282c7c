"""A database the console's tests look at: the shop example with something to operate.

Two orders flow; one, whose customer id holds a ``<script>`` tag, is a dead letter of the
relay; an OrderPlaced and unreadable bytes are inbox dead letters; a saga waits in
NEEDS_INTERVENTION; a projection holds all events but the last (lag 1). Another service's
database (``fill_consumer``) has handled the first order's first event with two handlers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import tidings
from tidings import RetryPolicy, SagaDefinition, Step
from tidings.application.handling import Delivery, Handlers
from tidings.examples.shop.es_orders import ORDER_EVENTS, Order, OrderCreated
from tidings.examples.shop.inventory import handlers
from tidings.examples.shop.read_models import read_models
from tidings.serialization.cloudevents import from_message, to_message
from tidings.testing import RecordingTransport, plain_message

SCRIPT = "<script>document.title='pwned'</script>"
CONSUMER_HANDLERS = ("billing.open-account", "mail.welcome")


def _refund(ctx: object) -> None:
    raise RuntimeError("payment provider down")


def _ship(ctx: object) -> None:
    raise tidings.StepRefusedError("out of stock")


SAGA = SagaDefinition(
    "console-order",
    [
        Step("pay", lambda ctx: None, _refund, compensation_retry=RetryPolicy(0)),
        Step("ship", _ship),
    ],
)


@dataclass(frozen=True)
class Filled:
    """The ids the tests look for."""

    dead_event_id: str
    saga_id: str
    projection: str
    created_event_id: str  # the first order's OrderCreated, handled by another service
    created_message: bytes  # the CloudEvent a relay publishes for it


def fill(db: str, **options: Any) -> Filled:
    """Fill ``db`` (a URL; ``options`` for ``connect``) as the module docstring says."""
    registry = tidings.EventRegistry(ORDER_EVENTS)
    summary = read_models().order_summary
    with tidings.connect(db, registry=registry, outbox=True, source="shop", **options) as store:
        orders = store.repository(Order)
        for order_id, customer in (("o-1", "alice"), ("o-2", SCRIPT)):
            order = Order.create(order_id, customer)
            order.add_item("MUG-7", 2, 1_350)
            with store.unit_of_work() as uow:
                orders.save(uow, order)
        dead = next(e.event_id for e in store.read_stream("o-2"))
        transport = RecordingTransport(lambda m: "broker said no" if m.message_id == dead else None)
        relay = store.relay(transport, plain_message, max_attempts=1)
        while relay.run_once():
            pass
        relay.release()
        runner = store.projections([summary])
        try:
            runner.run_once()
        finally:
            runner.close()
        late = Order.create("o-3", "bob")
        with store.unit_of_work() as uow:
            orders.save(uow, late)
        placed = next(iter(store.read_stream("o-1")))
        record = store.codec.encode(placed)
        created = to_message(next(store.events.read_stream("o-1")), "shop")
        processor = store.processor(handlers())
        body = to_message(record, "shop").body.replace(b"alice", SCRIPT.encode())
        processor.bury(Delivery(body, record), "handler inventory.decrease-stock failed 5 times")
        processor.bury(Delivery(b"\x00" + SCRIPT.encode(), None), "not valid JSON")
        saga_id = store.sagas([SAGA]).start(SAGA, {"order": "o-1"}).saga_id
    return Filled(dead, saga_id, summary.name, placed.event_id, created.body)


def fill_consumer(consumer: str, message: bytes, **options: Any) -> None:
    """``consumer``'s inbox processes ``message`` (the relay's CloudEvent of the first
    order's OrderCreated) with the handlers ``CONSUMER_HANDLERS`` names."""
    handlers = Handlers()
    for name in CONSUMER_HANDLERS:
        handlers.add(OrderCreated, name, lambda event, uow: None)
    registry = tidings.EventRegistry(ORDER_EVENTS)
    with tidings.connect(consumer, registry=registry, **options) as store:
        store.processor(handlers).process([Delivery(message, from_message(message))])
