"""Remote steps: a command out through the outbox, its reply in through the inbox.

A step's ``ctx.send(command)`` writes the command in the step's unit of work, with the
"command sent" transition: the saga is then a row waiting for ``step:phase`` until the
try's deadline, holding no thread and no memory in the orchestrator. ``SagaReplies`` is
the handler of the replies, registered on the consumer that receives them: the reply's
inbox row and the saga's transition commit in the consumer's one transaction.

What a reply cannot move is never a crash and never a transition: a reply for no saga, or
naming a step the saga does not have, is dead-lettered with the reason
(``MessageRejectedError``); a duplicate, one arriving after its deadline was acted on, or
one for a step the saga is not waiting on is recorded on the saga's history as
``reply_ignored`` with the reason, and the saga stays as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from tidings.domain.saga import Step, StepRefusedError
from tidings.domain.saga_messages import SagaCommand, SagaReply
from tidings.domain.saga_state import (
    COMPENSATING,
    NEEDS_INTERVENTION,
    RUNNING,
    SagaRow,
    Transition,
)
from tidings.errors import ConfigurationError, MessageRejectedError, SagaConflictError

if TYPE_CHECKING:
    from tidings.application.handling import Handlers
    from tidings.application.sagas.orchestrator import Orchestrator

CONFLICT_TRIES = 3  # an orchestrator moved the saga meanwhile: read it again, decide again


@dataclass
class Context:
    """What an action or compensation receives (``tidings.domain.saga.StepContext``)."""

    row: SagaRow
    step: Step
    phase: str
    uow: Any
    discrepancies: list[tuple[float, str]] = field(default_factory=list)
    sent: bool = False

    @property
    def data(self) -> dict[str, Any]:
        """The saga's data: its start data plus what earlier steps returned."""
        return dict(self.row.data)

    @property
    def idempotency_key(self) -> str:
        """Saga id + step + attempt kind, the same on every retry."""
        return f"{self.row.saga_id}:{self.step.name}:{self.phase}"

    def record_discrepancy(self, amount: float, note: str) -> None:
        """Keep what a compensation could not undo."""
        self.discrepancies.append((float(amount), note))

    def marks(self, now: float) -> list[Transition]:
        """The discrepancy transitions recorded so far."""
        return [
            Transition("discrepancy", self.step.name, now, note, amount=amount)
            for amount, note in self.discrepancies
        ]

    def send(self, command: SagaCommand, *, key: str | None = None) -> None:
        """Send ``command`` through the outbox with this step's saga fields; the step
        then waits for its reply until the try's deadline (ordered per saga by default)."""
        if not isinstance(command, SagaCommand):
            raise ConfigurationError(
                f"ctx.send takes a SagaCommand, not {type(command).__name__}: subclass"
                " tidings.domain.saga_messages.SagaCommand so the reply can name its saga"
                " (send other messages with ctx.uow.send)"
            )
        if self.step.deadline is None:
            raise ConfigurationError(
                f"step {self.step.name!r} sends a command and waits for its reply, but has"
                " no deadline: give it Step(..., deadline=seconds), so a reply that never"
                " comes cannot hold the saga forever"
            )
        addressed = replace(
            command,
            saga_id=self.row.saga_id,
            step=self.step.name,
            phase="action" if self.phase == "action" else "compensation",
            idempotency_key=self.idempotency_key,
        )
        self.uow.send(addressed, key=key or self.row.saga_id)
        self.sent = True


class SagaReplies:
    """The inbox handler of ``SagaReply`` messages for one orchestrator."""

    def __init__(self, orchestrator: Orchestrator) -> None:
        self._sagas = orchestrator

    def register(self, handlers: Handlers | None, name: str) -> Handlers:
        """Add this handler to ``handlers`` (new ones if None) under ``name``."""
        from tidings.application.handling import Handlers

        handlers = handlers if handlers is not None else Handlers()
        handlers.add(SagaReply, name, self)
        return handlers

    def __call__(self, reply: SagaReply, uow: Any) -> None:
        """Move the saga the reply answers, in the handler's unit of work."""
        for _ in range(CONFLICT_TRIES):
            row = self._sagas.saga_log.get(uow, reply.saga_id)
            if row is None:
                raise MessageRejectedError(
                    f"a {reply.outcome} reply from step {reply.step!r} names saga"
                    f" {reply.saga_id!r}, and no saga has that id: check the sender's"
                    " saga_id (tidings sagas list shows the sagas)"
                )
            try:
                self._answer(uow, row, reply)
            except SagaConflictError:
                continue  # moved by an orchestrator since it was read: decide again
            return
        raise SagaConflictError(f"saga {reply.saga_id} kept moving: the reply comes round again")

    def _answer(self, uow: Any, row: SagaRow, reply: SagaReply) -> None:
        steps = {s.name: s for s in self._sagas.definition_of(row).steps}
        step = steps.get(reply.step)
        if step is None:
            raise MessageRejectedError(
                f"a reply to saga {row.saga_id} names step {reply.step!r}, which saga type"
                f" {row.saga_type!r} version {row.definition_version} does not have"
                f" (its steps: {sorted(steps)})"
            )
        now = self._sagas.now()
        log = self._sagas.saga_log
        key = f"{reply.step}:{reply.phase}"
        if row.waiting != key or row.state not in (RUNNING, COMPENSATING):
            reason = _why_ignored(row, reply)
            ignored = Transition("reply_ignored", reply.step, now, f"{reply.outcome}: {reason}")
            log.update(uow, row.next(), row.version, [ignored])
            return
        received = Transition("reply_received", step.name, now, _said(reply))
        if reply.outcome == "succeeded":
            new, done = _succeeded(row, step, reply, now)
            log.update(uow, new, row.version, [received, *done])
            return
        error: Exception = (
            StepRefusedError(reply.reason)
            if reply.outcome == "refused"
            else RuntimeError(reply.reason)
        )
        answered = replace(row, waiting="")  # answered: not an unknown outcome any more
        new, transitions = self._sagas.failure(answered, step, reply.phase, error, now)
        log.update(uow, new, row.version, [received, *transitions])
        if new.state == NEEDS_INTERVENTION:
            uow.transaction.on_commit(lambda: self._sagas.raise_alert(new, step))


def _succeeded(
    row: SagaRow, step: Step, reply: SagaReply, now: float
) -> tuple[SagaRow, list[Transition]]:
    cleared: dict[str, Any] = {
        "started": False,
        "attempt": 0,
        "wake_at": now,
        "step_deadline_at": 0.0,
        "waiting": "",
    }
    if reply.phase == "action":
        new = row.next(
            data={**row.data, **reply.data},
            step=row.step + 1,
            executed=[*row.executed, step.name],
            **cleared,
        )
        return new, [Transition("step_succeeded", step.name, now)]
    new = row.next(compensated=[*row.compensated, step.name], **cleared)
    marks = [Transition("step_compensated", step.name, now)]
    if reply.discrepancy:
        marks.append(
            Transition("discrepancy", step.name, now, reply.note, amount=reply.discrepancy)
        )
    return new, marks


def _said(reply: SagaReply) -> str:
    return reply.outcome + (f": {reply.reason}" if reply.reason else "")


def _why_ignored(row: SagaRow, reply: SagaReply) -> str:
    """Why a reply moves nothing, in words for the saga's history."""
    done = row.executed if reply.phase == "action" else row.compensated
    if reply.step in done:
        return f"a duplicate: the {reply.phase} of {reply.step} was answered already"
    failed = any(e.get("step") == reply.step and e.get("phase") == reply.phase for e in row.errors)
    if failed:
        return (
            f"too late: the {reply.phase} of {reply.step} had failed (deadline or error)"
            f" and the saga moved on; it is {row.state}"
        )
    if row.state not in (RUNNING, COMPENSATING):
        return f"the saga is {row.state}, waiting for no reply"
    waiting = row.waiting or "nothing"
    return f"the saga is not waiting on the {reply.phase} of {reply.step} (it waits on {waiting})"
