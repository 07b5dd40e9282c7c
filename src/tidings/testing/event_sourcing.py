"""EventSourcingContract: repositories and snapshots on every backend, as one pytest suite.

Subclass it with a ``make_store`` fixture, like ``StoreContract``. The aggregate is
``Tally`` (``tidings.testing.tally``): it adds up steps and takes snapshots.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidings.application.repository import EventSourcedRepository
from tidings.errors import AggregateNotFoundError, ConcurrencyError, ConfigurationError
from tidings.records import SnapshotRecord
from tidings.serialization.registry import EventRegistry
from tidings.store import Store
from tidings.testing.contract import Counted, MakeStore, Named, new_id
from tidings.testing.fakes import FixedClock
from tidings.testing.tally import Tally, TallyState, tally_commands

T0 = datetime(2025, 1, 10, 9, 0, tzinfo=UTC)


class TallyV2(Tally):
    """Tally after its snapshot state changed shape: snapshots of version 1 must be ignored."""

    aggregate_type = "Tally"
    snapshot_version = 2


def save_steps(
    store: Store, tallies: EventSourcedRepository[Tally], tally: Tally, steps: list[int]
) -> None:
    """Add each step and save it through the repository, one unit of work per step."""
    for step in steps:
        tally.add(step)
        with store.unit_of_work() as uow:
            tallies.save(uow, tally)


class EventSourcingContract:
    """Load by replay, at a version or a time; snapshots: when, which, and never misread."""

    @pytest.fixture
    def store(self, make_store: MakeStore) -> Store:
        """A fresh store that knows the contract's events."""
        return make_store(EventRegistry([Counted, Named]))

    @pytest.fixture
    def clock(self) -> FixedClock:
        """A clock at 2025-01-10 09:00 UTC, moved by hand."""
        return FixedClock(T0)

    def test_a_saved_aggregate_is_rebuilt_from_its_events(self, store: Store) -> None:
        """The loaded Tally has the state, version and no pending events; events published."""
        published: list[object] = []
        store.bus.subscribe(Counted, published.append)
        tallies = store.repository(Tally)
        tally = Tally(new_id("tally"))
        tally_commands(tally, [(2, "a"), (-1, "visits"), (5, "")])
        with store.unit_of_work() as uow:
            tallies.save(uow, tally)
        loaded = tallies.get(tally.id)
        assert loaded.to_snapshot() == TallyState(total=7, name="visits", notes=("a",))
        assert (loaded.version, loaded.stored_version, loaded.pending_events) == (3, 3, ())
        assert len(published) == 2

    def test_an_aggregate_loads_at_a_version_or_as_of_a_time(
        self, store: Store, clock: FixedClock
    ) -> None:
        """Steps 1, 2, 3 at 09:00, 09:05, 09:10: version 2 and 'as of 09:07' are total 3."""
        tallies = store.repository(Tally, clock=clock)
        tally = Tally(new_id("tally"), clock=clock)
        for step in (1, 2, 3):
            tally.add(step)
            with store.unit_of_work() as uow:
                tallies.save(uow, tally)
            clock.advance(minutes=5)
        at_two = tallies.get(tally.id, version=2)
        then = tallies.get(tally.id, as_of=T0 + timedelta(minutes=7))
        assert (at_two.total, at_two.version) == (then.total, then.version) == (3, 2)
        assert tallies.get(tally.id, as_of=T0).total == 1
        with pytest.raises(ValueError, match="not both"):
            tallies.get(tally.id, version=1, as_of=T0)

    def test_a_missing_aggregate_raises_not_found(self, store: Store) -> None:
        """No events, no version 9, or a time before the first event: AggregateNotFoundError."""
        tallies = store.repository(Tally)
        with pytest.raises(AggregateNotFoundError, match="'nobody' has no events"):
            tallies.get("nobody")
        tally = Tally(new_id("tally"), clock=FixedClock(T0))
        tally.add(1)
        with store.unit_of_work() as uow:
            tallies.save(uow, tally)
        with pytest.raises(AggregateNotFoundError, match=r"no version 9.*ends at version 1"):
            tallies.get(tally.id, version=9)
        with pytest.raises(AggregateNotFoundError, match="did not exist yet"):
            tallies.get(tally.id, as_of=T0 - timedelta(days=1))
        with pytest.raises(ValueError, match="start at 1"):
            tallies.get(tally.id, version=0)

    def test_a_stale_aggregate_is_refused_and_its_snapshot_rolled_back(self, store: Store) -> None:
        """Two loads of version 1 both change it: the second save is a ConcurrencyError and
        leaves neither its events nor its snapshot behind."""
        tallies = store.repository(Tally, snapshot_every=2)
        tally = Tally(new_id("tally"))
        save_steps(store, tallies, tally, [1])
        first, second = tallies.get(tally.id), tallies.get(tally.id)
        first.add(10)
        second.add(100)
        with store.unit_of_work() as uow:
            tallies.save(uow, first)
        with pytest.raises(ConcurrencyError), store.unit_of_work() as uow:
            tallies.save(uow, second)
        loaded = tallies.load(tally.id)
        assert (loaded.aggregate.total, loaded.snapshot_at) == (11, 2)
        snapshot = store.snapshots.load_latest(tally.id, "Tally", 1)  # type: ignore[union-attr]
        assert snapshot is not None
        assert b"11" in snapshot.state

    def test_a_snapshot_is_taken_every_n_events_from_memory(self, store: Store) -> None:
        """With snapshot_every=3, seven single saves leave snapshots at 3 and 6; loading
        starts at 6 and applies one event. A save that crosses several multiples takes one
        snapshot, at its own version."""
        tallies = store.repository(Tally, snapshot_every=3)
        tally = Tally(new_id("tally"))
        save_steps(store, tallies, tally, [1, 2, 3, 4, 5, 6, 7])
        loaded = tallies.load(tally.id)
        assert (loaded.snapshot_at, loaded.replayed, loaded.aggregate.total) == (6, 1, 28)
        assert tallies.load(tally.id, version=5).snapshot_at == 3
        batch = Tally(new_id("tally"))
        for step in range(8):
            batch.add(step)
        with store.unit_of_work() as uow:
            tallies.save(uow, batch)
        loaded = tallies.load(batch.id)
        assert (loaded.snapshot_at, loaded.replayed) == (8, 0)
        assert tallies.load(batch.id, version=7).snapshot_at == 0

    def test_a_snapshot_is_taken_on_demand(self, store: Store) -> None:
        """``snapshot(aggregate)`` for a saved one, ``save(..., snapshot=True)`` with new
        events; an aggregate with unsaved events cannot be snapshotted on its own."""
        tallies = store.repository(Tally)
        tally = Tally(new_id("tally"))
        save_steps(store, tallies, tally, [1, 2])
        tallies.snapshot(tally)
        assert tallies.load(tally.id).snapshot_at == 2
        tally.add(3)
        with pytest.raises(ValueError, match="unsaved events"):
            tallies.snapshot(tally)
        with store.unit_of_work() as uow:
            tallies.save(uow, tally, snapshot=True)
        assert (tallies.load(tally.id).snapshot_at, tallies.get(tally.id).total) == (3, 6)

    def test_a_temporal_load_never_starts_from_a_newer_snapshot(
        self, store: Store, clock: FixedClock
    ) -> None:
        """Snapshots at 3 and 6: version 4 starts at 3, version 2 replays from the start,
        and 'as of' picks by the version that time gives; all equal a full replay."""
        tallies = store.repository(Tally, snapshot_every=3, clock=clock)
        tally = Tally(new_id("tally"), clock=clock)
        for step in range(1, 8):
            tally.add(step)
            with store.unit_of_work() as uow:
                tallies.save(uow, tally)
            clock.advance(minutes=5)
        plain = store.repository(Tally)  # no snapshot_every: still uses snapshots to load
        for version, start in ((2, 0), (3, 3), (4, 3), (6, 6), (7, 6)):
            loaded = tallies.load(tally.id, version=version)
            replayed = Tally.reconstitute(tally.id, store.read_stream(tally.id, 1, version))
            assert loaded.snapshot_at == start
            assert loaded.aggregate.to_snapshot() == replayed.to_snapshot()
            assert plain.load(tally.id, version=version).snapshot_at == start
        as_of = tallies.load(tally.id, as_of=T0 + timedelta(minutes=27))  # events 1..6
        assert (as_of.snapshot_at, as_of.aggregate.version) == (6, 6)
        as_of = tallies.load(tally.id, as_of=T0 + timedelta(minutes=22))  # events 1..5
        assert (as_of.snapshot_at, as_of.aggregate.total) == (3, 15)

    def test_a_snapshot_of_an_older_shape_is_ignored_and_the_state_rebuilt(
        self, store: Store
    ) -> None:
        """Snapshots written at snapshot_version 1 are not read by TallyV2 (version 2): it
        replays every event, then takes and uses its own snapshots."""
        old = store.repository(Tally, snapshot_every=2)
        tally = Tally(new_id("tally"))
        save_steps(store, old, tally, [1, 2, 3, 4])
        new = store.repository(TallyV2, snapshot_every=2)
        loaded = new.load(tally.id)
        assert (loaded.snapshot_at, loaded.replayed, loaded.aggregate.total) == (0, 4, 10)
        v2 = loaded.aggregate
        v2.add(5)
        v2.add(6)
        with store.unit_of_work() as uow:
            new.save(uow, v2)
        assert new.load(tally.id).snapshot_at == 6
        assert old.load(tally.id).snapshot_at == 4

    def test_a_snapshot_that_does_not_fit_its_type_is_ignored_with_a_warning(
        self, store: Store, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A snapshot of the right version whose state does not decode: logged, never
        trusted; the state comes from the events."""
        tallies = store.repository(Tally)
        tally = Tally(new_id("tally"))
        save_steps(store, tallies, tally, [1, 2])
        bad = SnapshotRecord(tally.id, 2, "Tally", 1, b'{"total": "lots"}', T0)
        with store.database.transaction() as tx:
            store.snapshots.save(tx, bad)  # type: ignore[union-attr]
        with caplog.at_level(logging.WARNING, logger="tidings.repository"):
            loaded = tallies.load(tally.id)
        assert (loaded.snapshot_at, loaded.aggregate.total) == (0, 3)
        assert "snapshot_version" in caplog.text

    def test_snapshots_need_a_class_that_declares_them(self, store: Store) -> None:
        """snapshot_every on a class without snapshot_version is refused at once."""

        class Plain(Tally):
            """A Tally that takes no snapshots."""

            snapshot_version = 0

        with pytest.raises(ConfigurationError, match="takes no snapshots"):
            store.repository(Plain, snapshot_every=10)
        with pytest.raises(ConfigurationError, match="1 or more"):
            store.repository(Tally, snapshot_every=0)

    @settings(
        max_examples=20,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(
        commands=st.lists(
            st.tuples(st.integers(-1, 9), st.sampled_from(["", "x", "y"])),
            min_size=1,
            max_size=25,
        ),
        every=st.integers(1, 7),
        batch=st.integers(1, 4),
    )
    def test_snapshot_and_tail_equal_a_full_replay_for_any_n(
        self, store: Store, commands: list[tuple[int, str]], every: int, batch: int
    ) -> None:
        """Whatever the commands, N and batch size: a load from snapshot + tail has the
        state of a replay of every event, and of the aggregate that recorded them."""
        tallies = store.repository(Tally, snapshot_every=every)
        tally = Tally(new_id("tally"))
        for start in range(0, len(commands), batch):
            tally_commands(tally, commands[start : start + batch])
            with store.unit_of_work() as uow:
                tallies.save(uow, tally)
        loaded = tallies.load(tally.id)
        replayed = Tally.reconstitute(tally.id, store.read_stream(tally.id))
        assert loaded.aggregate.to_snapshot() == replayed.to_snapshot() == tally.to_snapshot()
        assert loaded.aggregate.version == replayed.version == len(commands)
        assert (loaded.snapshot_at > 0) == (len(commands) >= every)
        assert loaded.snapshot_at + loaded.replayed == len(commands)
        assert loaded.replayed < every  # the tail is shorter than the snapshot interval
