"""A property of projections on every backend: built live (events arriving between its
batches, random batch sizes, runners restarted) the read model equals the one built from
scratch over the same log, and each event was applied once."""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tidings
from tests.conftest import MakeStore
from tidings.application.projections import Projection
from tidings.testing.contract import Counted, Counter, Named


def projection(name: str, tag: str) -> Projection:
    """Per counter: sum, count, last name and last version; and every event id applied."""
    table, seen = f"{name}_{tag}", f"{name}_{tag}_seen"

    def counted(uow: Any, e: Counted) -> None:
        uow.execute(
            f"INSERT INTO {table} (id, total, events, name, version) VALUES (:id, :s, 1, '', :v)"
            f" ON CONFLICT (id) DO UPDATE SET total = {table}.total + excluded.total,"
            f" events = {table}.events + 1, version = excluded.version",
            {"id": e.aggregate_id, "s": e.step, "v": e.aggregate_version},
        )
        uow.execute(f"INSERT INTO {seen} VALUES (:e)", {"e": e.event_id})

    def named(uow: Any, e: Named) -> None:
        uow.execute(
            f"INSERT INTO {table} (id, total, events, name, version) VALUES (:id, 0, 1, :n, :v)"
            f" ON CONFLICT (id) DO UPDATE SET name = excluded.name,"
            f" events = {table}.events + 1, version = excluded.version",
            {"id": e.aggregate_id, "n": e.name, "v": e.aggregate_version},
        )
        uow.execute(f"INSERT INTO {seen} VALUES (:e)", {"e": e.event_id})

    return Projection(
        name,
        {Counted: counted, Named: named},
        schema=[
            f"CREATE TABLE IF NOT EXISTS {table} (id TEXT PRIMARY KEY, total INTEGER,"
            " events INTEGER, name TEXT, version INTEGER)",
            f"CREATE TABLE IF NOT EXISTS {seen} (event_id TEXT)",
        ],
    )


def read_model(store: tidings.Store, name: str, tag: str) -> tuple[list[Any], list[Any]]:
    with store.unit_of_work() as uow:
        rows = uow.execute(f"SELECT * FROM {name}_{tag} ORDER BY id").fetchall()
        seen = uow.execute(f"SELECT event_id FROM {name}_{tag}_seen ORDER BY 1").fetchall()
    return [tuple(r) for r in rows], [r[0] for r in seen]


Step = tuple[str, int, int]
steps = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(1, 12), st.integers(0, 3)),
        st.tuples(st.just("run"), st.integers(1, 7), st.just(0)),
        st.tuples(st.just("restart"), st.integers(1, 9), st.just(0)),
    ),
    min_size=1,
    max_size=25,
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=steps)
def test_a_projection_built_live_equals_one_built_from_scratch(
    make_store: MakeStore, plan: list[Step]
) -> None:
    """Writes (of 1 to 12 events over up to 4 counters, some renamed), batches of 1 to 7
    events, and runners replaced by new ones with another batch size, in any order; then
    the live projection catches up. Its rows equal those of a projection built afterwards
    from the whole log, and each event id appears once in each."""
    with make_store(tidings.EventRegistry([Counted, Named])) as store:
        check_live_against_scratch(store, plan)


def check_live_against_scratch(store: tidings.Store, plan: list[Step]) -> None:
    tag = uuid.uuid4().hex[:8]
    live = projection("live", tag)
    runner = store.projections([live], batch=3)
    counters = [Counter(f"c{i}-{tag}") for i in range(4)]
    written = 0
    for kind, n, extra in plan:
        if kind == "write":
            for i in range(n):
                chosen = counters[(i + extra) % len(counters)]
                if (i + n) % 5 == 0:
                    chosen.rename(f"name-{written}")
                else:
                    chosen.increment(i + 1)
                written += 1
            with store.unit_of_work() as uow:
                uow.track(*counters)
        elif kind == "run":
            runner.run_once()
        else:
            runner = store.projections([live], batch=n)
    while runner.run_once():
        pass
    scratch_runner = store.projections([projection("scratch", tag)], batch=1000)
    while scratch_runner.run_once():
        pass
    live_rows, live_seen = read_model(store, "live", tag)
    scratch_rows, scratch_seen = read_model(store, "scratch", tag)
    assert live_rows == scratch_rows
    assert live_seen == scratch_seen
    assert len(live_seen) == len(set(live_seen)) == written
    assert {s.name: s.lag_events for s in runner.status()} == {"live": 0, "scratch": 0}
