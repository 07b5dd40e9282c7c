"""The figures of ``tidings status`` and the database gauges: sagas by type and state,
failed compensations and their recorded costs, read from the saga tables."""

from __future__ import annotations

from tests.conftest import MakeStore
from tidings.cli.status import crossed, screen
from tidings.domain.saga import RetryPolicy, SagaDefinition, Step, StepContext, StepRefusedError
from tidings.observability.figures import ServiceFigures


def nothing(ctx: StepContext) -> None:
    """An action that succeeds and does nothing."""


def refuse(ctx: StepContext) -> None:
    raise StepRefusedError("no room")


def refund_with_fee(ctx: StepContext) -> None:
    ctx.record_discrepancy(3.0, "card fee kept")


def cannot_refund(ctx: StepContext) -> None:
    raise RuntimeError("the bank does not answer")


def test_sagas_by_state_compensation_failures_and_costs_come_from_the_tables(
    make_sql_store: MakeStore,
) -> None:
    """Two hotel sagas compensated with a 3.0 fee each, one whose refund failed twice and
    waits for intervention: the figures say so per saga type, and --check names it."""
    store = make_sql_store(outbox=True)
    kept = SagaDefinition(
        "hotel", [Step("charge", nothing, compensate=refund_with_fee), Step("room", refuse)]
    )
    stuck = SagaDefinition(
        "flight",
        [
            Step(
                "charge",
                nothing,
                compensate=cannot_refund,
                compensation_retry=RetryPolicy(1, (0.0,)),
            ),
            Step("seat", refuse),
        ],
    )
    sagas = store.sagas([kept, stuck])
    for _ in range(2):
        sagas.start(kept, {})
    sagas.start(stuck, {})
    while sagas.run_once():
        pass
    figures = ServiceFigures(store)
    try:
        found = figures.read()
    finally:
        figures.close()
    assert found.sagas == {"hotel": {"COMPENSATED": 2}, "flight": {"NEEDS_INTERVENTION": 1}}
    assert found.compensation_costs == {"hotel": 6.0}
    assert found.compensation_failures == {"flight": 2}
    assert found.needing_intervention == 1
    assert crossed(found, 60.0, 10.0) == [
        "1 saga(s) need intervention: tidings sagas list --state needs-intervention"
    ]
    assert any(
        line.startswith("saga        flight: needs_intervention 1") for line in screen(found)
    )
