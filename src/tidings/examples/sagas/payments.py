"""The Payment context of both sagas: a card processor outside, a Payment aggregate inside.

The processor stands for the card company's API (in-process here). It charges a fee on
top of the amount and keeps a fee back on refunds, as the spec's 6.2.2 example does
(charged 103, refunded 98), and it remembers idempotency keys: the same key charges once,
however often the saga retries the call.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from tidings.application.unit_of_work import UnitOfWork
from tidings.domain import Aggregate, DomainEvent
from tidings.domain.saga import Action, StepContext, StepUnknownError

PAYMENTS_DDL = """
CREATE TABLE IF NOT EXISTS saga_payments (
    payment_id     TEXT PRIMARY KEY,
    order_id       TEXT NOT NULL,
    charged_cents  INTEGER NOT NULL,
    refunded_cents INTEGER NOT NULL,
    status         TEXT NOT NULL,
    version        INTEGER NOT NULL
)
"""


class CardProcessor:
    """The card company: ``fee_percent`` on every charge, ``refund_fee_percent`` kept back
    on a refund (both of the amount asked), and ``timeouts`` calls that time out first."""

    def __init__(
        self, fee_percent: int = 0, refund_fee_percent: int = 0, timeouts: int = 0
    ) -> None:
        self.fee_percent = fee_percent
        self.refund_fee_percent = refund_fee_percent
        self.timeouts = timeouts
        self.charges: dict[str, int] = {}  # idempotency key -> cents charged
        self.refunds: dict[str, int] = {}

    def charge(self, amount_cents: int, key: str) -> int:
        """Charge the card once per key; return the cents taken, fee included."""
        self._maybe_time_out()
        fee = amount_cents * self.fee_percent // 100
        return self.charges.setdefault(key, amount_cents + fee)

    def refund(self, amount_cents: int, key: str) -> int:
        """Refund once per key; return the cents given back, less the refund fee."""
        self._maybe_time_out()
        fee = amount_cents * self.refund_fee_percent // 100
        return self.refunds.setdefault(key, amount_cents - fee)

    def _maybe_time_out(self) -> None:
        if self.timeouts > 0:
            self.timeouts -= 1
            # The request left; whether it was applied is unknown: retry with the same key.
            raise StepUnknownError("the card processor did not answer within 2 s")


class PaymentStatus(StrEnum):
    """Where a payment is."""

    CHARGED = "CHARGED"
    REFUNDED = "REFUNDED"


@dataclass(frozen=True, kw_only=True)
class PaymentCharged(DomainEvent):
    """A customer's card was charged for an order."""

    event_type = "payments.charged"

    order_id: str
    charged_cents: int


@dataclass(frozen=True, kw_only=True)
class PaymentRefunded(DomainEvent):
    """A charge was given back (less what the card company kept)."""

    event_type = "payments.refunded"

    refunded_cents: int


class Payment(Aggregate):
    """A charge for one order; refunding it twice is a no-op (the spec's idempotent refund)."""

    def __init__(
        self,
        payment_id: str,
        order_id: str,
        *,
        charged_cents: int = 0,
        refunded_cents: int = 0,
        status: PaymentStatus = PaymentStatus.CHARGED,
        version: int = 0,
    ) -> None:
        super().__init__(payment_id, version=version)
        self.order_id = order_id
        self.charged_cents = charged_cents
        self.refunded_cents = refunded_cents
        self.status = status

    @classmethod
    def charged(cls, payment_id: str, order_id: str, charged_cents: int) -> Payment:
        """A new payment, charged (records PaymentCharged)."""
        payment = cls(payment_id, order_id, charged_cents=charged_cents)
        payment.record(PaymentCharged(order_id=order_id, charged_cents=charged_cents))
        return payment

    def refunded(self, refunded_cents: int) -> None:
        """Mark the payment refunded (records PaymentRefunded)."""
        self.status = PaymentStatus.REFUNDED
        self.refunded_cents = refunded_cents
        self.record(PaymentRefunded(refunded_cents=refunded_cents))


class PaymentRepository:
    """Payments as rows of ``saga_payments``, in the caller's unit of work."""

    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    def create_table(self) -> None:
        """Create ``saga_payments`` if it is missing."""
        self.uow.execute(PAYMENTS_DDL)

    def get(self, payment_id: str) -> Payment | None:
        """The payment, or None."""
        row = self.uow.execute(
            "SELECT order_id, charged_cents, refunded_cents, status, version FROM saga_payments"
            " WHERE payment_id = :id",
            {"id": payment_id},
        ).fetchone()
        if row is None:
            return None
        return Payment(
            payment_id,
            row[0],
            charged_cents=row[1],
            refunded_cents=row[2],
            status=PaymentStatus(row[3]),
            version=row[4],
        )

    def save(self, payment: Payment) -> None:
        """Insert or update the payment's row and track it (its events commit with it)."""
        params = {
            "id": payment.id,
            "order": payment.order_id,
            "charged": payment.charged_cents,
            "refunded": payment.refunded_cents,
            "status": payment.status.value,
            "version": payment.version,
        }
        if payment.stored_version == 0:
            self.uow.execute(
                "INSERT INTO saga_payments VALUES (:id, :order, :charged, :refunded, :status,"
                " :version)",
                params,
            )
        else:
            self.uow.execute(
                "UPDATE saga_payments SET refunded_cents = :refunded, status = :status,"
                " version = :version WHERE payment_id = :id",
                params,
            )
        self.uow.track(payment)


PAYMENT_EVENTS = (PaymentCharged, PaymentRefunded)


def charge_step(processor: CardProcessor) -> Action:
    """ChargePayment: charge ``ctx.data['amount_cents']`` for ``ctx.data['order_id']``."""

    def charge_payment(ctx: StepContext) -> dict[str, Any]:
        order_id = ctx.data["order_id"]
        charged = processor.charge(ctx.data["amount_cents"], ctx.idempotency_key)
        payment = Payment.charged(f"pay-{order_id}", order_id, charged)
        PaymentRepository(ctx.uow).save(payment)
        return {"payment_id": payment.id}

    return charge_payment


def refund_step(processor: CardProcessor) -> Action:
    """RefundPayment: give the amount back; what the fees keep is the saga's discrepancy."""

    def refund_payment(ctx: StepContext) -> None:
        payments = PaymentRepository(ctx.uow)
        payment = payments.get(ctx.data["payment_id"])
        if payment is None or payment.status is PaymentStatus.REFUNDED:
            return  # nothing to give back, or given back already: a compensation may rerun
        refunded = processor.refund(ctx.data["amount_cents"], ctx.idempotency_key)
        payment.refunded(refunded)
        payments.save(payment)
        if refunded < payment.charged_cents:
            ctx.record_discrepancy(
                (payment.charged_cents - refunded) / 100,
                f"card fees: charged {payment.charged_cents / 100:.2f},"
                f" refunded {refunded / 100:.2f}",
            )

    return refund_payment
