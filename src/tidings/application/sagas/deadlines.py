"""Step and saga deadlines, as times in the saga's row (no thread, no sleep).

A try's deadline is set when the try begins (``step_deadline_at``) and its row wakes by
then; the saga's deadline (``deadline_at``) caps the wake-up of a running saga. What a
deadline does is decided from the row as read, and written with the same version check
as every transition: a deadline whose step or saga has moved on finds a newer version,
its write is refused, and the orchestrator looks again at the saga as it now is.
"""

from __future__ import annotations

from tidings.domain.saga import Step, StepTimedOutError
from tidings.domain.saga_state import COMPENSATING, SagaRow, Transition


def begun(row: SagaRow, step: Step, now: float, lease: float) -> SagaRow:
    """The row once a try of ``step`` has begun: its lease, and its deadline if any."""
    deadline = now + step.deadline if step.deadline is not None else 0.0
    wake = min(now + lease, deadline) if deadline else now + lease
    return row.next(started=True, attempt=row.attempt + 1, wake_at=wake, step_deadline_at=deadline)


def timed_out(row: SagaRow, step: Step, now: float) -> StepTimedOutError | None:
    """The failure of a try whose deadline has passed unanswered, else None."""
    if not row.step_deadline_at or now < row.step_deadline_at:
        return None
    if row.waiting:
        return StepTimedOutError(f"no reply within its deadline of {step.deadline:g} s")
    return StepTimedOutError(f"not done within its deadline of {step.deadline:g} s")


def unanswered(row: SagaRow) -> list[str]:
    """The steps to compensate as if they had succeeded: those before, and the step whose
    action's command is out unanswered (it may have taken effect)."""
    name, _, phase = row.waiting.partition(":")
    if phase == "action" and name not in row.unanswered:
        return [*row.unanswered, name]
    return row.unanswered


def past_saga_deadline(
    row: SagaRow, step: Step, now: float
) -> tuple[SagaRow, Transition, Transition]:
    """The row and transitions of a running saga whose deadline has passed: it
    compensates what succeeded (and a step whose command is still unanswered)."""
    text = f"SagaDeadlineError: the saga did not complete by its deadline (step {step.name})"
    error = {"step": step.name, "phase": "action", "try": row.attempt, "at": now, "error": text}
    new = row.next(
        state=COMPENSATING,
        attempt=0,
        started=False,
        wake_at=now,
        step_deadline_at=0.0,
        unanswered=unanswered(row),
        waiting="",
        errors=[*row.errors, error],
    )
    return (
        new,
        Transition("saga_deadline_passed", step.name, now, text),
        Transition("compensating", step.name, now),
    )
