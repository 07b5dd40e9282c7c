"""The Order aggregate of the shop (state-based): the spec's 6.1.1 example."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from tidings.domain import Aggregate, DomainEvent
from tidings.errors import DomainError


class OrderStatus(StrEnum):
    """Where an order is in its life."""

    DRAFT = "DRAFT"
    PLACED = "PLACED"
    SHIPPED = "SHIPPED"
    CANCELLED = "CANCELLED"


@dataclass(frozen=True, kw_only=True)
class OrderLine:
    """One product on an order."""

    sku: str
    quantity: int
    unit_price_cents: int


@dataclass(frozen=True, kw_only=True)
class OrderPlaced(DomainEvent):
    """A customer committed to buy the lines of an order."""

    customer_id: str
    total_cents: int
    lines: tuple[OrderLine, ...]


@dataclass(frozen=True, kw_only=True)
class OrderCancelled(DomainEvent):
    """A placed order was called off."""

    reason: str


SHOP_EVENTS = (OrderPlaced, OrderCancelled)


class EmptyOrderError(DomainError):
    """An order with no lines cannot be placed."""


class OrderAlreadyPlacedError(DomainError):
    """Only a draft order can be placed."""


class OrderNotPlacedError(DomainError):
    """Only a placed order can be cancelled."""


class Order(Aggregate):
    """A customer's order; it records what happens to it and never publishes."""

    def __init__(
        self,
        order_id: str,
        customer_id: str,
        *,
        lines: tuple[OrderLine, ...] = (),
        status: OrderStatus = OrderStatus.DRAFT,
        version: int = 0,
    ) -> None:
        super().__init__(order_id, version=version)
        self.customer_id = customer_id
        self.lines = list(lines)
        self.status = status

    @property
    def total_cents(self) -> int:
        """Sum of the lines."""
        return sum(line.quantity * line.unit_price_cents for line in self.lines)

    def add_line(self, sku: str, quantity: int, unit_price_cents: int) -> None:
        """Put a product on a draft order."""
        if self.status is not OrderStatus.DRAFT:
            raise OrderAlreadyPlacedError(f"order {self.id} is {self.status}; lines are fixed")
        if quantity < 1:
            raise DomainError(f"quantity must be at least 1 (got {quantity})")
        self.lines.append(OrderLine(sku=sku, quantity=quantity, unit_price_cents=unit_price_cents))

    def place(self) -> None:
        """Check the rules, change state, record OrderPlaced (the spec's Step 1)."""
        if not self.lines:
            raise EmptyOrderError(f"order {self.id} has no lines; add a product first")
        if self.status is not OrderStatus.DRAFT:
            raise OrderAlreadyPlacedError(f"order {self.id} is already {self.status}")
        self.status = OrderStatus.PLACED
        self.record(
            OrderPlaced(
                customer_id=self.customer_id,
                total_cents=self.total_cents,
                lines=tuple(self.lines),
            )
        )

    def cancel(self, reason: str) -> None:
        """Call off a placed order."""
        if self.status is not OrderStatus.PLACED:
            raise OrderNotPlacedError(f"order {self.id} is {self.status}, not PLACED")
        self.status = OrderStatus.CANCELLED
        self.record(OrderCancelled(reason=reason))
