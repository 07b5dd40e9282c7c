"""The spec's two saga examples end to end on SQLite and PostgreSQL: CreateOrderSaga
confirms or cancels the order it kept PENDING meanwhile (6.2.3), and the hotel booking
refunds and cancels when the mail server is down, with the card fees as its discrepancy."""

from __future__ import annotations

import dataclasses
import threading
import uuid
from typing import Any

import pytest

import tidings
from tests.conftest import MakeStore
from tidings.application.sagas import Orchestrator
from tidings.domain.saga import SagaDefinition, StepContext
from tidings.examples.sagas import create_order as co
from tidings.examples.sagas import hotel_booking as hb
from tidings.examples.sagas.notifications import MailServer, mails_to
from tidings.examples.sagas.payments import CardProcessor, PaymentRepository, PaymentStatus


class Clock:
    """A clock the test moves by hand: retry timers take no real time."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def unique(stem: str) -> str:
    """PostgreSQL tests share the example's tables in ``public``: ids never repeat."""
    return f"{stem}-{uuid.uuid4().hex[:8]}"


def shop(make: MakeStore, definition: SagaDefinition, clock: Clock) -> tuple[Any, Orchestrator]:
    store = make(registry=tidings.EventRegistry(co.EVENTS))
    with store.unit_of_work() as uow:
        co.create_tables(uow)
        hb.create_tables(uow)
    return store, store.sagas([definition], clock=clock)


def order(sagas: Orchestrator, definition: SagaDefinition, order_id: str, sku: str) -> Any:
    return co.place_order(
        sagas,
        definition,
        order_id,
        customer_id="alice@example.com",
        sku=sku,
        quantity=2,
        unit_price_cents=1_950,
    )


def test_an_order_in_stock_is_pending_while_its_saga_waits_and_confirmed_after(
    make_sql_store: MakeStore,
) -> None:
    """The card processor times out once: the saga waits on a 1 s retry timer with the
    order PENDING for any reader; when the timer fires the saga completes, CONFIRMED."""
    clock, processor = Clock(), CardProcessor(timeouts=1)
    definition = co.create_order_saga(processor)
    store, sagas = shop(make_sql_store, definition, clock)
    order_id, sku = unique("o"), unique("BOOK")
    with store.unit_of_work() as uow:
        co.stock_up(uow, sku, 5)
    waiting = order(sagas, definition, order_id, sku)
    assert (waiting.state, waiting.wake_at) == ("RUNNING", clock.now + 1.0)
    assert co.order_status(store, order_id) == "PENDING"
    clock.now += 1.0
    sagas.run_once()
    done = sagas.get(waiting.saga_id)
    assert done is not None
    assert (done.success, done.state) == (True, "COMPLETED")
    assert co.order_status(store, order_id) == "CONFIRMED"
    assert processor.charges == {f"{waiting.saga_id}:ChargePayment:action": 3_900}
    with store.unit_of_work() as uow:
        assert co.on_hand(uow, sku) == 3
        assert mails_to(uow, "alice@example.com").count(f"Order {order_id} is confirmed") == 1


def test_a_reader_during_the_saga_sees_the_order_pending(make_sql_store: MakeStore) -> None:
    """Another connection reads the order while ReserveInventory runs: PENDING, the step
    before committed; after the saga the same read says CONFIRMED."""
    clock = Clock()
    definition = co.create_order_saga()
    store, _ = shop(make_sql_store, definition, clock)
    seen: list[str] = []

    def reserve_and_look(ctx: StepContext) -> Any:
        reader = threading.Thread(
            target=lambda: seen.append(co.order_status(store, ctx.data["order_id"]))
        )
        reader.start()
        reader.join()
        return co.reserve_inventory(ctx)

    steps = list(definition.steps)
    steps[2] = dataclasses.replace(steps[2], action=reserve_and_look)
    looking = dataclasses.replace(definition, steps=steps)
    sagas = store.sagas([looking], clock=clock)
    order_id, sku = unique("o"), unique("BOOK")
    with store.unit_of_work() as uow:
        co.stock_up(uow, sku, 5)
    result = order(sagas, looking, order_id, sku)
    assert result.state == "COMPLETED"
    assert seen == ["PENDING"]
    assert co.order_status(store, order_id) == "CONFIRMED"


def test_out_of_stock_refunds_the_payment_and_cancels_the_order(
    make_sql_store: MakeStore,
) -> None:
    """ReserveInventory refuses: RefundPayment then CancelOrder, LIFO; no stock moved."""
    clock, processor = Clock(), CardProcessor()
    definition = co.create_order_saga(processor)
    store, sagas = shop(make_sql_store, definition, clock)
    order_id, sku = unique("o"), unique("BOOK")
    with store.unit_of_work() as uow:
        co.stock_up(uow, sku, 1)
    result = order(sagas, definition, order_id, sku)
    assert (result.success, result.state) == (False, "COMPENSATED")
    assert result.executed_steps == ["CreateOrder", "ChargePayment"]
    assert result.compensated == ["ChargePayment", "CreateOrder"]
    assert result.error == f"StepRefusedError: out of stock: 2 x {sku} asked"
    assert co.order_status(store, order_id) == "CANCELLED"
    assert list(processor.refunds.values()) == [3_900]
    with store.unit_of_work() as uow:
        payment = PaymentRepository(uow).get(f"pay-{order_id}")
        assert co.on_hand(uow, sku) == 1
    assert payment is not None
    assert (payment.status, payment.refunded_cents) == (PaymentStatus.REFUNDED, 3_900)
    assert sagas.discrepancy_total("create-order") == 0.0
    kinds = [e.event_type for e in store.read_stream(order_id)]
    assert kinds == ["checkout.order_created", "checkout.order_cancelled"]


@pytest.mark.parametrize("bookings", [1, 2])
def test_hotel_email_down_refunds_the_card_cancels_the_room_and_counts_the_fees(
    make_sql_store: MakeStore, bookings: int
) -> None:
    """The mail fails three times over 6 minutes of durable timers, then the card is
    refunded (98 of the 103 charged) and the room cancelled; each saga adds 5.00 to the
    hotel booking's discrepancy total."""
    clock, mail = Clock(), MailServer(down=True)
    definition = hb.hotel_booking_saga(CardProcessor(fee_percent=3, refund_fee_percent=2), mail)
    store, sagas = shop(make_sql_store, definition, clock)
    started = [
        hb.book(
            sagas,
            definition,
            unique("b"),
            guest="grace@example.com",
            room=unique("Room"),
            price_cents=10_000,
        )
        for _ in range(bookings)
    ]
    assert {s.state for s in started} == {"RUNNING"}
    for wait in (60.0, 300.0):
        clock.now += wait
        sagas.run_once()
    for saga in started:
        result = sagas.get(saga.saga_id)
        assert result is not None
        assert result.state == "COMPENSATED"
        assert result.compensated == ["ChargeCard", "BookRoom"]
        assert result.error == "ConnectionError: mail server: connection refused"
        assert hb.booking_status(store, saga.data["order_id"]) == "CANCELLED"
        [mark] = [t for t in sagas.history(saga.saga_id) if t.kind == "discrepancy"]
        assert (mark.step, mark.amount) == ("ChargeCard", 5.0)
        assert mark.detail == "card fees: charged 103.00, refunded 98.00"
    assert sagas.discrepancy_total("hotel-booking") == 5.0 * bookings
    assert sagas.discrepancy_total("create-order") == 0.0
    assert mail.outbox == {}


def test_hotel_booking_with_the_mail_server_up_completes_and_mails_the_guest(
    make_sql_store: MakeStore,
) -> None:
    """The happy path: the room stays BOOKED, one mail, no discrepancy."""
    clock = Clock()
    definition = hb.hotel_booking_saga(CardProcessor(3, 2), MailServer())
    store, sagas = shop(make_sql_store, definition, clock)
    booking, room, guest = unique("b"), unique("Room"), unique("guest")
    result = hb.book(sagas, definition, booking, guest=guest, room=room, price_cents=10_000)
    assert result.state == "COMPLETED"
    assert hb.booking_status(store, booking) == "BOOKED"
    with store.unit_of_work() as uow:
        assert mails_to(uow, guest) == [f"{room} is yours (booking {booking})"]
    again = hb.book(sagas, definition, unique("b"), guest=guest, room=room, price_cents=10_000)
    assert (again.state, again.compensated) == ("COMPENSATED", [])
    assert again.error == f"StepRefusedError: {room} is booked already ({booking})"
    assert sagas.discrepancy_total("hotel-booking") == 0.0
