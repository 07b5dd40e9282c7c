"""Remote saga steps on every backend: the command a step sends and the reply that moves
it, handed in through a real inbox processor; and every bad reply (unknown saga, too
late, duplicate, not awaited, malformed) is a dead letter or a recorded no-op with its
reason, never a crash or a wrong transition."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

import tidings
from tests.conftest import MakeStore
from tests.contract.saga_remote_kit import (
    REGISTRY,
    ChargePayment,
    Clock,
    Remote,
    charge,
    raw_reply,
    remote_saga,
)
from tidings.application.causation import Cause, handling
from tidings.domain.saga import SagaDefinition, Step, StepContext
from tidings.domain.saga_messages import SagaReply
from tidings.domain.saga_state import SagaResult


def setup(make_store: MakeStore, **options: Any) -> tuple[tidings.Store, Any, Remote, Clock]:
    store = make_store(tidings.EventRegistry(REGISTRY))
    clock = Clock()
    sagas = store.sagas(clock=clock)
    return store, sagas, Remote(store, sagas), clock


def ignored(sagas: Any, saga_id: str) -> list[str]:
    """The reasons of the replies the saga recorded as moving nothing."""
    return [t.detail for t in sagas.history(saga_id) if t.kind == "reply_ignored"]


def now(sagas: Any, saga_id: str) -> SagaResult:
    found = sagas.get(saga_id)
    assert found is not None
    return found  # type: ignore[no-any-return]


def order_step(table: str) -> Step:
    def write(what: str) -> Any:
        def act(ctx: StepContext) -> None:
            ctx.uow.execute(f"INSERT INTO {table} VALUES (:w)", {"w": what})

        return act

    return Step("order", write("order"), write("cancel"))


def test_a_success_reply_completes_the_remote_step_with_its_data(make_store: MakeStore) -> None:
    """The command carries the saga id, step, phase and idempotency key, in the
    conversation the saga started in; the saga waits (a row) until the reply, whose data
    later steps see."""
    _, sagas, remote, _ = setup(make_store)
    seen: list[dict[str, Any]] = []
    after = Step("confirm", lambda ctx: seen.append(dict(ctx.data)))
    with handling(Cause("checkout-1", "checkout-1")):  # started by a handler of checkout-1
        saga = sagas.start(remote_saga(after=(after,)), {"order_id": "o-1"})
    assert remote.conversations == ["checkout-1"]
    assert (saga.state, saga.wake_at) == ("RUNNING", 1_010.0)
    command = remote.last()
    assert isinstance(command, ChargePayment)
    assert (command.saga_id, command.step, command.phase, command.order_id) == (
        saga.saga_id,
        "pay",
        "action",
        "o-1",
    )
    assert command.idempotency_key == f"{saga.saga_id}:pay:action"
    verdict = remote.reply(command.succeeded(payment_tx="tx-9"))
    assert verdict.applied == ("tidings.saga-replies",)
    sagas.run_once()
    end = now(sagas, saga.saga_id)
    assert (end.state, end.executed_steps) == ("COMPLETED", ["pay", "confirm"])
    assert seen == [{"order_id": "o-1", "payment_tx": "tx-9"}]


def test_a_refusal_compensates_at_once_and_a_failure_is_retried_first(
    make_store: MakeStore,
) -> None:
    """Refused: the order is cancelled, the refused charge is not refunded. Failed: the
    charge is sent again (same key), and refused the second time."""
    store, sagas, remote, clock = setup(make_store)
    table = f"orders_{uuid.uuid4().hex[:8]}"
    with store.unit_of_work() as uow:
        uow.execute(f"CREATE TABLE {table} (what TEXT)")
    definition = remote_saga(order_step(table), retries=1)
    refused = sagas.start(definition, {"order_id": "o-1"})
    remote.reply(remote.last().refused("card declined"))
    sagas.run_once()
    end = now(sagas, refused.saga_id)
    assert (end.state, end.compensated) == ("COMPENSATED", ["order"])
    assert end.error == "StepRefusedError: card declined"

    failing = sagas.start(definition, {"order_id": "o-2"})
    remote.reply(remote.last().failed("gateway busy"))
    retrying = now(sagas, failing.saga_id)
    assert (retrying.state, retrying.wake_at) == ("RUNNING", 1_001.0)
    clock.now = 1_001.0
    sagas.run_once()
    again = remote.last()
    assert (again.saga_id, again.idempotency_key) == (
        failing.saga_id,
        f"{failing.saga_id}:pay:action",
    )
    remote.reply(again.refused("card declined"))
    sagas.run_once()
    assert now(sagas, failing.saga_id).compensated == ["order"]
    with store.unit_of_work() as uow:
        written = [r[0] for r in uow.execute(f"SELECT what FROM {table}").fetchall()]
    assert written == ["order", "cancel", "order", "cancel"]


def test_a_remote_compensation_reports_what_it_could_not_undo(make_store: MakeStore) -> None:
    """The refund's reply carries the fee (charged 103, refunded 98): it is on the
    saga's history and in the total per saga type."""
    _, sagas, remote, _ = setup(make_store)
    refuse = Step("reserve", lambda ctx: (_ for _ in ()).throw(ValueError("no stock")))
    saga = sagas.start(remote_saga(after=(refuse,)), {"order_id": "o-1"})
    remote.reply(remote.last().succeeded(payment_tx="tx-1"))
    sagas.run_once()
    refund = remote.last()
    assert refund.phase == "compensation"
    remote.reply(refund.compensated(5.0, "refund fee"))
    sagas.run_once()
    assert now(sagas, saga.saga_id).state == "COMPENSATED"
    assert sagas.discrepancy_total("remote-order") == 5.0


def test_a_reply_for_no_saga_is_a_dead_letter_naming_the_saga(make_store: MakeStore) -> None:
    """Nothing is created or moved; the reason says which saga id was not found."""
    store, sagas, remote, _ = setup(make_store)
    reply = SagaReply(saga_id="nope", step="pay", phase="action", outcome="succeeded")
    verdict = remote.reply(reply)
    assert verdict.ack
    [reason] = verdict.buried
    assert "names saga 'nope', and no saga has that id" in reason
    assert sagas.listing() == []
    assert [d.reason for d in store.inbox.dead_letters()] == [reason]  # type: ignore[union-attr]


def test_a_reply_after_its_deadline_was_acted_on_is_a_recorded_no_op(
    make_store: MakeStore,
) -> None:
    """The charge timed out and was compensated; its late success moves nothing and is
    on the saga's history with the reason."""
    _, sagas, remote, clock = setup(make_store)
    saga = sagas.start(remote_saga(), {"order_id": "o-1"})
    charge_command = remote.last()
    clock.now = 1_010.0
    sagas.run_once()
    remote.reply(remote.last().compensated())
    sagas.run_once()
    before = now(sagas, saga.saga_id)
    assert before.state == "COMPENSATED"
    verdict = remote.reply(charge_command.succeeded(payment_tx="late"))
    assert verdict.ack
    assert verdict.buried == ()
    after = now(sagas, saga.saga_id)
    assert (after.state, after.executed_steps, after.data) == (
        "COMPENSATED",
        [],
        before.data,
    )
    [reason] = ignored(sagas, saga.saga_id)
    assert "too late: the action of pay had failed" in reason


def test_a_duplicate_reply_and_a_reply_not_awaited_move_nothing(make_store: MakeStore) -> None:
    """A second success under a new message id (the remote side answered twice), the same
    message delivered again (the inbox skips it), and a compensation reply while the saga
    runs: each leaves the saga as it was, with the reason on its history."""
    _, sagas, remote, _ = setup(make_store)
    wait = Step("ship", charge, deadline=60)
    saga = sagas.start(remote_saga(after=(wait,)), {"order_id": "o-1"})
    first = remote.last().succeeded(payment_tx="tx-1")
    stamped = first.stamped(
        event_id=str(uuid.uuid4()), aggregate_id=saga.saga_id, aggregate_version=1
    )
    record = remote.store.codec.encode(stamped)
    assert remote.deliver_record(record).applied == ("tidings.saga-replies",)
    sagas.run_once()
    assert remote.deliver_record(record).duplicates == ("tidings.saga-replies",)
    remote.reply(
        SagaReply(
            saga_id=saga.saga_id,
            step="pay",
            phase="action",
            outcome="succeeded",
            data={"payment_tx": "tx-2"},
        )
    )
    remote.reply(
        SagaReply(saga_id=saga.saga_id, step="pay", phase="compensation", outcome="succeeded")
    )
    end = now(sagas, saga.saga_id)
    assert (end.state, end.executed_steps) == ("RUNNING", ["pay"])
    assert end.data["payment_tx"] == "tx-1"
    duplicate, not_awaited = ignored(sagas, saga.saga_id)
    assert "a duplicate: the action of pay was answered already" in duplicate
    assert "not waiting on the compensation of pay (it waits on ship:action)" in not_awaited


def test_malformed_replies_are_dead_letters_with_reasons(make_store: MakeStore) -> None:
    """An outcome that is not one of the three, a missing saga id, a step the saga does
    not have: each is dead-lettered with what was wrong; the saga waits on."""
    _, sagas, remote, _ = setup(make_store)
    saga = sagas.start(remote_saga(), {"order_id": "o-1"})
    bad_outcome = (
        b'{"saga_id":"%s","step":"pay","phase":"action","outcome":"maybe"}' % saga.saga_id.encode()
    )
    no_saga = b'{"step":"pay","phase":"action","outcome":"succeeded"}'
    reasons = [remote.deliver_record(raw_reply(body)).buried for body in (bad_outcome, no_saga)]
    assert all(len(r) == 1 for r in reasons)
    assert "outcome" in reasons[0][0]
    assert "saga_id" in reasons[1][0]
    wrong_step = SagaReply(saga_id=saga.saga_id, step="fly", phase="action", outcome="succeeded")
    [reason] = remote.reply(wrong_step).buried
    assert "names step 'fly', which saga type 'remote-order' version 1 does not have" in reason
    assert now(sagas, saga.saga_id).state == "RUNNING"
    assert ignored(sagas, saga.saga_id) == []


def test_a_step_that_sends_without_a_deadline_or_a_non_saga_command_fails_with_the_reason(
    make_store: MakeStore,
) -> None:
    """Waiting for ever would break "every saga ends": the step fails, and says why."""
    _, sagas, remote, _ = setup(make_store)
    no_deadline = SagaDefinition("forever", [Step("pay", charge)])
    end = sagas.start(no_deadline, {"order_id": "o-1"})
    assert end.state == "COMPENSATED"
    assert "sends a command and waits for its reply, but has no deadline" in str(end.error)
    plain = SagaDefinition(
        "plain",
        [Step("pay", lambda ctx: ctx.send(object()), deadline=5)],  # type: ignore[arg-type]
    )
    assert "ctx.send takes a SagaCommand, not object" in str(sagas.start(plain, {}).error)
    assert remote.sent == []


def test_an_operator_forcing_compensation_while_a_command_is_out_compensates_it_too(
    make_store: MakeStore,
) -> None:
    """The charge may have happened: its refund is sent with the order's cancellation,
    and the charge's late success is then a recorded no-op."""
    store, sagas, remote, _ = setup(make_store)
    table = f"orders_{uuid.uuid4().hex[:8]}"
    with store.unit_of_work() as uow:
        uow.execute(f"CREATE TABLE {table} (what TEXT)")
    saga = sagas.start(remote_saga(order_step(table)), {"order_id": "o-1"})
    charge_command = remote.last()
    forced = sagas.operate(saga.saga_id, "compensate", "ann", "customer called")
    assert forced.state == "COMPENSATING"
    refund = remote.last()
    assert (refund.step, refund.phase) == ("pay", "compensation")
    remote.reply(charge_command.succeeded())
    remote.reply(refund.compensated())
    sagas.run_once()
    end = now(sagas, saga.saga_id)
    assert (end.state, end.compensated) == ("COMPENSATED", ["pay", "order"])
    [reason] = ignored(sagas, saga.saga_id)
    assert "not waiting on the action of pay (it waits on pay:compensation)" in reason


def test_a_remote_compensation_failing_past_its_retries_needs_intervention_with_an_alert(
    make_store: MakeStore,
) -> None:
    """Two failed refund replies (one retry): NEEDS_INTERVENTION, the alert hook called
    once the reply's transaction committed; a later reply to the finished saga moves
    nothing."""
    store = make_store(tidings.EventRegistry(REGISTRY))
    clock = Clock()
    alerts: list[SagaResult] = []
    sagas = store.sagas(clock=clock, on_intervention=alerts.append)
    remote = Remote(store, sagas)
    refuse = Step("reserve", lambda ctx: (_ for _ in ()).throw(ValueError("no stock")))
    saga = sagas.start(remote_saga(after=(refuse,)), {"order_id": "o-1"})
    remote.reply(remote.last().succeeded())
    sagas.run_once()
    remote.reply(remote.last().failed("bank closed"))
    clock.now = now(sagas, saga.saga_id).wake_at
    sagas.run_once()
    refund = remote.last()
    remote.reply(refund.failed("bank still closed"))
    end = now(sagas, saga.saga_id)
    assert end.state == "NEEDS_INTERVENTION"
    assert [a.saga_id for a in alerts] == [saga.saga_id]
    assert end.error == "RuntimeError: bank still closed"
    sagas.operate(saga.saga_id, "resolve", "ann", "refunded by hand")
    remote.reply(
        SagaReply(saga_id=saga.saga_id, step="reserve", phase="compensation", outcome="succeeded")
    )
    [reason] = ignored(sagas, saga.saga_id)
    assert "the saga is RESOLVED, waiting for no reply" in reason


@pytest.mark.postgres
def test_a_reply_whose_saga_moves_while_it_is_handled_decides_again_on_postgresql(
    pg_url: str, schema: str
) -> None:
    """Arranged: after the reply handler read the saga, another transaction moves it
    (bumps its version) and commits. The handler's write is refused; it reads the saga
    again in the same transaction and applies the reply to it, once. (On SQLite the
    consumer's transaction holds the write lock, so nothing can move the saga meanwhile.)"""
    store = tidings.connect(pg_url, schema=schema, registry=tidings.EventRegistry(REGISTRY))
    try:
        clock = Clock()
        sagas = store.sagas(clock=clock)
        remote = Remote(store, sagas)
        saga = sagas.start(remote_saga(), {"order_id": "o-1"})
        table = store.database.tables["sagas"]  # type: ignore[attr-defined]

        def move_it() -> None:
            with psycopg.connect(pg_url, autocommit=True) as other:
                other.execute(
                    f"UPDATE {table} SET version = version + 1 WHERE saga_id = %s",
                    (saga.saga_id,),
                )

        clock.on_call = move_it  # the handler reads the clock between its read and write
        verdict = remote.reply(remote.last().succeeded(payment_tx="tx-1"))
        assert (verdict.ack, verdict.applied) == (True, ("tidings.saga-replies",))
        sagas.run_once()
        end = now(sagas, saga.saga_id)
        assert (end.state, end.data["payment_tx"]) == ("COMPLETED", "tx-1")
        assert [t.kind for t in sagas.history(saga.saga_id)].count("step_succeeded") == 1
    finally:
        store.close()
