"""Projections on every backend: the read model and its checkpoint commit together, a
poison event pauses its projection alone and retry or skip resumes exactly there, the
status figures, the query side, and a runner woken by the commit signals."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

import tidings
from tests.conftest import MakeStore
from tidings.application.projections import Projection, ProjectionStatus
from tidings.domain.events import DomainEvent
from tidings.errors import ProjectionError
from tidings.testing.contract import Counted, Counter, Named

TAG = ["x"]  # the current test's suffix of read-model tables (PostgreSQL tests share a database)


@pytest.fixture(autouse=True)
def _unique_tables() -> None:
    TAG[0] = uuid.uuid4().hex[:8]


def t(name: str) -> str:
    """The table of a totals projection's rows."""
    return f"{name}_{TAG[0]}_t"


def seen_table(name: str) -> str:
    """The table of a totals projection's applied event ids."""
    return f"{name}_{TAG[0]}_seen"


def totals_projection(name: str = "totals", *, fail_on: set[int] | None = None) -> Projection:
    """Per counter: the sum of its steps, how many events, its name. Every applied event
    is also kept in ``<name>_seen`` (no key: an event applied twice shows twice).
    ``fail_on``: steps whose event makes the handler raise, while they are in the set."""
    table, seen = t(name), seen_table(name)

    def counted(uow: Any, e: Counted) -> None:
        if fail_on and e.step in fail_on:
            raise RuntimeError(f"cannot project step {e.step}")
        uow.execute(
            f"INSERT INTO {table} (id, total, events, name) VALUES (:id, :s, 1, '')"
            f" ON CONFLICT (id) DO UPDATE SET total = {table}.total + excluded.total,"
            f" events = {table}.events + 1",
            {"id": e.aggregate_id, "s": e.step},
        )
        uow.execute(f"INSERT INTO {seen} (event_id) VALUES (:e)", {"e": e.event_id})

    def named(uow: Any, e: Named) -> None:
        uow.execute(
            f"INSERT INTO {table} (id, total, events, name) VALUES (:id, 0, 1, :n)"
            f" ON CONFLICT (id) DO UPDATE SET name = excluded.name,"
            f" events = {table}.events + 1",
            {"id": e.aggregate_id, "n": e.name},
        )
        uow.execute(f"INSERT INTO {seen} (event_id) VALUES (:e)", {"e": e.event_id})

    return Projection(
        name,
        {Counted: counted, Named: named},
        schema=[
            f"CREATE TABLE IF NOT EXISTS {table} (id TEXT PRIMARY KEY, total INTEGER,"
            " events INTEGER, name TEXT)",
            f"CREATE TABLE IF NOT EXISTS {seen} (event_id TEXT)",
        ],
    )


def rows(store: tidings.Store, sql: str) -> list[tuple[Any, ...]]:
    with store.unit_of_work() as uow:
        return [tuple(r) for r in uow.execute(sql).fetchall()]


def write(store: tidings.Store, steps: list[int], stream: str | None = None) -> Counter:
    counter = Counter(stream or f"c-{uuid.uuid4().hex[:8]}")
    for step in steps:
        counter.increment(step)
    with store.unit_of_work() as uow:
        uow.track(counter)
    return counter


def catch_up(runner: Any) -> int:
    total = 0
    while done := runner.run_once():
        total += done
    return total


@pytest.fixture
def store(make_store: MakeStore) -> tidings.Store:
    return make_store(tidings.EventRegistry([Counted, Named]))


def test_a_projection_builds_its_read_model_from_the_log_and_stops_at_the_head(
    store: tidings.Store,
) -> None:
    """Its tables are made on the first run; every handled event is applied once, in
    position order; the checkpoint ends at the head."""
    a = write(store, [1, 2, 3])
    b = write(store, [10])
    runner = store.projections([totals_projection()], batch=2)
    assert catch_up(runner) == 4
    assert runner.run_once() == 0
    assert sorted(rows(store, f"SELECT id, total, events FROM {t('totals')}")) == sorted(
        [(a.id, 6, 3), (b.id, 10, 1)]
    )
    [status] = runner.status()
    assert (status.position, status.head, status.lag_events, status.state) == (4, 4, 0, "running")


def test_events_the_projection_does_not_handle_or_know_pass_by(store: tidings.Store) -> None:
    """An event of a class the projection has no handler for, or of a type no class is
    registered for (another context's), moves the checkpoint and nothing else."""

    @dataclass(frozen=True, kw_only=True)
    class Stranger(DomainEvent):
        event_type = f"strangers.{uuid.uuid4().hex[:6]}"
        x: int

    class Odd(Counter):
        def strange(self) -> None:
            self.record(Stranger(x=1))

    store.registry.register(Stranger)
    odd = Odd("odd-1")
    odd.strange()
    with store.unit_of_work() as uow:
        uow.track(odd)
    write(store, [5])
    store.registry = tidings.EventRegistry([Counted, Named])  # a runner that never heard of it
    store.codec = tidings.JsonCodec(store.registry)
    runner = store.projections([totals_projection()])
    assert catch_up(runner) == 2
    assert rows(store, f"SELECT total FROM {t('totals')}") == [(5,)]
    assert runner.status()[0].position == 2


class FailingAdvance:
    """Checkpoints whose ``advance`` fails after the handlers wrote the read model."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def advance(self, uow: Any, name: str, **moves: Any) -> None:
        raise OSError("the checkpoint could not be written")


def test_the_read_model_and_the_checkpoint_commit_together_or_not_at_all(
    store: tidings.Store,
) -> None:
    """A batch whose checkpoint cannot move leaves no read-model row behind; the next
    runner applies it once."""
    write(store, [1, 2])
    runner = store.projections([totals_projection()])
    runner._checkpoints = FailingAdvance(runner._checkpoints)
    with pytest.raises(OSError, match="checkpoint"):
        runner.run_once()
    assert rows(store, f"SELECT count(*) FROM {seen_table('totals')}") == [(0,)]
    assert runner.status()[0].position == 0
    healthy = store.projections([totals_projection()])
    assert catch_up(healthy) == 2
    assert rows(store, f"SELECT count(*) FROM {seen_table('totals')}") == [(2,)]


def test_a_poison_event_pauses_its_projection_alone_and_retry_resumes_exactly_there(
    store: tidings.Store, caplog: pytest.LogCaptureFixture
) -> None:
    """The events before the poison are applied, the checkpoint stops just before it with
    the event, its position and the error; another projection goes on to the head. After
    the fix, retry applies the poison event and the rest, each once."""
    write(store, [1, 2])
    poison = write(store, [13])
    write(store, [3, 4])
    broken: set[int] = {13}
    failing, healthy = totals_projection("failing", fail_on=broken), totals_projection("healthy")
    runner = store.projections([failing, healthy], batch=100)
    with caplog.at_level(logging.ERROR, "tidings.application.projections.runner"):
        assert runner.run_once() == 2 + 5
    statuses = {s.name: s for s in runner.status()}
    paused, other = statuses["failing"], statuses["healthy"]
    assert (paused.state, paused.position, paused.failed_position) == ("paused", 2, 3)
    assert paused.failed_event_id == next(iter(store.read_stream(poison.id))).event_id
    assert "RuntimeError: cannot project step 13" in paused.error
    assert "test_projections.py" in paused.error  # where the handler failed
    assert (other.state, other.position, other.lag_events) == ("running", 5, 0)
    assert "paused on the event at position 3" in caplog.text
    assert "RuntimeError: cannot project step 13; fix the handler" in caplog.text
    assert "tidings projections retry failing (or skip failing --position 3)" in caplog.text
    assert runner.run_once() == 0  # paused: nothing more until an operator acts
    assert rows(store, f"SELECT sum(total) FROM {t('failing')}") == [(3,)]

    broken.clear()  # the fix
    runner.retry("failing")
    assert catch_up(runner) == 3
    assert rows(store, f"SELECT sum(total) FROM {t('failing')}") == [(23,)]
    seen = rows(store, f"SELECT event_id FROM {seen_table('failing')}")
    assert len(seen) == len(set(seen)) == 5
    resumed = {s.name: s for s in runner.status()}["failing"]
    assert (resumed.state, resumed.position, resumed.error) == ("running", 5, "")


def test_skip_passes_over_the_poison_event_only_and_is_recorded(store: tidings.Store) -> None:
    """Skip needs the position the projection paused on; the skip keeps the event, the
    error, who and why; the projection goes on after it."""
    write(store, [1])
    write(store, [13])
    write(store, [2])
    runner = store.projections([totals_projection(fail_on={13})])
    runner.run_once()
    with pytest.raises(ProjectionError, match="paused on the event at position 2, not 3"):
        runner.skip("totals", 3, "ops")
    skipped = runner.skip("totals", 2, "ops", "a bad import, fixed upstream")
    assert (skipped.position, skipped.by, skipped.note) == (
        2,
        "ops",
        "a bad import, fixed upstream",
    )
    assert "cannot project step 13" in skipped.error
    assert catch_up(runner) == 1
    assert rows(store, f"SELECT sum(total) FROM {t('totals')}") == [(3,)]
    assert runner.skips("totals") == [skipped]
    with pytest.raises(ProjectionError, match="is running, not paused: there is nothing to retry"):
        runner.retry("totals")
    with pytest.raises(ProjectionError, match="no projection is named 'nope'"):
        runner.retry("nope")


def test_a_projection_paused_by_hand_applies_nothing_until_retry(store: tidings.Store) -> None:
    """Pause keeps who and why as the error, with no failed event; the runner leaves the
    projection alone (also through a heartbeat), and retry goes on after its position.
    Pausing one that is paused, or none, is refused."""
    write(store, [1, 2])
    runner = store.projections([totals_projection()])
    catch_up(runner)
    runner.pause("totals", "ops", "the read model's disk is full")
    write(store, [3])
    runner.beat()
    assert runner.run_once() == 0
    [paused] = runner.status()
    assert (paused.state, paused.position, paused.failed_event_id) == ("paused", 2, "")
    assert paused.error == "paused by ops: the read model's disk is full"
    assert "paused by ops" in paused.describe()
    with pytest.raises(ProjectionError, match="cannot be paused: it is paused"):
        runner.pause("totals", "ops")
    with pytest.raises(ProjectionError, match="cannot be paused: there is none"):
        runner.pause("nope", "ops")
    with pytest.raises(ProjectionError, match="paused by hand .* no event to skip.* retry"):
        runner.skip("totals", 0, "ops")  # no failed event: nothing at position 0 either
    runner.retry("totals")
    assert catch_up(runner) == 1
    assert rows(store, f"SELECT sum(total) FROM {t('totals')}") == [(6,)]


def test_an_undecodable_event_pauses_the_projection_that_handles_it(
    store: tidings.Store,
) -> None:
    """A stored event that does not fit its class is bad input: it pauses the projection
    with the decoding error, it does not stop the runner."""
    write(store, [1])
    with store.unit_of_work() as uow:  # a record whose payload lost its field
        uow.transaction  # noqa: B018
        bad = tidings.EventRecord(
            event_id=str(uuid.uuid4()),
            stream_id="broken",
            version=1,
            event_type=Counted.type_name(),
            schema_version=1,
            occurred_at=datetime.now(UTC),
            data=b'{"note": "no step"}',
        )
        store.events.append(uow.transaction, [bad], 0)
    runner = store.projections([totals_projection()])
    assert runner.run_once() == 1
    [status] = runner.status()
    assert (status.state, status.failed_position) == ("paused", 2)
    assert "DecodeError" in status.error
    assert "step" in status.error


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def set_commit_times(store: tidings.Store, seconds: dict[int, float]) -> None:
    """Give events known commit times: ``recorded_at`` on SQL backends; on memory, whose
    events carry only the time they occurred, the test writes them with those times."""
    table = store.database.tables["events"]  # type: ignore[attr-defined]
    for position, at in seconds.items():
        moment = datetime.fromtimestamp(at, UTC)
        value: Any = moment if store.database.dialect == "postgresql" else moment.isoformat()
        with store.unit_of_work() as uow:
            uow.execute(
                f"UPDATE {table} SET recorded_at = :at WHERE position = :p",
                {"at": value, "p": position},
            )


def write_at(store: tidings.Store, moments: list[float]) -> None:
    """One event per moment, each occurring then (one stream, in order)."""
    counter = Counter(f"timed-{uuid.uuid4().hex[:6]}", clock=lambda: at[0])
    for moment in moments:
        at = [datetime.fromtimestamp(moment, UTC)]
        counter.increment(1)
        with store.unit_of_work() as uow:
            uow.track(counter)


def test_status_figures_lag_in_events_and_seconds_heartbeat_and_the_alert(
    store: tidings.Store, caplog: pytest.LogCaptureFixture
) -> None:
    """Lag in events counts the events after the checkpoint; lag in seconds is the head's
    commit time minus that of the last applied event; the heartbeat's age is by the
    injected clock; crossing the threshold calls the hook once and warns."""
    clock, alerts = Clock(), list[ProjectionStatus]()
    t0 = clock.now - 100
    write_at(store, [t0])
    runner = store.projections([totals_projection()], clock=clock, on_lag=alerts.append, batch=1)
    assert runner.run_once() == 1
    write_at(store, [t0 + 4, t0 + 7, t0 + 12.5])
    if store.database.dialect != "memory":
        set_commit_times(store, {1: t0, 2: t0 + 4, 3: t0 + 7, 4: t0 + 12.5})
    clock.now += 3
    [s] = runner.status()
    assert (s.position, s.head, s.lag_events) == (1, 4, 3)
    assert s.lag_seconds == pytest.approx(12.5, abs=0.002)
    assert s.heartbeat_age == pytest.approx(3.0)
    assert s.lagging
    assert not s.stale
    with caplog.at_level(logging.WARNING, "tidings.application.projections.runner"):
        assert [x.name for x in runner.check_lag()] == ["totals"]
        runner.check_lag()  # still over: no second alert
    assert [a.name for a in alerts] == ["totals"]
    assert caplog.text.count("lags 12.5 s (3 events)") == 1
    assert runner.run_once() == 1  # position 2: 8.5 s behind the head
    assert runner.status()[0].lag_seconds == pytest.approx(8.5, abs=0.002)
    runner.check_lag()
    catch_up(runner)
    [s] = runner.status()
    assert (s.lag_events, s.lag_seconds) == (0, 0.0)
    clock.now += 30  # no runner beat since: marked running, but stuck or gone
    [s] = runner.status()
    assert s.stale
    assert "the runner is stuck or gone" in s.describe()
    runner.beat()
    assert not runner.status()[0].stale


def test_a_projection_built_by_another_version_is_refused_until_reset(
    store: tidings.Store,
) -> None:
    """A version change needs a rebuild; the runner says so instead of mixing versions,
    and reset starts the projection again from position 0."""
    write(store, [1, 2])
    catch_up(store.projections([totals_projection()]))
    v1 = totals_projection()
    v2 = Projection(v1.name, v1.handlers, v1.schema, version=2)
    runner = store.projections([v2])
    with pytest.raises(ProjectionError, match="built by version 1 and the code is version 2"):
        runner.run_once()
    with store.unit_of_work() as uow:
        uow.execute(f"DELETE FROM {t('totals')}")
        uow.execute(f"DELETE FROM {seen_table('totals')}")
    assert runner.reset("totals")
    assert catch_up(runner) == 2
    assert rows(store, f"SELECT total FROM {t('totals')}") == [(3,)]
    assert runner.status()[0].version == 2


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"name": "Bad Name"}, "must be 1 to 63 characters"),
        ({"version": 0}, "version must be an int >= 1"),
        ({"handlers": {}}, "has no handlers"),
        ({"handlers": {str: print}}, "handler keys are event classes"),
        ({"handlers": {Counted: 3}}, "is not callable"),
        ({"schema": "CREATE TABLE x (a INT)"}, "schema is a list of SQL statements"),
        ({"lag_threshold": 0}, "lag_threshold is in seconds"),
    ],
)
def test_a_projection_that_cannot_work_is_refused_with_what_to_change(
    bad: dict[str, Any], message: str
) -> None:
    """Each mistake in a definition is named."""
    options: dict[str, Any] = {"name": "ok", "handlers": {Counted: print}, **bad}
    with pytest.raises(ValueError, match=message):
        Projection(**options)


def test_two_projections_of_one_name_are_refused(store: tidings.Store) -> None:
    with pytest.raises(ProjectionError, match="two projections are named 'totals'"):
        store.projections([totals_projection(), totals_projection()])
    with pytest.raises(ProjectionError, match="batch must be above 0"):
        store.projections([totals_projection()], batch=0)


def test_a_running_runner_is_woken_by_a_commit_not_by_its_poll(
    make_store: MakeStore,
) -> None:
    """With a poll of a minute, a committed event reaches the read model within seconds:
    the runner waits on the relay's commit signal (on PostgreSQL the outbox's NOTIFY,
    so the writer has an outbox)."""
    store = make_store(tidings.EventRegistry([Counted, Named]), outbox=True)
    runner = store.projections([totals_projection()], poll=60, heartbeat=60)
    runner.run_once()  # tables made, nothing to apply
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,))
    thread.start()
    try:
        time.sleep(0.3)  # let it settle into its wait (a wait that is not over is the point)
        write(store, [7])
        deadline = time.monotonic() + 20
        while runner.applied < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert runner.applied == 1
        assert rows(store, f"SELECT total FROM {t('totals')}") == [(7,)]
    finally:
        stop.set()
        write(store, [1])  # a commit wakes it to see the stop
        thread.join(70)
        runner.close()
    assert not thread.is_alive()
    assert runner.status()[0].state == "stopped"


def test_an_unreachable_database_in_a_handler_pauses_nothing(store: tidings.Store) -> None:
    """A server that cannot be reached is not the event's fault: the batch is rolled back
    and the error goes up, and the projection is not paused."""
    write(store, [1])

    def down(uow: Any, e: Counted) -> None:
        raise tidings.ServerUnavailableError("the read database is down")

    runner = store.projections([Projection("down", {Counted: down})])
    with pytest.raises(tidings.ServerUnavailableError):
        runner.run_once()
    [status] = runner.status()
    assert (status.state, status.position, status.error) == ("stopped", 0, "")


def test_a_running_runner_waits_out_an_outage_and_goes_on(
    store: tidings.Store, caplog: pytest.LogCaptureFixture
) -> None:
    """While the database fails, run() warns and tries again after a pause; once it
    answers, the events are applied."""
    write(store, [4])
    runner = store.projections([totals_projection()], poll=0.05)
    failures = [2]
    listing = runner._checkpoints.listing
    stop = threading.Event()

    def flaky(uow: Any) -> Any:
        if failures[0]:
            failures[0] -= 1
            raise tidings.ServerUnavailableError("the database is away")
        stop.set()  # answered: this pass applies the event, then the loop ends
        return listing(uow)

    runner._checkpoints.listing = flaky  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, "tidings.application.projections.runner"):
        runner.run(stop)
    assert caplog.text.count("the database is away; trying again in") == 2
    assert rows(store, f"SELECT total FROM {t('totals')}") == [(4,)]
