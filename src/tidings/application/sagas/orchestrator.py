"""The saga orchestrator: drives sagas one durable transition at a time.

Every transition is written (saga row + history) before the next action runs. A local
step's effect and its "succeeded" transition commit in one unit of work, so a crash
leaves either both or neither. Each write expects the saga's previous version: of two
orchestrators moving one saga, the second's write is refused and its transaction, the
step's effect included, rolls back. A step being run holds a lease (its ``wake_at``);
once the lease has run out another orchestrator takes the step over as interrupted.
Retries wait as durable timers (``wake_at`` in the row), never as sleeping threads.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tidings.domain.saga import (
    RetryPolicy,
    SagaDefinition,
    Step,
    StepRefusedError,
    StepUnknownError,
)
from tidings.domain.saga_state import (
    ACTIVE,
    COMPENSATED,
    COMPENSATING,
    COMPLETED,
    NEEDS_INTERVENTION,
    RUNNING,
    SagaResult,
    SagaRow,
    Transition,
)
from tidings.errors import SagaConflictError, SagaError
from tidings.ports import SagaLog

log = logging.getLogger("tidings.sagas")

Clock = Callable[[], float]
AlertHook = Callable[[SagaResult], None]


@dataclass
class _Context:
    """What an action or compensation receives (see ``tidings.domain.saga.StepContext``)."""

    data: Mapping[str, Any]
    uow: Any
    idempotency_key: str
    discrepancies: list[tuple[float, str]] = field(default_factory=list)

    def record_discrepancy(self, amount: float, note: str) -> None:
        self.discrepancies.append((float(amount), note))


class Orchestrator:
    """Start, drive, recover and operate the sagas of ``definitions`` in ``store``."""

    def __init__(
        self,
        store: Any,
        definitions: Iterable[SagaDefinition],
        log_: SagaLog,
        *,
        clock: Clock = time.time,
        lease: float = 30.0,
        on_intervention: AlertHook | None = None,
    ) -> None:
        self._store = store
        self._log = log_
        self._clock = clock
        self._lease = lease
        self._alert = on_intervention
        self._definitions: dict[tuple[str, int], SagaDefinition] = {}
        for d in definitions:
            self._definitions[(d.name, d.version)] = d

    # -- starting and looking up -------------------------------------------------------

    def start(
        self, definition: SagaDefinition, data: Mapping[str, Any], saga_id: str | None = None
    ) -> SagaResult:
        """Record a new saga, then drive it until it ends or waits for a timer."""
        self._definitions.setdefault((definition.name, definition.version), definition)
        row = SagaRow(
            saga_id=saga_id or str(uuid.uuid4()),
            saga_type=definition.name,
            definition_version=definition.version,
            state=RUNNING,
            data=dict(data),
            wake_at=self._clock(),
        )
        with self._store.unit_of_work() as uow:
            self._log.create(uow, row, [Transition("saga_started", at=self._clock())])
        return self.drive(row.saga_id)

    def get(self, saga_id: str) -> SagaResult | None:
        """The saga's result as of now, or None if no saga has that id."""
        row = self._load(saga_id)
        return None if row is None else SagaResult.of(row)

    def history(self, saga_id: str) -> list[Transition]:
        """Every transition of the saga, oldest first."""
        with self._store.unit_of_work() as uow:
            return self._log.history(uow, saga_id)

    def listing(self, state: str | None = None, limit: int = 1000) -> list[SagaResult]:
        """The sagas in ``state`` (all if None)."""
        with self._store.unit_of_work() as uow:
            return [SagaResult.of(r) for r in self._log.listing(uow, state, limit)]

    def interventions(self, saga_type: str | None = None) -> int:
        """How many times sagas (of one type, or all) were put in the intervention queue."""
        with self._store.unit_of_work() as uow:
            return self._log.total(uow, "needs_intervention", saga_type)[0]

    def discrepancy_total(self, saga_type: str | None = None) -> float:
        """The sum of the discrepancies compensations recorded (per saga type, or all)."""
        with self._store.unit_of_work() as uow:
            return self._log.total(uow, "discrepancy", saga_type)[1]

    # -- driving ---------------------------------------------------------------------

    def run_once(self, limit: int = 100) -> int:
        """Drive every saga that is due (timers fired, leases run out); return how many
        transitions were made. A worker calls it in a loop; ``recover`` is the same."""
        with self._store.unit_of_work() as uow:
            ids = self._log.due(uow, self._clock(), ACTIVE, limit)
        moved = 0
        for saga_id in ids:
            moved += self._drive(saga_id)[0]
        return moved

    recover = run_once

    def drive(self, saga_id: str) -> SagaResult:
        """Move the saga as far as it can go now; return its result."""
        return SagaResult.of(self._drive(saga_id)[1])

    def _drive(self, saga_id: str) -> tuple[int, SagaRow]:
        """Transitions made, and the saga's row after the last. Each write checked the
        version it replaced, so the row it wrote is the stored one: the loop goes on from
        it without reading it back, and reads again only after a conflict."""
        moved = 0
        row: SagaRow | None = None
        while True:
            if row is None:
                row = self._load(saga_id)
            if row is None:
                raise SagaError(f"no saga has id {saga_id!r}: check the id (tidings sagas list)")
            if row.state not in ACTIVE or row.wake_at > self._clock():
                return moved, row
            try:
                row = self._advance(row)
            except SagaConflictError:
                row = None  # another orchestrator moved it: look again
                continue
            moved += 1

    def _load(self, saga_id: str) -> SagaRow | None:
        with self._store.unit_of_work() as uow:
            return self._log.get(uow, saga_id)

    def _definition(self, row: SagaRow) -> SagaDefinition:
        found = self._definitions.get((row.saga_type, row.definition_version))
        if found is None:
            known = sorted(v for (n, v) in self._definitions if n == row.saga_type)
            raise SagaError(
                f"saga {row.saga_id} is of type {row.saga_type!r} version"
                f" {row.definition_version}, and this orchestrator knows versions {known}:"
                " deploy that definition (or an upcaster) before driving it"
            )
        return found

    def _write(self, row: SagaRow, new: SagaRow, *transitions: Transition) -> SagaRow:
        with self._store.unit_of_work() as uow:
            self._log.update(uow, new, row.version, list(transitions))
        return new

    def _advance(self, row: SagaRow) -> SagaRow:
        """Make one transition; return the row written."""
        steps = self._definition(row).steps
        now = self._clock()
        if row.state == RUNNING and row.step >= len(steps):
            return self._write(row, row.next(state=COMPLETED), Transition("saga_completed", at=now))
        if row.state == COMPENSATING:
            pending = self._to_compensate(row, steps)
            if pending is None:
                return self._write(
                    row, row.next(state=COMPENSATED), Transition("saga_compensated", at=now)
                )
            step = pending
        else:
            step = steps[row.step]
        phase = "action" if row.state == RUNNING else "compensation"
        if row.started:  # a try began and never finished: its owner died or its lease ran out
            return self._failed(
                row, step, phase, StepUnknownError("interrupted: its owner stopped")
            )
        begun = row.next(started=True, attempt=row.attempt + 1, wake_at=now + self._lease)
        self._write(
            row, begun, Transition(f"{phase}_started", step.name, now, f"try {begun.attempt}")
        )
        return self._run(begun, step, phase)

    def _to_compensate(self, row: SagaRow, steps: tuple[Step, ...] | Any) -> Step | None:
        by_name = {s.name: s for s in steps}
        for name in reversed(row.executed):
            step = by_name[name]
            if step.compensate is not None and name not in row.compensated:
                return step
        return None

    def _run(self, row: SagaRow, step: Step, phase: str) -> SagaRow:
        call = step.action if phase == "action" else step.compensate
        if call is None:
            raise SagaError(f"step {step.name!r} has no compensation to run")
        key = f"{row.saga_id}:{step.name}:{phase}"
        try:
            with self._store.unit_of_work() as uow:
                ctx = _Context(dict(row.data), uow, key)
                # As stored (JSON): the next step sees the same data whether the row was
                # read back or not.
                returned = json.loads(json.dumps(call(ctx) or {}))
                now = self._clock()
                marks = [
                    Transition("discrepancy", step.name, now, note, amount=amount)
                    for amount, note in ctx.discrepancies
                ]
                if phase == "action":
                    done = row.next(
                        data={**row.data, **returned},
                        step=row.step + 1,
                        executed=[*row.executed, step.name],
                        started=False,
                        attempt=0,
                        wake_at=now,
                    )
                    kind = "step_succeeded"
                else:
                    done = row.next(
                        compensated=[*row.compensated, step.name],
                        started=False,
                        attempt=0,
                        wake_at=now,
                    )
                    kind = "step_compensated"
                self._log.update(uow, done, row.version, [Transition(kind, step.name, now), *marks])
        except SagaConflictError:
            raise
        except Exception as exc:
            return self._failed(row, step, phase, exc)
        return done

    def _failed(self, row: SagaRow, step: Step, phase: str, exc: Exception) -> SagaRow:
        """Record a failed try; return the row written (retry timer, compensating, or
        needs intervention)."""
        now = self._clock()
        text = f"{type(exc).__name__}: {exc}"
        error = {"step": step.name, "phase": phase, "try": row.attempt, "at": now, "error": text}
        if not isinstance(exc, (StepRefusedError, StepUnknownError)):
            error["trace"] = "".join(traceback.format_exception_only(exc)).strip()
        failed = Transition(f"{phase}_failed", step.name, now, text)
        base = {"started": False, "errors": [*row.errors, error]}
        policy: RetryPolicy = step.retry if phase == "action" else step.compensation_retry
        refused = isinstance(exc, StepRefusedError) and phase == "action"
        if not refused and row.attempt <= policy.retries:
            wait = policy.delay(row.attempt)
            return self._write(
                row,
                row.next(wake_at=now + wait, **base),
                failed,
                Transition("retry_scheduled", step.name, now, f"retry in {wait:g} s"),
            )
        if phase == "action":
            return self._write(
                row,
                row.next(state=COMPENSATING, attempt=0, wake_at=now, **base),
                failed,
                Transition("compensating", step.name, now),
            )
        new = row.next(state=NEEDS_INTERVENTION, **base)
        self._write(row, new, failed, Transition("needs_intervention", step.name, now, text))
        self._raise_alert(new, step)
        return new

    def _raise_alert(self, row: SagaRow, step: Step) -> None:
        log.error(
            "saga %s (%s) needs intervention: compensation of %s failed %d times; last: %s",
            row.saga_id,
            row.saga_type,
            step.name,
            row.attempt,
            row.errors[-1]["error"],
        )
        if self._alert is not None:
            try:
                self._alert(SagaResult.of(row))
            except Exception:
                log.exception("the saga alert hook failed for saga %s", row.saga_id)

    # -- operator actions -------------------------------------------------------------

    def operate(self, saga_id: str, action: str, by: str, why: str) -> SagaResult:
        """``retry`` (try the failed compensation again), ``compensate`` (force compensation
        of what succeeded) or ``resolve`` (handled by hand: the saga ends RESOLVED); the
        action, who and why are recorded on the saga's history."""
        row = self._load(saga_id)
        if row is None:
            raise SagaError(f"no saga has id {saga_id!r}: check the id (tidings sagas list)")
        allowed = {
            "retry": (NEEDS_INTERVENTION,),
            "compensate": (RUNNING, NEEDS_INTERVENTION),
            "resolve": (NEEDS_INTERVENTION, RUNNING, COMPENSATING),
        }
        if action not in allowed:
            raise SagaError(f"unknown operator action {action!r}: use retry, compensate or resolve")
        if row.state not in allowed[action]:
            raise SagaError(
                f"saga {saga_id} is {row.state}: {action} applies to a saga in"
                f" {', '.join(allowed[action])}"
            )
        now = self._clock()
        state = {"retry": COMPENSATING, "compensate": COMPENSATING, "resolve": "RESOLVED"}[action]
        new = row.next(state=state, attempt=0, started=False, wake_at=now)
        self._write(row, new, Transition(f"operator_{action}", at=now, detail=why, by=by))
        return self.drive(saga_id) if state in ACTIVE else SagaResult.of(new)
