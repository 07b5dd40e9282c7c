"""SagaRow.next: the row after one more transition."""

from __future__ import annotations

import pytest

from tidings.domain.saga_state import COMPLETED, RUNNING, SagaRow


def row(**fields: object) -> SagaRow:
    base: dict[str, object] = {
        "saga_id": "s",
        "saga_type": "t",
        "definition_version": 1,
        "state": RUNNING,
        "data": {"n": 1},
    }
    return SagaRow(**{**base, **fields})  # type: ignore[arg-type]


def test_next_bumps_the_version_and_keeps_the_fields_not_changed() -> None:
    before = row(executed=["a"], wake_at=5.0)
    after = before.next(step=1, attempt=2)
    assert after == row(executed=["a"], wake_at=5.0, step=1, attempt=2, version=2)
    assert before == row(executed=["a"], wake_at=5.0)  # the old row is left as it was


def test_a_running_saga_wakes_by_its_deadline_and_a_finished_one_keeps_its_time() -> None:
    assert row(deadline_at=10.0).next(wake_at=30.0).wake_at == 10.0
    assert row(deadline_at=10.0).next(wake_at=8.0).wake_at == 8.0
    assert row(deadline_at=10.0).next(state=COMPLETED, wake_at=30.0).wake_at == 30.0


def test_next_refuses_a_field_the_row_does_not_have() -> None:
    with pytest.raises(TypeError, match="SagaRow has no field stepp"):
        row().next(stepp=1)
