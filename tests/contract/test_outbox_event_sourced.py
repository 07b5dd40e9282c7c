"""Event-sourced aggregates go through the outbox like state-based ones."""

from __future__ import annotations

import tidings
from tidings.examples.shop.es_orders import Order
from tidings.testing import RecordingTransport

from ..conftest import MakeStore


def test_an_event_sourced_order_saved_by_its_repository_is_relayed_in_order(
    make_store: MakeStore,
) -> None:
    """Create, add an item, place: three events in the log, three outbox rows, published
    by the relay in that order as CloudEvents of the store's source."""
    store = make_store(tidings.EventRegistry(), outbox=True, source="orders")
    orders = store.repository(Order)
    order = Order.create("o-77", "erin@example.com")
    order.add_item("BOOK-42", 2, 1_950)
    order.place()
    with store.unit_of_work() as uow:
        orders.save(uow, order)
    transport = RecordingTransport()
    relay = store.relay(transport)
    while relay.run_once():
        pass
    relay.release()
    recorded = [e.event_id for e in store.read_stream("o-77")]
    assert transport.ids() == recorded
    assert len(recorded) == 3
    assert all(b'"source":"orders"' in m.body for m in transport.confirmed)
