"""The shop's Order as an event-sourced aggregate: its events are the only truth (spec 6.3.7).

The state-based Order of ``orders.py`` keeps a row and records events beside it; this one
keeps no row at all. Its event types have dotted names (``orders.placed``) so that both
can share one event log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tidings.domain import Clock, DomainEvent, EventSourcedAggregate, IdSource, utc_now, uuid7
from tidings.errors import DomainError
from tidings.examples.shop.orders import (
    EmptyOrderError,
    OrderAlreadyPlacedError,
    OrderLine,
    OrderNotPlacedError,
    OrderStatus,
)


@dataclass(frozen=True, kw_only=True)
class OrderCreated(DomainEvent):
    """A customer opened a draft order. The shipping address is the customer's personal
    data: stored encrypted with their key, it reads as "[REDACTED]" once they are forgotten."""

    event_type = "orders.created"
    personal_data = {"shipping_address": "customer_id"}

    customer_id: str
    shipping_address: str | None = None


@dataclass(frozen=True, kw_only=True)
class ItemAdded(DomainEvent):
    """Some of a product went on the order. Version 2: the price in whole cents (version 1
    stored a euro string, ``price``; ``item_added_v1_to_v2`` reads those)."""

    event_type = "orders.item_added"
    schema_version = 2

    sku: str
    quantity: int
    unit_price_cents: int


@dataclass(frozen=True, kw_only=True)
class ItemRemoved(DomainEvent):
    """A product was taken off a draft order."""

    event_type = "orders.item_removed"

    sku: str


@dataclass(frozen=True, kw_only=True)
class OrderPlaced(DomainEvent):
    """The customer committed to buy. Only the change and a total, never the whole order
    (the spec's mistake 3): the lines are in the ItemAdded events before it."""

    event_type = "orders.placed"

    total_cents: int


@dataclass(frozen=True, kw_only=True)
class OrderShipped(DomainEvent):
    """A placed order left the warehouse."""

    event_type = "orders.shipped"

    carrier: str


@dataclass(frozen=True, kw_only=True)
class OrderCancelled(DomainEvent):
    """A placed order was called off."""

    event_type = "orders.cancelled"

    reason: str


def item_added_v1_to_v2(v1: dict[str, Any]) -> dict[str, Any]:
    """Upcaster: version 1 kept the unit price as a euro string ("19.50")."""
    euros, _, cents = v1.pop("price").partition(".")
    return {**v1, "unit_price_cents": int(euros) * 100 + int(cents.ljust(2, "0")[:2])}


ORDER_EVENTS = (OrderCreated, ItemAdded, ItemRemoved, OrderPlaced, OrderShipped, OrderCancelled)
ORDER_UPCASTERS = {("orders.item_added", 1): item_added_v1_to_v2}


@dataclass(frozen=True, kw_only=True)
class OrderState:
    """What an Order snapshot holds (snapshot_version 2: the shipping address came in)."""

    personal_data = {"shipping_address": "customer_id"}

    customer_id: str
    status: OrderStatus
    lines: tuple[OrderLine, ...]
    shipping_address: str | None = None


class Order(EventSourcedAggregate):
    """A customer's order whose state is only ever the replay of its events."""

    snapshot_version = 2
    snapshot_type = OrderState

    def __init__(self, order_id: str, *, clock: Clock = utc_now, ids: IdSource = uuid7) -> None:
        super().__init__(order_id, clock=clock, ids=ids)
        self.customer_id = ""
        self.shipping_address: str | None = None
        self.status = OrderStatus.DRAFT
        self.lines: dict[str, OrderLine] = {}

    @classmethod
    def create(
        cls,
        order_id: str,
        customer_id: str,
        *,
        shipping_address: str | None = None,
        clock: Clock = utc_now,
        ids: IdSource = uuid7,
    ) -> Order:
        """Open a draft order for a customer (records OrderCreated)."""
        order = cls(order_id, clock=clock, ids=ids)
        order.record(OrderCreated(customer_id=customer_id, shipping_address=shipping_address))
        return order

    @property
    def total_cents(self) -> int:
        """Sum of the lines."""
        return sum(line.quantity * line.unit_price_cents for line in self.lines.values())

    def add_item(self, sku: str, quantity: int, unit_price_cents: int) -> None:
        """Put some of a product on a draft order (more of one already there adds up)."""
        self._require_draft()
        if quantity < 1:
            raise DomainError(f"quantity must be at least 1 (got {quantity})")
        self.record(ItemAdded(sku=sku, quantity=quantity, unit_price_cents=unit_price_cents))

    def remove_item(self, sku: str) -> None:
        """Take a product off a draft order."""
        self._require_draft()
        if sku not in self.lines:
            raise DomainError(f"{sku} is not on order {self.id}")
        self.record(ItemRemoved(sku=sku))

    def place(self) -> None:
        """Commit to buy the lines of a draft order."""
        self._require_draft()
        if not self.lines:
            raise EmptyOrderError(f"order {self.id} has no lines; add a product first")
        self.record(OrderPlaced(total_cents=self.total_cents))

    def ship(self, carrier: str) -> None:
        """Hand a placed order to a carrier."""
        if self.status is not OrderStatus.PLACED:
            raise OrderNotPlacedError(f"order {self.id} is {self.status}, not PLACED")
        self.record(OrderShipped(carrier=carrier))

    def cancel(self, reason: str) -> None:
        """Call off a placed order."""
        if self.status is not OrderStatus.PLACED:
            raise OrderNotPlacedError(f"order {self.id} is {self.status}, not PLACED")
        self.record(OrderCancelled(reason=reason))

    def _require_draft(self) -> None:
        if self.status is not OrderStatus.DRAFT:
            raise OrderAlreadyPlacedError(f"order {self.id} is {self.status}; lines are fixed")

    # Appliers: the only code that changes state; record() and loading both go through them.

    def _created(self, event: OrderCreated) -> None:
        self.customer_id = event.customer_id
        self.shipping_address = event.shipping_address

    def _item_added(self, event: ItemAdded) -> None:
        before = self.lines.get(event.sku)
        quantity = event.quantity + (before.quantity if before else 0)
        self.lines[event.sku] = OrderLine(
            sku=event.sku, quantity=quantity, unit_price_cents=event.unit_price_cents
        )

    def _item_removed(self, event: ItemRemoved) -> None:
        del self.lines[event.sku]

    def _placed(self, event: OrderPlaced) -> None:
        self.status = OrderStatus.PLACED

    def _shipped(self, event: OrderShipped) -> None:
        self.status = OrderStatus.SHIPPED

    def _cancelled(self, event: OrderCancelled) -> None:
        self.status = OrderStatus.CANCELLED

    appliers = {
        OrderCreated: _created,
        ItemAdded: _item_added,
        ItemRemoved: _item_removed,
        OrderPlaced: _placed,
        OrderShipped: _shipped,
        OrderCancelled: _cancelled,
    }

    def to_snapshot(self) -> OrderState:
        """The state as an OrderState."""
        return OrderState(
            customer_id=self.customer_id,
            status=self.status,
            lines=tuple(self.lines.values()),
            shipping_address=self.shipping_address,
        )

    def restore_snapshot(self, state: OrderState) -> None:
        """Set the state from an OrderState."""
        self.customer_id, self.status = state.customer_id, state.status
        self.shipping_address = state.shipping_address
        self.lines = {line.sku: line for line in state.lines}
