"""What a step returns reaches the later steps as the saga log stores it (JSON), whether
the orchestrator goes on from the row it just wrote or reads it back after a restart."""

from __future__ import annotations

from typing import Any

from tests.conftest import MakeStore
from tidings.domain.saga import RetryPolicy, SagaDefinition, Step, StepContext


def test_a_later_step_sees_returned_data_as_stored_in_one_run_and_after_a_retry_timer(
    make_store: MakeStore,
) -> None:
    """A tuple comes back as a list, in the same drive and after a wait on a timer (when
    the row is read back from the log): the step sees the same data either way."""
    seen: list[Any] = []
    now = [1_000.0]
    flaky = [True]

    def first(ctx: StepContext) -> dict[str, Any]:
        return {"pair": (1, 2), "when": {"at": 3}}

    def look(ctx: StepContext) -> None:
        seen.append((ctx.data["pair"], ctx.data["when"]))

    def look_later(ctx: StepContext) -> None:
        if flaky[0]:
            flaky[0] = False
            raise TimeoutError("not yet")
        look(ctx)

    definition = SagaDefinition(
        "data-as-stored",
        [
            Step("first", first),
            Step("look", look),
            Step("look-later", look_later, retry=RetryPolicy(retries=1, delays=(5.0,))),
        ],
    )
    sagas = make_store().sagas([definition], clock=lambda: now[0])
    waiting = sagas.start(definition, {})
    assert waiting.state == "RUNNING"
    now[0] += 5.0
    sagas.run_once()
    assert seen == [([1, 2], {"at": 3}), ([1, 2], {"at": 3})]
