"""tidings, through its public API: aggregates, units of work, the repository."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import tidings
from tidings import DomainEvent, EventSourcedAggregate


@dataclass(frozen=True, kw_only=True)
class OrderCreated(DomainEvent):
    """A customer opened an order."""

    customer_id: str


@dataclass(frozen=True, kw_only=True)
class ItemAdded(DomainEvent):
    """A line went on the order."""

    sku: str
    quantity: int
    unit_price_cents: int


@dataclass(frozen=True, kw_only=True)
class OrderState:
    """The snapshot state."""

    customer_id: str
    quantity: int


class Order(EventSourcedAggregate):
    """One event to create it, ItemAdded for every line; snapshots on demand."""

    snapshot_version = 1
    snapshot_type = OrderState

    def __init__(self, order_id: str, **injected: Any) -> None:
        super().__init__(order_id, **injected)
        self.customer_id = ""
        self.quantity = 0

    def create(self, customer_id: str) -> None:
        """Record OrderCreated."""
        self.record(OrderCreated(customer_id=customer_id))

    def add_item(self) -> None:
        """Record one ItemAdded."""
        self.record(ItemAdded(sku="BOOK-42", quantity=2, unit_price_cents=1950))

    def _created(self, event: OrderCreated) -> None:
        self.customer_id = event.customer_id

    def _item_added(self, event: ItemAdded) -> None:
        self.quantity += event.quantity

    appliers = {OrderCreated: _created, ItemAdded: _item_added}

    def to_snapshot(self) -> OrderState:
        """The state as an OrderState."""
        return OrderState(customer_id=self.customer_id, quantity=self.quantity)

    def restore_snapshot(self, state: OrderState) -> None:
        """Set the state from an OrderState."""
        self.customer_id, self.quantity = state.customer_id, state.quantity


class TidingsLibrary:
    """tidings on SQLite or PostgreSQL (``url`` picks which)."""

    name = "tidings"

    def __init__(self, url: str, **options: Any) -> None:
        registry = tidings.EventRegistry([OrderCreated, ItemAdded])
        self.store = tidings.connect(url, registry=registry, **options)
        self.orders = self.store.repository(Order)

    def one_per_transaction(self, streams: list[str]) -> None:
        """A new Order per stream (one OrderCreated), one unit of work each."""
        store, orders = self.store, self.orders
        for stream in streams:
            order = Order(stream)
            order.create(stream)
            with store.unit_of_work() as uow:
                orders.save(uow, order)

    def many_per_transaction(self, stream: str, count: int) -> str:
        """An Order with ``count`` events, saved in one unit of work."""
        order = Order(stream)
        order.create(stream)
        for _ in range(count - 1):
            order.add_item()
        with self.store.unit_of_work() as uow:
            self.orders.save(uow, order)
        return stream

    def load(self, order_id: str) -> int:
        """Replay the Order from its events; returns its version."""
        return self.orders.get(order_id).version

    def snapshot(self, order_id: str) -> None:
        """Take a snapshot of the Order at its version."""
        self.orders.snapshot(self.orders.get(order_id))

    def load_from_snapshot(self, order_id: str) -> int:
        """Load the Order (the repository starts from the newest snapshot)."""
        return self.orders.get(order_id).version

    def read_log(self, page: int) -> int:
        """The whole log in pages of ``page``, decoded to events; returns how many."""
        return sum(1 for _ in self.store.iter_all(0, page))

    def close(self) -> None:
        """Close the store."""
        self.store.close()
