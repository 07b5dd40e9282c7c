"""OrderRepository: the orders table, written through the unit of work's transaction."""

from __future__ import annotations

import json

from tidings.application.unit_of_work import UnitOfWork
from tidings.examples.shop.orders import Order, OrderLine, OrderStatus

ORDERS_DDL = """
CREATE TABLE IF NOT EXISTS shop_orders (
    order_id    TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    status      TEXT NOT NULL,
    total_cents INTEGER NOT NULL,
    lines       TEXT NOT NULL,
    version     INTEGER NOT NULL
)
"""


class OrderRepository:
    """Loads and saves orders as rows of ``shop_orders``, in the caller's unit of work.

    ``save`` writes the row and tracks the order, so its pending events are written in
    the same transaction and published after the commit. The stored ``version`` is given
    back on load: that is what lets a concurrent writer be detected.
    """

    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    def create_table(self) -> None:
        """Create ``shop_orders`` if it is missing."""
        self.uow.execute(ORDERS_DDL)

    def get(self, order_id: str) -> Order | None:
        """The order, or None."""
        row = self.uow.execute(
            "SELECT order_id, customer_id, status, lines, version FROM shop_orders "
            "WHERE order_id = :id",
            {"id": order_id},
        ).fetchone()
        if row is None:
            return None
        lines = tuple(OrderLine(**line) for line in json.loads(row[3]))
        return Order(row[0], row[1], lines=lines, status=OrderStatus(row[2]), version=row[4])

    def add(self, order: Order) -> None:
        """Insert a new order (fails at the database if the id is taken)."""
        self.uow.execute(
            "INSERT INTO shop_orders VALUES (:id, :customer, :status, :total, :lines, :version)",
            {
                "id": order.id,
                "customer": order.customer_id,
                "status": order.status.value,
                "total": order.total_cents,
                "lines": _lines(order),
                "version": order.version,
            },
        )
        self.uow.track(order)

    def update(self, order: Order) -> None:
        """Write the order's current state."""
        self.uow.execute(
            "UPDATE shop_orders SET status = :status, total_cents = :total, lines = :lines, "
            "version = :version WHERE order_id = :id",
            {
                "status": order.status.value,
                "total": order.total_cents,
                "lines": _lines(order),
                "version": order.version,
                "id": order.id,
            },
        )
        self.uow.track(order)


def _lines(order: Order) -> str:
    return json.dumps(
        [
            {"sku": line.sku, "quantity": line.quantity, "unit_price_cents": line.unit_price_cents}
            for line in order.lines
        ]
    )
