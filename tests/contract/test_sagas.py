"""Sagas on every backend: LIFO compensation, durable retries, the intervention queue,
a local step's effect committed with its transition, and recovery of interrupted steps."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import MakeStore
from tidings.domain.saga import (
    RetryPolicy,
    SagaDefinition,
    Step,
    StepContext,
    StepRefusedError,
    StepUnknownError,
)
from tidings.domain.saga_state import SagaResult
from tidings.errors import SagaError


class Clock:
    """A clock the test moves by hand, so backoffs take no real time."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


EFFECTS = ["effects"]  # the current test's table of step effects (unique per test)


@pytest.fixture(autouse=True)
def _unique_effects_table() -> None:
    EFFECTS[0] = f"effects_{uuid.uuid4().hex[:10]}"


def effects_table(store: Any) -> None:
    with store.unit_of_work() as uow:
        uow.execute(f"CREATE TABLE {EFFECTS[0]} (n INTEGER, what TEXT)")


def effects(store: Any) -> list[str]:
    with store.unit_of_work() as uow:
        return [r[0] for r in uow.execute(f"SELECT what FROM {EFFECTS[0]} ORDER BY n").fetchall()]


def write(what: str) -> Callable[[StepContext], dict[str, Any]]:
    """An action that writes ``what`` through the step's unit of work."""

    def act(ctx: StepContext) -> dict[str, Any]:
        n = ctx.uow.execute(f"SELECT COUNT(*) FROM {EFFECTS[0]}").fetchone()[0]
        ctx.uow.execute(f"INSERT INTO {EFFECTS[0]} VALUES (:n, :w)", {"n": n, "w": what})
        return {what: True}

    return act


def refuse(ctx: StepContext) -> None:
    raise StepRefusedError("out of stock")


def order_saga(last: Callable[[StepContext], Any] = refuse) -> SagaDefinition:
    return SagaDefinition(
        "create-order",
        [
            Step("order", write("order"), compensate=write("cancel order")),
            Step("payment", write("charge"), compensate=write("refund")),
            Step("email", write("email")),  # nothing to undo
            Step("inventory", last),
        ],
    )


def test_a_refused_step_compensates_the_steps_that_succeeded_in_reverse_order(
    make_store: MakeStore,
) -> None:
    """Out of stock at step 4: refund, then cancel the order; the email has no compensation."""
    store = make_store()
    effects_table(store)
    result = store.sagas(clock=Clock()).start(order_saga(), {"order_id": "o-1"})
    assert (result.success, result.state) == (False, "COMPENSATED")
    assert result.executed_steps == ["order", "payment", "email"]
    assert result.compensated == ["payment", "order"]
    assert result.error == "StepRefusedError: out of stock"
    assert effects(store) == ["order", "charge", "email", "refund", "cancel order"]


def test_a_saga_whose_steps_all_succeed_completes_with_what_the_steps_returned(
    make_store: MakeStore,
) -> None:
    """Each step sees the data earlier steps added; the result can be looked up by id."""
    store = make_store()
    effects_table(store)
    seen: list[dict[str, Any]] = []

    def last(ctx: StepContext) -> dict[str, Any]:
        seen.append(dict(ctx.data))
        return {"reserved": 2}

    sagas = store.sagas(clock=Clock())
    result = sagas.start(order_saga(last), {"order_id": "o-2"})
    assert (result.success, result.state) == (True, "COMPLETED")
    assert seen == [{"order_id": "o-2", "order": True, "charge": True, "email": True}]
    assert sagas.get(result.saga_id) == result
    assert result.data["reserved"] == 2


def test_a_transient_failure_is_retried_on_a_durable_timer_then_compensated(
    make_store: MakeStore,
) -> None:
    """Two retries after 1 and 2 s of the injected clock, all with one idempotency key."""
    store = make_store()
    effects_table(store)
    keys: list[str] = []

    def flaky(ctx: StepContext) -> None:
        keys.append(ctx.idempotency_key)
        raise StepUnknownError("timeout after sending")

    clock = Clock()
    definition = SagaDefinition(
        "charge-only",
        [Step("order", write("order"), write("cancel")), Step("pay", flaky, retry=RetryPolicy(2))],
    )
    sagas = store.sagas(clock=clock)
    first = sagas.start(definition, {})
    assert (first.state, first.wake_at) == ("RUNNING", 1_001.0)
    assert sagas.run_once() == 0  # not due yet
    clock.now = 1_001.0
    later = store.sagas(
        [definition], clock=clock
    )  # a restart loses nothing: the timer is in the row
    later.run_once()
    assert later.get(first.saga_id).wake_at == 1_003.0  # type: ignore[union-attr]
    clock.now = 1_003.0
    later.run_once()
    end = later.get(first.saga_id)
    assert end is not None
    assert end.state == "COMPENSATED"
    assert keys == [f"{first.saga_id}:pay:action"] * 3
    assert effects(store) == ["order", "cancel"]


def test_a_compensation_failing_past_its_retries_puts_the_saga_in_the_intervention_queue(
    make_store: MakeStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Backoff 1, 2, 4, 8, 16 s, then NEEDS_INTERVENTION: every error kept, an alert,
    a log line at error level, and a count."""
    store = make_store()
    tries: list[float] = []
    clock = Clock()

    def broken_refund(ctx: StepContext) -> None:
        tries.append(clock.now)
        raise RuntimeError("payment provider down")

    alerts: list[SagaResult] = []
    definition = SagaDefinition(
        "pay", [Step("pay", lambda ctx: None, broken_refund), Step("ship", refuse)]
    )
    sagas = store.sagas(clock=clock, on_intervention=alerts.append)
    with caplog.at_level(logging.ERROR, logger="tidings.application.sagas.orchestrator"):
        saga = sagas.start(definition, {})
        while (now := sagas.get(saga.saga_id)) is not None and now.state == "COMPENSATING":
            clock.now = now.wake_at
            sagas.run_once()
    assert [t - 1_000.0 for t in tries] == [0, 1, 3, 7, 15, 31]
    end = sagas.get(saga.saga_id)
    assert end is not None
    assert end.state == "NEEDS_INTERVENTION"
    assert [a.saga_id for a in alerts] == [saga.saga_id]
    assert "needs intervention" in caplog.text
    assert sagas.interventions("pay") == 1
    failures = [t for t in sagas.history(saga.saga_id) if t.kind == "compensation_failed"]
    assert len(failures) == 6
    assert sagas.listing("NEEDS_INTERVENTION")[0].saga_id == saga.saga_id


def test_operator_actions_are_recorded_with_who_and_why(make_store: MakeStore) -> None:
    """retry runs the compensation again; resolve ends the saga; both are on its history."""
    store = make_store()
    fixed = [False]

    def refund(ctx: StepContext) -> None:
        if not fixed[0]:
            raise RuntimeError("down")

    clock = Clock()
    definition = SagaDefinition(
        "ops",
        [
            Step("pay", lambda ctx: None, refund, compensation_retry=RetryPolicy(0)),
            Step("x", refuse),
        ],
    )
    sagas = store.sagas(clock=clock)
    saga = sagas.start(definition, {})
    assert saga.state == "NEEDS_INTERVENTION"
    again = sagas.operate(saga.saga_id, "retry", "ann", "try once more")
    assert again.state == "NEEDS_INTERVENTION"
    fixed[0] = True
    done = sagas.operate(saga.saga_id, "retry", "bob", "provider is back")
    assert done.state == "COMPENSATED"
    operated = [t for t in sagas.history(saga.saga_id) if t.kind.startswith("operator_")]
    assert [(t.kind, t.by, t.detail) for t in operated] == [
        ("operator_retry", "ann", "try once more"),
        ("operator_retry", "bob", "provider is back"),
    ]
    with pytest.raises(SagaError, match="resolve applies to a saga in NEEDS_INTERVENTION"):
        sagas.operate(saga.saga_id, "resolve", "cid", "done")


def test_a_step_whose_transition_cannot_be_written_leaves_no_effect(
    make_store: MakeStore,
) -> None:
    """The step's writes and its 'succeeded' transition commit together: when the
    transition is refused (the saga moved past the version the orchestrator read), the
    step's effect rolls back with it, and the saga is compensated with nothing to undo."""
    store = make_store()
    effects_table(store)
    clock = Clock()
    sagas_table = getattr(store.database, "tables", {}).get("sagas", "tidings_sagas")
    moved = [False]

    def charge(ctx: StepContext) -> None:
        write("charge")(ctx)
        if not moved[0]:  # someone else moves the saga before this step's transition
            moved[0] = True
            ctx.uow.execute(
                f"UPDATE {sagas_table} SET version = version + 1 WHERE saga_id = :id",
                {"id": "saga-conflict"},
            )

    definition = SagaDefinition("one", [Step("charge", charge)])
    sagas = store.sagas(clock=clock)
    result = sagas.start(definition, {}, saga_id="saga-conflict")
    assert (result.state, result.executed_steps) == ("RUNNING", [])
    assert effects(store) == []
    clock.now = result.wake_at  # its lease ends: the next orchestrator takes it over
    store.sagas([definition], clock=clock).recover()
    end = sagas.get("saga-conflict")
    assert end is not None
    assert end.state == "COMPENSATED"
    assert effects(store) == []


def test_an_interrupted_step_is_retried_by_the_next_orchestrator_once_its_lease_ends(
    make_store: MakeStore,
) -> None:
    """An orchestrator dies inside a step: nothing of the step remains, and another one
    takes the saga over after the lease, retrying the step (it is retryable)."""
    store = make_store()
    effects_table(store)
    clock = Clock()

    class Died(BaseException):
        pass

    crash = [True]

    def pay(ctx: StepContext) -> None:
        write("charge")(ctx)
        if crash[0]:
            crash[0] = False
            raise Died

    definition = SagaDefinition("crashy", [Step("pay", pay, retry=RetryPolicy(1))])
    with pytest.raises(Died):
        store.sagas(clock=clock, lease=30).start(definition, {}, saga_id="s-crash")
    other = store.sagas([definition], clock=clock, lease=30)
    assert other.recover() == 0  # the lease still holds
    clock.now += 30
    other.recover()  # the interrupted try counts as a failed one: retried after 1 s
    retried = other.get("s-crash")
    assert retried is not None
    clock.now = retried.wake_at
    other.recover()
    end = other.get("s-crash")
    assert end is not None
    assert end.state == "COMPLETED"
    assert effects(store) == ["charge"]
    kinds = [t.kind for t in other.history("s-crash")]
    assert kinds.count("action_failed") == 1
    assert kinds.count("step_succeeded") == 1
