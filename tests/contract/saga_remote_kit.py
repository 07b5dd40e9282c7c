"""What the deadline and remote-step saga tests share: a clock moved by hand, the commands
of a Payment context, and a way to hand a reply to the orchestrator's reply handler
through a real inbox processor, as a consumer would."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import tidings
from tidings.application.causation import current_cause
from tidings.application.handling import Delivery, Handlers, InboxProcessor, Verdict
from tidings.domain.ids import utc_now, uuid7
from tidings.domain.saga import SagaDefinition, Step, StepContext
from tidings.domain.saga_messages import SagaCommand, SagaReply
from tidings.records import EventRecord


class Clock:
    """A clock the test moves by hand; ``on_call`` runs once, inside the next call."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.on_call: Callable[[], None] | None = None

    def __call__(self) -> float:
        hook, self.on_call = self.on_call, None
        if hook is not None:
            hook()
        return self.now


@dataclass(frozen=True, kw_only=True)
class ChargePayment(SagaCommand):
    """The Payment context's command: charge an order."""

    order_id: str
    amount: int


@dataclass(frozen=True, kw_only=True)
class RefundPayment(SagaCommand):
    """The Payment context's compensation."""

    order_id: str


REGISTRY = [ChargePayment, RefundPayment, SagaReply]


class Remote:
    """The commands a store's sagas sent (through the in-memory bus: no outbox here), and
    replies handed to its reply handler through an inbox processor."""

    def __init__(self, store: tidings.Store, sagas: Any) -> None:
        self.store = store
        self.sent: list[SagaCommand] = []
        self.conversations: list[str] = []
        store.bus.subscribe(SagaCommand, self._take, name="payments")
        self.processor: InboxProcessor = store.processor(sagas.reply_handlers(Handlers()))

    def _take(self, command: SagaCommand) -> None:
        self.sent.append(command)
        cause = current_cause()
        self.conversations.append(cause.correlation_id if cause is not None else "")

    def last(self) -> SagaCommand:
        """The last command sent."""
        return self.sent[-1]

    def reply(self, reply: SagaReply) -> Verdict:
        """Deliver ``reply`` as a consumer would (inbox, one transaction)."""
        stamped = reply.stamped(
            event_id=uuid7(), occurred_at=utc_now(), aggregate_id=reply.saga_id, aggregate_version=1
        )
        return self.deliver_record(self.store.codec.encode(stamped))

    def deliver_record(self, record: EventRecord) -> Verdict:
        """Deliver a record as it came off the wire."""
        body = self.store.encode(record).body
        [verdict] = self.processor.process([Delivery(body, record)])
        return verdict

    def again(self, reply: SagaReply) -> Verdict:
        """The same reply under a new message id (the sender replied twice)."""
        return self.reply(reply)


def raw_reply(data: bytes) -> EventRecord:
    """A SagaReply record whose payload is ``data`` as given (malformed on purpose)."""
    return EventRecord(
        event_id=str(uuid.uuid4()),
        stream_id="s-x",
        version=1,
        event_type="SagaReply",
        schema_version=1,
        occurred_at=utc_now(),
        data=data,
    )


def charge(ctx: StepContext) -> None:
    """Ask the Payment context to charge; the step waits for the reply."""
    ctx.send(ChargePayment(order_id=ctx.data["order_id"], amount=39))


def refund(ctx: StepContext) -> None:
    """Ask the Payment context to refund."""
    ctx.send(RefundPayment(order_id=ctx.data["order_id"]))


def remote_saga(
    *before: Step, retries: int = 0, deadline: float = 10.0, after: tuple[Step, ...] = ()
) -> SagaDefinition:
    """``before`` steps, a remote charge with a remote refund, then ``after`` steps."""
    from tidings.domain.saga import RetryPolicy

    pay = Step(
        "pay",
        charge,
        compensate=refund,
        retry=RetryPolicy(retries, (1.0,)),
        compensation_retry=RetryPolicy(1, (1.0,)),
        deadline=deadline,
    )
    return SagaDefinition("remote-order", [*before, pay, *after])
