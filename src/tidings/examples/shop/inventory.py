"""The Inventory context of the shop: it takes stock off when an order is placed.

``tidings consume --handlers tidings.examples.shop.inventory:handlers`` runs it behind
the inbox, so an OrderPlaced delivered three times takes the stock off once.
"""

from __future__ import annotations

from tidings.application.handling import Handlers
from tidings.application.unit_of_work import UnitOfWork
from tidings.examples.shop.orders import OrderPlaced

STOCK_DDL = """
CREATE TABLE IF NOT EXISTS shop_stock (
    sku      TEXT PRIMARY KEY,
    on_hand  INTEGER NOT NULL
)
"""
OPENING_STOCK = 100


def decrease_stock(event: OrderPlaced, uow: UnitOfWork) -> None:
    """Take each line's quantity off its product's stock (100 to begin with)."""
    uow.execute(STOCK_DDL)
    for line in event.lines:
        uow.execute(
            "INSERT INTO shop_stock (sku, on_hand) VALUES (:sku, :left) ON CONFLICT (sku) "
            "DO UPDATE SET on_hand = shop_stock.on_hand - :taken",
            {"sku": line.sku, "left": OPENING_STOCK - line.quantity, "taken": line.quantity},
        )


def stock(uow: UnitOfWork, sku: str) -> int:
    """How many of ``sku`` are on hand."""
    uow.execute(STOCK_DDL)
    row = uow.execute("SELECT on_hand FROM shop_stock WHERE sku = :sku", {"sku": sku}).fetchone()
    return OPENING_STOCK if row is None else int(row[0])


def handlers() -> Handlers:
    """The Inventory context's handlers, under stable names."""
    registry = Handlers()
    registry.add(OrderPlaced, "inventory.decrease-stock", decrease_stock)
    return registry
