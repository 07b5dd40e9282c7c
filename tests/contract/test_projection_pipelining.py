"""A batch's statements are pipelined on PostgreSQL (sent without a round trip each), so a
statement the database refuses may be reported later than where it was sent: the runner
then applies the batch again one statement at a time, and pauses on the right event."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

import tidings
from tests.conftest import MakeStore
from tidings.application.projections import Projection
from tidings.testing.contract import Counted, Counter


@pytest.fixture
def store(make_store: MakeStore) -> tidings.Store:
    return make_store(tidings.EventRegistry([Counted]))


@pytest.mark.parametrize("steps", [(1, 2, 13, 3, 4), (1, 2, 13)], ids=["inside", "last"])
def test_a_statement_the_database_refuses_pauses_on_its_own_event(
    store: tidings.Store, steps: tuple[int, ...]
) -> None:
    """Step 13 breaks a CHECK constraint: the database, not the handler, refuses it. The
    events before it are applied, the projection pauses on it, and nothing after it is
    applied, though the error surfaced later than the statement was sent (with the next
    event's statement, or when the batch synced when it is the batch's last)."""
    table = f"strict_{uuid.uuid4().hex[:8]}"

    def counted(uow: Any, e: Counted) -> None:
        uow.execute(f"INSERT INTO {table} (step) VALUES (:s)", {"s": e.step})

    strict = Projection(
        "strict",
        {Counted: counted},
        schema=[f"CREATE TABLE IF NOT EXISTS {table} (step INTEGER CHECK (step <> 13))"],
    )
    counter = Counter(f"c-{uuid.uuid4().hex[:8]}")
    for step in steps:
        counter.increment(step)
    with store.unit_of_work() as uow:
        uow.track(counter)
    runner = store.projections([strict], batch=100)
    assert runner.run_once() == 2
    [status] = runner.status()
    assert (status.state, status.position, status.failed_position) == ("paused", 2, 3)
    assert "check" in status.error.lower()
    with store.unit_of_work() as uow:
        steps = sorted(r[0] for r in uow.execute(f"SELECT step FROM {table}").fetchall())
    assert steps == [1, 2]
