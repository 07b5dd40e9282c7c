"""Step and saga deadlines on every backend: durable times in the saga's row, driven by
an injected clock; a try not answered by its deadline fails (retry or compensate), a
saga still running at its deadline compensates, and a deadline that comes after its
step or saga moved on does nothing."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

import tidings
from tests.conftest import MakeStore
from tests.contract.saga_remote_kit import REGISTRY, Clock, Remote, charge, remote_saga
from tidings.domain.saga import RetryPolicy, SagaDefinition, Step, StepContext
from tidings.errors import SagaError


def effects_of(store: tidings.Store) -> tuple[str, Any]:
    """A fresh effects table and a step that writes its name there."""
    table = f"effects_{uuid.uuid4().hex[:10]}"
    with store.unit_of_work() as uow:
        uow.execute(f"CREATE TABLE {table} (n INTEGER, what TEXT)")

    def write(what: str) -> Any:
        def act(ctx: StepContext) -> None:
            n = ctx.uow.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            ctx.uow.execute(f"INSERT INTO {table} VALUES (:n, :w)", {"n": n, "w": what})

        return act

    return table, write


def rows(store: tidings.Store, table: str) -> list[str]:
    with store.unit_of_work() as uow:
        return [r[0] for r in uow.execute(f"SELECT what FROM {table} ORDER BY n").fetchall()]


def kinds(sagas: Any, saga_id: str) -> list[str]:
    return [t.kind for t in sagas.history(saga_id)]


def test_a_local_step_that_answers_after_its_deadline_fails_and_its_effect_rolls_back(
    make_store: MakeStore,
) -> None:
    """The first try takes 6 s of a 5 s deadline: its write is undone and it is retried;
    the second try is in time. The effect is there once."""
    store = make_store()
    table, write = effects_of(store)
    clock = Clock()
    slow = [True]

    def charge(ctx: StepContext) -> None:
        write("charge")(ctx)
        if slow[0]:
            slow[0] = False
            clock.now += 6

    definition = SagaDefinition(
        "slow", [Step("charge", charge, retry=RetryPolicy(1, (1.0,)), deadline=5)]
    )
    sagas = store.sagas(clock=clock)
    first = sagas.start(definition, {})
    assert first.state == "RUNNING"
    assert rows(store, table) == []
    assert "StepTimedOutError: answered after its deadline of 5 s" in str(first.error)
    clock.now = first.wake_at
    sagas.run_once()
    end = sagas.get(first.saga_id)
    assert end is not None
    assert end.state == "COMPLETED"
    assert rows(store, table) == ["charge"]


def test_a_step_whose_owner_died_is_taken_over_at_its_deadline_before_its_lease_ends(
    make_store: MakeStore,
) -> None:
    """Lease 30 s, deadline 5 s: another orchestrator fails the try at 5 s, not at 30 s,
    and compensates what succeeded (the step has no retries)."""
    store = make_store()
    table, write = effects_of(store)
    clock = Clock()

    class Died(BaseException):
        pass

    def hang(ctx: StepContext) -> None:
        raise Died

    definition = SagaDefinition(
        "dies",
        [Step("order", write("order"), write("cancel")), Step("pay", hang, deadline=5)],
    )
    with pytest.raises(Died):
        store.sagas(clock=clock, lease=30).start(definition, {}, saga_id="s-died")
    other = store.sagas([definition], clock=clock, lease=30)
    clock.now += 4.9
    assert other.run_once() == 0
    clock.now += 0.1
    other.run_once()
    end = other.get("s-died")
    assert end is not None
    assert end.state == "COMPENSATED"
    assert "not done within its deadline of 5 s" in str(end.error)
    assert rows(store, table) == ["order", "cancel"]


def test_a_saga_still_running_at_its_deadline_compensates_what_succeeded(
    make_store: MakeStore,
) -> None:
    """A step retried every 10 s never gets there: the saga's 5 s deadline wakes it
    first and compensates. A per-start deadline overrides the definition's."""
    store = make_store()
    table, write = effects_of(store)
    clock = Clock()

    def flaky(ctx: StepContext) -> None:
        raise ConnectionError("down")

    definition = SagaDefinition(
        "late",
        [
            Step("order", write("order"), write("cancel")),
            Step("pay", flaky, retry=RetryPolicy(5, (10.0,))),
        ],
        deadline=5,
    )
    sagas = store.sagas(clock=clock)
    started = sagas.start(definition, {})
    assert started.wake_at == 1_005.0  # the retry at 1_010 is capped by the deadline
    clock.now = 1_005.0
    sagas.run_once()
    end = sagas.get(started.saga_id)
    assert end is not None
    assert end.state == "COMPENSATED"
    assert "saga_deadline_passed" in kinds(sagas, started.saga_id)
    assert rows(store, table) == ["order", "cancel"]
    longer = sagas.start(definition, {}, deadline=60)
    assert longer.wake_at == 1_015.0
    with pytest.raises(SagaError, match="deadline must be seconds above 0"):
        sagas.start(definition, {}, deadline=0)


def test_deadlines_that_come_after_their_step_or_saga_moved_on_do_nothing(
    make_store: MakeStore,
) -> None:
    """Step 1 is answered at 1 s of its 10 s deadline; at 15 s (past it) nothing moves,
    the saga waits on step 2. Once completed, the saga's deadline passing does nothing."""
    store = make_store(tidings.EventRegistry(REGISTRY))
    clock = Clock()
    pay = remote_saga(deadline=10).steps[0]
    definition = SagaDefinition("two", [pay, Step("ship", charge, deadline=60)], deadline=100)
    sagas = store.sagas(clock=clock)
    remote = Remote(store, sagas)
    saga = sagas.start(definition, {"order_id": "o-1"})
    clock.now += 1
    remote.reply(remote.last().succeeded(payment_tx="tx-1"))
    sagas.run_once()
    clock.now = 1_015.0
    assert sagas.run_once() == 0
    waiting = sagas.get(saga.saga_id)
    assert waiting is not None
    assert (waiting.state, waiting.executed_steps) == ("RUNNING", ["pay"])
    remote.reply(remote.last().succeeded())
    sagas.run_once()
    clock.now = 1_200.0
    assert sagas.run_once() == 0
    end = sagas.get(saga.saga_id)
    assert end is not None
    assert (end.state, end.executed_steps) == ("COMPLETED", ["pay", "ship"])
    assert "action_failed" not in kinds(sagas, saga.saga_id)


def test_a_deadline_read_before_the_reply_committed_is_refused_by_the_version_check(
    make_store: MakeStore,
) -> None:
    """Arranged: the orchestrator reads the saga waiting past its deadline; before it
    writes, the reply commits. Its "timed out" write expects the old version and is
    refused; it looks again and sees the step succeeded. No failure is recorded."""
    store = make_store(tidings.EventRegistry(REGISTRY))
    clock = Clock()
    definition = remote_saga(deadline=10)
    sagas = store.sagas(clock=clock)
    remote = Remote(store, sagas)
    saga = sagas.start(definition, {"order_id": "o-1"})
    clock.now = 1_010.0  # the deadline has come
    command = remote.last()
    # The first clock read of drive() comes after it loaded the saga, before it decides.
    clock.on_call = lambda: remote.reply(command.succeeded(payment_tx="tx-1"))
    end = sagas.drive(saga.saga_id)
    assert (end.state, end.executed_steps) == ("COMPLETED", ["pay"])
    assert end.data["payment_tx"] == "tx-1"
    assert "action_failed" not in kinds(sagas, saga.saga_id)


def test_a_remote_step_not_answered_by_its_deadline_is_retried_then_compensated_with_itself(
    make_store: MakeStore,
) -> None:
    """Two tries, both unanswered: the charge may have happened, so its refund is sent
    too (same idempotency key on every try); the refund's reply ends the saga."""
    store = make_store(tidings.EventRegistry(REGISTRY))
    clock = Clock()
    sagas = store.sagas(clock=clock)
    remote = Remote(store, sagas)
    saga = sagas.start(remote_saga(retries=1, deadline=10), {"order_id": "o-1"})
    assert saga.wake_at == 1_010.0
    clock.now = 1_010.0
    sagas.run_once()  # timed out: retry in 1 s
    clock.now = 1_011.0
    sagas.run_once()  # the second try sends again
    clock.now = 1_021.0
    sagas.run_once()  # timed out again: compensate, the charge included
    charges = [c for c in remote.sent if c.phase == "action"]
    assert [c.idempotency_key for c in charges] == [f"{saga.saga_id}:pay:action"] * 2
    refund = remote.last()
    assert (refund.phase, refund.idempotency_key) == (
        "compensation",
        f"{saga.saga_id}:pay:compensation",
    )
    remote.reply(refund.compensated())
    sagas.run_once()
    end = sagas.get(saga.saga_id)
    assert end is not None
    assert (end.state, end.executed_steps, end.compensated) == ("COMPENSATED", [], ["pay"])
    assert "no reply within its deadline of 10 s" in str(end.error)
