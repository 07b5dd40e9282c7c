"""Read-your-writes on every backend: a unit of work's consistency token (the position it
wrote), and waiting until a projection has applied it, woken by the runner at once, or
timed out with an error that says where the projection stands."""

from __future__ import annotations

import threading
from typing import Any

import pytest

import tidings
from tests.conftest import MakeStore
from tests.contract.test_projections import _unique_tables, rows, t, totals_projection, write
from tidings.application.projections import waiting
from tidings.application.projections.waiting import Progress
from tidings.errors import ProjectionError, ProjectionTimeoutError
from tidings.testing.contract import Counted, Counter, Named

__all__ = ["_unique_tables"]  # autouse: fresh table names for every test here too


@pytest.fixture
def store(make_store: MakeStore) -> tidings.Store:
    return make_store(tidings.EventRegistry([Counted, Named]))


class Watched(Progress):
    """A Progress that says when a waiter has looked once and gone to sleep on it."""

    def __init__(self) -> None:
        super().__init__()
        self.sleeping = threading.Event()

    def wait(self, seen: int, timeout: float) -> None:
        self.sleeping.set()
        super().wait(seen, timeout)


def test_a_unit_of_work_gives_the_position_of_its_last_event_after_the_commit(
    store: tidings.Store,
) -> None:
    """The token is the highest global position the unit of work wrote, over all the
    aggregates it tracked; None before the commit and when it wrote no event."""
    write(store, [1])
    a, b = Counter("a-1"), Counter("b-1")
    a.increment(1)
    b.increment(2)
    b.increment(3)
    with store.unit_of_work() as uow:
        uow.track(a, b)
        assert uow.position is None  # nothing is known before the commit
    assert uow.position == 4
    assert uow.position == max(e.position for e in store.events.read_all(0, 10))
    with store.unit_of_work() as empty:
        pass
    assert empty.position is None


def test_a_unit_of_work_that_rolls_back_gives_no_token(store: tidings.Store) -> None:
    """A failed unit of work wrote nothing: its position stays None."""
    counter = Counter("c-1")
    counter.increment(1)
    with pytest.raises(RuntimeError), store.unit_of_work() as uow:
        uow.track(counter)
        raise RuntimeError("refused")
    assert uow.position is None


def test_wait_for_returns_as_soon_as_the_runner_applies_the_token(
    store: tidings.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The waiter sleeps on the runner's progress: with a first pause of a minute, only
    the runner's wake-up can end the wait in time, and the read model then holds the
    write."""
    monkeypatch.setattr(waiting, "FIRST_LOOK", 60.0)
    progress = Watched()
    runner = store.projections([totals_projection()], progress=progress)
    runner.start()
    counter = Counter("c-1")
    counter.increment(7)
    with store.unit_of_work() as uow:
        uow.track(counter)
    got: list[int] = []
    waiter = threading.Thread(
        target=lambda: got.append(runner.wait_for(uow.position, "totals", 120)), daemon=True
    )
    waiter.start()
    assert progress.sleeping.wait(10), "the waiter never went to sleep"
    assert got == []  # the projection has not run: the waiter is still waiting
    assert runner.run_once() == 1
    waiter.join(10)
    assert not waiter.is_alive(), "the runner's progress did not wake the waiter"
    assert got == [uow.position]
    assert rows(store, f"SELECT id, total FROM {t('totals')}") == [("c-1", 7)]


def test_wait_for_returns_at_once_for_a_token_already_applied_or_none(
    store: tidings.Store,
) -> None:
    """A projection past the token, or a unit of work that wrote nothing (None): no
    wait at all."""
    runner = store.projections([totals_projection()])
    write(store, [1, 2])
    runner.run_once()
    assert runner.wait_for(1, "totals", 0.01) == 2
    assert runner.wait_for(None, "totals", 0.01) == 0
    assert store.wait_for(2, "totals", 0.01) == 2


def test_a_wait_on_a_paused_projection_times_out_naming_the_pause(store: tidings.Store) -> None:
    """The error names the projection, the token, where it stopped, the event and the
    error it paused on, and the command that resumes it."""
    runner = store.projections([totals_projection(fail_on={13})])
    write(store, [1])
    token = _written(store, [13])
    runner.run_once()
    with pytest.raises(ProjectionTimeoutError) as caught:
        runner.wait_for(token, "totals", 0.05)
    error = caught.value
    assert (error.projection, error.token, error.position, error.state) == (
        "totals",
        2,
        1,
        "paused",
    )
    text = str(error)
    assert "projection totals has not applied position 2 within 0.05 s" in text
    assert "paused at position 1, on the event at position 2" in text
    assert "RuntimeError: cannot project step 13" in text
    assert "tidings projections retry totals" in text
    assert isinstance(error, ProjectionError)


def test_a_wait_on_a_projection_no_runner_started_says_so(store: tidings.Store) -> None:
    """No checkpoint: the name is wrong or no runner has started it."""
    token = _written(store, [1])
    with pytest.raises(ProjectionTimeoutError, match="no runner has started it") as caught:
        store.wait_for(token, "nobody", 0.02)
    assert caught.value.state == "missing"


def test_a_wait_on_a_stopped_projection_asks_whether_its_runner_runs(
    store: tidings.Store,
) -> None:
    """A projection started once but not running now is behind: the error says where,
    and to look at its runner; a running one says how far short it is."""
    runner = store.projections([totals_projection()])
    runner.start()
    token = _written(store, [1, 2, 3])
    with pytest.raises(ProjectionTimeoutError, match="stopped at position 0: is its runner"):
        runner.wait_for(token, "totals", 0.02)
    runner.beat()
    with pytest.raises(ProjectionTimeoutError, match="running at position 0, 3 events short"):
        runner.wait_for(token, "totals", 0.02)


@pytest.mark.parametrize(
    ("token", "timeout", "says"),
    [
        (-1, 1.0, "an int >= 0"),
        ("5", 1.0, "an int >= 0"),
        (True, 1.0, "an int >= 0"),
        (1, 0, "timeout is in seconds"),
        (1, float("inf"), "timeout is in seconds"),
    ],
)
def test_a_bad_token_or_timeout_is_refused_with_what_to_pass(
    store: tidings.Store, token: Any, timeout: float, says: str
) -> None:
    """A token is an int position; a timeout a finite number of seconds."""
    runner = store.projections([totals_projection()])
    with pytest.raises(ProjectionError, match=says):
        runner.wait_for(token, "totals", timeout)


def test_a_reader_in_another_store_sees_a_runner_of_another_process(
    make_sql_store: MakeStore,
) -> None:
    """Two stores on one database stand for two processes: the second has no runner,
    and its wait sees the first's progress through the checkpoint."""
    registry = tidings.EventRegistry([Counted, Named])
    writer = make_sql_store(registry)
    runner = writer.projections([totals_projection()])
    token = _written(writer, [4, 5])
    reader = _same_database(make_sql_store, writer, registry)
    done = threading.Event()

    def follow() -> None:
        stop = threading.Event()
        thread = threading.Thread(target=runner.run, args=(stop,))
        thread.start()
        done.wait(30)
        stop.set()
        thread.join(10)

    follower = threading.Thread(target=follow)
    follower.start()
    try:
        assert reader.wait_for(token, "totals", 30) >= token
    finally:
        done.set()
        follower.join(30)
        runner.close()
        reader.close()


def _written(store: tidings.Store, steps: list[int]) -> int:
    """Write one counter's steps in one unit of work; its token."""
    counter = Counter(f"c-{len(steps)}-{steps[0]}")
    for step in steps:
        counter.increment(step)
    with store.unit_of_work() as uow:
        uow.track(counter)
    assert uow.position is not None
    return uow.position


def _same_database(
    make: MakeStore, store: tidings.Store, registry: tidings.EventRegistry
) -> tidings.Store:
    """A second store on ``store``'s database (and schema, on PostgreSQL)."""
    database = store.database
    if database.dialect == "sqlite":
        return tidings.connect(f"sqlite:///{database.path}", registry=registry)  # type: ignore[attr-defined]
    return tidings.connect(
        database.url,  # type: ignore[attr-defined]
        registry=registry,
        schema=database.schema,  # type: ignore[attr-defined]
    )


def test_a_unit_of_work_in_a_transaction_it_does_not_own_gives_its_token_on_that_commit(
    store: tidings.Store,
) -> None:
    """Inside a consumer's batch (a transaction someone else commits), the token is
    known only once that transaction has committed."""
    counter = Counter("j-1")
    counter.increment(1)
    with store.database.transaction() as tx:
        with store.unit_of_work_in(tx) as uow:
            uow.track(counter)
        assert uow.position is None  # written, not yet committed
    assert uow.position == 1
