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
from tidings.testing.contract import Counted, Counter, Named

RENAME = -1


@pytest.fixture
def store(make_store: MakeStore) -> tidings.Store:
    return make_store(tidings.EventRegistry([Counted, Named]))


@pytest.mark.parametrize("partitions", [None, 2], ids=["runner", "partitioned"])
@pytest.mark.parametrize(
    "steps",
    [(1, 2, 13, 3, 4), (1, 2, 13), (1, 2, 13, 3, RENAME)],
    ids=["inside", "last", "sent-by-a-later-event"],
)
def test_a_statement_the_database_refuses_pauses_on_its_own_event(
    store: tidings.Store, steps: tuple[int, ...], partitions: int | None
) -> None:
    """Step 13 breaks a CHECK constraint: the database, not the handler, refuses it. The
    events before it are applied, the projection pauses on it, and nothing after it is
    applied, though the error surfaced later than the statement was sent (with the next
    event's statement, or when the batch synced when it is the batch's last). The
    inserts of one text are merged into one executemany, so the error names the run, not
    the event: the batch is applied again one statement at a time to find it, by a
    runner and by a partitioned worker (all events in one part) alike; also when the
    run goes out because a later event's handler writes another statement."""
    table = f"strict_{uuid.uuid4().hex[:8]}"

    def counted(uow: Any, e: Counted) -> None:
        uow.execute(f"INSERT INTO {table} (step) VALUES (:s)", {"s": e.step})

    def named(uow: Any, e: Named) -> None:
        uow.execute(f"UPDATE {table} SET step = step + 0 WHERE step < 0")

    strict = Projection(
        "strict",
        {Counted: counted, Named: named},
        schema=[f"CREATE TABLE IF NOT EXISTS {table} (step INTEGER CHECK (step <> 13))"],
    )
    counter = Counter(f"c-{uuid.uuid4().hex[:8]}")
    for step in steps:
        counter.rename("r") if step == RENAME else counter.increment(step)
    with store.unit_of_work() as uow:
        uow.track(counter)
    runner = store.projections([strict], batch=100, partitions=partitions)
    runner.run_once()
    [status] = [s for s in runner.status() if s.state == "paused"]
    assert (status.state, status.position, status.failed_position) == ("paused", 2, 3)
    assert "check" in status.error.lower()
    with store.unit_of_work() as uow:
        steps = sorted(r[0] for r in uow.execute(f"SELECT step FROM {table}").fetchall())
    assert steps == [1, 2]
