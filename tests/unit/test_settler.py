"""Settler: the relay's bookkeeping on a thread of its own, in order, folded when it can be."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

import pytest

from tidings.errors import StorageError
from tidings.ports import Settlement
from tidings.workers.settler import Handed, Settler


class Books:
    """The settle half of an outbox: notes each call, can be held at a gate or made to fail."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[int, int], list[int]]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()
        self.fail_next = False
        self.lost_lanes: set[int] = set()

    def settle(self, relay_id: str, leases: Mapping[int, int], outcome: Settlement) -> bool:
        self.started.set()
        assert self.gate.wait(10), "the test never opened the gate"
        self.calls.append((dict(leases), list(outcome.published)))
        if self.fail_next:
            self.fail_next = False
            raise StorageError("the database went away")
        return not (self.lost_lanes & set(leases))


def handed(lane: int, token: int, *positions: int, blocked: str = "") -> Handed:
    """An outcome of ``positions`` published under lane ``lane`` at ``token``."""
    return Handed({lane: token}, Settlement(list(positions)), frozenset({blocked} - {""}))


def test_a_failed_settle_is_raised_once_and_its_rows_are_no_longer_held_out() -> None:
    """The error reaches the relay once; the rows of the failed settle and of those waiting
    behind it are no longer skipped (the next claim publishes them again), and a later
    hand-over settles as usual."""
    books = Books()
    settler = Settler(books, "relay-a")  # type: ignore[arg-type]
    books.gate.clear()
    books.fail_next = True
    settler.hand_over(handed(0, 1, 1, 2))
    assert books.started.wait(10)
    settler.hand_over(handed(0, 1, 3, blocked="order-7"))
    assert settler.unsettled() == (frozenset({1, 2, 3}), frozenset({"order-7"}))
    books.gate.set()
    with pytest.raises(StorageError, match="went away"):
        settler.results(wait=True)
    assert settler.unsettled() == (frozenset(), frozenset())
    assert settler.results(wait=True) == []  # raised once
    settler.hand_over(handed(0, 1, 4))
    [done] = settler.results(wait=True)
    assert (list(done.settlement.published), done.held) == ([4], True)
    assert books.calls[-1] == ({0: 1}, [4])


def test_outcomes_under_different_tokens_of_a_lane_settle_apart() -> None:
    """One transaction checks one token per lane: a hand-over under a lane's new token is
    not folded into one under its old token, and the stale one alone comes back unheld."""
    books = Books()
    settler = Settler(books, "relay-a")  # type: ignore[arg-type]
    books.gate.clear()
    settler.hand_over(handed(5, 1, 10))
    assert books.started.wait(10)
    settler.hand_over(handed(5, 1, 11))
    settler.hand_over(handed(6, 3, 12))
    settler.hand_over(handed(5, 2, 13))
    books.gate.set()
    results = settler.results(wait=True)
    assert books.calls == [
        ({5: 1}, [10]),
        ({5: 1, 6: 3}, [11, 12]),
        ({5: 2}, [13]),
    ]
    assert [list(r.settlement.published) for r in results] == [[10], [11, 12], [13]]


def test_a_settle_that_finds_a_lease_lost_says_so() -> None:
    """The outbox's fencing answer (False) comes back with the outcome it refused."""
    books = Books()
    books.lost_lanes = {2}
    settler = Settler(books, "relay-a")  # type: ignore[arg-type]
    settler.hand_over(handed(2, 9, 1))
    [done] = settler.results(wait=True)
    assert done.held is False


def test_settles_are_paced_and_a_waiting_relay_skips_the_pause() -> None:
    """With a long interval, the first hand-over settles at once and the next ones wait
    for the interval and go together in one transaction; a relay waiting in
    ``results(wait=True)`` gets them settled at once instead of after the interval."""
    books = Books()
    settler = Settler(books, "relay-a", interval=60.0)  # type: ignore[arg-type]
    settler.hand_over(handed(0, 1, 1))
    assert books.started.wait(10)
    settler.hand_over(handed(0, 1, 2))
    threading.Event().wait(0.05)  # an unpaced settler would take this one alone by now
    settler.hand_over(handed(0, 1, 3))
    waiter = threading.Thread(target=settler.results, kwargs={"wait": True})
    waiter.start()
    waiter.join(10)  # far less than the 60 s interval
    assert not waiter.is_alive(), "the waiting relay was made to wait out the interval"
    assert [published for _, published in books.calls] == [[1], [2, 3]]


def test_hand_overs_during_the_pause_do_not_wake_the_gathering_thread() -> None:
    """At a steady flow the relay hands over after every publish: only a thread waiting
    for work is woken; one gathering during its pause takes the rest when it ends. (A
    wake per hand-over cost a thread switch per pass.) Nothing handed over is left behind."""
    books = Books()
    settler = Settler(books, "relay-a", interval=60.0)  # type: ignore[arg-type]
    settler.hand_over(handed(0, 1, 1))
    [first] = settler.results(wait=True)
    assert list(first.settlement.published) == [1]
    until(lambda: settler._idle)  # the thread waits for work
    wakes = 0
    notify_all = settler._changed.notify_all

    def counted() -> None:
        nonlocal wakes
        wakes += 1
        notify_all()

    settler._changed.notify_all = counted  # type: ignore[method-assign]
    settler.hand_over(handed(0, 1, 2))  # wakes the idle thread, which starts its pause
    assert wakes == 1
    until(lambda: not settler._idle)  # the thread now gathers during its pause
    for position in range(3, 13):
        settler.hand_over(handed(0, 1, position))
    assert wakes == 1, "a hand-over woke the thread that gathers during its pause"
    settler.results(wait=True)
    assert [published for _, published in books.calls] == [[1], list(range(2, 13))]


def until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` (a state of the settler's thread, which signals nothing)."""
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "the settler's thread never got there"
        time.sleep(0.001)
