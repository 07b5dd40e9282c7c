"""EventStoreContract: how every event store appends and reads, as one pytest suite.

Subclass it with a ``make_store`` fixture, like ``StoreContract``: stream reads from and
to a version, as of a time, stream information, the global log in pages, and the three
kinds of expected version.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidings.application.event_log import iter_log
from tidings.errors import ConcurrencyError
from tidings.ports import ANY_VERSION, NO_STREAM, Transaction
from tidings.records import EventRecord, StreamInfo
from tidings.serialization.registry import EventRegistry
from tidings.store import Store
from tidings.testing.contract import Counted, Counter, MakeStore, Named, new_id
from tidings.testing.fakes import FixedClock
from tidings.testing.tally import Tally

T0 = datetime(2025, 1, 10, 9, 0, tzinfo=UTC)


class FailAfterAppend:
    """An event writer that fails, so its unit of work rolls back after the append."""

    def write(self, tx: Transaction, records: Sequence[EventRecord]) -> None:
        """Refuse, as a later step of the same transaction might."""
        raise RuntimeError("failed on purpose after the append")


def save_one_by_one(store: Store, tally: Tally, steps: list[int], clock: FixedClock) -> None:
    """Add each step in a unit of work of its own, the clock five minutes later each time."""
    for step in steps:
        tally.add(step)
        with store.unit_of_work() as uow:
            uow.track(tally)
        clock.advance(minutes=5)


def versions(records: object) -> list[int]:
    """The versions of an iterable of records."""
    return [r.version for r in records]  # type: ignore[attr-defined]


class EventStoreContract:
    """Appends with expected versions; stream, temporal and paged reads."""

    @pytest.fixture
    def store(self, make_store: MakeStore) -> Store:
        """A fresh store that knows the contract's events."""
        return make_store(EventRegistry([Counted, Named]))

    @pytest.fixture
    def clock(self) -> FixedClock:
        """A clock at 2025-01-10 09:00 UTC that tests move by hand."""
        return FixedClock(T0)

    def test_count_is_the_number_of_committed_events(self, store: Store) -> None:
        """Empty at first; a rolled-back append does not count."""
        assert store.events.count() == 0
        tally = Tally(new_id("tally"))
        tally.add(1)
        tally.add(2)
        with store.unit_of_work() as uow:
            uow.track(tally)
        tally.add(3)
        with pytest.raises(RuntimeError), store.unit_of_work() as uow:
            uow.track(tally)
            raise RuntimeError("rolled back")
        assert store.events.count() == 2

    def test_a_stream_reads_exactly_the_versions_asked_for(self, store: Store) -> None:
        """``from_version`` and ``to_version`` are inclusive; past the end there is nothing."""
        tally = Tally(new_id("tally"))
        for step in range(12):
            tally.add(step)
        with store.unit_of_work() as uow:
            uow.track(tally)
        read = store.events.read_stream
        assert versions(read(tally.id)) == list(range(1, 13))
        assert versions(read(tally.id, 5)) == list(range(5, 13))
        assert versions(read(tally.id, 5, 7)) == [5, 6, 7]
        assert versions(read(tally.id, to_version=3)) == [1, 2, 3]
        assert versions(read(tally.id, 10, 99)) == [10, 11, 12]
        assert versions(read(tally.id, 13)) == []
        assert versions(read(tally.id, 1, 0)) == versions(read(tally.id, 1, -1)) == []
        assert versions(read(new_id("missing"))) == []
        assert [e.step for e in store.read_stream(tally.id, 3, 4)] == [2, 3]  # type: ignore[attr-defined]

    def test_stream_info_gives_the_version_and_the_first_and_last_times(
        self, store: Store, clock: FixedClock
    ) -> None:
        """Version and the occurred_at of the first and last events; a missing stream is
        version 0 with no times."""
        tally = Tally(new_id("tally"), clock=clock)
        save_one_by_one(store, tally, [1, 2, 3], clock)
        info = store.stream_info(tally.id)
        assert info == StreamInfo(tally.id, 3, T0, T0 + timedelta(minutes=10))
        assert info.exists
        missing = store.events.stream_info("nobody")
        assert missing == StreamInfo("nobody", 0, None, None)
        assert not missing.exists

    def test_a_stream_as_of_a_time_holds_the_events_that_occurred_by_then(
        self, store: Store, clock: FixedClock
    ) -> None:
        """Events at 09:00, 09:05, 09:10: as of 09:05 (in any time zone) the first two."""
        tally = Tally(new_id("tally"), clock=clock)
        save_one_by_one(store, tally, [1, 2, 3], clock)
        at_0905 = T0 + timedelta(minutes=5)
        in_paris = at_0905.astimezone(timezone(timedelta(hours=1)))
        for moment in (at_0905, in_paris, at_0905 + timedelta(minutes=4, seconds=59)):
            assert versions(store.events.read_stream(tally.id, as_of=moment)) == [1, 2]
            assert store.stream_info(tally.id, moment) == StreamInfo(tally.id, 2, T0, at_0905)
        before = T0 - timedelta(microseconds=1)
        assert versions(store.events.read_stream(tally.id, as_of=before)) == []
        assert store.stream_info(tally.id, before) == StreamInfo(tally.id)
        assert store.stream_info(tally.id, T0 + timedelta(days=1)).version == 3
        assert versions(store.events.read_stream(tally.id, 2, as_of=at_0905)) == [2]

    def test_as_of_ends_at_the_first_later_event_even_when_the_clock_went_back(
        self, store: Store, clock: FixedClock
    ) -> None:
        """09:00, 09:10, then 09:02 (a clock set back): as of 09:05 is version 1 only, the
        stream's prefix, never a state with a hole in its history."""
        tally = Tally(new_id("tally"), clock=clock)
        save_one_by_one(store, tally, [1], clock)
        clock.now = T0 + timedelta(minutes=10)
        save_one_by_one(store, tally, [2], clock)
        clock.now = T0 + timedelta(minutes=2)
        save_one_by_one(store, tally, [3], clock)
        as_of = T0 + timedelta(minutes=5)
        assert versions(store.events.read_stream(tally.id, as_of=as_of)) == [1]
        assert store.stream_info(tally.id, as_of).version == 1

    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(
        minutes=st.lists(st.integers(0, 30), min_size=1, max_size=12),
        start=st.integers(-1, 14),
        end=st.none() | st.integers(-1, 14),
        as_of=st.none() | st.integers(-1, 31),
    )
    def test_stream_reads_agree_with_a_list_model(
        self, store: Store, minutes: list[int], start: int, end: int | None, as_of: int | None
    ) -> None:
        """Random event times (the clock may go back or stand still), bounds and times:
        ``read_stream`` and ``stream_info`` give what slicing a list gives."""
        clock = FixedClock(T0)
        tally = Tally(new_id("tally"), clock=clock)
        times = [T0 + timedelta(minutes=m) for m in minutes]
        for moment in times:
            clock.now = moment
            tally.add(1)
        with store.unit_of_work() as uow:
            uow.track(tally)
        when = None if as_of is None else T0 + timedelta(minutes=as_of)
        prefix = (
            len(times)
            if when is None
            else next((i for i, t in enumerate(times) if t > when), len(times))
        )
        top = prefix if end is None else min(end, prefix)
        read = store.events.read_stream(tally.id, start, end, as_of=when)
        assert versions(read) == list(range(max(start, 1), top + 1))
        info = store.stream_info(tally.id, when)
        assert info.version == prefix
        if prefix:
            assert (info.first_occurred_at, info.last_occurred_at) == (times[0], times[prefix - 1])

    def test_a_time_without_a_zone_is_refused(self, store: Store) -> None:
        """A naive datetime is ambiguous: ValueError naming the fix, for both reads."""
        naive = datetime(2025, 1, 10, 9, 0)
        with pytest.raises(ValueError, match="no time zone"):
            list(store.events.read_stream("s", as_of=naive))
        with pytest.raises(ValueError, match="no time zone"):
            store.stream_info("s", naive)

    def test_the_log_iterates_in_pages_from_any_position(self, store: Store) -> None:
        """``iter_log`` gives what ``read_all`` gives, page after page, from any position."""
        for _ in range(3):
            counter = Counter(new_id())
            for step in range(9):
                counter.increment(step)
            with store.unit_of_work() as uow:
                uow.track(counter)
        everything = store.events.read_all(0, 1000)
        assert list(iter_log(store.events, page=4)) == everything
        middle = everything[10].position
        assert list(iter_log(store.events, middle, page=5)) == everything[11:]
        assert list(iter_log(store.events, everything[-1].position)) == []
        assert [e.event_id for e in store.iter_all(page=7)] == [r.event_id for r in everything]
        with pytest.raises(ValueError, match="at least 1"):
            next(iter_log(store.events, page=0))

    def test_the_log_is_read_past_the_place_of_a_rolled_back_write(self, store: Store) -> None:
        """A unit of work that appended and then rolled back (a later writer failed) leaves
        nothing a reader stops at for good: reading after the event before it gives the
        event committed after it. (PostgreSQL may hold the read while any older
        transaction runs on its server, so the read is asked again for a while.)"""
        before, after = Counter(new_id()), Counter(new_id())
        before.increment(1)
        with store.unit_of_work() as uow:
            uow.track(before)
        lost = Counter(new_id())
        lost.increment(2)
        store.writers.append(FailAfterAppend())
        with pytest.raises(RuntimeError, match="after the append"), store.unit_of_work() as uow:
            uow.track(lost)
        store.writers.pop()
        after.increment(3)
        with store.unit_of_work() as uow:
            uow.track(after)
        checkpoint = store.events.read_all(0)[0].position
        deadline = time.monotonic() + 30
        while not (page := store.events.read_all(checkpoint)):
            assert time.monotonic() < deadline, "read_all after the first event stayed empty"
            time.sleep(0.05)
        assert [r.stream_id for r in page] == [after.id]

    def test_no_stream_appends_only_to_a_new_stream(self, store: Store) -> None:
        """NO_STREAM (0) starts a stream; on one that exists it is a ConcurrencyError."""
        stream = new_id()
        assert self.append(store, stream, 2, NO_STREAM) == [1, 2]
        with pytest.raises(ConcurrencyError) as caught:
            self.append(store, stream, 1, NO_STREAM)
        assert (caught.value.expected_version, caught.value.actual_version) == (0, 2)
        assert store.events.stream_version(stream) == 2

    def test_any_version_appends_at_the_end_whatever_the_version(self, store: Store) -> None:
        """ANY_VERSION skips the check and numbers the records after the last one."""
        stream = new_id()
        assert self.append(store, stream, 1, ANY_VERSION) == [1]
        assert self.append(store, stream, 2, ANY_VERSION) == [2, 3]
        assert versions(store.events.read_stream(stream)) == [1, 2, 3]

    def test_a_wrong_expected_version_names_everything_and_writes_nothing(
        self, store: Store
    ) -> None:
        """Expected 1 on a stream at 2: the error names stream, expected and actual; neither
        the stream nor the log changed."""
        stream = new_id()
        self.append(store, stream, 2, NO_STREAM)
        log_before = store.events.read_all(0, 1000)
        for expected in (1, 3):
            with pytest.raises(ConcurrencyError) as caught:
                self.append(store, stream, 2, expected)
            error = caught.value
            assert (error.stream_id, error.expected_version, error.actual_version) == (
                stream,
                expected,
                2,
            )
            assert f"version 2, but this write expected version {expected}" in str(error)
        assert store.events.read_all(0, 1000) == log_before

    def test_one_record_at_a_wrong_expected_version_is_refused_and_writes_nothing(
        self, store: Store
    ) -> None:
        """The single-event append (the common unit of work) checks as the batch does:
        expected 0, 1 or 3 on a stream at 2 is a ConcurrencyError naming version 2."""
        stream = new_id()
        self.append(store, stream, 2, NO_STREAM)
        log_before = store.events.read_all(0, 1000)
        for expected in (0, 1, 3):
            with pytest.raises(ConcurrencyError) as caught:
                self.append(store, stream, 1, expected)
            assert (caught.value.expected_version, caught.value.actual_version) == (expected, 2)
        assert store.events.read_all(0, 1000) == log_before
        assert self.append(store, stream, 1, 2) == [3]

    def test_append_returns_positioned_records_and_leaves_the_callers_as_they_were(
        self, store: Store
    ) -> None:
        """The records come back with their places in the log; the caller's own records
        (frozen values it may still hold) keep position 0."""
        counter = Counter(new_id(), version=0)
        counter.increment(1)
        counter.increment(2)
        records = [store.codec.encode(e) for e in counter.pending_events]
        with store.database.transaction() as tx:
            stored = store.events.append(tx, records, NO_STREAM)
        assert [r.position for r in records] == [0, 0]
        assert [r.position for r in stored] == [r.position for r in store.events.read_all(0)]
        assert [r.position for r in stored] == sorted({r.position for r in stored if r.position})
        assert [replace(r, position=0) for r in stored] == records

    @staticmethod
    def append(store: Store, stream: str, count: int, expected: int) -> list[int]:
        """Append ``count`` Counted records to ``stream`` straight through the port."""
        counter = Counter(stream, version=max(expected, 0))
        for step in range(count):
            counter.increment(step)
        records: list[EventRecord] = [store.codec.encode(e) for e in counter.pending_events]
        with store.database.transaction() as tx:
            stored = store.events.append(tx, records, expected)
        return [r.version for r in stored]
