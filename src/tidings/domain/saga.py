"""Saga definitions: ordered steps, each an action and an optional compensation.

A definition reads like the spec's compensating-transactions table::

    create_order = SagaDefinition("create-order", version=1, steps=[
        Step("create-order", create_order, compensate=cancel_order),
        Step("charge", charge, compensate=refund, retry=RetryPolicy(attempts=3)),
        Step("reserve", reserve, compensate=release),
        Step("notify", notify),                       # nothing to undo
    ])

An action receives a ``StepContext``: the saga's data (what it was started with plus
what earlier steps returned), the unit of work its writes go through, and an
idempotency key. It returns a mapping to add to the data, or None. It says how it
failed by the exception it raises: ``StepRefusedError`` (a business refusal: compensate at
once), ``StepUnknownError`` (the call may have happened: retry with the same key before
compensating), anything else is a transient failure (retried per its policy).

A step may also have a ``deadline`` (seconds from the start of each try): a try that has
not answered by then is failed as an unknown outcome. A remote step sends a command with
``ctx.send(command)`` and completes when its reply comes back (``tidings.domain.saga_messages``);
it needs a deadline. A definition's ``deadline`` (seconds from the saga's start)
compensates a saga still running by then.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class StepRefusedError(Exception):
    """A business refusal (out of stock, card declined): retrying cannot help."""


class StepUnknownError(Exception):
    """The call may or may not have happened (a timeout after sending)."""


class StepTimedOutError(StepUnknownError):
    """A try did not answer by its step's deadline (the call may still have happened)."""


class StepContext(Protocol):
    """What an action or compensation is given."""

    @property
    def data(self) -> Mapping[str, Any]:
        """The saga's data: its start data plus what earlier steps returned."""

    @property
    def uow(self) -> Any:
        """The unit of work the step's writes go through (committed with its transition)."""

    @property
    def idempotency_key(self) -> str:
        """Saga id + step + attempt kind: the same on every retry of this action."""

    def record_discrepancy(self, amount: float, note: str) -> None:
        """Say a compensation could not undo everything (charged 103, refunded 98)."""

    def send(self, command: Any, *, key: str | None = None) -> None:
        """Send a ``SagaCommand`` to another bounded context through the outbox, with
        this step's saga id, step, phase and idempotency key filled in: the step then
        waits (a row, no thread) for its reply, until its deadline."""


Action = Callable[[StepContext], Mapping[str, Any] | None]


@dataclass(frozen=True)
class RetryPolicy:
    """How often an action is retried after a transient failure, and the waits between.

    ``retries`` more tries after the first; the wait before retry n is ``delays[n-1]``
    seconds (the last delay repeats if there are more retries than delays)."""

    retries: int = 0
    delays: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0)

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError(f"RetryPolicy(retries={self.retries}): give 0 or more retries")
        if not self.delays or any(d < 0 for d in self.delays):
            raise ValueError(
                f"RetryPolicy(delays={self.delays}): give one or more waits, none negative"
            )

    def delay(self, retry: int) -> float:
        """The wait in seconds before retry number ``retry`` (1-based)."""
        return self.delays[min(retry, len(self.delays)) - 1]


NO_RETRY = RetryPolicy()
COMPENSATION_RETRY = RetryPolicy(retries=5)  # the spec's 1, 2, 4, 8, 16 s


@dataclass(frozen=True)
class Step:
    """One row of the compensating-transactions table."""

    name: str
    action: Action
    compensate: Action | None = None
    retry: RetryPolicy = NO_RETRY
    compensation_retry: RetryPolicy = COMPENSATION_RETRY
    deadline: float | None = None
    """Seconds from the start of each try (action or compensation) to its answer."""

    def __post_init__(self) -> None:
        _check_deadline(self.deadline, f"step {self.name!r}")


@dataclass(frozen=True)
class SagaDefinition:
    """A saga type: its name, the version of its steps, and the steps in order."""

    name: str
    steps: Sequence[Step]
    version: int = 1
    deadline: float | None = None
    """Seconds from the saga's start: a saga still running by then is compensated."""

    def __post_init__(self) -> None:
        _check_deadline(self.deadline, f"saga {self.name!r}")
        if not self.name:
            raise ValueError("a saga definition needs a name (its type)")
        if not self.steps:
            raise ValueError(f"saga {self.name!r} has no steps: give at least one")
        names = [step.name for step in self.steps]
        doubles = sorted({n for n in names if names.count(n) > 1})
        if doubles:
            raise ValueError(
                f"saga {self.name!r} names steps {doubles} twice: step names must be unique"
            )
        object.__setattr__(self, "steps", tuple(self.steps))


def _check_deadline(deadline: float | None, what: str) -> None:
    if deadline is not None and not deadline > 0:
        raise ValueError(f"{what} has deadline={deadline!r}: give seconds above 0, or None")
