"""CreateOrderSaga, the spec's 6.2.1, with its compensating-transactions table:

| step | action           | compensation       |
|------|------------------|--------------------|
| 1    | CreateOrder      | CancelOrder        |
| 2    | ChargePayment    | RefundPayment      |
| 3    | ReserveInventory | ReleaseReservation |
| 4    | SendConfirmation | (none)             |

The order is PENDING from step 1 until the saga ends: step 4 confirms it (CONFIRMED),
compensation cancels it (CANCELLED). Anyone reading the order meanwhile sees PENDING:
that gap is the eventual consistency of 6.2.3. Use it like this::

    store.registry.register(*EVENTS)
    sagas = store.sagas([definition])
    with store.unit_of_work() as uow:
        create_tables(uow)
        stock_up(uow, "BOOK-42", 10)
    result = place_order(
        sagas, definition, "o-1", customer_id="alice@example.com", sku="BOOK-42",
        quantity=2, unit_price_cents=1_950,
    )
    order_status(store, "o-1")  # "CONFIRMED" (or "CANCELLED" when out of stock)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from tidings.application.sagas import Orchestrator, SagaResult
from tidings.application.statements import for_psycopg
from tidings.application.unit_of_work import UnitOfWork
from tidings.domain import Aggregate, DomainEvent
from tidings.domain.saga import (
    Action,
    RetryPolicy,
    SagaDefinition,
    Step,
    StepContext,
    StepRefusedError,
)
from tidings.examples.sagas.notifications import EMAILS_DDL, MailServer, send_mail
from tidings.examples.sagas.payments import (
    PAYMENT_EVENTS,
    PAYMENTS_DDL,
    CardProcessor,
    charge_step,
    refund_step,
)
from tidings.store import Store

ORDERS_DDL = """
CREATE TABLE IF NOT EXISTS saga_orders (
    order_id    TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    sku         TEXT NOT NULL,
    quantity    INTEGER NOT NULL,
    total_cents INTEGER NOT NULL,
    status      TEXT NOT NULL,
    version     INTEGER NOT NULL
)
"""
STOCK_DDL = """
CREATE TABLE IF NOT EXISTS saga_stock (
    sku     TEXT PRIMARY KEY,
    on_hand INTEGER NOT NULL
)
"""
RESERVATIONS_DDL = """
CREATE TABLE IF NOT EXISTS saga_reservations (
    reservation_id TEXT PRIMARY KEY,
    sku            TEXT NOT NULL,
    quantity       INTEGER NOT NULL
)
"""


class OrderStatus(StrEnum):
    """Where an order is: PENDING while its saga runs, then CONFIRMED or CANCELLED."""

    PENDING = "PENDING"
    CONFIRMED = "CONFIRMED"
    CANCELLED = "CANCELLED"


@dataclass(frozen=True, kw_only=True)
class OrderCreated(DomainEvent):
    """A customer asked for an order; it waits, PENDING, for payment and stock."""

    event_type = "checkout.order_created"

    customer_id: str
    sku: str
    quantity: int
    total_cents: int


@dataclass(frozen=True, kw_only=True)
class OrderConfirmed(DomainEvent):
    """Paid, reserved, confirmed to the customer."""

    event_type = "checkout.order_confirmed"


@dataclass(frozen=True, kw_only=True)
class OrderCancelled(DomainEvent):
    """The saga could not complete the order and undid it."""

    event_type = "checkout.order_cancelled"

    reason: str


class Order(Aggregate):
    """An order placed through the saga: PENDING, then CONFIRMED or CANCELLED."""

    def __init__(
        self,
        order_id: str,
        customer_id: str,
        sku: str,
        quantity: int,
        total_cents: int,
        *,
        status: OrderStatus = OrderStatus.PENDING,
        version: int = 0,
    ) -> None:
        super().__init__(order_id, version=version)
        self.customer_id, self.sku, self.quantity = customer_id, sku, quantity
        self.total_cents = total_cents
        self.status = status

    @classmethod
    def create(
        cls, order_id: str, customer_id: str, sku: str, quantity: int, unit_price_cents: int
    ) -> Order:
        """A new PENDING order (records OrderCreated)."""
        total = quantity * unit_price_cents
        order = cls(order_id, customer_id, sku, quantity, total)
        order.record(
            OrderCreated(customer_id=customer_id, sku=sku, quantity=quantity, total_cents=total)
        )
        return order

    def confirm(self) -> None:
        """PENDING -> CONFIRMED."""
        if self.status is not OrderStatus.PENDING:
            raise ValueError(f"order {self.id} is {self.status}: only a PENDING order confirms")
        self.status = OrderStatus.CONFIRMED
        self.record(OrderConfirmed())

    def cancel(self, reason: str) -> None:
        """PENDING -> CANCELLED; cancelling a cancelled order does nothing."""
        if self.status is OrderStatus.CANCELLED:
            return
        self.status = OrderStatus.CANCELLED
        self.record(OrderCancelled(reason=reason))


class OrderRepository:
    """Orders as rows of ``saga_orders``, in the caller's unit of work."""

    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    def get(self, order_id: str) -> Order:
        """The order (it exists: the saga's first step made it)."""
        row = self.uow.execute(
            "SELECT customer_id, sku, quantity, total_cents, status, version FROM saga_orders"
            " WHERE order_id = :id",
            {"id": order_id},
        ).fetchone()
        return Order(order_id, *row[:4], status=OrderStatus(row[4]), version=row[5])

    def save(self, order: Order) -> None:
        """Insert or update the order's row and track it (its events commit with it)."""
        params = {"id": order.id, "status": order.status.value, "version": order.version}
        if order.stored_version == 0:
            self.uow.execute(
                "INSERT INTO saga_orders VALUES (:id, :customer, :sku, :quantity, :total,"
                " :status, :version)",
                {
                    **params,
                    "customer": order.customer_id,
                    "sku": order.sku,
                    "quantity": order.quantity,
                    "total": order.total_cents,
                },
            )
        else:
            self.uow.execute(
                "UPDATE saga_orders SET status = :status, version = :version WHERE order_id = :id",
                params,
            )
        self.uow.track(order)


# -- the steps: each runs in its own unit of work, committed with its transition --------


def create_order(ctx: StepContext) -> dict[str, Any]:
    """CreateOrder: a PENDING order; later steps charge its total."""
    d = ctx.data
    order = Order.create(
        d["order_id"], d["customer_id"], d["sku"], d["quantity"], d["unit_price_cents"]
    )
    OrderRepository(ctx.uow).save(order)
    return {"amount_cents": order.total_cents}


def cancel_order(ctx: StepContext) -> None:
    """CancelOrder: the order ends CANCELLED."""
    orders = OrderRepository(ctx.uow)
    order = orders.get(ctx.data["order_id"])
    order.cancel("the order could not be completed; the payment was refunded")
    orders.save(order)


def reserve_inventory(ctx: StepContext) -> dict[str, Any]:
    """ReserveInventory: take the quantity off the stock, or refuse: out of stock."""
    sku, quantity = ctx.data["sku"], ctx.data["quantity"]
    taken = ctx.uow.execute(
        "UPDATE saga_stock SET on_hand = on_hand - :n WHERE sku = :sku AND on_hand >= :n",
        {"sku": sku, "n": quantity},
    )
    if taken.rowcount != 1:
        raise StepRefusedError(f"out of stock: {quantity} x {sku} asked")
    reservation = f"res-{ctx.data['order_id']}"
    ctx.uow.execute(
        "INSERT INTO saga_reservations VALUES (:id, :sku, :n)",
        {"id": reservation, "sku": sku, "n": quantity},
    )
    return {"reservation_id": reservation}


def release_reservation(ctx: StepContext) -> None:
    """ReleaseReservation: the stock goes back, once (the reservation row says so)."""
    released = ctx.uow.execute(
        "DELETE FROM saga_reservations WHERE reservation_id = :id",
        {"id": ctx.data["reservation_id"]},
    )
    if released.rowcount == 1:
        ctx.uow.execute(
            "UPDATE saga_stock SET on_hand = on_hand + :n WHERE sku = :sku",
            {"sku": ctx.data["sku"], "n": ctx.data["quantity"]},
        )


def confirmation_step(mail: MailServer) -> Action:
    """SendConfirmation: the order becomes CONFIRMED and the customer gets a mail."""

    def send_confirmation(ctx: StepContext) -> None:
        orders = OrderRepository(ctx.uow)
        order = orders.get(ctx.data["order_id"])
        order.confirm()
        orders.save(order)
        subject = f"Order {order.id} is confirmed"
        send_mail(ctx.uow, mail, order.customer_id, subject, ctx.idempotency_key)

    return send_confirmation


def create_order_saga(
    processor: CardProcessor | None = None, mail: MailServer | None = None
) -> SagaDefinition:
    """CreateOrderSaga on this card processor and mail server (in-process ones if None)."""
    processor = processor or CardProcessor()
    mail = mail or MailServer()
    return SagaDefinition(
        "create-order",
        version=1,
        steps=[
            Step("CreateOrder", create_order, compensate=cancel_order),
            Step(
                "ChargePayment",
                charge_step(processor),
                compensate=refund_step(processor),
                retry=RetryPolicy(retries=3, delays=(1.0, 2.0, 4.0)),
            ),
            Step("ReserveInventory", reserve_inventory, compensate=release_reservation),
            Step("SendConfirmation", confirmation_step(mail), retry=RetryPolicy(retries=3)),
        ],
    )


# -- the use case, the tables and the query ------------------------------------------


def place_order(
    sagas: Orchestrator,
    definition: SagaDefinition,
    order_id: str,
    *,
    customer_id: str,
    sku: str,
    quantity: int,
    unit_price_cents: int,
) -> SagaResult:
    """Start CreateOrderSaga for one order (the saga's id is ``create-order-<order id>``)
    and drive it as far as it goes now: to its end, or to a retry it waits for."""
    data = {
        "order_id": order_id,
        "customer_id": customer_id,
        "sku": sku,
        "quantity": quantity,
        "unit_price_cents": unit_price_cents,
    }
    return sagas.start(definition, data, saga_id=f"create-order-{order_id}")


def create_tables(uow: UnitOfWork) -> None:
    """The tables of Order, Payment, Inventory and Notification, if missing."""
    for ddl in (ORDERS_DDL, PAYMENTS_DDL, STOCK_DDL, RESERVATIONS_DDL, EMAILS_DDL):
        uow.execute(ddl)


def stock_up(uow: UnitOfWork, sku: str, on_hand: int) -> None:
    """Set how many of ``sku`` are on hand."""
    uow.execute(
        "INSERT INTO saga_stock VALUES (:sku, :n) ON CONFLICT (sku) DO UPDATE SET on_hand = :n",
        {"sku": sku, "n": on_hand},
    )


def on_hand(uow: UnitOfWork, sku: str) -> int:
    """How many of ``sku`` are on hand."""
    row = uow.execute("SELECT on_hand FROM saga_stock WHERE sku = :sku", {"sku": sku}).fetchone()
    return 0 if row is None else int(row[0])


def order_status(store: Store, order_id: str) -> str:
    """What any reader sees of the order now (a web page, another context): its status.

    A plain read, not a unit of work: it waits for no writer, so it can look while a
    step of the saga is running (SQLite and PostgreSQL stores answer such reads)."""
    database: Any = store.database
    sql = "SELECT status FROM saga_orders WHERE order_id = :id"
    if database.dialect == "postgresql":
        sql = for_psycopg(sql)
    rows = database.query(sql, {"id": order_id})
    return "unknown" if not rows else str(rows[0][0])


EVENTS = (OrderCreated, OrderConfirmed, OrderCancelled, *PAYMENT_EVENTS)
"""The event types the saga records: register them where you build the store."""
