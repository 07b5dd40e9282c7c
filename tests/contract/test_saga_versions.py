"""Versions of running sagas, on every backend: old instances finish on the steps they
started with or are moved forward by an upcaster (a transition on their history); a
version no code here knows is refused, left untouched, and holds up no other saga."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from tests.conftest import MakeStore
from tidings.domain.saga import RetryPolicy, SagaDefinition, Step, StepContext, StepRefusedError
from tidings.domain.saga_versions import SagaPosition, SagaUpcaster
from tidings.errors import ConfigurationError, SagaVersionError

DONE: list[str] = []


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def _fresh_effects() -> None:
    DONE.clear()


def did(what: str) -> Any:
    """An action that notes ``what`` once its unit of work commits."""

    def act(ctx: StepContext) -> None:
        ctx.uow.transaction.on_commit(lambda: DONE.append(what))

    return act


def not_yet(what: str) -> Any:
    """Fails once per saga (so the saga waits on a retry timer), then does ``what``."""
    failed: set[str] = set()

    def act(ctx: StepContext) -> None:
        saga = ctx.idempotency_key.split(":")[0]
        if saga not in failed:
            failed.add(saga)
            raise TimeoutError("payment provider slow")
        did(what)(ctx)

    return act


def refuse(ctx: StepContext) -> None:
    raise StepRefusedError("out of stock")


V1 = SagaDefinition(
    "order",
    [
        Step("order", did("order v1"), did("cancel v1")),
        Step("charge", not_yet("charge v1"), did("refund v1"), retry=RetryPolicy(1)),
        Step("notify", did("notify v1")),
    ],
    version=1,
)


def v2(last: Any = None) -> SagaDefinition:
    """Version 2: a fraud check before the charge, the charge renamed."""
    return SagaDefinition(
        "order",
        [
            Step("order", did("order v2"), did("cancel v2")),
            Step("fraud-check", did("fraud-check v2")),
            Step("charge-card", did("charge v2"), did("refund v2")),
            Step("notify", last or did("notify v2")),
        ],
        version=2,
    )


def to_v2(old: SagaPosition) -> SagaPosition:
    """Charge is now charge-card; sagas past the order skip the new fraud check."""
    rename = {"charge": "charge-card"}
    return replace(
        old,
        executed=[rename.get(s, s) for s in old.executed],
        compensated=[rename.get(s, s) for s in old.compensated],
        step=old.step + 1 if old.step >= 1 else old.step,
        data={**old.data, "currency": "EUR"},
    )


def waiting_v1(store: Any, clock: Clock, n: int = 1) -> list[str]:
    """Sagas started on version 1, each waiting on the charge's retry timer."""
    sagas = store.sagas([V1], clock=clock)
    ids = [sagas.start(V1, {"n": i}).saga_id for i in range(n)]
    assert {sagas.get(i).state for i in ids} == {"RUNNING"}
    clock.now += 10  # every timer is due
    return ids


def test_old_instances_finish_on_the_steps_they_started_with(make_store: MakeStore) -> None:
    """Version 2 deployed beside version 1: the waiting saga ends on v1's steps; a new
    saga runs v2's."""
    store, clock = make_store(), Clock()
    (old,) = waiting_v1(store, clock)
    sagas = store.sagas([V1, v2()], clock=clock)
    sagas.run_once()
    new = sagas.start(v2(), {})
    end = sagas.get(old)
    assert end is not None
    assert (end.state, end.definition_version) == ("COMPLETED", 1)
    assert end.executed_steps == ["order", "charge", "notify"]
    assert new.executed_steps == ["order", "fraud-check", "charge-card", "notify"]
    assert [
        "order v1",
        "charge v1",
        "notify v1",
        *[f"{s} v2" for s in ("order", "fraud-check", "charge", "notify")],
    ] == DONE


def test_an_upcaster_moves_a_waiting_saga_to_the_new_steps_and_says_so_on_its_history(
    make_store: MakeStore,
) -> None:
    """The saga waiting at v1's charge goes on at v2's charge-card (the fraud check is
    skipped), with the upcaster's data; the move is a transition of its own."""
    store, clock = make_store(), Clock()
    (saga_id,) = waiting_v1(store, clock)
    sagas = store.sagas([v2(), SagaUpcaster("order", 1, 2, to_v2)], clock=clock)
    sagas.run_once()
    end = sagas.get(saga_id)
    assert end is not None
    assert (end.state, end.definition_version) == ("COMPLETED", 2)
    assert end.executed_steps == ["order", "charge-card", "notify"]
    assert end.data["currency"] == "EUR"
    assert DONE == ["order v1", "charge v2", "notify v2"]
    upcasts = [t for t in sagas.history(saga_id) if t.kind == "saga_upcast"]
    assert [t.detail for t in upcasts] == ["version 1 -> 2, at step 2"]


def test_an_upcast_saga_is_compensated_with_the_new_versions_compensations(
    make_store: MakeStore,
) -> None:
    """Refused at v2's last step: the renamed step is undone by v2's refund, then v1's
    order by v2's cancel, last first."""
    store, clock = make_store(), Clock()
    (saga_id,) = waiting_v1(store, clock)
    sagas = store.sagas([v2(refuse), SagaUpcaster("order", 1, 2, to_v2)], clock=clock)
    sagas.run_once()
    end = sagas.get(saga_id)
    assert end is not None
    assert (end.state, end.compensated) == ("COMPENSATED", ["charge-card", "order"])
    assert DONE == ["order v1", "charge v2", "refund v2", "cancel v2"]


def test_upcasters_chain_from_the_sagas_version_to_the_newest(make_store: MakeStore) -> None:
    """1 -> 2 -> 3 in one move; a None from an upcaster would leave the saga where it is."""
    store, clock = make_store(), Clock()
    (saga_id,) = waiting_v1(store, clock)
    v3 = SagaDefinition("order", [*v2().steps, Step("survey", did("survey v3"))], version=3)
    sagas = store.sagas(
        [v3, SagaUpcaster("order", 1, 2, to_v2), SagaUpcaster("order", 2, 3, lambda p: p)],
        clock=clock,
    )
    sagas.run_once()
    end = sagas.get(saga_id)
    assert end is not None
    assert (end.state, end.definition_version) == ("COMPLETED", 3)
    assert [t.detail for t in sagas.history(saga_id) if t.kind == "saga_upcast"] == [
        "version 1 -> 2 -> 3, at step 2"
    ]


def test_an_upcaster_returning_none_leaves_the_saga_on_its_old_definition(
    make_store: MakeStore,
) -> None:
    """Sagas the upcaster chooses not to move finish on version 1."""
    store, clock = make_store(), Clock()
    (saga_id,) = waiting_v1(store, clock)
    sagas = store.sagas([V1, v2(), SagaUpcaster("order", 1, 2, lambda p: None)], clock=clock)
    sagas.run_once()
    end = sagas.get(saga_id)
    assert end is not None
    assert (end.state, end.definition_version) == ("COMPLETED", 1)
    assert "saga_upcast" not in [t.kind for t in sagas.history(saga_id)]


def stored(store: Any, saga_id: str) -> tuple[Any, int]:
    """The saga's result and the length of its history, to see it untouched."""
    sagas = store.sagas()
    return sagas.get(saga_id), len(sagas.history(saga_id))


def test_a_saga_of_a_version_no_code_knows_is_refused_untouched_and_holds_up_no_other(
    make_store: MakeStore, caplog: pytest.LogCaptureFixture
) -> None:
    """The v2 saga is due first, the batch holds one saga: run_once leaves it as it was
    (logged, in ``refused``), still drives the v1 saga behind it, and driving it by id
    raises the clear error."""
    store, clock = make_store(), Clock()
    v2_waiting = replace(v2(), steps=[Step("order", not_yet("x"), retry=RetryPolicy(1))])
    unknown = store.sagas(clock=clock).start(v2_waiting, {}).saga_id
    clock.now += 0.5  # the v1 saga's timer fires after the v2 one's
    (known,) = waiting_v1(store, clock)
    before = stored(store, unknown)
    sagas = store.sagas([V1], clock=clock)
    sagas.run_once(limit=1)
    sagas.run_once(limit=1)
    assert stored(store, unknown) == before
    assert sagas.get(known).state == "COMPLETED"  # type: ignore[union-attr]
    assert list(sagas.refused) == [unknown]
    assert "version 2, and this orchestrator knows versions [1]" in sagas.refused[unknown]
    assert "run that code to drive it" in sagas.refused[unknown]
    assert caplog.text.count(f"saga {unknown} refused") == 1
    with pytest.raises(SagaVersionError, match="left as it was"):
        sagas.drive(unknown)


def test_an_upcaster_that_forgets_a_renamed_step_is_refused_and_the_saga_kept(
    make_store: MakeStore,
) -> None:
    """A v1 saga past its charge, waiting at notify: v2 has no step "charge", and the
    upcaster does not rename it, so the saga is not moved (compensating it would need
    the step)."""
    store, clock = make_store(), Clock()
    past_charge = replace(
        V1,
        steps=[
            *V1.steps[:1],
            Step("charge", did("charge v1"), did("refund v1")),
            Step("notify", not_yet("notify v1"), retry=RetryPolicy(1)),
        ],
    )
    saga_id = store.sagas(clock=clock).start(past_charge, {}).saga_id
    clock.now += 10
    before = stored(store, saga_id)
    forgetful = SagaUpcaster("order", 1, 2, lambda p: replace(p, step=p.step + 1))
    sagas = store.sagas([v2(), forgetful], clock=clock)
    with pytest.raises(SagaVersionError, match="does an upcaster forget to map a step"):
        sagas.drive(saga_id)
    assert stored(store, saga_id) == before


@pytest.mark.parametrize(
    ("upcast", "says"),
    [
        (lambda p: 1 / 0, "from version 1 to 2 failed on saga .*ZeroDivisionError"),
        (lambda p: {"step": 2}, "returned dict .*return a SagaPosition"),
    ],
)
def test_a_failing_upcaster_leaves_the_saga_as_it_was(
    make_store: MakeStore, upcast: Any, says: str
) -> None:
    """An upcaster that raises or returns something else is named in the error."""
    store, clock = make_store(), Clock()
    (saga_id,) = waiting_v1(store, clock)
    before = stored(store, saga_id)
    with pytest.raises(SagaVersionError, match=says):
        store.sagas([v2(), SagaUpcaster("order", 1, 2, upcast)], clock=clock).drive(saga_id)
    assert stored(store, saga_id) == before


def test_bad_upcasters_are_refused_when_declared() -> None:
    """Backwards, unnamed, or two from one version: each says what is wrong."""
    from tidings.application.sagas.versions import SagaVersions

    with pytest.raises(ValueError, match="moves to a higher one"):
        SagaUpcaster("order", 2, 1, lambda p: p)
    with pytest.raises(ValueError, match="needs the name"):
        SagaUpcaster("", 1, 2, lambda p: p)
    with pytest.raises(ConfigurationError, match="already has an upcaster from version 1"):
        SagaVersions([SagaUpcaster("order", 1, 2, to_v2), SagaUpcaster("order", 1, 3, to_v2)])
    with pytest.raises(ConfigurationError, match="neither a SagaDefinition nor a SagaUpcaster"):
        SagaVersions(["order"])  # type: ignore[list-item]


def test_an_old_version_deployed_nowhere_asks_for_its_definition_or_an_upcaster(
    make_store: MakeStore,
) -> None:
    """Version 1 waiting, only version 2 deployed and no upcaster: refused, untouched."""
    store, clock = make_store(), Clock()
    (saga_id,) = waiting_v1(store, clock)
    before = stored(store, saga_id)
    with pytest.raises(
        SagaVersionError, match=r"knows versions \[2\]: deploy that definition, or an upcaster"
    ):
        store.sagas([v2()], clock=clock).drive(saga_id)
    assert stored(store, saga_id) == before


def test_an_operator_action_on_a_saga_no_code_here_drives_is_refused_before_it_is_recorded(
    make_store: MakeStore,
) -> None:
    """retry and compensate run steps: on a version nothing here knows they raise, and the
    saga keeps its state and history; resolve runs nothing and is allowed."""
    store, clock = make_store(), Clock()
    stuck_v1 = replace(
        V1,
        steps=[
            Step("order", did("order"), lambda ctx: 1 / 0, compensation_retry=RetryPolicy(0)),
            Step("charge", refuse),
        ],
    )
    saga_id = store.sagas(clock=clock).start(stuck_v1, {}).saga_id
    before = stored(store, saga_id)
    assert before[0].state == "NEEDS_INTERVENTION"
    sagas = store.sagas([v2()], clock=clock)
    for action in ("retry", "compensate"):
        with pytest.raises(SagaVersionError, match="knows versions \\[2\\]"):
            sagas.operate(saga_id, action, "ann", "try again")
        assert stored(store, saga_id) == before
    assert sagas.operate(saga_id, "resolve", "ann", "refunded by hand").state == "RESOLVED"
