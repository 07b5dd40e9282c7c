"""The runner merges consecutive writes of the same SQL into one executemany: the read
model ends as it would with one statement per event, in the log's order, and a handler
that reads its statement's result gets its own."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

import tidings
from tests.conftest import MakeStore
from tidings.application.merging import MergingWork
from tidings.application.projections import Projection
from tidings.errors import HeldWriteError
from tidings.testing.contract import Counted, Counter, Named


@pytest.fixture
def store(make_store: MakeStore) -> tidings.Store:
    return make_store(tidings.EventRegistry([Counted, Named]))


def _commit(store: tidings.Store, counter: Counter) -> None:
    with store.unit_of_work() as uow:
        uow.track(counter)


def test_interleaved_statements_keep_the_logs_order(store: tidings.Store) -> None:
    """Counted adds its step, Named doubles the total (another statement): the result
    depends on the order, ((1+2)*2+3)*2 = 18, which merging every Counted of the batch
    into one run (out of the log's order) would turn into ((1+2+3)*2)*2 = 24."""
    table = f"totals_{uuid.uuid4().hex[:8]}"

    def counted(uow: Any, e: Counted) -> None:
        uow.execute(
            f"INSERT INTO {table} (id, total) VALUES (:id, :step) ON CONFLICT (id) DO UPDATE"
            f" SET total = {table}.total + excluded.total",
            {"id": e.aggregate_id, "step": e.step},
        )

    def named(uow: Any, e: Named) -> None:
        uow.execute(f"UPDATE {table} SET total = total * 2 WHERE id = :id", {"id": e.aggregate_id})

    projection = Projection(
        "ordered",
        {Counted: counted, Named: named},
        schema=[f"CREATE TABLE IF NOT EXISTS {table} (id TEXT PRIMARY KEY, total INTEGER)"],
    )
    counter = Counter(f"c-{uuid.uuid4().hex[:8]}")
    counter.increment(1)
    counter.increment(2)
    counter.rename("a")
    counter.increment(3)
    counter.rename("b")
    _commit(store, counter)
    runner = store.projections([projection], batch=100)
    assert runner.run_once() == 5
    with store.unit_of_work() as uow:
        assert uow.execute(f"SELECT total FROM {table}").fetchall() == [(18,)]


def test_a_handler_reading_its_rowcount_gets_its_own(store: tidings.Store) -> None:
    """A handler that counts the rows its UPDATE touched sees 1 or 0 for its own
    statement, not the sum of a merged run."""
    table = f"seen_{uuid.uuid4().hex[:8]}"
    touched: list[int] = []

    def counted(uow: Any, e: Counted) -> None:
        found = uow.execute(
            f"UPDATE {table} SET n = n + 1 WHERE step = :step", {"step": e.step}
        ).rowcount
        touched.append(found)

    projection = Projection(
        "counting",
        {Counted: counted},
        schema=[
            f"CREATE TABLE IF NOT EXISTS {table} (step INTEGER, n INTEGER)",
            f"INSERT INTO {table} (step, n) VALUES (2, 0), (3, 0)",
        ],
    )
    counter = Counter(f"c-{uuid.uuid4().hex[:8]}")
    for step in (1, 2, 3, 4):
        counter.increment(step)
    _commit(store, counter)
    runner = store.projections([projection], batch=100)
    assert runner.run_once() == 4
    assert touched == [0, 1, 1, 0]


def test_consecutive_writes_of_one_sql_go_as_one_run(store: tidings.Store) -> None:
    """Ten inserts of one text are one executemany of ten; reading a result sent in a
    run already says what to do instead of giving the run's figure."""
    table = f"runs_{uuid.uuid4().hex[:8]}"
    with store.unit_of_work() as uow:
        uow.execute(f"CREATE TABLE {table} (n INTEGER)")
    with store.unit_of_work() as uow:
        work = MergingWork(uow)
        held = [work.execute(f"INSERT INTO {table} (n) VALUES (?)", (n,)) for n in range(10)]
        work.flush()
        assert work.merged == 10
        with pytest.raises(HeldWriteError, match="before the next execute"):
            held[3].rowcount  # noqa: B018 - reading it is the point
        assert uow.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 10
