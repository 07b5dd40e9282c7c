"""The shop's event-sourced Order: its rules, its appliers, its snapshot and its upcaster."""

from __future__ import annotations

import pytest

from tidings import DomainError
from tidings.examples.shop.es_orders import (
    ItemAdded,
    ItemRemoved,
    Order,
    OrderCreated,
    OrderPlaced,
    item_added_v1_to_v2,
)
from tidings.examples.shop.orders import (
    EmptyOrderError,
    OrderAlreadyPlacedError,
    OrderLine,
    OrderNotPlacedError,
    OrderStatus,
)
from tidings.testing import FixedClock, SequentialIds


def draft(order_id: str = "o-1") -> Order:
    """A draft order of carol's with 2 x BOOK-42 at €19.50."""
    order = Order.create(order_id, "carol@example.com", clock=FixedClock(), ids=SequentialIds())
    order.add_item("BOOK-42", 2, 1_950)
    return order


def test_an_order_is_created_filled_and_placed_through_its_events() -> None:
    """Each command records one event, and the state follows from it at once."""
    order = draft()
    order.add_item("BOOK-42", 1, 1_950)
    order.add_item("LAMP-3", 1, 4_900)
    order.remove_item("LAMP-3")
    order.place()
    kinds = [type(e) for e in order.pending_events]
    assert kinds == [OrderCreated, ItemAdded, ItemAdded, ItemAdded, ItemRemoved, OrderPlaced]
    assert order.lines == {"BOOK-42": OrderLine(sku="BOOK-42", quantity=3, unit_price_cents=1_950)}
    assert (order.status, order.total_cents, order.customer_id) == (
        OrderStatus.PLACED,
        5_850,
        "carol@example.com",
    )
    assert order.pending_events[-1].total_cents == 5_850  # type: ignore[attr-defined]


def test_the_rules_refuse_commands_and_record_nothing() -> None:
    """Empty orders, zero quantities, unknown lines, changes after placing, early cancels."""
    empty = Order.create("o-2", "dave@example.com")
    with pytest.raises(EmptyOrderError):
        empty.place()
    order = draft()
    with pytest.raises(DomainError, match="at least 1"):
        order.add_item("PEN-1", 0, 100)
    with pytest.raises(DomainError, match="PEN-1 is not on order o-1"):
        order.remove_item("PEN-1")
    with pytest.raises(OrderNotPlacedError):
        order.cancel("changed my mind")
    order.place()
    with pytest.raises(OrderAlreadyPlacedError):
        order.add_item("PEN-1", 1, 100)
    assert len(order.pending_events) == 3
    order.cancel("changed my mind")
    assert order.status is OrderStatus.CANCELLED


def test_a_replayed_order_and_a_restored_snapshot_equal_the_original() -> None:
    """reconstitute(events) and from_snapshot(to_snapshot()) give the same state."""
    order = draft()
    order.add_item("MUG-7", 1, 1_350)
    order.place()
    events = order.pull_events()
    replayed = Order.reconstitute("o-1", events)
    restored = Order.from_snapshot("o-1", order.version, order.to_snapshot())
    assert replayed.to_snapshot() == restored.to_snapshot() == order.to_snapshot()
    assert replayed.version == restored.version == 4


@pytest.mark.parametrize(
    ("price", "cents"), [("19.50", 1_950), ("19.5", 1_950), ("19", 1_900), ("0.07", 7)]
)
def test_the_v1_upcaster_turns_a_euro_string_into_cents(price: str, cents: int) -> None:
    """Version 1 stored "19.50"; version 2 has whole cents and no ``price``."""
    v2 = item_added_v1_to_v2({"sku": "BOOK-42", "quantity": 2, "price": price})
    assert v2 == {"sku": "BOOK-42", "quantity": 2, "unit_price_cents": cents}
