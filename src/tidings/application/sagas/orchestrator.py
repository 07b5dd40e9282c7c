"""The saga orchestrator: drives sagas one durable transition at a time.

Every transition is written (saga row + history) before the next action runs. A local
step's effect and its "succeeded" transition commit in one unit of work, so a crash
leaves either both or neither. Each write expects the saga's previous version: of two
orchestrators moving one saga, the second's write is refused and its transaction, the
step's effect included, rolls back. A step being run holds a lease (its ``wake_at``);
once the lease has run out another orchestrator takes the step over as interrupted.
Retries, deadlines and replies awaited wait as durable timers (``wake_at`` in the row),
never as sleeping threads (see ``deadlines`` and ``remote`` beside this module).
"""

from __future__ import annotations

import logging
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import msgspec

from tidings.application.sagas.deadlines import begun, past_saga_deadline, timed_out, unanswered
from tidings.application.sagas.remote import Context, SagaReplies
from tidings.application.sagas.versions import SagaVersions
from tidings.domain.saga import (
    RetryPolicy,
    SagaDefinition,
    Step,
    StepRefusedError,
    StepTimedOutError,
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
from tidings.domain.saga_versions import SagaUpcaster
from tidings.errors import SagaConflictError, SagaError, SagaVersionError
from tidings.observability import tracing
from tidings.ports import SagaLog

if TYPE_CHECKING:
    from tidings.application.handling import Handlers

log = logging.getLogger("tidings.sagas")

_to_json = msgspec.json.Encoder().encode
_from_json = msgspec.json.decode

Clock = Callable[[], float]
Pending = tuple[Step, str]
"""A try a row records as begun by this orchestrator: the step and its phase."""
AlertHook = Callable[[SagaResult], None]


def _started(step: Step, phase: str, row: SagaRow, now: float) -> Transition:
    """The transition of a try begun (its number is the row's attempt)."""
    return Transition(f"{phase}_started", step.name, now, f"try {row.attempt}")


class Orchestrator:
    """Start, drive, recover and operate the sagas of ``definitions`` in ``store``."""

    def __init__(
        self,
        store: Any,
        definitions: Iterable[SagaDefinition | SagaUpcaster],
        log_: SagaLog,
        *,
        clock: Clock = time.time,
        lease: float = 30.0,
        on_intervention: AlertHook | None = None,
        by: str = "",
    ) -> None:
        self._store = store
        self._log = log_
        self._clock = clock
        self._lease = lease
        self._alert = on_intervention
        self._by = by
        self._versions = SagaVersions(definitions)
        self.refused: dict[str, str] = {}
        """Sagas ``run_once`` left alone, each with why (no definition drives its version)."""

    # -- starting and looking up -------------------------------------------------------

    def start(
        self,
        definition: SagaDefinition,
        data: Mapping[str, Any],
        saga_id: str | None = None,
        *,
        deadline: float | None = None,
    ) -> SagaResult:
        """Record a new saga, then drive it until it ends or waits for a timer or a reply.
        ``deadline`` (seconds from now; the definition's by default) compensates it if it
        is still running by then. Its messages carry the correlation id of the unit of
        work it starts in (the message being handled, or a new conversation)."""
        self._versions.add(definition)
        seconds = deadline if deadline is not None else definition.deadline
        if seconds is not None and not seconds > 0:
            raise SagaError(f"a saga's deadline must be seconds above 0, not {seconds!r}")
        now = self._clock()
        row = SagaRow(
            saga_id=saga_id or str(uuid.uuid4()),
            saga_type=definition.name,
            definition_version=definition.version,
            state=RUNNING,
            data=dict(data),
            wake_at=now,
            deadline_at=now + seconds if seconds is not None else 0.0,
        )
        first = definition.steps[0]
        with self._store.unit_of_work() as uow:
            row = replace(row, correlation_id=uow.cause.correlation_id)
            # The first try's start commits with the saga: one commit fewer, and the
            # try is still recorded as begun before its action runs.
            row = replace(begun(row, first, now, self._lease), version=row.version)
            self._log.create(
                uow,
                row,
                self._stamped(
                    [Transition("saga_started", at=now), _started(first, "action", row, now)]
                ),
            )
        return SagaResult.of(self._drive(row.saga_id, row, (first, "action"))[1])

    def reply_handlers(
        self, handlers: Handlers | None = None, *, name: str = "tidings.saga-replies"
    ) -> Handlers:
        """Add the handler of ``SagaReply`` messages to ``handlers`` (new ones if None)
        and return them, for the consumer that receives the replies of remote steps: the
        reply's inbox row and the saga's transition then commit in one transaction."""
        return SagaReplies(self).register(handlers, name)

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
        transitions were made. A worker calls it in a loop; ``recover`` is the same.

        A saga no definition here can drive (``SagaVersionError``) is left as it was,
        logged once and kept in ``refused``; the others go on."""
        with self._store.unit_of_work() as uow:
            ids = self._log.due(uow, self._clock(), ACTIVE, limit + len(self.refused))
        moved = 0
        for saga_id in ids:
            if saga_id in self.refused:
                continue
            try:
                moved += self._drive(saga_id)[0]
            except SagaVersionError as exc:
                self.refused[saga_id] = str(exc)
                log.error("saga %s refused: %s", saga_id, exc, extra={"saga_id": saga_id})
        return moved

    recover = run_once

    def drive(self, saga_id: str) -> SagaResult:
        """Move the saga as far as it can go now; return its result."""
        return SagaResult.of(self._drive(saga_id)[1])

    def _drive(
        self, saga_id: str, row: SagaRow | None = None, pending: Pending | None = None
    ) -> tuple[int, SagaRow]:
        """Transitions made, and the saga's row after the last. Each write checked the
        version it replaced, so the row it wrote is the stored one: the loop goes on from
        it without reading it back, and reads again only after a conflict (another
        orchestrator, an operator or a reply moved the saga meanwhile). ``pending`` is a
        try that ``row`` records as begun by this orchestrator: it runs at once."""
        moved = 0
        while True:
            try:
                if row is not None and pending is not None:
                    row, pending = self._run(row, *pending)
                    moved += 1
                    continue
                if row is None:
                    row = self._load(saga_id)
                if row is None:
                    raise SagaError(
                        f"no saga has id {saga_id!r}: check the id (tidings sagas list)"
                    )
                if row.state not in ACTIVE or row.wake_at > self._clock():
                    return moved, row
                row, pending = self._advance(row)
            except SagaConflictError:
                row, pending = None, None  # moved by someone else: read it again
                continue
            moved += 1

    @property
    def saga_log(self) -> SagaLog:
        """Where the sagas are kept (for the reply handler, which writes in its own unit
        of work)."""
        return self._log

    def now(self) -> float:
        """The orchestrator's clock."""
        return self._clock()

    def definition_of(self, row: SagaRow) -> SagaDefinition:
        """The definition a stored saga runs on (an error names the versions known)."""
        return self._versions.definition(row)

    def _load(self, saga_id: str) -> SagaRow | None:
        with self._store.unit_of_work() as uow:
            return self._log.get(uow, saga_id)

    def next_wake(self, after: float) -> float | None:
        """The earliest time after ``after`` at which an active saga is due, or None."""
        with self._store.unit_of_work() as uow:
            return self._log.next_wake(uow, ACTIVE, after)

    def counts(self) -> dict[str, int]:
        """How many sagas are in each state now."""
        with self._store.unit_of_work() as uow:
            return self._log.counts(uow)

    def _stamped(self, transitions: list[Transition]) -> list[Transition]:
        if not self._by:
            return transitions
        return [t if t.by else replace(t, by=self._by) for t in transitions]

    def _write(self, row: SagaRow, new: SagaRow, *transitions: Transition) -> SagaRow:
        with self._store.unit_of_work() as uow:
            self._log.update(uow, new, row.version, self._stamped(list(transitions)))
        return new

    def _advance(self, row: SagaRow) -> tuple[SagaRow, Pending | None]:
        """Make one transition; return the row written, and the try it began (if any),
        which the caller runs next."""
        now = self._clock()
        upcast = self._versions.upcast(row)
        if upcast is not None:  # moved to the newer version first, as a transition of its own
            moved = Transition("saga_upcast", at=now, detail=upcast.detail)
            return self._write(row, upcast.row, moved), None
        steps = self._versions.definition(row).steps
        step = self._next_step(row, steps)
        ending = self._ending(row, steps, step, now)
        if ending is not None:
            return self._write(row, *ending), None
        if step is None:  # _ending covers every active state without a step
            raise SagaError(f"saga {row.saga_id} is {row.state} with no step to run")
        phase = "action" if row.state == RUNNING else "compensation"
        late = timed_out(row, step, now)
        if late is not None:  # no answer by the try's deadline
            return self._failed(row, step, phase, late), None
        if row.started:  # a try began and never finished: its owner died or its lease ran out
            interrupted = StepUnknownError("interrupted: its owner stopped")
            return self._failed(row, step, phase, interrupted), None
        new = begun(row, step, now, self._lease)
        return self._write(row, new, _started(step, phase, new, now)), (step, phase)

    def _then(self, done: SagaRow, now: float) -> tuple[SagaRow, list[Transition], Pending | None]:
        """What follows a try that succeeded, to commit with it: the saga's end, or the
        start of the next try (recorded as begun before its action runs, as always), so a
        saga of n local steps commits n + 1 times."""
        if done.waiting:  # a remote step: its reply moves the saga on
            return done, [], None
        steps = self._versions.definition(done).steps
        step = self._next_step(done, steps)
        ending = self._ending(done, steps, step, now)
        if ending is not None:
            new, *transitions = ending
            return new, transitions, None
        if step is None:
            return done, [], None
        phase = "action" if done.state == RUNNING else "compensation"
        new = begun(done, step, now, self._lease)
        return new, [_started(step, phase, new, now)], (step, phase)

    def _next_step(self, row: SagaRow, steps: Sequence[Step]) -> Step | None:
        """The step to run (or compensate) next, or None when there is none left."""
        if row.state == COMPENSATING:
            return self._to_compensate(row, steps)
        return steps[row.step] if row.step < len(steps) else None

    @staticmethod
    def _ending(
        row: SagaRow, steps: Sequence[Step], step: Step | None, now: float
    ) -> tuple[SagaRow, *tuple[Transition, ...]] | None:
        """The row and transitions that end the saga (or start compensating it at its
        deadline), or None while it has a step to run."""
        if row.state == RUNNING and step is None:
            return row.next(state=COMPLETED), Transition("saga_completed", at=now)
        if row.state == RUNNING and row.deadline_at and now >= row.deadline_at:
            return past_saga_deadline(row, steps[row.step], now)
        if row.state == COMPENSATING and step is None:
            return row.next(state=COMPENSATED), Transition("saga_compensated", at=now)
        return None

    def _to_compensate(self, row: SagaRow, steps: tuple[Step, ...] | Any) -> Step | None:
        by_name = {s.name: s for s in steps}
        for name in reversed([*row.executed, *row.unanswered]):
            step = by_name[name]
            if step.compensate is not None and name not in row.compensated:
                return step
        return None

    def _run(self, row: SagaRow, step: Step, phase: str) -> tuple[SagaRow, Pending | None]:
        """Run the try in one unit of work with its transition (and what follows it);
        return the row written and the next try begun, if any."""
        call = step.action if phase == "action" else step.compensate
        if call is None:
            raise SagaError(f"step {step.name!r} has no compensation to run")
        try:
            with (
                tracing.step(row.saga_id, row.saga_type, step.name, phase),
                self._store.unit_of_work(correlation_id=row.correlation_id or None) as uow,
            ):
                ctx = Context(row, step, phase, uow)
                # As the log stores it (JSON): the next step sees the same data whether the
                # row was read back or not.
                returned = _from_json(_to_json(call(ctx) or {}))
                now = self._clock()
                if row.step_deadline_at and now > row.step_deadline_at:
                    raise StepTimedOutError(  # raised inside the unit of work: its writes roll back
                        f"answered after its deadline of {step.deadline:g} s"
                    )
                marks = ctx.marks(now)
                if ctx.sent:  # the step completes when its reply comes (SagaReplies)
                    done = row.next(
                        data={**row.data, **returned},
                        started=False,
                        waiting=f"{step.name}:{phase}",
                        wake_at=row.step_deadline_at,
                    )
                    kind = "command_sent"
                elif phase == "action":
                    done = row.next(
                        data={**row.data, **returned},
                        step=row.step + 1,
                        executed=[*row.executed, step.name],
                        started=False,
                        attempt=0,
                        wake_at=now,
                        step_deadline_at=0.0,
                        waiting="",
                    )
                    kind = "step_succeeded"
                else:
                    done = row.next(
                        compensated=[*row.compensated, step.name],
                        started=False,
                        attempt=0,
                        wake_at=now,
                        step_deadline_at=0.0,
                        waiting="",
                    )
                    kind = "step_compensated"
                new, follows, pending = self._then(done, now)
                transitions = [Transition(kind, step.name, now), *marks, *follows]
                self._log.update(uow, new, row.version, self._stamped(transitions))
        except SagaConflictError:
            raise
        except Exception as exc:
            return self._failed(row, step, phase, exc), None
        return new, pending

    def _failed(self, row: SagaRow, step: Step, phase: str, exc: Exception) -> SagaRow:
        """Record a failed try; return the row written (a retry timer, compensating, or
        the intervention queue)."""
        new, transitions = self.failure(row, step, phase, exc, self._clock())
        self._write(row, new, *transitions)
        if new.state == NEEDS_INTERVENTION:
            self.raise_alert(new, step)
        return new

    def failure(
        self, row: SagaRow, step: Step, phase: str, exc: Exception, now: float
    ) -> tuple[SagaRow, list[Transition]]:
        """The row and transitions after a failed try: a retry on a timer, compensation,
        or (for a compensation out of retries) the intervention queue."""
        text = f"{type(exc).__name__}: {exc}"
        error = {"step": step.name, "phase": phase, "try": row.attempt, "at": now, "error": text}
        if not isinstance(exc, (StepRefusedError, StepUnknownError)):
            error["trace"] = "".join(traceback.format_exception_only(exc)).strip()
        failed = Transition(f"{phase}_failed", step.name, now, text)
        base = {"started": False, "errors": [*row.errors, error], "step_deadline_at": 0.0}
        policy: RetryPolicy = step.retry if phase == "action" else step.compensation_retry
        refused = isinstance(exc, StepRefusedError) and phase == "action"
        if not refused and row.attempt <= policy.retries:
            wait = policy.delay(row.attempt)
            return row.next(wake_at=now + wait, **base), [
                failed,
                Transition("retry_scheduled", step.name, now, f"retry in {wait:g} s"),
            ]
        if phase == "action":
            compensating = row.next(
                state=COMPENSATING,
                attempt=0,
                wake_at=now,
                unanswered=unanswered(row),
                waiting="",
                **base,
            )
            return compensating, [failed, Transition("compensating", step.name, now)]
        new = row.next(state=NEEDS_INTERVENTION, waiting="", **base)
        return new, [failed, Transition("needs_intervention", step.name, now, text)]

    def raise_alert(self, row: SagaRow, step: Step) -> None:
        """Tell the operators a saga needs intervention: a log line and the alert hook."""
        log.error(
            "saga %s (%s) needs intervention: compensation of %s failed %d times; last: %s",
            row.saga_id,
            row.saga_type,
            step.name,
            row.attempt,
            row.errors[-1]["error"],
            extra={"saga_id": row.saga_id},
        )
        if self._alert is not None:
            try:
                self._alert(SagaResult.of(row))
            except Exception:
                log.exception(
                    "the saga alert hook failed for saga %s",
                    row.saga_id,
                    extra={"saga_id": row.saga_id},
                )

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
        if state in ACTIVE:  # never record an action on a saga no code here can drive
            self._versions.check(row)
        new = row.next(
            state=state,
            attempt=0,
            started=False,
            wake_at=now,
            step_deadline_at=0.0,
            unanswered=unanswered(row) if state == COMPENSATING else row.unanswered,
            waiting="",
        )
        self._write(row, new, Transition(f"operator_{action}", at=now, detail=why, by=by))
        return self.drive(saga_id) if state in ACTIVE else SagaResult.of(new)
