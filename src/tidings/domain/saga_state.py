"""What the saga log stores: a saga's row, its transitions, and the result a caller sees."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
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
    transition."""

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

    def next(self, **changes: Any) -> Self:
        """The row after one more transition."""
        return replace(self, version=self.version + 1, **changes)


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
        )
