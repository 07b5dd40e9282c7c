"""A property test: random sagas (1-8 steps, some without compensation) with random
failures of actions and compensations end as a simple model of the spec says, with
their effects in the order it says."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

import tidings
from tidings.domain.saga import (
    RetryPolicy,
    SagaDefinition,
    Step,
    StepContext,
    StepRefusedError,
)

COMPENSATION_RETRIES = 5


@dataclass(frozen=True)
class Plan:
    """One step: how its action fails, its retries, whether it has a compensation and how
    often that fails first."""

    refused: bool
    action_failures: int
    retries: int
    compensable: bool
    compensation_failures: int


plans = st.builds(
    Plan,
    refused=st.integers(0, 4).map(lambda n: n == 0),
    action_failures=st.integers(0, 3),
    retries=st.integers(0, 2),
    compensable=st.booleans(),
    compensation_failures=st.integers(0, 7),
)


def plan(refused: bool, fails: int, retries: int, undo: bool, undo_fails: int) -> Plan:
    """A step's plan in a line."""
    return Plan(refused, fails, retries, undo, undo_fails)


LIFO = [  # always among the examples: steps undone last first, one with nothing to undo
    plan(False, 0, 0, True, 1),
    plan(False, 1, 1, False, 0),
    plan(False, 0, 0, True, 0),
    plan(True, 0, 0, True, 0),
]
INTERVENTION = [  # and a compensation failing past its retries
    plan(False, 0, 0, True, 6),
    plan(False, 2, 1, True, 0),
]


def model(steps: list[Plan]) -> tuple[str, list[str]]:
    """The end state and effects the spec predicts: steps run in order until one is
    refused or out of retries; then the ones that succeeded are compensated last first,
    each retried up to five times; a compensation failing past that stops everything in
    the intervention queue."""
    effects: list[str] = []
    done: list[int] = []
    for i, plan in enumerate(steps):
        if plan.refused or plan.action_failures > plan.retries:
            break
        effects.append(f"do {i}")
        done.append(i)
    else:
        return "COMPLETED", effects
    for i in reversed(done):
        plan = steps[i]
        if not plan.compensable:
            continue
        if plan.compensation_failures > COMPENSATION_RETRIES:
            return "NEEDS_INTERVENTION", effects
        effects.append(f"undo {i}")
    return "COMPENSATED", effects


def definition(steps: list[Plan], effects: list[str]) -> SagaDefinition:
    tries: dict[str, int] = {}

    def act(i: int, plan: Plan) -> Any:
        def run(ctx: StepContext) -> None:
            n = tries[f"do {i}"] = tries.get(f"do {i}", 0) + 1
            if plan.refused:
                raise StepRefusedError(f"step {i} refused")
            if n <= plan.action_failures:
                raise TimeoutError(f"step {i} timed out ({n})")
            ctx.uow.transaction.on_commit(lambda: effects.append(f"do {i}"))

        return run

    def undo(i: int, plan: Plan) -> Any:
        def run(ctx: StepContext) -> None:
            n = tries[f"undo {i}"] = tries.get(f"undo {i}", 0) + 1
            if n <= plan.compensation_failures:
                raise ConnectionError(f"undo {i} failed ({n})")
            ctx.uow.transaction.on_commit(lambda: effects.append(f"undo {i}"))

        return run

    return SagaDefinition(
        "model",
        [
            Step(
                f"s{i}",
                act(i, plan),
                undo(i, plan) if plan.compensable else None,
                retry=RetryPolicy(plan.retries),
            )
            for i, plan in enumerate(steps)
        ],
    )


def run_against_model(store: tidings.Store, steps: list[Plan]) -> None:
    """Start a saga of ``steps`` on ``store``, drive it to its end on an injected clock,
    and check its end state and the order of its effects against the model."""
    effects: list[str] = []
    now = [0.0]
    sagas = store.sagas(clock=lambda: now[0])
    saga = sagas.start(definition(steps, effects), {})
    while saga.state in ("RUNNING", "COMPENSATING"):
        assert saga.wake_at > now[0], "an active saga must wait for a later time"
        now[0] = saga.wake_at
        sagas.run_once()
        found = sagas.get(saga.saga_id)
        assert found is not None
        saga = found
    assert (saga.state, effects) == model(steps)


@settings(max_examples=150, deadline=None)
@given(st.lists(plans, min_size=1, max_size=8))
@example(LIFO)
@example(INTERVENTION)
def test_random_sagas_end_and_act_as_the_model_says(steps: list[Plan]) -> None:
    """End state and order of effects match the model, whatever fails."""
    with tidings.connect("memory://") as store:
        run_against_model(store, steps)
