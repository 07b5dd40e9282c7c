"""LeaseContract: the behaviour of every ``Leases`` component (``store.leases``).

Subclass it in a test module with a ``make_store`` fixture (as for ``StoreContract``);
the factory is called as ``make_store(registry)``. Times are given, never read from the
clock: every lease is made at an explicit ``now``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest

from tidings.errors import ConfigurationError, LeaseCountError
from tidings.ports import Leases
from tidings.serialization.registry import EventRegistry
from tidings.store import Store

MakeStore = Callable[..., Store]
NOW = 1_000_000.0
TTL = 10.0
SET = "workers"


def component_of(store: Store) -> Leases:
    """The store's lease component (every store made by ``tidings.connect`` has one)."""
    assert store.leases is not None, "the store has no lease component"
    return store.leases


def settle_shares(
    leases: Leases, owners: Sequence[str], count: int, now: float
) -> list[dict[int, int]]:
    """Let every owner lease in turn until no holding changes (each owner gives back what
    is over its share on one round and the others take it on the next); return each
    owner's holding, in the order of ``owners``."""
    held: list[dict[int, int]] = []
    for round_ in range(len(owners) + 3):
        now += 0.01 * (round_ + 1)
        latest = [leases.lease(owner, SET, count, TTL, now) for owner in owners]
        if latest == held:
            return held
        held = latest
    raise AssertionError(f"the shares never settled among {len(owners)} owners: {held}")


def expected_sizes(count: int, owners: int) -> list[int]:
    """The sizes of fair shares, largest first: they differ by at most one and sum up."""
    base, extra = divmod(count, owners)
    return [base + 1] * extra + [base] * (owners - extra)


def race_inside_fence(
    store: Store, old: dict[int, int], take: Callable[[str], dict[int, int]]
) -> dict[str, dict[int, int]]:
    """Owners b and c each call ``take`` while a transaction of owner a, fenced by
    ``holds`` on ``old``, is open: both must still wait when it ends; return what each
    got once they went on."""
    leases = component_of(store)
    results: dict[str, dict[int, int]] = {}
    errors: list[BaseException] = []

    def race(owner: str) -> None:
        try:
            results[owner] = take(owner)
        except BaseException as exc:
            errors.append(exc)

    racers = [threading.Thread(target=race, args=(o,), daemon=True) for o in ("b", "c")]
    with store.database.transaction() as tx:
        assert leases.holds(tx, "a", SET, old)
        for racer in racers:
            racer.start()
        wait_until_blocked(store, len(racers))
        for racer in racers:
            racer.join(timeout=0.5)  # a check of a negative: both must still wait
            assert racer.is_alive(), "a takeover went ahead inside a fenced transaction"
    for racer in racers:
        racer.join(30)
    assert errors == [], errors
    return results


def holder_url(store: Store) -> tuple[str, str, str]:
    """URL, schema and table prefix another process opens ``store``'s database with."""
    database: Any = store.database
    if database.dialect == "postgresql":
        return database.url, database.schema, database.prefix
    if database.dialect == "sqlite":
        return f"sqlite:///{database.path}", "public", database.prefix
    pytest.skip("in-memory leases live in one process: no holder can die apart from it")


@contextmanager
def holder_process(store: Store, owner: str, count: int) -> Iterator[tuple[Any, dict[int, int]]]:
    """A process (``lease_holder``) that leased ``count`` slots as ``owner`` at ``NOW``;
    yields it and what it holds, and kills it at the end."""
    url, schema, prefix = holder_url(store)
    args = [url, schema, prefix, owner, SET, str(count), str(TTL), str(NOW)]
    process = subprocess.Popen(  # noqa: S603 - our own module, our own arguments
        [sys.executable, "-m", "tidings.testing.lease_holder", *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline() if process.stdout else ""
        assert line, "the lease holder process ended before it leased"
        yield process, {int(slot): token for slot, token in json.loads(line).items()}
    finally:
        process.kill()
        process.wait(30)
        if process.stdout:
            process.stdout.close()


def lease_until_taken(
    leases: Leases, owner: str, count: int, now: float, seconds: float = 30.0
) -> dict[int, int]:
    """Lease at the same ``now`` (so no lease can run out meanwhile) until ``owner`` holds
    something: a server notices a dead client's connection a moment after the kill."""
    deadline = time.monotonic() + seconds
    while True:
        held = leases.lease(owner, SET, count, TTL, now)
        if held or time.monotonic() > deadline:
            return held
        time.sleep(0.01)


class LeaseContract:
    """Fair shares, renewal, expiry and takeover, release, fencing and the count check."""

    @pytest.fixture
    def store(self, make_store: MakeStore) -> Store:
        """A fresh store; its ``leases`` is the component under test."""
        return make_store(EventRegistry())

    @pytest.mark.parametrize("count", [8, 3])
    def test_live_owners_share_the_slots_fairly_and_never_hold_one_twice(
        self, store: Store, count: int
    ) -> None:
        """With 1 to 5 owners joining one after the other, the shares settle to sizes that
        differ by at most one, disjoint, and together every slot of the set."""
        leases = component_of(store)
        owners: list[str] = []
        for n in range(1, 6):
            owners.append(f"owner-{n}")
            held = settle_shares(leases, owners, count, NOW + n)
            assert sorted(map(len, held), reverse=True) == expected_sizes(count, n), held
            taken = [slot for holding in held for slot in holding]
            assert sorted(taken) == list(range(count)), f"a slot held twice or by none: {held}"

    def test_a_new_owner_gets_its_share_once_the_others_give_theirs_back(
        self, store: Store
    ) -> None:
        """A second owner finds nothing free at first; the first owner's next lease gives
        back half, and the second takes those under new tokens."""
        leases = component_of(store)
        first = leases.lease("a", SET, 8, TTL, NOW)
        assert first == dict.fromkeys(range(8), 1)
        assert leases.lease("b", SET, 8, TTL, NOW + 1) == {}
        kept = leases.lease("a", SET, 8, TTL, NOW + 2)
        assert kept == dict.fromkeys(range(4), 1)
        assert leases.lease("b", SET, 8, TTL, NOW + 3) == dict.fromkeys(range(4, 8), 2)

    def test_a_renewed_lease_outlives_its_first_term(self, store: Store) -> None:
        """Leasing again renews what the owner holds, with the same tokens: another owner
        cannot take the slots after the first term, only after the renewed one."""
        leases = component_of(store)
        held = leases.lease("a", SET, 2, TTL, NOW)
        assert leases.lease("a", SET, 2, TTL, NOW + TTL * 0.9) == held
        after_first_term = NOW + TTL + 1
        assert leases.lease("b", SET, 2, TTL, after_first_term) == {}
        after_renewal = NOW + TTL * 1.9 + 1
        taken = leases.lease("b", SET, 2, TTL, after_renewal)
        assert taken == {slot: token + 1 for slot, token in held.items()}

    def test_an_expired_lease_is_taken_over_with_a_higher_token(self, store: Store) -> None:
        """An owner that stops leasing loses its slots once its lease ran out: a live owner
        takes them (its share is over the live owners only), each under token + 1, and the
        old owner holds them no more."""
        leases = component_of(store)
        a, b = settle_shares(leases, ["a", "b"], 8, NOW)
        later = NOW + TTL + 1  # b stopped leasing
        taken = leases.lease("a", SET, 8, TTL, later)
        assert sorted(taken) == list(range(8))
        for slot, token in b.items():
            assert taken[slot] == token + 1
        for slot, token in a.items():
            assert taken[slot] == token  # its own, never taken by another: the same token
        with store.database.transaction() as tx:
            assert not leases.holds(tx, "b", SET, b)
            assert leases.holds(tx, "a", SET, taken)

    def test_released_slots_are_taken_at_once(self, store: Store) -> None:
        """``release`` gives every slot back and leaves the live owners: another owner takes
        them all on its next lease, long before the lease would have run out."""
        leases = component_of(store)
        a, _ = settle_shares(leases, ["a", "b"], 4, NOW)
        leases.release("a", SET)
        taken = leases.lease("b", SET, 4, TTL, NOW + 1)
        assert sorted(taken) == [0, 1, 2, 3]
        for slot, token in a.items():
            assert taken[slot] == token + 1
        leases.release("nobody", "no such set")  # nothing to give back: no error

    def test_holds_says_whether_these_slots_are_still_held_with_these_tokens(
        self, store: Store
    ) -> None:
        """``holds`` is True for the owner's own slots and tokens (or none at all), and
        False for another owner, another token, a slot it lacks, or a set it never had."""
        leases = component_of(store)
        held = leases.lease("a", SET, 2, TTL, NOW)
        with store.database.transaction() as tx:
            assert leases.holds(tx, "a", SET, held)
            assert leases.holds(tx, "a", SET, {0: held[0]})
            assert leases.holds(tx, "a", SET, {})
            assert not leases.holds(tx, "b", SET, held)
            assert not leases.holds(tx, "a", SET, {0: held[0] + 1})
            assert not leases.holds(tx, "a", SET, {**held, 2: 1})
            assert not leases.holds(tx, "a", "other", held)

    def test_sets_of_different_names_are_leased_apart(self, store: Store) -> None:
        """Owners, shares and counts of one set do not touch another's."""
        leases = component_of(store)
        assert sorted(leases.lease("a", "lanes", 4, TTL, NOW)) == [0, 1, 2, 3]
        assert sorted(leases.lease("b", "partitions", 2, TTL, NOW)) == [0, 1]
        assert sorted(leases.lease("a", "lanes", 4, TTL, NOW + 1)) == [0, 1, 2, 3]

    def test_one_set_leased_with_two_counts_is_refused_while_it_is_held(self, store: Store) -> None:
        """Asked for with another count while live owners hold it, the set refuses with
        ``LeaseCountError`` saying both counts; once every lease ran out it takes the new
        count, and no slot's token goes back."""
        leases = component_of(store)
        held = leases.lease("a", SET, 8, TTL, NOW)
        with pytest.raises(LeaseCountError, match=r"has 8 slots.*asked for 4.*same count") as err:
            leases.lease("b", SET, 4, TTL, NOW + 1)
        assert (err.value.name, err.value.stored, err.value.asked) == (SET, 8, 4)
        assert isinstance(err.value, ConfigurationError)
        assert leases.lease("a", SET, 8, TTL, NOW + 2) == held  # refused, nothing changed
        resized = leases.lease("b", SET, 4, TTL, NOW + 2 + TTL + 1)
        assert sorted(resized) == [0, 1, 2, 3]
        assert all(token > max(held.values()) for token in resized.values()), resized

    @pytest.mark.parametrize(
        ("arguments", "says"),
        [
            (("a", SET, 0, TTL), "at least 1"),
            (("a", SET, 2, 0.0), "positive time"),
            (("", SET, 2, TTL), "non-empty"),
            (("a", "", 2, TTL), "non-empty"),
        ],
    )
    def test_a_lease_that_cannot_be_made_is_refused_with_the_reason(
        self, store: Store, arguments: tuple[str, str, int, float], says: str
    ) -> None:
        """No slots, no time to live, no owner or no name: a ``ConfigurationError`` that
        says what to give."""
        owner, name, count, ttl = arguments
        with pytest.raises(ConfigurationError, match=says):
            component_of(store).lease(owner, name, count, ttl, NOW)

    def test_two_owners_racing_for_one_slot_behind_a_fenced_transaction(self, store: Store) -> None:
        """Two owners go for one expired slot while its old owner's transaction, which
        checked ``holds``, is still open: neither takes it until that transaction ends
        (its writes stay fenced), then exactly one does, under the next token, and the
        old owner holds it no more."""
        leases = component_of(store)
        old = leases.lease("a", SET, 1, TTL, NOW)
        later = NOW + TTL + 1  # a's lease ran out: the slot is free to take
        results = race_inside_fence(
            store, old, lambda owner: leases.lease(owner, SET, 1, TTL, later)
        )
        assert sorted(results.values(), key=len) == [{}, {0: old[0] + 1}], results
        winner = next(owner for owner, held in results.items() if held)
        with store.database.transaction() as tx:
            assert not leases.holds(tx, "a", SET, old)
            assert leases.holds(tx, winner, SET, results[winner])

    def test_the_slots_of_a_holder_whose_process_died_are_taken_over_at_once(
        self, store: Store
    ) -> None:
        """A holder process killed with SIGKILL long before its lease runs out: another
        owner takes every slot at its next lease (its liveness lock went with the
        process), each under the next token, and the dead holder holds them no more."""
        leases = component_of(store)
        with holder_process(store, "doomed", 4) as (process, held):
            assert sorted(held) == [0, 1, 2, 3]
            assert leases.lease("b", SET, 4, TTL, NOW + 1) == {}  # alive: nothing yet
            process.kill()
            process.wait(30)
            taken = lease_until_taken(leases, "b", 4, NOW + 2)  # well inside the lease
            assert taken == {slot: token + 1 for slot, token in held.items()}, taken
            with store.database.transaction() as tx:
                assert not leases.holds(tx, "doomed", SET, held)

    def test_a_holder_that_hangs_without_dying_keeps_its_slots_until_its_lease_ran_out(
        self, store: Store
    ) -> None:
        """A holder process stopped (SIGSTOP) is alive to the lock: nobody takes its slots
        within its lease; once the lease ran out, another owner does, under new tokens."""
        leases = component_of(store)
        with holder_process(store, "hung", 2) as (process, held):
            process.send_signal(signal.SIGSTOP)
            assert leases.lease("b", SET, 2, TTL, NOW + TTL * 0.9) == {}
            taken = leases.lease("b", SET, 2, TTL, NOW + TTL + 1)
            assert taken == {slot: token + 1 for slot, token in held.items()}, taken

    def test_two_live_owners_racing_for_the_same_free_slot_each_get_one(self, store: Store) -> None:
        """Two live owners (heartbeats fresh, so nothing else makes them wait for each
        other) both go for slot 0 of two while a fenced transaction of its old owner is
        open. Once it ends, they take turns: each ends with a slot of its own under the
        next token, never both with the same slot."""
        leases = component_of(store)
        old = leases.lease("a", SET, 2, TTL, NOW)
        for owner in ("b", "c"):  # live for long, nothing free yet
            assert leases.lease(owner, SET, 2, TTL * 10, NOW + 1) == {}
        expired = NOW + TTL + 1
        # A third live owner whose share is none clears a's stale heartbeat first.
        assert leases.lease("d", SET, 2, TTL * 10, expired) == {}
        results = race_inside_fence(
            store, old, lambda owner: leases.lease(owner, SET, 2, TTL * 10, expired + 1)
        )
        assert sorted(results.values(), key=list) == [
            {0: old[0] + 1},
            {1: old[1] + 1},
        ], f"each racer should hold one slot of its own: {results}"


def wait_until_blocked(store: Store, waiters: int) -> None:
    """On PostgreSQL, wait until ``waiters`` sessions of this database wait for a lock, so
    the race is arranged rather than hoped for. Elsewhere one write transaction runs at a
    time (SQLite's write lock, the memory store's lock): a racer blocks at its start, and
    the caller's check that the racers are still running shows it."""
    if store.database.dialect != "postgresql":
        return
    deadline = time.monotonic() + 30
    found = 0
    while time.monotonic() < deadline:
        rows = store.database.query(  # type: ignore[attr-defined]
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE NOT l.granted AND a.datname = current_database()"
        )
        found = int(rows[0][0])
        if found >= waiters:
            return
        time.sleep(0.01)
    raise AssertionError(f"{found} of {waiters} racers came to wait for the lock in 30 s")
