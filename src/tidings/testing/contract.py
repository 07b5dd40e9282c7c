"""StoreContract: the behaviour every store backend must show, as one pytest suite.

Subclass it in a test module and give it a ``make_store`` fixture: a callable that takes
an ``EventRegistry`` and returns a new, empty ``Store`` (and cleans it up afterwards).
memory, SQLite and PostgreSQL pass it; so must an adapter of your own.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidings.domain.aggregate import Aggregate
from tidings.domain.events import DomainEvent
from tidings.errors import ConcurrencyError, UnitOfWorkError
from tidings.serialization.registry import EventRegistry
from tidings.store import Store
from tidings.testing.fakes import FixedClock, SequentialIds

MakeStore = Callable[[EventRegistry], Store]


@dataclass(frozen=True, kw_only=True)
class Counted(DomainEvent):
    """A counter went up by ``step``."""

    step: int
    note: str = ""


@dataclass(frozen=True, kw_only=True)
class Named(DomainEvent):
    """A counter got a name."""

    name: str


class Counter(Aggregate):
    """The smallest aggregate that records events."""

    def increment(self, step: int = 1, note: str = "") -> None:
        """Record one step."""
        self.record(Counted(step=step, note=note))

    def rename(self, name: str) -> None:
        """Record a new name."""
        self.record(Named(name=name))


def new_id(prefix: str = "counter") -> str:
    """A stream id no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class StoreContract:
    """Store and unit of work: what is published, when, and what is kept on failure."""

    @pytest.fixture
    def store(self, make_store: MakeStore) -> Store:
        """A fresh store that knows the contract's events."""
        return make_store(EventRegistry([Counted, Named]))

    def test_committed_events_can_be_read_back_from_stream_and_log(self, store: Store) -> None:
        """What a unit of work commits is in the stream and the global log, decoded equal."""
        counter = Counter(new_id(), clock=FixedClock(), ids=SequentialIds(new_id("e")))
        counter.increment(2, "first")
        counter.rename("visits")
        recorded = counter.pending_events
        with store.unit_of_work() as uow:
            uow.track(counter)
        assert list(store.read_stream(counter.id)) == list(recorded)
        assert store.read_all() == list(recorded)
        assert store.events.stream_version(counter.id) == 2
        assert counter.pending_events == ()

    def test_events_are_published_only_after_the_commit(self, store: Store) -> None:
        """A handler sees its event already committed: a reader on another thread finds it."""
        seen_by_other_thread: list[int] = []

        def check_committed(event: Counted) -> None:
            def read() -> None:
                seen_by_other_thread.append(store.events.stream_version(event.aggregate_id))

            reader = threading.Thread(target=read)
            reader.start()
            reader.join(timeout=10)

        store.bus.subscribe(Counted, check_committed)
        counter = Counter(new_id())
        counter.increment()
        with store.unit_of_work() as uow:
            uow.track(counter)
            assert seen_by_other_thread == []
        assert seen_by_other_thread == [1]

    def test_an_exception_in_the_block_rolls_back_and_publishes_nothing(self, store: Store) -> None:
        """Nothing is stored or published, and the events stay on the aggregate for a retry."""
        delivered: list[DomainEvent] = []
        store.bus.subscribe(Counted, delivered.append)
        counter = Counter(new_id())
        counter.increment()
        with pytest.raises(RuntimeError, match="payment service down"), store.unit_of_work() as uow:
            uow.track(counter)
            raise RuntimeError("payment service down")
        assert delivered == []
        assert store.read_all() == []
        assert len(counter.pending_events) == 1
        with store.unit_of_work() as uow:
            uow.track(counter)
        assert delivered == list(store.read_stream(counter.id))
        assert len(delivered) == 1

    def test_a_stale_writer_gets_concurrency_error_and_writes_nothing(self, store: Store) -> None:
        """Two writers from one version: one commits; the other's whole unit of work is void."""
        stream = new_id()
        first, second = Counter(stream), Counter(stream)
        first.increment(1)
        second.increment(5)
        bystander = Counter(new_id())
        bystander.increment()
        delivered: list[DomainEvent] = []
        store.bus.subscribe(DomainEvent, delivered.append)
        with store.unit_of_work() as uow:
            uow.track(first)
        with pytest.raises(ConcurrencyError) as caught, store.unit_of_work() as uow:
            uow.track(bystander, second)
        assert (caught.value.stream_id, caught.value.expected_version) == (stream, 0)
        assert caught.value.actual_version == 1
        assert stream in str(caught.value)
        assert [type(e) for e in delivered] == [Counted]
        assert [e.step for e in store.read_stream(stream)] == [1]  # type: ignore[attr-defined]
        assert store.events.stream_version(bystander.id) == 0
        assert len(second.pending_events) == len(bystander.pending_events) == 1

    def test_a_failing_handler_neither_undoes_the_commit_nor_stops_the_others(
        self, store: Store, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The failure is logged with the event id and reported; later handlers still run."""
        after: list[str] = []

        def broken(event: Counted) -> None:
            raise ValueError("smtp refused")

        store.bus.subscribe(Counted, broken, name="mailer")
        store.bus.subscribe(Counted, lambda e: after.append(e.event_id), name="stats")
        counter = Counter(new_id())
        counter.increment()
        with caplog.at_level(logging.ERROR, logger="tidings.bus"), store.unit_of_work() as uow:
            uow.track(counter)
        event_id = uow.published[0].event_id
        assert after == [event_id]
        assert store.events.stream_version(counter.id) == 1
        assert [str(f) for f in uow.handler_failures] == [
            f"handler 'mailer' failed on Counted {event_id}: ValueError('smtp refused')"
        ]
        assert event_id in caplog.text

    def test_events_are_published_in_recorded_order(self, store: Store) -> None:
        """Per aggregate in the order recorded; aggregates in the order they were tracked."""
        delivered: list[tuple[str, int]] = []
        store.bus.subscribe(
            DomainEvent, lambda e: delivered.append((e.aggregate_id, e.aggregate_version))
        )
        a, b = Counter(new_id("a")), Counter(new_id("b"))
        for step in range(1, 6):
            a.increment(step)
            b.increment(step)
        a.rename("a")
        with store.unit_of_work() as uow:
            uow.track(a, b)
            uow.track(a)  # tracking twice changes nothing
        assert delivered == [(a.id, v) for v in range(1, 7)] + [(b.id, v) for v in range(1, 6)]
        log = store.events.read_all()
        assert [r.position for r in log] == list(range(log[0].position, log[0].position + 11))

    def test_the_log_reads_in_pages_and_streams_from_a_version(self, store: Store) -> None:
        """``read_all(after, limit)`` pages by position; ``read_stream`` starts at a version."""
        counter = Counter(new_id())
        for step in range(25):
            counter.increment(step)
        with store.unit_of_work() as uow:
            uow.track(counter)
        everything = store.events.read_all(0, 1000)
        pages, after = [], 0
        while page := store.events.read_all(after, 10):
            pages.append(page)
            after = page[-1].position
        assert [len(p) for p in pages] == [10, 10, 5]
        assert [r for p in pages for r in p] == everything
        tail = list(store.read_stream(counter.id, from_version=21))
        assert [e.aggregate_version for e in tail] == [21, 22, 23, 24, 25]

    def test_four_writers_from_one_version_one_commits_the_others_get_concurrency_error(
        self, store: Store
    ) -> None:
        """Four threads, round after round, each load the stream's version and wait at a
        barrier until all four have it, then write: per round exactly one commits and three
        get ConcurrencyError, and the stream holds the winners' steps, one per version."""
        stream, rounds, threads = new_id(), 8, 4
        loaded = threading.Barrier(threads, timeout=60)  # all hold one version: now write
        settled = threading.Barrier(threads, timeout=60)  # all have written: load again
        outcomes: dict[int, dict[int, str]] = {n: {} for n in range(rounds)}
        errors: list[BaseException] = []

        def worker(worker_no: int) -> None:
            try:
                for round_no in range(rounds):
                    counter = Counter(stream, version=store.events.stream_version(stream))
                    counter.increment(round_no * 1000 + worker_no)
                    loaded.wait()
                    try:
                        with store.unit_of_work() as uow:
                            uow.track(counter)
                        outcomes[round_no][worker_no] = "committed"
                    except ConcurrencyError:
                        outcomes[round_no][worker_no] = "conflict"
                    settled.wait()
            except BaseException as exc:
                errors.append(exc)
                loaded.abort()  # the others stop waiting for this one
                settled.abort()

        pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join(timeout=120)
        assert not errors, errors
        for round_no, outcome in outcomes.items():
            assert sorted(outcome.values()) == ["committed"] + ["conflict"] * (threads - 1), (
                f"round {round_no}: {outcome}"
            )
        winners = [
            round_no * 1000 + worker_no
            for round_no, outcome in outcomes.items()
            for worker_no, result in outcome.items()
            if result == "committed"
        ]
        events = list(store.read_stream(stream))
        versions = [e.aggregate_version for e in events]
        assert versions == list(range(1, rounds + 1)), f"versions {versions}"
        steps = [e.step for e in events]  # type: ignore[attr-defined]
        assert steps == winners, f"the stream holds {steps}, the winners wrote {winners}"

    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(
        writes=st.lists(
            st.tuples(st.integers(0, 2), st.integers(-1, 1), st.integers(1, 3)),
            min_size=1,
            max_size=10,
        )
    )
    def test_appends_behave_like_a_list_per_stream(
        self, store: Store, writes: list[tuple[int, int, int]]
    ) -> None:
        """Random writes, some from a wrong version: exactly the right ones land, in order."""
        prefix = new_id("model")
        model = [0, 0, 0]
        expected_log: list[tuple[str, int]] = []
        for stream_no, skew, count in writes:
            stream = f"{prefix}-{stream_no}"
            loaded_at = max(model[stream_no] + skew, 0)
            counter = Counter(stream, version=loaded_at)
            for _ in range(count):
                counter.increment()
            refused: ConcurrencyError | None = None
            try:
                with store.unit_of_work() as uow:
                    uow.track(counter)
            except ConcurrencyError as exc:
                refused = exc
            if refused is not None:
                assert loaded_at != model[stream_no]
                assert refused.actual_version == model[stream_no]
                continue
            assert loaded_at == model[stream_no]
            expected_log += [(stream, model[stream_no] + i) for i in range(1, count + 1)]
            model[stream_no] += count
        log, after = [], 0
        while page := store.events.read_all(after, 500):
            log += [(r.stream_id, r.version) for r in page if r.stream_id.startswith(prefix)]
            after = page[-1].position
        assert log == expected_log
        assert [store.events.stream_version(f"{prefix}-{n}") for n in range(3)] == model

    def test_a_unit_of_work_runs_once_and_only_inside_its_block(self, store: Store) -> None:
        """Reusing it, or tracking after it ended, is a clear ``UnitOfWorkError``."""
        uow = store.unit_of_work()
        with uow:
            pass
        with pytest.raises(UnitOfWorkError, match="runs once"), uow:
            pass
        with pytest.raises(UnitOfWorkError, match="not open"):
            uow.track(Counter(new_id()))
