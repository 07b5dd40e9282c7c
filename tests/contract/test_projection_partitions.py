"""Partitioned projections on every backend: workers share a projection's parts through
the leases, each part has its checkpoint, an aggregate's events keep their order, a
stopped or dead worker's parts are taken over, a worker that lost its parts writes
nothing, and the read model equals a single runner's."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

import tidings
from tests.conftest import MakeStore
from tidings.application.projections import Projection
from tidings.application.projections.partitioned import (
    PartitionedRunner,
    part_name,
    partition_of,
)
from tidings.errors import ProjectionError
from tidings.testing.contract import Counted, Counter

PARTS = 4
TTL = 30.0


def steps_projection(name: str, table: str) -> Projection:
    """Per counter: its steps in the order applied (so a reordering shows), and a count."""

    def counted(uow: Any, e: Counted) -> None:
        uow.execute(
            f"INSERT INTO {table} (id, steps, events) VALUES (:id, :s, 1)"
            f" ON CONFLICT (id) DO UPDATE SET steps = {table}.steps || ',' || excluded.steps,"
            f" events = {table}.events + 1",
            {"id": e.aggregate_id, "s": str(e.step)},
        )

    return Projection(
        name,
        {Counted: counted},
        schema=[
            f"CREATE TABLE IF NOT EXISTS {table} (id TEXT PRIMARY KEY, steps TEXT, events INTEGER)"
        ],
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(make_store: MakeStore) -> tidings.Store:
    return make_store(tidings.EventRegistry([Counted]))


@pytest.fixture
def tables() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    return f"parted_{tag}", f"single_{tag}"


def write(store: tidings.Store, counters: int, steps: int) -> None:
    """``counters`` aggregates, each with ``steps`` events, interleaved over commits."""
    made = [Counter(f"c-{uuid.uuid4().hex[:8]}-{i}") for i in range(counters)]
    for step in range(steps):
        for counter in made:
            counter.increment(step)
        with store.unit_of_work() as uow:
            uow.track(*made)


def rows(store: tidings.Store, table: str) -> list[tuple[Any, ...]]:
    with store.unit_of_work() as uow:
        found = uow.execute(f"SELECT id, steps, events FROM {table} ORDER BY id").fetchall()
    return [tuple(r) for r in found]


def worker(store: tidings.Store, table: str, owner: str, clock: Clock) -> PartitionedRunner:
    runner = store.projections(
        [steps_projection("parted", table)],
        partitions=PARTS,
        ttl=TTL,
        runner_id=owner,
        clock=clock,
        batch=7,
    )
    assert isinstance(runner, PartitionedRunner)
    return runner


def single(store: tidings.Store, table: str) -> list[tuple[Any, ...]]:
    runner = store.projections([steps_projection("single", table)], batch=7)
    while runner.run_once():
        pass
    return rows(store, table)


def until_idle(*runners: PartitionedRunner) -> None:
    while sum(r.run_once() for r in runners):
        pass


def test_two_workers_share_the_parts_and_build_a_single_runners_read_model(
    store: tidings.Store, tables: tuple[str, str]
) -> None:
    """The first worker takes every part; once the second is seen alive each renews to
    half of them, disjoint; together they apply every event once, each aggregate's in
    order; each part's checkpoint is a row of its own."""
    parted, alone = tables
    write(store, counters=12, steps=5)
    clock = Clock()
    a, b = worker(store, parted, "a", clock), worker(store, parted, "b", clock)
    a.run_once()
    assert a.held == {"parted": [0, 1, 2, 3]}
    b.run_once()
    assert b.held == {"parted": []}  # nothing free yet: a gives back at its next renewal
    clock.now += TTL / 3 + 1
    a.run_once()
    b.run_once()
    assert len(a.held["parted"]) == len(b.held["parted"]) == 2
    assert set(a.held["parted"]) | set(b.held["parted"]) == {0, 1, 2, 3}
    until_idle(a, b)
    assert rows(store, parted) == single(store, alone)
    assert all(r[1] == "0,1,2,3,4" for r in rows(store, parted))  # order kept per aggregate
    statuses = {s.name: s for s in a.status(a.names)}
    assert sorted(statuses) == [part_name("parted", p) for p in range(PARTS)]
    assert {s.position for s in statuses.values()} == {s.head for s in statuses.values()}
    owners = {s.runner for s in statuses.values()}
    assert owners == {"a", "b"}


def test_a_stopped_worker_s_parts_are_taken_over_at_once_and_a_dead_one_s_after_its_lease(
    store: tidings.Store, tables: tuple[str, str]
) -> None:
    parted, alone = tables
    write(store, counters=8, steps=3)
    clock = Clock()
    a, b = worker(store, parted, "a", clock), worker(store, parted, "b", clock)
    a.run_once()
    b.run_once()
    clock.now += TTL / 3 + 1
    until_idle(a, b)
    assert b.held["parted"]
    b.release()  # a clean stop: its parts go back at once
    write(store, counters=8, steps=3)
    clock.now += TTL / 3 + 1
    until_idle(a)
    assert a.held == {"parted": [0, 1, 2, 3]}
    assert rows(store, parted) == single(store, alone)

    c = worker(store, parted, "c", clock)  # a third worker takes half, then dies silently
    c.run_once()
    clock.now += TTL / 3 + 1
    a.run_once()
    c.run_once()
    assert len(c.held["parted"]) == 2
    write(store, counters=8, steps=3)
    clock.now += TTL + 1  # c's lease and heartbeat run out
    until_idle(a)
    assert a.held == {"parted": [0, 1, 2, 3]}
    assert rows(store, parted) == single(store, alone)


def test_a_worker_that_lost_its_parts_writes_nothing(
    store: tidings.Store, tables: tuple[str, str]
) -> None:
    """A stalls past its lease; B takes every part over. A, waking up still believing it
    holds them, finds its tokens stale in the batch's transaction and writes nothing."""
    parted, _ = tables
    clock = Clock()
    a, b = worker(store, parted, "a", clock), worker(store, parted, "b", clock)
    a.run_once()
    assert a.held == {"parted": [0, 1, 2, 3]}
    write(store, counters=6, steps=2)
    clock.now += TTL + 1
    b.run_once()  # takes the expired parts (and applies a page)
    assert b.held == {"parted": [0, 1, 2, 3]}
    before = rows(store, parted)
    a._renew_at = float("inf")  # still stalled: it does not renew before writing
    assert a.run_once() == 0
    assert a.lost_leases == 1
    assert rows(store, parted) == before


def test_another_count_of_parts_is_refused(store: tidings.Store, tables: tuple[str, str]) -> None:
    parted, _ = tables
    write(store, counters=2, steps=1)
    worker(store, parted, "a", Clock()).run_once()
    other = store.projections(
        [steps_projection("parted", parted)], partitions=3, runner_id="z", clock=Clock()
    )
    with pytest.raises(ProjectionError, match="runs in 4 partitions.*--partitions 4"):
        other.run_once()
    with pytest.raises(ProjectionError, match="partitions must be a whole number"):
        store.projections([steps_projection("parted", parted)], partitions=0)


def test_a_poison_event_pauses_its_part_only(store: tidings.Store, tables: tuple[str, str]) -> None:
    """The part of the failing aggregate pauses on its event; the other parts go on to
    the head; retry after the fix resumes it there."""
    parted, _ = tables
    broken = {"yes"}
    write(store, counters=8, steps=2)
    poison = Counter(f"poison-{uuid.uuid4().hex[:6]}")
    poison.increment(13)
    with store.unit_of_work() as uow:
        uow.track(poison)
    write(store, counters=8, steps=2)

    def counted(uow: Any, e: Counted) -> None:
        if e.step == 13 and broken:
            raise RuntimeError("cannot project 13")
        uow.execute(
            f"INSERT INTO {parted} (id, steps, events) VALUES (:i, '', 1)"
            f" ON CONFLICT (id) DO UPDATE SET events = {parted}.events + 1",
            {"i": e.aggregate_id},
        )

    projection = Projection(
        "parted",
        {Counted: counted},
        schema=[
            f"CREATE TABLE IF NOT EXISTS {parted} (id TEXT PRIMARY KEY, steps TEXT, events INTEGER)"
        ],
    )
    runner = store.projections([projection], partitions=PARTS, runner_id="a", clock=Clock())
    while runner.run_once():
        pass
    bad = partition_of(poison.id, PARTS)
    statuses = {s.name: s for s in runner.status(runner.names)}
    assert statuses[part_name("parted", bad)].state == "paused"
    assert statuses[part_name("parted", bad)].failed_event_type.endswith("Counted")
    others = [s for n, s in statuses.items() if n != part_name("parted", bad)]
    assert all(s.state == "running" and s.lag_events == 0 for s in others)
    broken.clear()
    runner.retry(part_name("parted", bad))
    while runner.run_once():
        pass
    with store.unit_of_work() as uow:
        total = uow.execute(f"SELECT sum(events) FROM {parted}").fetchone()[0]
    assert total == 8 * 2 * 2 + 1


def test_a_projection_run_unpartitioned_is_refused_partitioned(
    store: tidings.Store, tables: tuple[str, str]
) -> None:
    """Its read model holds events no part's checkpoint knows of: applied again they
    would count twice."""
    parted, _ = tables
    write(store, counters=2, steps=1)
    plain = store.projections([steps_projection("parted", parted)])
    while plain.run_once():
        pass
    with pytest.raises(ProjectionError, match="run unpartitioned up to position 2"):
        worker(store, parted, "a", Clock()).run_once()
    with pytest.raises(ProjectionError, match="ttl must be above 0"):
        store.projections([steps_projection("parted", parted)], partitions=2, ttl=0)


def test_a_changed_version_is_refused_until_each_part_is_reset(
    store: tidings.Store, tables: tuple[str, str]
) -> None:
    parted, _ = tables
    write(store, counters=2, steps=1)
    worker(store, parted, "a", Clock()).run_once()
    newer = steps_projection("parted", parted)
    newer = Projection(newer.name, newer.handlers, newer.schema, version=2)
    runner = store.projections([newer], partitions=PARTS, runner_id="a", clock=Clock())
    with pytest.raises(ProjectionError, match="version 1 and the code is version 2"):
        runner.run_once()
