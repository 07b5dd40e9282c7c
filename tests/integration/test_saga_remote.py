"""A saga with a remote step at level 5: the Order service (SQLite) runs the saga, its
Payment step is a command to the Payment service (PostgreSQL) over a real broker (NATS
and RabbitMQ), and the reply comes back over the broker through Order's inbox.

Three orders at once: one paid (the saga completes and the order is CONFIRMED), one
refused by Payment (the order is CANCELLED), and one Payment never answers: its
deadline passes on the orchestrator's injected clock, the charge is compensated (a
refund with the charge's saga, step and key, which Payment finds nothing to undo), and
the order is CANCELLED."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tidings
from tests.contract.saga_remote_kit import REGISTRY, ChargePayment, RefundPayment
from tidings.adapters.brokers import open_publisher
from tidings.application.handling import Handlers
from tidings.application.unit_of_work import UnitOfWork
from tidings.domain.saga import SagaDefinition, Step, StepContext

from .test_consumer_faults import Feed, feed

__all__ = ["feed"]  # the broker fixture, parametrised over RabbitMQ and NATS

PATIENCE = 60.0


MESSAGES = REGISTRY  # the Payment context's commands and the replies


def set_status(status: str) -> Callable[[StepContext], None]:
    def act(ctx: StepContext) -> None:
        order = {"s": status, "id": ctx.data["order_id"]}
        ctx.uow.execute("UPDATE orders SET status = :s WHERE id = :id", order)

    return act


def create_order(ctx: StepContext) -> None:
    ctx.uow.execute(
        "INSERT INTO orders (id, status) VALUES (:id, 'PENDING')", {"id": ctx.data["order_id"]}
    )


def charge(ctx: StepContext) -> None:
    ctx.send(ChargePayment(order_id=ctx.data["order_id"], amount=ctx.data["amount"]))


def refund(ctx: StepContext) -> None:
    ctx.send(RefundPayment(order_id=ctx.data["order_id"]))


PLACE_ORDER = SagaDefinition(
    "place-order",
    [
        Step("create-order", create_order, compensate=set_status("CANCELLED")),
        Step("charge", charge, compensate=refund, deadline=30),
        Step("confirm", set_status("CONFIRMED")),
    ],
)


def payment_handlers(table: str) -> Handlers:
    """Payment's side: dedupe on the idempotency key, refuse large amounts, never
    answer order o-silent, refund what was charged (nothing, for a charge never made)."""

    def on_charge(command: ChargePayment, uow: UnitOfWork) -> None:
        if command.order_id == "o-silent":
            return  # Payment takes it and never answers
        if command.amount > 100:
            uow.send(command.refused("amount over the card's limit"), key=command.saga_id)
            return
        uow.execute(
            f"INSERT INTO {table} (key, order_id, amount) VALUES (:k, :o, :a)"
            " ON CONFLICT (key) DO NOTHING",
            {"k": command.idempotency_key, "o": command.order_id, "a": command.amount},
        )
        uow.send(command.succeeded(payment_tx=f"tx-{command.order_id}"), key=command.saga_id)

    def on_refund(command: RefundPayment, uow: UnitOfWork) -> None:
        uow.execute(f"UPDATE {table} SET refunded = 1 WHERE order_id = :o", {"o": command.order_id})
        uow.send(command.compensated(), key=command.saga_id)

    handlers = Handlers()
    handlers.add(ChargePayment, "payments.charge", on_charge)
    handlers.add(RefundPayment, "payments.refund", on_refund)
    return handlers


class Clock:
    """Real time until the test moves it on."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def __call__(self) -> float:
        return time.time() + self.ahead


def options_of(feed: Feed) -> dict[str, Any]:
    return {"exchange": feed.topic} if feed.kind == "rabbitmq" else dict(feed.options)


class Services:
    """Order (SQLite, the saga) and Payment (PostgreSQL), each with its outbox, relay,
    inbox and consumer; commands go over ``commands``, replies over ``replies``."""

    def __init__(
        self, commands: Feed, replies: Feed, tmp_path: Path, pg_url: str, schema: str
    ) -> None:
        registry = tidings.EventRegistry(MESSAGES)
        self.orders = tidings.connect(
            f"sqlite:///{tmp_path / 'orders.db'}", outbox=True, source="orders", registry=registry
        )
        self.payments = tidings.connect(
            pg_url, schema=schema, outbox=True, source="payments", registry=registry
        )
        self.table = f"{schema}.payments"
        with self.orders.unit_of_work() as uow:
            uow.execute("CREATE TABLE orders (id TEXT PRIMARY KEY, status TEXT)")
        with self.payments.unit_of_work() as uow:
            uow.execute(
                f"CREATE TABLE {self.table} (key TEXT PRIMARY KEY, order_id TEXT,"
                " amount INTEGER, refunded INTEGER NOT NULL DEFAULT 0)"
            )
        self.opened: list[Any] = [
            open_publisher(commands.url, **options_of(commands)),
            open_publisher(replies.url, **options_of(replies)),
            commands.subscription(),
            replies.subscription(),
        ]
        to_payments, to_orders, payment_inbox, order_inbox = self.opened
        self.clock = Clock()
        self.sagas = self.orders.sagas([PLACE_ORDER], clock=self.clock)
        self.relays = [self.orders.relay(to_payments), self.payments.relay(to_orders)]
        self.payment_consumer = self.payments.consumer(
            payment_inbox, payment_handlers(self.table), fetch_timeout=0.2
        )
        self.order_consumer = self.orders.consumer(
            order_inbox, self.sagas.reply_handlers(), fetch_timeout=0.2
        )

    def pump_until(self, done: Callable[[], bool], what: str) -> None:
        """Run every worker once, again and again, until ``done``."""
        deadline = time.monotonic() + PATIENCE
        while not done():
            self.relays[0].run_once()
            self.payment_consumer.run_once()
            self.relays[1].run_once()
            self.order_consumer.run_once()
            self.sagas.run_once()
            assert time.monotonic() < deadline, f"timed out waiting for {what}"

    def result(self, saga_id: str) -> Any:
        found = self.sagas.get(saga_id)
        assert found is not None
        return found

    def rows(self, store: tidings.Store, sql: str) -> list[tuple[Any, ...]]:
        with store.unit_of_work() as uow:
            return [tuple(r) for r in uow.execute(sql).fetchall()]

    def close(self) -> None:
        for relay in self.relays:
            relay.release()
        for thing in self.opened:
            thing.close()
        self.orders.close()
        self.payments.close()


def test_a_saga_step_in_another_service_answers_refuses_or_times_out_over_a_broker(
    feed: Feed, tmp_path: Path, pg_url: str, schema: str
) -> None:
    """Commands go out through Order's outbox and relay, Payment handles them behind
    its inbox and replies through its outbox; Order's consumer hands each reply to the
    orchestrator in one transaction with its inbox row."""
    replies = Feed(feed.kind, feed.url)
    services = Services(feed, replies, tmp_path, pg_url, schema)
    try:
        sagas = services.sagas
        ids = {
            order: sagas.start(PLACE_ORDER, {"order_id": order, "amount": amount}).saga_id
            for order, amount in (("o-paid", 39), ("o-refused", 500), ("o-silent", 10))
        }

        def state(order: str) -> str:
            return str(services.result(ids[order]).state)

        services.pump_until(
            lambda: state("o-paid") == "COMPLETED" and state("o-refused") == "COMPENSATED",
            "the paid saga to complete and the refused one to compensate",
        )
        assert services.result(ids["o-paid"]).data["payment_tx"] == "tx-o-paid"
        assert state("o-silent") == "RUNNING"  # waiting: a row, no thread
        services.clock.ahead = 31.0  # Payment never answered; the charge's deadline passes
        services.pump_until(lambda: state("o-silent") == "COMPENSATED", "the silent saga")
        silent = services.result(ids["o-silent"])
        assert silent.compensated == ["charge", "create-order"]
        assert "no reply within its deadline of 30 s" in str(silent.error)

        statuses = dict(services.rows(services.orders, "SELECT id, status FROM orders"))
        assert statuses == {
            "o-paid": "CONFIRMED",
            "o-refused": "CANCELLED",
            "o-silent": "CANCELLED",
        }
        charged = services.rows(
            services.payments, f"SELECT key, order_id, refunded FROM {services.table}"
        )
        assert charged == [(f"{ids['o-paid']}:charge:action", "o-paid", 0)]
        # a charge's reply, a refusal, the silent charge's refund reply
        assert services.order_consumer.stats.applied == 3
        assert services.orders.inbox.dead_letters() == []  # type: ignore[union-attr]
        assert services.payments.inbox.dead_letters() == []  # type: ignore[union-attr]
    finally:
        services.close()
        replies.cleanup()
