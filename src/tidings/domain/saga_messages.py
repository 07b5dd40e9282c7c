"""The messages of a remote saga step: a command to another bounded context, and its reply.

A step sends a ``SagaCommand`` with ``ctx.send(command)``; the orchestrator fills in the
saga id, the step, the phase (``action`` or ``compensation``) and the idempotency key.
The remote side handles it behind its inbox, dedupes on ``idempotency_key`` (the same on
every retry of that action or compensation), and answers with the command's own
``succeeded(...)``, ``refused(...)`` or ``failed(...)`` reply, sent through its outbox::

    @dataclass(frozen=True, kw_only=True)
    class ChargePayment(SagaCommand):
        order_id: str
        amount: int

    def charge(command: ChargePayment, uow):          # a handler in the Payment context
        ...
        uow.send(command.succeeded(payment_tx=tx), key=command.saga_id)

The reply names its saga and step explicitly rather than through the correlation id: a
correlation id names a conversation, which may hold several sagas (or none), and says
neither which step nor whether the action or its compensation answered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from tidings.domain.messages import Message

Outcome = Literal["succeeded", "refused", "failed"]
Phase = Literal["action", "compensation"]


@dataclass(frozen=True, kw_only=True)
class SagaReply(Message):
    """The answer to a ``SagaCommand``: ``succeeded`` (``data`` is added to the saga's
    data), ``refused`` (a business refusal: compensate) or ``failed`` (retried per the
    step's policy, then compensated). ``discrepancy`` and ``note`` say what a remote
    compensation could not undo (charged 103, refunded 98: 5)."""

    saga_id: str
    step: str
    phase: Phase
    outcome: Outcome
    data: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    discrepancy: float = 0.0
    note: str = ""


@dataclass(frozen=True, kw_only=True)
class SagaCommand(Message):
    """Base of a command a saga step sends to another context; subclass it with your
    payload. ``ctx.send`` fills the four saga fields; the handler replies with
    ``succeeded``, ``refused`` or ``failed``."""

    saga_id: str = ""
    step: str = ""
    phase: Phase = "action"
    idempotency_key: str = ""

    def succeeded(self, **data: Any) -> SagaReply:
        """The reply saying it was done; ``data`` is added to the saga's data."""
        return self._reply("succeeded", data=data)

    def refused(self, reason: str) -> SagaReply:
        """The reply saying no, for a business reason: the saga compensates."""
        return self._reply("refused", reason=reason)

    def failed(self, reason: str) -> SagaReply:
        """The reply saying it could not be done now: retried per the step's policy."""
        return self._reply("failed", reason=reason)

    def compensated(self, discrepancy: float = 0.0, note: str = "") -> SagaReply:
        """The reply to a compensation, with what it could not undo, if anything."""
        return self._reply("succeeded", discrepancy=discrepancy, note=note)

    def _reply(self, outcome: Outcome, **fields: Any) -> SagaReply:
        return SagaReply(
            saga_id=self.saga_id, step=self.step, phase=self.phase, outcome=outcome, **fields
        )
