"""The relay's bookkeeping, written on a thread of its own while the relay publishes.

A relay settles what the broker answered (published marks, retry times, dead letters)
in fenced transactions. Doing that between two publishes put the database's round trips
in front of every new event; here they run beside the publishing instead. What is handed
over while a settle runs waits, and goes with the rest that waited in the next
transaction: the relay never waits for the database between two groups, and a busy relay
settles in fewer, larger transactions.

Settles are also paced: one starts at most every ``interval`` seconds, unless the relay
waits for them (``run_once``, ``drain``, stopping). At a steady flow a transaction per
publish cost the machine's processor more than any other part of the relay's work, and
the publishes waited for it; the price is that rows stay unsettled that much longer,
which the claim's ``skip`` and the one-batch bound on resends already allow for.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

from tidings.ports import Outbox, Settlement

IDLE_SECONDS = 2.0
INTERVAL_SECONDS = 0.02


@dataclass(frozen=True)
class Handed:
    """One hand-over: an outcome, the leases it was won under, the aggregates it holds back."""

    leases: Mapping[int, int]
    settlement: Settlement
    blocked: frozenset[str]

    @property
    def positions(self) -> list[int]:
        """Every row the outcome settles."""
        s = self.settlement
        return [*s.published, *(p for p, _, _ in s.retry), *(p for p, _ in s.dead)]


@dataclass(frozen=True)
class Settled:
    """A settle's result: what it applied, and False if a lease was found lost (nothing
    of it was applied then)."""

    settlement: Settlement
    held: bool


class Settler:
    """Settles a relay's outcomes in the order they were handed over, on its own thread.

    ``unsettled()`` says which rows and aggregates the relay's next claim must leave out;
    ``results()`` hands back what was settled (and raises a settle's error), optionally
    after waiting until nothing is left.
    """

    def __init__(self, outbox: Outbox, relay_id: str, interval: float = INTERVAL_SECONDS) -> None:
        self._outbox, self._relay_id, self._interval = outbox, relay_id, interval
        self._hurry = 0  # callers waiting in results(wait=True): settle without pacing
        self._changed = threading.Condition()
        self._waiting: list[Handed] = []
        self._running: list[Handed] = []
        self._settled: list[Settled] = []
        self._error: Exception | None = None
        self._thread: threading.Thread | None = None
        self._idle = False  # the thread waits for a hand-over (not gathering, not settling)

    def hand_over(self, handed: Handed) -> None:
        """Queue an outcome; the settler thread starts on it as soon as it is free."""
        with self._changed:
            self._waiting.append(handed)
            # Only a thread waiting for work needs waking: one that gathers during its
            # pause takes this with the rest when the pause ends, and waking it for every
            # hand-over cost a thread switch per pass at a steady flow.
            if self._idle:
                self._changed.notify_all()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name=f"relay-settle-{self._relay_id}", daemon=True
                )
                self._thread.start()

    def unsettled(self) -> tuple[frozenset[int], frozenset[str]]:
        """The rows handed over and not settled yet, and the aggregates they hold back."""
        with self._changed:
            pending = [*self._running, *self._waiting]
        positions = frozenset(p for handed in pending for p in handed.positions)
        return positions, frozenset(s for handed in pending for s in handed.blocked)

    def results(self, *, wait: bool) -> list[Settled]:
        """What was settled since the last call (with ``wait``: once all is settled).

        A settle that failed is raised here, once; the outcomes waiting behind it when it
        failed are dropped with it, so their rows are published again (never lost).
        """
        with self._changed:
            if wait:
                self._hurry += 1
                self._changed.notify_all()
                try:
                    self._changed.wait_for(lambda: not (self._waiting or self._running))
                finally:
                    self._hurry -= 1
            settled, self._settled = self._settled, []
            error, self._error = self._error, None
        if error is not None:
            raise error
        return settled

    def _work(self) -> None:
        # The thread stays for a moment after its last settle: at a steady flow the next
        # hand-over comes within milliseconds, and starting a thread for each costs more.
        started = 0.0
        while True:
            with self._changed:
                self._idle = True
                found = self._changed.wait_for(lambda: self._waiting, timeout=IDLE_SECONDS)
                self._idle = False
                if not found:
                    self._thread = None
                    return
                pause = started + self._interval - time.monotonic()
                if pause > 0:  # gather what comes meanwhile, unless someone waits
                    self._changed.wait_for(lambda: self._hurry, timeout=pause)
                self._running, self._waiting = _compatible(self._waiting)
            started = time.monotonic()
            leases, settlement = _merged(self._running)
            try:
                held = self._outbox.settle(self._relay_id, leases, settlement)
            except Exception as exc:  # raised on the relay's thread by results()
                with self._changed:
                    self._error = self._error or exc
                    self._running, self._waiting = [], []
                    self._changed.notify_all()
                continue
            with self._changed:
                self._settled.append(Settled(settlement, held))
                self._running = []
                self._changed.notify_all()


def _compatible(waiting: list[Handed]) -> tuple[list[Handed], list[Handed]]:
    """The longest head of ``waiting`` whose leases agree on every lane's token (one
    transaction can check them all), and the rest."""
    tokens: dict[int, int] = {}
    for i, handed in enumerate(waiting):
        if any(tokens.get(lane, token) != token for lane, token in handed.leases.items()):
            return waiting[:i], waiting[i:]
        tokens.update(handed.leases)
    return waiting, []


def _merged(handed: list[Handed]) -> tuple[dict[int, int], Settlement]:
    """One settlement (and its leases) for several hand-overs."""
    if len(handed) == 1:
        return dict(handed[0].leases), handed[0].settlement
    leases: dict[int, int] = {}
    for h in handed:
        leases.update(h.leases)
    return leases, Settlement(
        [p for h in handed for p in h.settlement.published],
        [r for h in handed for r in h.settlement.retry],
        [d for h in handed for d in h.settlement.dead],
    )
