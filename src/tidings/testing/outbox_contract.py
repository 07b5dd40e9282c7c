"""OutboxContract: the behaviour of every outbox backend and of the relay on top of it.

Subclass it in a test module with a ``make_store`` fixture (as for ``StoreContract``);
the factory is called as ``make_store(registry, outbox=True)``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from tidings.application.backoff import Backoff
from tidings.errors import BrokerBusyError, BrokerUnavailableError, LeaseCountError
from tidings.ports import OUTBOX_LANES, OutgoingMessage, Settlement
from tidings.serialization.registry import EventRegistry
from tidings.store import Store
from tidings.testing.contract import Counted, Counter, Named, new_id
from tidings.testing.transport import RecordingTransport, plain_message
from tidings.workers.relay import Relay

MakeStore = Callable[..., Store]
NOW = 1_000_000.0
TTL = 10.0


def commit(store: Store, *counters: Counter) -> None:
    """Save the pending events of ``counters`` in one unit of work."""
    with store.unit_of_work() as uow:
        uow.track(*counters)


def counters_with_events(store: Store, streams: int, each: int) -> list[Counter]:
    """``streams`` new counters with ``each`` events, committed one counter at a time."""
    made = []
    for _ in range(streams):
        counter = Counter(new_id())
        for step in range(each):
            counter.increment(step)
        commit(store, counter)
        made.append(counter)
    return made


def relay_of(store: Store, transport: RecordingTransport, **options: Any) -> Relay:
    """A relay on ``store`` with the plain test encoding and no jitter."""
    options.setdefault("backoff", Backoff(base=60.0, jitter=0.0))
    return store.relay(transport, plain_message, **options)


def drain(relay: Relay, passes: int = 50) -> None:
    """Run passes until one claims nothing."""
    for _ in range(passes):
        if relay.run_once() == 0:
            return
    raise AssertionError(f"the relay still had work after {passes} passes")


class GatedOutbox:
    """An outbox whose settles wait for ``gate``, noting each claim's limit, skip and the
    positions claimed: it holds a settle "on its way" for as long as a test needs."""

    def __init__(
        self,
        inner: Any,
        gate: threading.Event,
        open_at_claim: int = 0,
        *,
        free: int = 0,
        patience: float = 30.0,
    ) -> None:
        self.inner, self.gate = inner, gate
        self.open_at_claim = open_at_claim  # open the gate after this claim (1 = the first)
        self.free = free  # settles that pass before the gate holds any
        self.patience = patience  # seconds a settle waits for the gate before it fails
        self.claims: list[tuple[int, frozenset[int], list[int]]] = []
        self.settled: list[list[int]] = []  # the published rows of each settle
        self.at_gate = threading.Event()  # a settle has reached the gate

    def claim(self, leases: Any, lanes: int, limit: int, now: float, skip: Any = ()) -> Any:
        """The inner claim, noted."""
        entries = self.inner.claim(leases, lanes, limit, now, skip)
        self.claims.append((limit, frozenset(skip), [e.record.position for e in entries]))
        if len(self.claims) == self.open_at_claim:
            self.gate.set()
        return entries

    def settle(self, relay_id: str, leases: Any, outcome: Settlement) -> bool:
        """The inner settle, once the gate is open."""
        if len(self.settled) >= self.free:
            self.at_gate.set()
            if not self.gate.wait(self.patience):
                raise AssertionError("the gate never opened")
        self.settled.append(list(outcome.published))
        return bool(self.inner.settle(relay_id, leases, outcome))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def by_stream(messages: list[OutgoingMessage]) -> dict[str, list[str]]:
    """Message ids per aggregate, in the order they were confirmed."""
    streams: dict[str, list[str]] = {}
    for message in messages:
        streams.setdefault(message.ordering_key, []).append(message.message_id)
    return streams


class OutboxContract:
    """Outbox rows, lanes, fencing, parking, dead letters, and the relay's guarantees."""

    @pytest.fixture
    def store(self, make_store: MakeStore) -> Store:
        """A fresh store with an outbox."""
        return make_store(EventRegistry([Counted, Named]), outbox=True)

    def test_rows_commit_with_the_events_and_never_without(self, store: Store) -> None:
        """A committed unit of work leaves outbox rows; a rolled-back one leaves none."""
        assert store.outbox is not None
        counter = Counter(new_id())
        counter.increment()
        counter.increment()
        with pytest.raises(RuntimeError), store.unit_of_work() as uow:
            uow.track(counter)
            raise RuntimeError("rolled back")
        assert store.outbox.stats(time.time()).backlog == 0
        commit(store, counter)
        assert store.outbox.stats(time.time()).backlog == 2

    def test_with_an_outbox_the_unit_of_work_leaves_delivery_to_the_relay(
        self, store: Store
    ) -> None:
        """Handlers are not called at commit (the relay delivers), so nothing arrives twice."""
        delivered: list[object] = []
        store.bus.subscribe(Counted, delivered.append)
        counters_with_events(store, 1, 1)
        assert delivered == []

    def test_the_relay_publishes_every_event_once_in_order(self, store: Store) -> None:
        """Five aggregates with four events each: all twenty published, each in order."""
        counters = counters_with_events(store, 5, 4)
        transport = RecordingTransport()
        relay = relay_of(store, transport, batch_size=7)
        drain(relay)
        streams = by_stream(transport.confirmed)
        for counter in counters:
            recorded = [e.event_id for e in store.read_stream(counter.id)]
            assert streams[counter.id] == recorded
        assert sorted(transport.ids()) == sorted(set(transport.ids()))
        assert store.outbox.stats(time.time()).backlog == 0  # type: ignore[union-attr]
        assert relay.stats.published == 20

    def test_a_refused_event_holds_back_its_aggregate_only(self, store: Store) -> None:
        """The first event of one aggregate is refused: its later events wait, others flow."""
        stuck, free = counters_with_events(store, 2, 3)
        first = next(iter(store.read_stream(stuck.id))).event_id
        transport = RecordingTransport(lambda m: "refused" if m.message_id == first else None)
        relay = relay_of(store, transport)
        drain(relay)
        streams = by_stream(transport.confirmed)
        assert stuck.id not in streams
        assert len(streams[free.id]) == 3
        assert transport.attempts.count(first) == 1  # parked until its next attempt is due
        transport.refuse = lambda m: None
        relay.clock = lambda: time.time() + 3600  # the retry is due now
        drain(relay)
        assert by_stream(transport.confirmed)[stuck.id] == [
            e.event_id for e in store.read_stream(stuck.id)
        ]

    def test_a_large_batch_in_groups_keeps_every_order(self, store: Store) -> None:
        """Six aggregates, four events each, in groups of two: one refusal holds back only
        its own aggregate's later events, across groups; the rest is settled."""
        counters = counters_with_events(store, 6, 4)
        stuck = counters[2]
        second = [e.event_id for e in store.read_stream(stuck.id)][1]
        transport = RecordingTransport(lambda m: "refused" if m.message_id == second else None)
        relay = relay_of(store, transport, batch_size=100, publish_chunk=2)
        assert relay.run_once() == 24
        streams = by_stream(transport.confirmed)
        for counter in counters:
            recorded = [e.event_id for e in store.read_stream(counter.id)]
            assert streams[counter.id] == (recorded[:1] if counter is stuck else recorded)
        assert transport.attempts.count(second) == 1
        assert relay.stats.published == 21
        assert store.outbox.stats(time.time()).backlog == 3  # type: ignore[union-attr]

    def test_a_broker_outage_mid_batch_keeps_what_it_confirmed(self, store: Store) -> None:
        """The broker goes away after the first group: that group is settled, nothing is
        lost, and the next pass publishes the rest in order."""
        counters = counters_with_events(store, 4, 2)

        class GoesAway(RecordingTransport):
            calls_left = 1  # then it is down, until told otherwise

            def publish(self, messages: Sequence[OutgoingMessage]) -> list[str | None]:
                self.down = self.down or self.calls_left == 0
                self.calls_left -= 1
                return super().publish(messages)

        transport = GoesAway()
        relay = relay_of(store, transport, publish_chunk=2)
        with pytest.raises(BrokerUnavailableError):
            relay.run_once()
        assert relay.stats.published == 2
        assert store.outbox.stats(time.time()).backlog == 6  # type: ignore[union-attr]
        transport.down, transport.calls_left = False, -1
        drain(relay)
        streams = by_stream(transport.confirmed)
        for counter in counters:
            assert streams[counter.id] == [e.event_id for e in store.read_stream(counter.id)]

    def test_an_event_that_keeps_failing_is_dead_lettered_and_parks_its_aggregate(
        self, store: Store
    ) -> None:
        """After max_attempts it is a dead letter; the aggregate waits for retry or purge."""
        (poisoned,) = counters_with_events(store, 1, 2)
        first, second = (e.event_id for e in store.read_stream(poisoned.id))
        transport = RecordingTransport(lambda m: "too big" if m.message_id == first else None)
        relay = relay_of(store, transport, max_attempts=2, backoff=Backoff(base=0.0, jitter=0))
        drain(relay)
        box = store.outbox
        assert box is not None
        [letter] = box.dead_letters()
        assert (letter.record.event_id, letter.attempts, letter.error) == (first, 2, "too big")
        assert transport.ids() == []  # the second event waits behind the dead letter
        assert box.stats(time.time()).dead_letters == 1
        transport.refuse = lambda m: None
        assert box.retry_dead([first]) == 1
        drain(relay)
        assert transport.ids() == [first, second]
        assert box.dead_letters() == []

    def test_purging_a_dead_letter_lets_the_later_events_flow(self, store: Store) -> None:
        """Purge removes the dead letter for good; the aggregate's next events go out."""
        (counter,) = counters_with_events(store, 1, 2)
        first, second = (e.event_id for e in store.read_stream(counter.id))
        transport = RecordingTransport(lambda m: "poison" if m.message_id == first else None)
        relay = relay_of(store, transport, max_attempts=1)
        drain(relay)
        assert store.outbox is not None
        assert store.outbox.purge_dead() == 1
        drain(relay)
        assert transport.ids() == [second]

    def test_a_broker_outage_publishes_nothing_and_loses_nothing(self, store: Store) -> None:
        """While the broker is down a pass raises and marks nothing; then everything goes."""
        counters_with_events(store, 3, 2)
        transport = RecordingTransport()
        transport.down = True
        relay = relay_of(store, transport)
        with pytest.raises(BrokerUnavailableError):
            relay.run_once()
        assert store.outbox.stats(time.time()).backlog == 6  # type: ignore[union-attr]
        transport.down = False
        drain(relay)
        assert len(set(transport.ids())) == 6

    def test_an_unanswered_event_is_never_an_attempt_however_often_it_happens(
        self, store: Store
    ) -> None:
        """One aggregate's first event gets no answer in four passes (max_attempts 2): no
        attempt is counted, nothing is dead-lettered, its later events wait, the other
        aggregates' events answered in the same calls are settled and not sent again; once
        the broker answers, the aggregate goes out whole and in order."""
        stuck, free = counters_with_events(store, 2, 2)
        first = next(iter(store.read_stream(stuck.id))).event_id
        transport = RecordingTransport(silent=lambda m: m.message_id == first)
        relay = relay_of(store, transport, max_attempts=2, backoff=Backoff(base=0.0, jitter=0))
        for _ in range(4):
            with pytest.raises(BrokerBusyError):
                relay.run_once()
        box = store.outbox
        assert box is not None
        assert box.dead_letters() == []
        assert (relay.stats.retried, relay.stats.dead_lettered) == (0, 0)
        assert transport.attempts.count(first) == 4
        free_ids = [e.event_id for e in store.read_stream(free.id)]
        assert transport.ids() == free_ids  # each once, though every call left one unanswered
        transport.silent = lambda m: False
        drain(relay)
        assert by_stream(transport.confirmed)[stuck.id] == [
            e.event_id for e in store.read_stream(stuck.id)
        ]
        assert box.stats(time.time()).backlog == 0

    def test_a_running_relay_waits_out_a_silent_broker_without_dead_letters(
        self, store: Store
    ) -> None:
        """``run`` meets a broker that leaves one event unanswered five times in a row
        (max_attempts 2): it pauses like an outage, says so in its stats, and publishes
        every event in order once the broker answers; nothing is dead-lettered."""
        counters = counters_with_events(store, 3, 3)
        first = next(iter(store.read_stream(counters[0].id))).event_id
        transport = RecordingTransport()
        transport.silent = lambda m: m.message_id == first and transport.unanswered < 5
        relay = relay_of(
            store,
            transport,
            max_attempts=2,
            backoff=Backoff(base=0.0, jitter=0),
            outage_backoff=Backoff(base=0.01, cap=0.05, jitter=0),
            idle_wait=0.02,
        )
        relay.start()
        try:
            deadline = time.monotonic() + 30
            while len(transport.ids()) < 9 and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            relay.stop()
        assert len(transport.ids()) == 9, "the relay did not publish every event in time"
        streams = by_stream(transport.confirmed)
        for counter in counters:
            assert streams[counter.id] == [e.event_id for e in store.read_stream(counter.id)]
        assert store.outbox is not None
        assert store.outbox.dead_letters() == []
        assert relay.stats.dead_lettered == 0
        assert relay.stats.broker_errors >= 5
        assert "unanswered" in relay.stats.last_error

    def test_relays_share_the_lanes_of_the_outbox_lease_set(self, store: Store) -> None:
        """A relay leases its lanes from the store's lease component, under the set
        ``OUTBOX_LANES``; a second relay gets its share once the first gave it back."""
        counters_with_events(store, 4, 1)
        first = relay_of(store, RecordingTransport(), lanes=4, relay_id="relay-a")
        assert first.run_once() == 4
        assert first.stats.lanes_held == 4
        leases = store.leases
        assert leases is not None
        assert leases.lease("relay-b", OUTBOX_LANES, 4, TTL, time.time()) == {}
        first.release()
        assert sorted(leases.lease("relay-b", OUTBOX_LANES, 4, TTL, time.time())) == [0, 1, 2, 3]

    def test_a_relay_started_with_other_lanes_than_the_running_ones_is_refused(
        self, store: Store
    ) -> None:
        """While a relay holds four lanes, one started with two gets ``LeaseCountError``
        naming both counts and ``--lanes``; the running relay keeps its lanes."""
        running = relay_of(store, RecordingTransport(), lanes=4, relay_id="relay-a")
        running.run_once()
        other = relay_of(store, RecordingTransport(), lanes=2, relay_id="relay-b")
        with pytest.raises(LeaseCountError, match=r"has 4 slots.*asked for 2.*--lanes"):
            other.run_once()
        running._renew_at = 0.0  # renew now: the lanes are still its own
        running.run_once()
        assert running.stats.lanes_held == 4

    def test_a_relay_that_lost_its_lease_cannot_mark_anything(self, store: Store) -> None:
        """Fencing: after another relay took the lane over, the old token settles nothing."""
        counters_with_events(store, 1, 1)
        box, leases = store.outbox, store.leases
        assert box is not None
        assert leases is not None
        stale = leases.lease("relay-a", OUTBOX_LANES, 1, TTL, NOW)
        [entry] = box.claim(stale, 1, 10, NOW)
        later = NOW + TTL + 1  # relay-a stalled past its lease
        fresh = leases.lease("relay-b", OUTBOX_LANES, 1, TTL, later)
        assert fresh[0] == stale[0] + 1
        done = Settlement(published=[entry.record.position])
        assert box.settle("relay-a", stale, done) is False
        assert [e.record.event_id for e in box.claim(fresh, 1, 10, later)] == [
            entry.record.event_id
        ]
        assert box.settle("relay-b", fresh, done) is True
        assert box.claim(fresh, 1, 10, later) == []

    def test_a_claim_leaves_out_the_rows_it_is_told_to_skip(self, store: Store) -> None:
        """``skip`` names rows published but not yet settled: the claim passes over them."""
        counters_with_events(store, 3, 1)
        box = store.outbox
        assert box is not None
        assert store.leases is not None
        leases = store.leases.lease("relay-a", OUTBOX_LANES, 1, TTL, NOW)
        first, second, third = (e.record.position for e in box.claim(leases, 1, 10, NOW))
        found = box.claim(leases, 1, 10, NOW, skip={first, third})
        assert [e.record.position for e in found] == [second]
        assert box.claim(leases, 1, 10, NOW, skip=[first, second, third]) == []

    def test_the_next_pass_goes_on_while_the_last_one_settles(self, store: Store) -> None:
        """While one event's settle is held up, the next pass claims past it (skipping its
        row, and claiming no more than keeps the unsettled rows within the batch size)
        and publishes only the new event: each event goes out once."""
        box, gate = store.outbox, threading.Event()
        gated = GatedOutbox(box, gate)
        transport = RecordingTransport()
        relay = Relay(gated, store.leases, transport, plain_message, batch_size=5)  # type: ignore[arg-type]
        (first,) = counters_with_events(store, 1, 1)
        assert relay._step() == (1, False)  # published; its settle waits at the gate
        (second,) = counters_with_events(store, 1, 1)
        transport.refuse = lambda message: gate.set()  # opens it while the second goes out
        assert relay._step() == (1, False)
        (_, _, [held]), (limit, skipped, [claimed]) = gated.claims
        assert (limit, skipped) == (4, frozenset({held}))
        assert claimed != held
        assert relay.run_once() == 0
        assert transport.ids() == [
            *(e.event_id for e in store.read_stream(first.id)),
            *(e.event_id for e in store.read_stream(second.id)),
        ]
        assert relay.stats.published == 2
        assert box.stats(time.time()).backlog == 0  # type: ignore[union-attr]

    def test_a_backlog_is_claimed_past_the_group_still_settling(self, store: Store) -> None:
        """A backlog's next claim does not wait for the last group's settle: it steps over
        that group's rows (no more than keeps the unsettled rows within the batch size),
        and every event still goes out once."""
        box, gate = store.outbox, threading.Event()
        gated = GatedOutbox(box, gate, open_at_claim=2, free=1, patience=5.0)
        transport = RecordingTransport()
        relay = Relay(gated, store.leases, transport, plain_message, batch_size=4, publish_chunk=2)  # type: ignore[arg-type]
        counters = counters_with_events(store, 6, 1)

        def after_the_first_settle(message: OutgoingMessage) -> None:
            # The second group goes out once the first one settled: the second one's
            # settle is then the one the gate holds.
            if len(transport.confirmed) == 2:
                deadline = time.monotonic() + 10
                while not gated.settled and time.monotonic() < deadline:
                    time.sleep(0.001)

        transport.refuse = after_the_first_settle
        assert relay._step() == (4, True)
        assert gated.at_gate.wait(10)  # the second group's settle waits at the gate
        second_group = frozenset(gated.claims[0][2][2:])
        assert relay._step() == (2, True)  # not waiting: the gate opens at this claim
        limit, skipped, claimed = gated.claims[1]
        assert (limit, skipped) == (2, second_group)
        assert not set(claimed) & set(gated.claims[0][2])
        assert relay.run_once() == 0
        assert sorted(transport.ids()) == sorted(
            e.event_id for counter in counters for e in store.read_stream(counter.id)
        )
        assert relay.stats.published == 6
        assert box.stats(time.time()).backlog == 0  # type: ignore[union-attr]

    def test_a_claim_steps_over_thousands_of_rows(self, store: Store) -> None:
        """A skip list of 2,500 rows (a large batch still settling) leaves out exactly
        those rows."""
        box = store.outbox
        assert box is not None
        assert store.leases is not None
        with store.database.transaction() as tx, store.unit_of_work_in(tx) as uow:
            for _ in range(3000):
                counter = Counter(new_id())
                counter.increment()
                uow.track(counter)
        leases = store.leases.lease("relay-a", OUTBOX_LANES, 1, TTL, NOW)
        every = [e.record.position for e in box.claim(leases, 1, 3000, NOW)]
        assert len(every) == 3000
        left = box.claim(leases, 1, 3000, NOW, skip=every[:2500])
        assert [e.record.position for e in left] == every[2500:]

    def test_what_is_handed_over_during_a_settle_goes_in_one_next_settle(
        self, store: Store
    ) -> None:
        """Three passes while the first one's settle is held up: the relay never waits for
        it, and the second and third passes settle together in one transaction."""
        box, gate = store.outbox, threading.Event()
        gated = GatedOutbox(box, gate)
        relay = Relay(gated, store.leases, RecordingTransport(), plain_message)  # type: ignore[arg-type]
        for _ in range(3):
            counters_with_events(store, 1, 1)
            assert relay._step() == (1, False)
            assert gated.at_gate.wait(10)  # the first settle has started: the rest queue
        gate.set()
        assert relay.run_once() == 0
        [first], [second], [third] = (claimed for _, _, claimed in gated.claims[:3])
        assert gated.settled == [[first], [second, third]]
        assert (relay.stats.published, relay.stats.batches) == (3, 2)
        assert box.stats(time.time()).backlog == 0  # type: ignore[union-attr]

    def test_later_events_wait_while_a_refused_event_is_being_parked(self, store: Store) -> None:
        """The first event is refused and its retry is still being settled: the next pass
        finds the aggregate's second event and leaves it, as it would once parked."""
        box, gate = store.outbox, threading.Event()
        transport = RecordingTransport(lambda message: "refused")
        relay = Relay(GatedOutbox(box, gate), store.leases, transport, plain_message)  # type: ignore[arg-type]
        (counter,) = counters_with_events(store, 1, 1)
        assert relay._step() == (1, False)  # refused; the retry's settle waits at the gate
        counter.increment()
        commit(store, counter)
        transport.refuse = lambda message: None
        assert relay._step() == (0, False)
        gate.set()
        assert relay.run_once() == 0  # now parked in the database until its retry is due
        assert transport.attempts == [next(iter(store.read_stream(counter.id))).event_id]
        assert (relay.stats.retried, relay.stats.published) == (1, 0)

    def test_drain_publishes_everything_due_and_returns_with_it_settled(self, store: Store) -> None:
        """``drain``: twenty events in batches of seven, published once each and in order,
        all marked published when it returns."""
        counters = counters_with_events(store, 5, 4)
        transport = RecordingTransport()
        relay = relay_of(store, transport, batch_size=7, publish_chunk=3)
        assert relay.drain() == 20
        streams = by_stream(transport.confirmed)
        for counter in counters:
            assert streams[counter.id] == [e.event_id for e in store.read_stream(counter.id)]
        assert relay.stats.published == 20
        assert store.outbox.stats(time.time()).backlog == 0  # type: ignore[union-attr]

    def test_drain_goes_on_past_a_full_claim_of_aggregates_being_parked(self, store: Store) -> None:
        """The only rows a full claim finds belong to an aggregate whose refused event is
        still being parked: drain waits for that, then claims again and publishes the
        other aggregate's event instead of stopping."""
        (stuck,) = counters_with_events(store, 1, 3)  # its three events come first
        (free,) = counters_with_events(store, 1, 1)
        first = next(iter(store.read_stream(stuck.id))).event_id
        box, gate = store.outbox, threading.Event()
        gated = GatedOutbox(box, gate, open_at_claim=2)  # held until the second claim
        transport = RecordingTransport(lambda m: "refused" if m.message_id == first else None)
        relay = Relay(gated, store.leases, transport, plain_message, batch_size=3)  # type: ignore[arg-type]
        relay.backoff = Backoff(base=60.0, jitter=0.0)
        relay.drain()
        (_, _, firsts), (limit, _, seconds) = gated.claims[:2]
        assert (len(firsts), limit, len(seconds)) == (3, 2, 2)  # full, and all held back
        assert transport.ids() == [e.event_id for e in store.read_stream(free.id)]
        assert transport.attempts.count(first) == 1

    def test_stopping_waits_for_the_last_settle_before_giving_up_the_lanes(
        self, store: Store
    ) -> None:
        """``release`` lets a settle on its way finish under the relay's leases: the rows it
        published are marked, not left for the next relay to publish again."""
        box, gate = store.outbox, threading.Event()
        gated = GatedOutbox(box, gate)
        relay = Relay(gated, store.leases, RecordingTransport(), plain_message)  # type: ignore[arg-type]
        counters_with_events(store, 2, 1)
        assert relay._step() == (2, False)
        assert gated.at_gate.wait(30), "the settle never started"
        releasing = threading.Thread(target=relay.release, daemon=True)
        releasing.start()
        try:
            releasing.join(timeout=0.5)
            assert releasing.is_alive(), "release returned while the settle was on its way"
        finally:
            gate.set()
        releasing.join(30)
        assert not releasing.is_alive(), "release did not return once the settle was done"
        assert relay.stats.published == 2, f"published {relay.stats.published}, not 2"
        assert box.stats(time.time()).backlog == 0, "rows were left unmarked"  # type: ignore[union-attr]

    def test_published_rows_are_deleted_after_the_retention(self, store: Store) -> None:
        """Only published rows older than the retention go; unpublished ones stay."""
        counters_with_events(store, 2, 1)
        drain(relay_of(store, RecordingTransport()))
        counters_with_events(store, 1, 1)
        box = store.outbox
        assert box is not None
        assert box.delete_published(3600.0, 100) == 0
        time.sleep(0.05)
        assert box.delete_published(0.01, 100) == 2
        assert box.stats(time.time()).backlog == 1

    def test_a_waiting_relay_wakes_when_a_commit_writes_rows(self, store: Store) -> None:
        """wait_for_work(30 s) stays blocked while a writer's rows are written but not
        committed, and returns once they commit, long before its timeout."""
        box = store.outbox
        assert box is not None
        listening, written, commit_now = threading.Event(), threading.Event(), threading.Event()
        woke = threading.Event()

        def wait() -> None:
            box.wait_for_work(0.01)  # this thread listens from here on; drops what is pending
            listening.set()
            box.wait_for_work(30.0)
            woke.set()

        def write() -> None:
            counter = Counter(new_id())
            counter.increment()
            with store.database.transaction() as tx:
                with store.unit_of_work_in(tx) as uow:
                    uow.track(counter)  # the event and its outbox row, written in ``tx``
                written.set()
                if not commit_now.wait(30):
                    raise AssertionError("the test never let the writer commit")

        waiter = threading.Thread(target=wait, daemon=True)
        waiter.start()
        assert listening.wait(30), "the waiter never started listening"
        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        try:
            assert written.wait(30), "the writer never wrote its rows"
            waiter.join(timeout=0.5)
            assert waiter.is_alive(), "wait_for_work returned before anything was committed"
        finally:
            commit_now.set()
        writer.join(30)
        assert woke.wait(10.0), "the relay did not wake on the commit"
        waiter.join(10)

    def test_four_relays_at_once_publish_each_event_once_in_order(self, store: Store) -> None:
        """Four relays on one outbox while events are written: every event once, each
        aggregate in order, no event published by two relays."""
        transport = RecordingTransport()
        relays = [
            relay_of(store, transport, batch_size=20, idle_wait=0.02, lease_ttl=1.5)
            for _ in range(4)
        ]
        stop = threading.Event()
        threads = [threading.Thread(target=r.run, args=(stop,), daemon=True) for r in relays]
        for thread in threads:
            thread.start()
        try:
            deadline = time.monotonic() + 30
            while not all(r.stats.lanes_held for r in relays) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert sorted(r.stats.lanes_held for r in relays) == [2, 2, 2, 2]
            counters = counters_with_events(store, 40, 5)
            deadline = time.monotonic() + 60
            while len(transport.ids()) < 200 and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
        assert sorted(transport.ids()) == sorted(
            e.event_id for c in counters for e in store.read_stream(c.id)
        )
        streams = by_stream(transport.confirmed)
        for counter in counters:
            assert streams[counter.id] == [e.event_id for e in store.read_stream(counter.id)]
        assert sum(r.stats.published for r in relays) == 200
        assert all(r.stats.lost_leases == 0 for r in relays)
