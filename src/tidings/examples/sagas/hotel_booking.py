"""The spec's hotel booking saga (6.2.2, "non-perfect compensation"):

| step | action           | compensation |
|------|------------------|--------------|
| 1    | BookRoom         | CancelRoom   |
| 2    | ChargeCard       | RefundCard   |
| 3    | SendConfirmation | (none)       |

The card company takes 3% on a charge and keeps 2% of a refund: a 100.00 room costs the
guest 103.00 and a refund gives back 98.00. When the mail server is down (step 3 fails
after its retries), the card is refunded and the room cancelled, and the 5.00 the guest
lost is recorded with ``ctx.record_discrepancy``: ``sagas.discrepancy_total
("hotel-booking")`` is the compensation cost the spec asks to track. Use it like this::

    definition = hotel_booking_saga(CardProcessor(3, 2), MailServer(down=True))
    store.registry.register(*EVENTS)
    sagas = store.sagas([definition])
    with store.unit_of_work() as uow:
        create_tables(uow)
    result = book(sagas, definition, "b-1", guest="grace@example.com", room="Room 12",
                  price_cents=10_000)
    sagas.run_once()  # later, as a worker does: the mail retries come due, then compensation
"""

from __future__ import annotations

from tidings.application.sagas import Orchestrator, SagaResult
from tidings.application.unit_of_work import UnitOfWork
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

BOOKINGS_DDL = """
CREATE TABLE IF NOT EXISTS saga_room_bookings (
    booking_id TEXT PRIMARY KEY,
    guest      TEXT NOT NULL,
    room       TEXT NOT NULL,
    status     TEXT NOT NULL
)
"""
MAIL_RETRY = RetryPolicy(retries=2, delays=(60.0, 300.0))
"""The mail server gets two more chances, a minute and five minutes later."""


def book_room(ctx: StepContext) -> None:
    """BookRoom: the room is held for the guest, unless someone holds it already."""
    taken = ctx.uow.execute(
        "SELECT booking_id FROM saga_room_bookings WHERE room = :room AND status = 'BOOKED'",
        {"room": ctx.data["room"]},
    ).fetchone()
    if taken is not None:
        raise StepRefusedError(f"{ctx.data['room']} is booked already ({taken[0]})")
    ctx.uow.execute(
        "INSERT INTO saga_room_bookings VALUES (:id, :guest, :room, 'BOOKED')",
        {"id": ctx.data["order_id"], "guest": ctx.data["guest"], "room": ctx.data["room"]},
    )


def cancel_room(ctx: StepContext) -> None:
    """CancelRoom: the room is free again (cancelling twice changes nothing)."""
    ctx.uow.execute(
        "UPDATE saga_room_bookings SET status = 'CANCELLED' WHERE booking_id = :id",
        {"id": ctx.data["order_id"]},
    )


def confirmation_step(mail: MailServer) -> Action:
    """SendConfirmation: mail the guest (nothing to undo: a mail is idempotent by key)."""

    def send_confirmation(ctx: StepContext) -> None:
        subject = f"{ctx.data['room']} is yours (booking {ctx.data['order_id']})"
        send_mail(ctx.uow, mail, ctx.data["guest"], subject, ctx.idempotency_key)

    return send_confirmation


def hotel_booking_saga(processor: CardProcessor, mail: MailServer) -> SagaDefinition:
    """The hotel booking saga on this card processor and mail server."""
    return SagaDefinition(
        "hotel-booking",
        version=1,
        steps=[
            Step("BookRoom", book_room, compensate=cancel_room),
            Step("ChargeCard", charge_step(processor), compensate=refund_step(processor)),
            Step("SendConfirmation", confirmation_step(mail), retry=MAIL_RETRY),
        ],
    )


def book(
    sagas: Orchestrator,
    definition: SagaDefinition,
    booking_id: str,
    *,
    guest: str,
    room: str,
    price_cents: int,
) -> SagaResult:
    """Start the booking saga (id ``hotel-booking-<booking id>``) and drive it as far as
    it goes now."""
    data = {"order_id": booking_id, "guest": guest, "room": room, "amount_cents": price_cents}
    return sagas.start(definition, data, saga_id=f"hotel-booking-{booking_id}")


def create_tables(uow: UnitOfWork) -> None:
    """The tables of the rooms, payments and mails, if missing."""
    for ddl in (BOOKINGS_DDL, PAYMENTS_DDL, EMAILS_DDL):
        uow.execute(ddl)


def booking_status(store: Store, booking_id: str) -> str:
    """The room booking's status now: BOOKED or CANCELLED."""
    with store.unit_of_work() as uow:
        row = uow.execute(
            "SELECT status FROM saga_room_bookings WHERE booking_id = :id", {"id": booking_id}
        ).fetchone()
    return "unknown" if row is None else str(row[0])


EVENTS = PAYMENT_EVENTS
"""The event types the saga records: register them where you build the store."""
