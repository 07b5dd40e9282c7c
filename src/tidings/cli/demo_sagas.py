"""``tidings demo`` section 5: the spec's two sagas (6.2), from ``tidings.examples.sagas``.

The orchestrator runs on a story clock, so the retry timers the story waits on (a second,
a minute, five minutes) take no real time: the demo moves the clock and calls
``sagas.run_once()``, as a worker would when the timers come due.
"""

from __future__ import annotations

from datetime import UTC, datetime

import tidings
from tidings.application.sagas import Orchestrator, SagaResult
from tidings.cli.demo import console, euros, say
from tidings.domain.saga import SagaDefinition
from tidings.errors import ConfigurationError
from tidings.examples.sagas import create_order as co
from tidings.examples.sagas import hotel_booking as hb
from tidings.examples.sagas.notifications import MailServer
from tidings.examples.sagas.payments import CardProcessor, PaymentRepository

START = datetime(2025, 1, 15, 18, 0, tzinfo=UTC).timestamp()


class SagaClock:
    """The story's time in seconds, moved by hand."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def clock_time(at: float) -> str:
    """A time of the story as hh:mm:ss."""
    return datetime.fromtimestamp(at, UTC).strftime("%H:%M:%S")


def sagas(store: tidings.Store) -> None:
    """Play both sagas on ``store`` and show a timeline and the compensation cost."""
    console.rule("5. Sagas: compensation and eventual consistency (spec 6.2)")
    store.registry.register(*co.EVENTS)
    with store.unit_of_work() as uow:
        co.create_tables(uow)
        hb.create_tables(uow)
        co.stock_up(uow, "LAMP-3", 3)
    clock = SagaClock()
    create_order = co.create_order_saga(CardProcessor(timeouts=1))
    hotel = hb.hotel_booking_saga(CardProcessor(3, 2), MailServer(down=True))
    orchestrator = store.sagas([create_order, hotel], clock=clock)
    say("CreateOrderSaga: CreateOrder -> ChargePayment -> ReserveInventory -> SendConfirmation,")
    say("each a local transaction committed with the saga's transition; 3 x LAMP-3 in stock.")
    confirmed_order(store, orchestrator, create_order, clock)
    out_of_stock(store, orchestrator, create_order)
    hotel_booking(store, orchestrator, hotel, clock)


def confirmed_order(
    store: tidings.Store, sagas: Orchestrator, definition: SagaDefinition, clock: SagaClock
) -> None:
    """Spec 6.2.3: the order is PENDING while its saga waits, CONFIRMED after."""
    started = co.place_order(
        sagas,
        definition,
        "o-5001",
        customer_id="ivy@example.com",
        sku="LAMP-3",
        quantity=2,
        unit_price_cents=4_900,
    )
    say(
        f"Ivy orders 2 x LAMP-3: the order is created, the card processor times out "
        f"({started.error}),",
        2,
    )
    say(
        f"so the saga waits on a durable timer: {started.state}, retry at "
        f"{clock_time(started.wake_at)}.",
        2,
    )
    say(
        f"Meanwhile anyone reading o-5001 sees it {co.order_status(store, 'o-5001')} "
        "(the eventual-consistency gap of 6.2.3).",
        2,
    )
    clock.now = started.wake_at
    sagas.run_once()
    done = result_of(sagas, started.saga_id)
    say(
        f"{clock_time(clock.now)} the timer fires, run_once() drives it on: {done.state}; "
        f"o-5001 is {co.order_status(store, 'o-5001')}, {on_hand(store)} x LAMP-3 left.",
        2,
    )


def out_of_stock(store: tidings.Store, sagas: Orchestrator, definition: SagaDefinition) -> None:
    """Spec 6.2.1: ReserveInventory refuses, RefundPayment then CancelOrder (LIFO)."""
    result = co.place_order(
        sagas,
        definition,
        "o-5002",
        customer_id="jack@example.com",
        sku="LAMP-3",
        quantity=3,
        unit_price_cents=4_900,
    )
    with store.unit_of_work() as uow:
        payment = PaymentRepository(uow).get("pay-o-5002")
    refunded = euros(payment.refunded_cents) if payment else "nothing"
    say(f"Jack orders 3 x LAMP-3: {result.error}.", 2)
    say(
        f"Compensated last first: {' then '.join(result.compensated)} -> {result.state}; "
        f"o-5002 is {co.order_status(store, 'o-5002')}, {refunded} refunded, "
        f"{on_hand(store)} x LAMP-3 left.",
        2,
    )


def hotel_booking(
    store: tidings.Store, sagas: Orchestrator, definition: SagaDefinition, clock: SagaClock
) -> None:
    """Spec 6.2.2: the mail server is down; refund (the fees are lost), cancel the room."""
    say()
    say("Hotel booking: BookRoom -> ChargeCard (3% fee) -> SendConfirmation; the mail server")
    say("is down. The card company keeps 2% of a refund.")
    started = hb.book(
        sagas, definition, "b-5003", guest="kim@example.com", room="Room 12", price_cents=10_000
    )
    while True:
        now = result_of(sagas, started.saga_id)
        if now.state not in ("RUNNING", "COMPENSATING"):
            break
        clock.now = now.wake_at
        sagas.run_once()
    say(
        f"Kim's booking ends {now.state}; the room is {hb.booking_status(store, 'b-5003')}. "
        f"Its timeline (tidings sagas show --db sqlite:///{store.database.path} "  # type: ignore[attr-defined]
        f"{started.saga_id}):",
        2,
    )
    for t in sagas.history(started.saga_id):
        what = " ".join(part for part in (t.kind, t.step) if part)
        detail = f": {t.detail}" if t.detail and t.detail != "try 1" else ""
        amount = f" ({euros(round(t.amount * 100))})" if t.kind == "discrepancy" else ""
        say(f"{clock_time(t.at)}  {what}{amount}{detail}", 4)
    total = sagas.discrepancy_total("hotel-booking")
    say(
        f"Compensation cost, sagas.discrepancy_total('hotel-booking'): {euros(round(total * 100))}"
        f" (create-order: {euros(round(sagas.discrepancy_total('create-order') * 100))}).",
        2,
    )


def result_of(sagas: Orchestrator, saga_id: str) -> SagaResult:
    """The saga's result now."""
    found = sagas.get(saga_id)
    if found is None:
        raise ConfigurationError(f"the demo's saga {saga_id} is missing from the saga log")
    return found


def on_hand(store: tidings.Store) -> int:
    """LAMP-3 on hand."""
    with store.unit_of_work() as uow:
        return co.on_hand(uow, "LAMP-3")
