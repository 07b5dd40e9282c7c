"""What the saga log stores: a saga's row, its transitions, and the result a caller sees."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Self

RUNNING = "RUNNING"
COMPENSATING = "COMPENSATING"
COMPLETED = "COMPLETED"
COMPENSATED = "COMPENSATED"
NEEDS_INTERVENTION = "NEEDS_INTERVENTION"
RESOLVED = "RESOLVED"
ACTIVE = (RUNNING, COMPENSATING)
"""States an orchestrator drives; the others wait for nobody (or for an operator)."""


@dataclass(frozen=True)
class SagaRow:
    """A saga instance as of its last transition.

    ``step`` is the index of the next step to run (RUNNING); ``attempt`` how many tries
    the current action or compensation has begun; ``started`` that one has begun and not
    finished (its lease runs until ``wake_at``); ``version`` goes up by one per
    transition.

    Time, all in seconds since the epoch (0: none): ``deadline_at`` is the saga's
    deadline, ``step_deadline_at`` the current try's. ``waiting`` is ``step:phase`` while
    a command of that step is out and unanswered; ``unanswered`` the steps whose command was
    never answered, compensated as if they had succeeded. A running saga's ``wake_at`` is
    never later than its deadline."""

    saga_id: str
    saga_type: str
    definition_version: int
    state: str
    data: dict[str, Any]
    step: int = 0
    attempt: int = 0
    started: bool = False
    executed: list[str] = field(default_factory=list)
    compensated: list[str] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    version: int = 1
    wake_at: float = 0.0
    deadline_at: float = 0.0
    step_deadline_at: float = 0.0
    waiting: str = ""
    unanswered: list[str] = field(default_factory=list)
    correlation_id: str = ""

    def next(self, **changes: Any) -> Self:
        """The row after one more transition (a running saga wakes by its deadline)."""
        unknown = changes.keys() - _ROW_FIELDS
        if unknown:
            raise TypeError(f"SagaRow has no field {', '.join(sorted(unknown))}")
        values = {**self.__dict__, **changes, "version": self.version + 1}
        if values["state"] == RUNNING and values["deadline_at"]:
            values["wake_at"] = min(values["wake_at"], values["deadline_at"])
        # Copied field by field rather than through dataclasses.replace, which calls
        # __init__ by keyword: a step makes two rows, and replace was the costliest
        # Python of the orchestrator's loop. Every field is set, as __init__ would.
        new = object.__new__(type(self))
        new.__dict__.update(values)
        return new


_ROW_FIELDS = frozenset(f.name for f in fields(SagaRow))


@dataclass(frozen=True)
class Transition:
    """One entry of a saga's history: what happened, to which step, when, and why."""

    kind: str
    step: str = ""
    at: float = 0.0
    detail: str = ""
    by: str = ""
    amount: float = 0.0


@dataclass(frozen=True)
class SagaResult:
    """The spec's result of a saga run, plus its state and wake-up time."""

    success: bool
    saga_id: str
    state: str
    executed_steps: list[str]
    compensated: list[str]
    error: str | None
    data: dict[str, Any]
    wake_at: float
    saga_type: str = ""
    definition_version: int = 0
    waiting: str = ""
    """``step:phase`` while a remote step's reply is awaited, else empty."""
    step_deadline_at: float = 0.0
    deadline_at: float = 0.0

    @classmethod
    def of(cls, row: SagaRow) -> SagaResult:
        """The result as the row says."""
        return cls(
            success=row.state == COMPLETED,
            saga_id=row.saga_id,
            state=row.state,
            executed_steps=list(row.executed),
            compensated=list(row.compensated),
            error=row.errors[-1]["error"] if row.errors else None,
            data=dict(row.data),
            wake_at=row.wake_at,
            saga_type=row.saga_type,
            definition_version=row.definition_version,
            waiting=row.waiting,
            step_deadline_at=row.step_deadline_at,
            deadline_at=row.deadline_at,
        )
