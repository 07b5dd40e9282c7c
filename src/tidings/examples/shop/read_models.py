"""The spec's read models (6.4.2, pattern 3) from the event-sourced Order's events.

One stream of events, four models shaped for four readers, each a projection with its own
tables and checkpoint: OrderSummary (the customer's order page), CustomerOrders (a
customer's list), SalesAnalytics (BI: revenue by product, top customers) and
ShippingQueue (the warehouse's orders to pack). Handlers select and transform, nothing
more (6.4.6, mistake 3): the rules stay in ``Order``. Query handlers read a model and
return DTOs, never the aggregate (6.4.8's GetOrderSummaryQuery).

The shipping address is personal data, sealed per customer in the events: no model copies
it, so forgetting a customer leaves no plaintext behind here (docs/event-sourcing.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import tidings
from tidings.application.projections import Handler, Projection
from tidings.examples.shop.es_orders import (
    ItemAdded,
    ItemRemoved,
    OrderCancelled,
    OrderCreated,
    OrderPlaced,
    OrderShipped,
)

_PREFIX = re.compile(r"[a-z][a-z0-9_]{0,30}\Z")


@dataclass(frozen=True)
class ShopReadModels:
    """The four projections, and the prefix of their tables (``shop_`` by default)."""

    prefix: str
    order_summary: Projection
    customer_orders: Projection
    sales_analytics: Projection
    shipping_queue: Projection

    @property
    def projections(self) -> list[Projection]:
        """All four, for ``store.projections(...)``."""
        return [self.order_summary, self.customer_orders, self.sales_analytics, self.shipping_queue]


def read_models(prefix: str = "shop_") -> ShopReadModels:
    """The shop's read models, their tables named ``<prefix>order_summary`` and so on."""
    if not _PREFIX.match(prefix):
        raise ValueError(f"table prefix {prefix!r}: lower-case letters, digits and '_'")
    return ShopReadModels(
        prefix,
        _order_summary(prefix),
        _customer_orders(prefix),
        _sales_analytics(prefix),
        _shipping_queue(prefix),
    )


def _lines(table: str) -> dict[type[Any], Handler]:
    """Handlers keeping a model's own copy of each order's lines (more of one product
    adds up, at the latest price; a removed product goes), as the aggregate does."""

    def added(uow: Any, e: ItemAdded) -> None:
        uow.execute(
            f"INSERT INTO {table} (order_id, sku, quantity, unit_price_cents)"
            " VALUES (:o, :sku, :q, :p) ON CONFLICT (order_id, sku) DO UPDATE SET"
            f" quantity = {table}.quantity + excluded.quantity,"
            " unit_price_cents = excluded.unit_price_cents",
            {"o": e.aggregate_id, "sku": e.sku, "q": e.quantity, "p": e.unit_price_cents},
        )

    def removed(uow: Any, e: ItemRemoved) -> None:
        uow.execute(
            f"DELETE FROM {table} WHERE order_id = :o AND sku = :sku",
            {"o": e.aggregate_id, "sku": e.sku},
        )

    return {ItemAdded: added, ItemRemoved: removed}


def _lines_ddl(table: str) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {table} (order_id TEXT, sku TEXT, quantity INTEGER,"
        " unit_price_cents INTEGER, PRIMARY KEY (order_id, sku))"
    )


def _set_status(table: str, status: str) -> Handler:
    def handler(uow: Any, e: Any) -> None:
        uow.execute(
            f"UPDATE {table} SET status = :s WHERE order_id = :o",
            {"s": status, "o": e.aggregate_id},
        )

    return handler


# -- OrderSummary: one row per order, for the customer's order page -----------------------


def _order_summary(prefix: str) -> Projection:
    table, lines = f"{prefix}order_summary", f"{prefix}order_summary_lines"
    keep_lines = _lines(lines)

    def created(uow: Any, e: OrderCreated) -> None:
        uow.execute(
            f"INSERT INTO {table} (order_id, customer_id, status, item_count, total_cents,"
            " carrier) VALUES (:o, :c, 'DRAFT', 0, 0, '')",
            {"o": e.aggregate_id, "c": e.customer_id},
        )

    def lines_changed(uow: Any, e: ItemAdded | ItemRemoved) -> None:
        keep_lines[type(e)](uow, e)
        uow.execute(
            f"UPDATE {table} SET item_count = (SELECT coalesce(sum(quantity), 0) FROM {lines}"
            " WHERE order_id = :o), total_cents = (SELECT coalesce(sum(quantity *"
            f" unit_price_cents), 0) FROM {lines} WHERE order_id = :o) WHERE order_id = :o",
            {"o": e.aggregate_id},
        )

    def placed(uow: Any, e: OrderPlaced) -> None:
        uow.execute(
            f"UPDATE {table} SET status = 'PLACED', total_cents = :t WHERE order_id = :o",
            {"t": e.total_cents, "o": e.aggregate_id},
        )

    def shipped(uow: Any, e: OrderShipped) -> None:
        uow.execute(
            f"UPDATE {table} SET status = 'SHIPPED', carrier = :c WHERE order_id = :o",
            {"c": e.carrier, "o": e.aggregate_id},
        )

    return Projection(
        "shop.order-summary",
        {
            OrderCreated: created,
            ItemAdded: lines_changed,
            ItemRemoved: lines_changed,
            OrderPlaced: placed,
            OrderShipped: shipped,
            OrderCancelled: _set_status(table, "CANCELLED"),
        },
        schema=[
            f"CREATE TABLE IF NOT EXISTS {table} (order_id TEXT PRIMARY KEY, customer_id TEXT,"
            " status TEXT, item_count INTEGER, total_cents INTEGER, carrier TEXT)",
            _lines_ddl(lines),
        ],
    )


@dataclass(frozen=True)
class OrderSummary:
    """What a customer sees of one order."""

    order_id: str
    customer_id: str
    status: str
    item_count: int
    total_cents: int
    carrier: str


class GetOrderSummaryQuery:
    """6.4.8's query handler: one order's summary from the read model, or None."""

    def __init__(self, store: tidings.Store, models: ShopReadModels) -> None:
        self.store, self.table = store, f"{models.prefix}order_summary"

    def execute(self, order_id: str) -> OrderSummary | None:
        """The summary of ``order_id`` as the read model holds it now."""
        with self.store.unit_of_work() as uow:
            row = uow.execute(
                "SELECT order_id, customer_id, status, item_count, total_cents, carrier"
                f" FROM {self.table} WHERE order_id = :o",
                {"o": order_id},
            ).fetchone()
        return None if row is None else OrderSummary(*row)


# -- CustomerOrders: a customer's orders, newest first -------------------------------------


def _customer_orders(prefix: str) -> Projection:
    table = f"{prefix}customer_orders"

    def created(uow: Any, e: OrderCreated) -> None:
        uow.execute(
            f"INSERT INTO {table} (order_id, customer_id, status, total_cents, opened_at)"
            " VALUES (:o, :c, 'DRAFT', 0, :at)",
            {"o": e.aggregate_id, "c": e.customer_id, "at": e.occurred_at.isoformat()},
        )

    def placed(uow: Any, e: OrderPlaced) -> None:
        uow.execute(
            f"UPDATE {table} SET status = 'PLACED', total_cents = :t WHERE order_id = :o",
            {"t": e.total_cents, "o": e.aggregate_id},
        )

    return Projection(
        "shop.customer-orders",
        {
            OrderCreated: created,
            OrderPlaced: placed,
            OrderShipped: _set_status(table, "SHIPPED"),
            OrderCancelled: _set_status(table, "CANCELLED"),
        },
        schema=[
            f"CREATE TABLE IF NOT EXISTS {table} (order_id TEXT PRIMARY KEY, customer_id TEXT,"
            " status TEXT, total_cents INTEGER, opened_at TEXT)",
            f"CREATE INDEX IF NOT EXISTS {table}_customer ON {table} (customer_id, opened_at)",
        ],
    )


@dataclass(frozen=True)
class CustomerOrder:
    """One line of a customer's order list."""

    order_id: str
    status: str
    total_cents: int
    opened_at: str


class GetCustomerOrdersQuery:
    """A customer's orders, newest first."""

    def __init__(self, store: tidings.Store, models: ShopReadModels) -> None:
        self.store, self.table = store, f"{models.prefix}customer_orders"

    def execute(self, customer_id: str) -> list[CustomerOrder]:
        """The orders of ``customer_id`` the read model holds now."""
        with self.store.unit_of_work() as uow:
            found = uow.execute(
                f"SELECT order_id, status, total_cents, opened_at FROM {self.table}"
                " WHERE customer_id = :c ORDER BY opened_at DESC, order_id",
                {"c": customer_id},
            ).fetchall()
        return [CustomerOrder(*row) for row in found]


# -- SalesAnalytics: revenue by product and by customer, placed orders only ----------------


def _sales_analytics(prefix: str) -> Projection:
    lines, orders = f"{prefix}sales_lines", f"{prefix}sales_orders"
    products, customers = f"{prefix}sales_by_product", f"{prefix}sales_by_customer"

    def created(uow: Any, e: OrderCreated) -> None:
        uow.execute(
            f"INSERT INTO {orders} (order_id, customer_id, total_cents) VALUES (:o, :c, 0)",
            {"o": e.aggregate_id, "c": e.customer_id},
        )

    def count(uow: Any, order_id: str, sign: int, total_cents: int) -> None:
        """Add (sign 1) or take back (sign -1) an order's lines and total."""
        uow.execute(
            f"INSERT INTO {products} (sku, units, revenue_cents) SELECT sku, :s * quantity,"
            f" :s * quantity * unit_price_cents FROM {lines} WHERE order_id = :o"
            f" ON CONFLICT (sku) DO UPDATE SET units = {products}.units + excluded.units,"
            f" revenue_cents = {products}.revenue_cents + excluded.revenue_cents",
            {"s": sign, "o": order_id},
        )
        uow.execute(
            f"INSERT INTO {customers} (customer_id, orders, revenue_cents) SELECT customer_id,"
            f" :s, :s * :t FROM {orders} WHERE order_id = :o ON CONFLICT (customer_id) DO"
            f" UPDATE SET orders = {customers}.orders + excluded.orders,"
            f" revenue_cents = {customers}.revenue_cents + excluded.revenue_cents",
            {"s": sign, "t": total_cents, "o": order_id},
        )

    def placed(uow: Any, e: OrderPlaced) -> None:
        uow.execute(
            f"UPDATE {orders} SET total_cents = :t WHERE order_id = :o",
            {"t": e.total_cents, "o": e.aggregate_id},
        )
        count(uow, e.aggregate_id, 1, e.total_cents)

    def cancelled(uow: Any, e: OrderCancelled) -> None:
        row = uow.execute(
            f"SELECT total_cents FROM {orders} WHERE order_id = :o", {"o": e.aggregate_id}
        ).fetchone()
        count(uow, e.aggregate_id, -1, row[0] if row else 0)

    return Projection(
        "shop.sales-analytics",
        {OrderCreated: created, **_lines(lines), OrderPlaced: placed, OrderCancelled: cancelled},
        schema=[
            _lines_ddl(lines),
            f"CREATE TABLE IF NOT EXISTS {orders} (order_id TEXT PRIMARY KEY, customer_id TEXT,"
            " total_cents INTEGER)",
            f"CREATE TABLE IF NOT EXISTS {products} (sku TEXT PRIMARY KEY, units INTEGER,"
            " revenue_cents INTEGER)",
            f"CREATE TABLE IF NOT EXISTS {customers} (customer_id TEXT PRIMARY KEY,"
            " orders INTEGER, revenue_cents INTEGER)",
        ],
    )


@dataclass(frozen=True)
class ProductRevenue:
    """Units sold and revenue of one product."""

    sku: str
    units: int
    revenue_cents: int


@dataclass(frozen=True)
class CustomerRevenue:
    """Orders and revenue of one customer."""

    customer_id: str
    orders: int
    revenue_cents: int


@dataclass(frozen=True)
class SalesReport:
    """The BI team's view: revenue by product, and the top customers."""

    by_product: list[ProductRevenue]
    top_customers: list[CustomerRevenue]


class GetSalesReportQuery:
    """Revenue by product (highest first) and the ``top`` customers by revenue."""

    def __init__(self, store: tidings.Store, models: ShopReadModels) -> None:
        self.store, self.prefix = store, models.prefix

    def execute(self, top: int = 3) -> SalesReport:
        """The report as the read model holds it now (cancelled orders taken back)."""
        p = self.prefix
        with self.store.unit_of_work() as uow:
            products = uow.execute(
                f"SELECT sku, units, revenue_cents FROM {p}sales_by_product WHERE units > 0"
                " ORDER BY revenue_cents DESC, sku"
            ).fetchall()
            customers = uow.execute(
                f"SELECT customer_id, orders, revenue_cents FROM {p}sales_by_customer"
                " WHERE orders > 0 ORDER BY revenue_cents DESC, customer_id LIMIT :n",
                {"n": top},
            ).fetchall()
        return SalesReport(
            [ProductRevenue(*row) for row in products], [CustomerRevenue(*row) for row in customers]
        )


# -- ShippingQueue: placed orders the warehouse has to pack, oldest first ------------------


def _shipping_queue(prefix: str) -> Projection:
    table, lines, owners = (
        f"{prefix}shipping_queue",
        f"{prefix}shipping_lines",
        f"{prefix}shipping_orders",
    )

    def created(uow: Any, e: OrderCreated) -> None:
        uow.execute(
            f"INSERT INTO {owners} (order_id, customer_id) VALUES (:o, :c)",
            {"o": e.aggregate_id, "c": e.customer_id},
        )

    def placed(uow: Any, e: OrderPlaced) -> None:
        found = uow.execute(
            f"SELECT quantity, sku FROM {lines} WHERE order_id = :o ORDER BY sku",
            {"o": e.aggregate_id},
        ).fetchall()
        uow.execute(
            f"INSERT INTO {table} (order_id, customer_id, pick_list, placed_at) SELECT"
            f" order_id, customer_id, :pick, :at FROM {owners} WHERE order_id = :o",
            {
                "o": e.aggregate_id,
                "pick": ", ".join(f"{q} x {sku}" for q, sku in found),
                "at": e.occurred_at.isoformat(),
            },
        )

    def gone(uow: Any, e: OrderShipped | OrderCancelled) -> None:
        uow.execute(f"DELETE FROM {table} WHERE order_id = :o", {"o": e.aggregate_id})

    return Projection(
        "shop.shipping-queue",
        {
            OrderCreated: created,
            **_lines(lines),
            OrderPlaced: placed,
            OrderShipped: gone,
            OrderCancelled: gone,
        },
        schema=[
            _lines_ddl(lines),
            f"CREATE TABLE IF NOT EXISTS {owners} (order_id TEXT PRIMARY KEY, customer_id TEXT)",
            f"CREATE TABLE IF NOT EXISTS {table} (order_id TEXT PRIMARY KEY, customer_id TEXT,"
            " pick_list TEXT, placed_at TEXT)",
        ],
    )


@dataclass(frozen=True)
class ShippingItem:
    """An order waiting to be packed: who, and what to pick."""

    order_id: str
    customer_id: str
    pick_list: str
    placed_at: str


class GetShippingQueueQuery:
    """The warehouse's queue: placed orders not yet shipped or cancelled, oldest first."""

    def __init__(self, store: tidings.Store, models: ShopReadModels) -> None:
        self.store, self.table = store, f"{models.prefix}shipping_queue"

    def execute(self) -> list[ShippingItem]:
        """The queue as the read model holds it now."""
        with self.store.unit_of_work() as uow:
            found = uow.execute(
                f"SELECT order_id, customer_id, pick_list, placed_at FROM {self.table}"
                " ORDER BY placed_at, order_id"
            ).fetchall()
        return [ShippingItem(*row) for row in found]
