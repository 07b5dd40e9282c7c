"""Relay: moves outbox rows to a broker, at least once, in per-aggregate order.

Each pass (``run_once``) renews the relay's lane leases, claims a batch of due rows of its
lanes, publishes it in waves (one message per aggregate in flight, so a refused event
holds back the later events of its aggregate and nothing else), and settles the outcome
in fenced transactions on a thread of its own, while the next group or batch goes out.
``run`` loops over passes, waits for new rows between them, backs off while the broker is
down or leaves messages unanswered (only a refusal counts as an attempt) and deletes old
published rows.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

from tidings.application.backoff import Backoff
from tidings.errors import BrokerUnavailableError, StorageError, TidingsError
from tidings.observability import tracing
from tidings.observability.logs import about
from tidings.ports import (
    OUTBOX_LANES,
    HeldBack,
    Leases,
    Messages,
    Outbox,
    OutboxEntry,
    OutgoingMessage,
    Settlement,
    Transport,
    renew_interval,
)
from tidings.records import EventRecord
from tidings.workers.passes import Background, delete_in_batches, run_passes
from tidings.workers.settler import INTERVAL_SECONDS, Handed, Settler

log = logging.getLogger(__name__)

MOST_SKIPPED = 10_000
"""Rows still settling that a claim steps over at most (SQLite takes 32,766 parameters
a statement); with more, the claim waits for the settle."""

Encode = Callable[[EventRecord], OutgoingMessage]
Acked = Callable[[Sequence[OutboxEntry], Sequence[str | None]], None]
"""Told of each group the broker answered: the entries and their answers (None: acked)."""


@dataclass
class RelayStats:
    """What a relay has done since it started."""

    published: int = 0
    retried: int = 0
    dead_lettered: int = 0
    batches: int = 0
    lost_leases: int = 0
    broker_errors: int = 0
    lanes_held: int = 0
    released: int = 0  # scheduled messages moved into the outbox once due
    last_error: str = ""
    outage: str = ""  # the outage the relay is paused on now; empty while it flows
    started_at: float = field(default_factory=time.time)


def new_relay_id() -> str:
    """host-pid-random: unique per process, readable in the lanes table."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Relay(Background):
    """One relay process's worker; several may run on the same outbox at once, sharing
    its lanes through ``leases`` (the set ``OUTBOX_LANES``, the one the outbox's settles
    check)."""

    def __init__(
        self,
        outbox: Outbox,
        leases: Leases,
        transport: Transport,
        encode: Encode,
        *,
        relay_id: str | None = None,
        lanes: int = 8,
        batch_size: int = 2000,
        publish_chunk: int = 500,
        lease_ttl: float = 15.0,
        max_attempts: int = 10,
        backoff: Backoff | None = None,
        outage_backoff: Backoff | None = None,
        retention_seconds: float = 86_400.0,
        settle_interval: float = INTERVAL_SECONDS,
        idle_wait: float = 0.5,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        messages: Messages | None = None,
        release_interval: float = 0.1,
    ) -> None:
        if min(lanes, batch_size, publish_chunk, max_attempts) < 1:
            raise ValueError("lanes, batch_size, publish_chunk and max_attempts must be at least 1")
        self.outbox, self.leases, self.transport, self.encode = outbox, leases, transport, encode
        self.relay_id = relay_id or new_relay_id()
        self.lanes, self.batch_size, self.lease_ttl = lanes, batch_size, lease_ttl
        self.publish_chunk = publish_chunk
        self.max_attempts = max_attempts
        self.backoff = backoff or Backoff()
        self.outage_backoff = outage_backoff or Backoff(base=0.2, cap=30.0)
        self.retention_seconds, self.idle_wait = retention_seconds, idle_wait
        self.clock = clock
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self.stats = RelayStats()
        self.on_acked: Acked | None = None  # metrics time commit to ack (observability)
        self._held: dict[int, int] = {}
        self._renew_at = 0.0
        self._cleanup_at = 0.0
        self._stop = threading.Event()
        self._thread = None
        self._settler = Settler(outbox, self.relay_id, settle_interval)
        self._sends = tracing.Sends(tracing.destination_of(transport))
        # Several waves a call, where the transport can (WavePublisher).
        self._waves: Callable[[list[list[OutgoingMessage]]], list[str | HeldBack | None]] | None
        self._waves = getattr(transport, "publish_waves", None)
        self.messages, self.release_interval = messages, release_interval
        self._release_at = 0.0
        self._database_down = False  # paused on a database outage (not the broker's)

    # -- one pass -------------------------------------------------------------------------

    def run_once(self) -> int:
        """Lease, claim, publish, settle; return how many rows were claimed.

        Everything the pass published is settled (or found fenced off) when it returns.
        """
        with self._settled_on_return():
            claimed, _ = self._step()
        return claimed

    def drain(self) -> int:
        """Publish every row that is due, pass after pass as ``run`` makes them (each one
        claiming while the last one settles), until nothing is left; return how many rows
        were claimed. Everything is settled when it returns. For scripts, one-off catch-ups
        and benchmarks: it does not wait for new rows, and keeps its lanes until
        ``release`` (as after ``run_once``)."""
        claimed = 0
        with self._settled_on_return():
            while True:
                found, full = self._step()
                claimed += found
                if found == 0:
                    if not full:
                        break
                    # A full claim that was all held back (its aggregates being parked):
                    # once they are parked in the database the claim passes them over.
                    self._take_settled(wait=True)
        return claimed

    @contextmanager
    def _settled_on_return(self) -> Iterator[None]:
        """Wait for every settle on its way when the block ends; if the block failed, its
        error is the one raised (a settle's own error then only means a resend)."""
        try:
            yield
        except BaseException:
            with suppress(StorageError):
                self._take_settled(wait=True)
            raise
        self._take_settled(wait=True)

    def _step(self, *, release: bool = True) -> tuple[int, bool]:
        """One pass, whose settling may still be going on when it returns: how many rows
        it claimed, and whether the claim was full (more rows may be due already).

        Settling runs on a thread of its own (``Settler``): the next group is published
        while the previous one settles, and ``run`` claims the next batch while the last
        one settles, so the database's round trips for the bookkeeping never hold up an
        event on its way to the broker. Rows whose settle is still on its way are left out
        of the claim, and so are the later rows of an aggregate whose refused event is
        being scheduled for a retry or dead-lettered; the claim takes only as many rows as
        keep the relay's unsettled rows within ``batch_size``, so a killed relay sends at
        most one batch again.
        """
        self._take_settled(wait=False)  # a lease found lost is renewed below
        now = self.clock()
        if release:
            self._release(now)  # scheduled messages that fell due join this claim
        if now >= self._renew_at:
            self._renew(now)
        # In a backlog the last group of the previous batch is still settling: the claim
        # steps over its rows rather than waiting for the settle (PostgreSQL checks each
        # row against a hash of the list, so the list costs next to nothing). Only a list
        # longer than a statement should carry (batch_size set very high) is waited out.
        skip, parking = self._settler.unsettled()
        if len(skip) > MOST_SKIPPED:
            if not self._take_settled(wait=True):
                return 0, True  # a lane was lost: the next pass renews the leases first
            skip, parking = frozenset(), frozenset()
        limit = self.batch_size - len(skip)
        entries = self.outbox.claim(self._held, self.lanes, limit, now, skip)
        full = len(entries) == limit
        if parking:
            entries = [e for e in entries if e.record.stream_id not in parking]
        if not entries:
            return 0, full
        leases = {lane: self._held[lane] for lane in {e.lane for e in entries}}
        outcome = _Outcome()
        try:
            for run in self._runs(groups(entries, self.publish_chunk)):
                self._publish(run, outcome, now)
                if outcome.unsettled >= self.publish_chunk and not self._hand_over(leases, outcome):
                    return len(entries), full  # the lanes' new owner publishes the rest
        except BrokerUnavailableError:
            with suppress(StorageError):  # the outage is the error to report
                self._hand_over(leases, outcome)  # what the broker answered before it left
            raise
        self._hand_over(leases, outcome)
        return len(entries), full

    def _runs(self, waves: list[list[OutboxEntry]]) -> Iterator[list[list[OutboxEntry]]]:
        """The groups in the calls that publish them: one group a call, or, for a
        transport that publishes several waves in one call (``WavePublisher``), as many
        consecutive groups as hold ``publish_chunk`` messages. Many small waves (a backlog
        on few aggregates) then cost one call, not one each."""
        if self._waves is None:
            yield from ([group] for group in waves)
            return
        run: list[list[OutboxEntry]] = []
        size = 0
        for group in waves:
            if run and size + len(group) > self.publish_chunk:
                yield run
                run, size = [], 0
            run.append(group)
            size += len(group)
        if run:
            yield run

    def _publish(self, run: Sequence[Sequence[OutboxEntry]], outcome: _Outcome, now: float) -> None:
        """Publish the groups of one call and add their confirmations and refusals to the
        outcome.

        Held-back aggregates are skipped. When the broker leaves messages unanswered
        (``BrokerUnavailableError``), what it did answer is still recorded, the aggregates
        of the others are held back, and the error goes on to pause the relay: an
        unanswered message is not an attempt, it is published again after the pause.
        """
        sent = self._send(run, set(outcome.blocked))
        sends = self._sends  # the producer span of the call, when tracing is on
        sends.start([e.record for e in sent.ready])
        try:
            results = self._call(sent)
        except BrokerUnavailableError as exc:
            sends.end(exc.answered, str(exc))
            self._record(outcome, sent.unencodable, now)
            got = [(e, exc.answered[i]) for i, e in enumerate(sent.ready) if i in exc.answered]
            self._record(outcome, got, now)
            outcome.blocked.update(
                e.record.stream_id for i, e in enumerate(sent.ready) if i not in exc.answered
            )
            raise
        except BaseException as exc:
            sends.end({}, str(exc))
            raise
        answered: list[tuple[OutboxEntry, str | None]] = []
        for entry, result in zip(sent.ready, results, strict=True):
            if isinstance(result, HeldBack):  # not sent: goes again after the refused one
                outcome.blocked.add(entry.record.stream_id)
            else:
                answered.append((entry, result))
        sends.end([r if not isinstance(r, HeldBack) else "held back" for r in results])
        if self.on_acked is not None:
            self.on_acked([e for e, _ in answered], [r for _, r in answered])
        self._record(outcome, [*sent.unencodable, *answered], now)

    def _call(self, sent: _Sent) -> Sequence[str | HeldBack | None]:
        """The transport's answers to the messages of ``sent``, flattened."""
        if self._waves is None:
            return self.transport.publish(sent.messages) if sent.messages else []
        return self._waves([sent.messages[i:j] for i, j in sent.waves]) if sent.messages else []

    def _send(self, run: Sequence[Sequence[OutboxEntry]], blocked: set[str]) -> _Sent:
        """Encode the groups of one call, skipping held-back aggregates and the later
        events of an aggregate with an event that could not be encoded."""
        sent = _Sent()
        for group in run:
            start = len(sent.messages)
            for entry in group:
                if entry.record.stream_id in blocked:
                    continue
                try:
                    sent.messages.append(self.encode(entry.record))
                    sent.ready.append(entry)
                except TidingsError as exc:
                    sent.unencodable.append((entry, f"cannot be encoded: {exc}"))
                    blocked.add(entry.record.stream_id)
            sent.waves.append((start, len(sent.messages)))
        return sent

    def _record(
        self, outcome: _Outcome, answers: Sequence[tuple[OutboxEntry, str | None]], now: float
    ) -> None:
        """Add confirmations (None) and refusals (the reason) to the outcome of the batch."""
        for entry, error in answers:
            if error is None:
                outcome.published.append(entry.record.position)
            else:
                self._fail(entry, error, now, outcome.retry, outcome.dead)
                outcome.blocked.add(entry.record.stream_id)

    def _hand_over(self, leases: dict[int, int], outcome: _Outcome) -> bool:
        """Queue what the batch has done so far for the settler; False, and nothing
        queued, if an earlier settle found a lease lost."""
        settlement = outcome.take()
        if not (settlement.published or settlement.retry or settlement.dead):
            return True
        if not self._take_settled(wait=False):
            return False  # the rows stay unmarked: the lanes' new owner publishes them again
        self._settler.hand_over(Handed(leases, settlement, frozenset(outcome.blocked)))
        return True

    def _take_settled(self, *, wait: bool) -> bool:
        """Count what the settler has settled (with ``wait``: once it settled everything);
        False if a settle found a lease lost. A settle's error is raised here."""
        held = True
        for settled in self._settler.results(wait=wait):
            if settled.held:
                self._count(settled.settlement)
            else:
                held = False
        if not held:
            # Another relay took a lane: what we published stays unmarked and will be
            # published again by the new owner (at least once, never lost).
            self.stats.lost_leases += 1
            self._renew_at = 0.0
            log.warning("relay %s lost a lane lease; its rows go to the new owner", self.relay_id)
        return held

    def _fail(
        self,
        entry: OutboxEntry,
        error: str,
        now: float,
        retry: list[tuple[int, float, str]],
        dead: list[tuple[int, str]],
    ) -> None:
        attempt = entry.attempts + 1
        position = entry.record.position
        if attempt >= self.max_attempts:
            dead.append((position, error))
            log.error(
                "event %s of %s dead-lettered after %d attempts: %s",
                entry.record.event_id,
                entry.record.stream_id,
                attempt,
                error,
                extra=about(entry.record),
            )
        else:
            retry.append((position, now + self.backoff.delay(attempt, self.rng), error))
            log.warning(
                "event %s of %s refused (attempt %d): %s",
                entry.record.event_id,
                entry.record.stream_id,
                attempt,
                error,
                extra=about(entry.record),
            )

    def _count(self, outcome: Settlement) -> None:
        self.stats.batches += 1  # settled transactions: a batch may settle in several
        self.stats.published += len(outcome.published)
        self.stats.retried += len(outcome.retry)
        self.stats.dead_lettered += len(outcome.dead)

    # -- the loop -------------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None) -> None:
        """Pass after pass until ``stop`` is set; then release the lanes.

        A pass is never cut in half: stopping waits for the batch in flight to be
        published and settled (or left unmarked, to be published again).
        """
        stop = stop or self._stop
        try:
            run_passes(
                stop,
                self._pass,
                pauses_on=(BrokerUnavailableError, StorageError),
                backoff=self.outage_backoff,
                rng=self.rng,
                on_pause=self._paused,
                on_resume=self._resumed,
            )
        finally:
            self.release()

    def _pass(self) -> None:
        _, full = self._step(release=False)
        # The relay's own upkeep happens after a pass, not before the next claim: a commit
        # that wakes the relay then finds it going straight to the claim, where a release
        # or a renewal in front of it cost that event a transaction's round trip.
        now = self.clock()
        self._release(now)
        # A renewal due within the last tenth of its interval is made now: the wait that
        # follows would otherwise end, woken by a commit, with the renewal due.
        if now + renew_interval(self.lease_ttl) / 10 >= self._renew_at:
            self._renew(now)
        self._clean_up()
        if not full:
            # Every due row was claimed: whatever commits from now on, or committed while
            # this pass published, wakes the wait at once (NOTIFY, the in-process signal,
            # the database version). Claiming again first found nothing, most of the time
            # at a steady flow, and cost a query per event.
            self.outbox.wait_for_work(self._idle_timeout())

    def _release(self, now: float) -> None:
        """Move the scheduled messages that fell due into the outbox, at most every
        ``release_interval``."""
        if self.messages is not None and now >= self._release_at:
            self._release_at = now + self.release_interval
            self.stats.released += self.messages.release_due(now, self.batch_size)

    def _renew(self, now: float) -> None:
        """Lease (or renew) this relay's lanes."""
        self._held = self.leases.lease(self.relay_id, OUTBOX_LANES, self.lanes, self.lease_ttl, now)
        self._renew_at = now + renew_interval(self.lease_ttl)
        self.stats.lanes_held = len(self._held)

    def _paused(self, exc: Exception) -> None:
        self.stats.broker_errors += 1
        self.stats.last_error = self.stats.outage = str(exc)
        self._database_down = isinstance(exc, StorageError)

    def _resumed(self) -> None:
        self.stats.outage = ""
        self._database_down = False

    def _idle_timeout(self) -> float:
        return max(0.0, min(self.idle_wait, self._renew_at - self.clock()))

    def _clean_up(self) -> None:
        now = self.clock()
        if now < self._cleanup_at:
            return
        self._cleanup_at = now + 60.0
        delete_in_batches(lambda n: self.outbox.delete_published(self.retention_seconds, n))

    def release(self) -> None:
        """Give up this relay's lanes so another relay takes them at once (``run`` does
        this when it stops; call it yourself after driving ``run_once`` by hand).

        A settle still on its way is waited for first, so the lanes' next owner finds the
        rows this relay published marked as such."""
        try:
            self._take_settled(wait=True)
        except StorageError as exc:
            log.warning("relay %s could not settle its last rows: %s", self.relay_id, exc)
        if self._database_down:
            # Stopping while the database is out: asking it would wait for the pool's
            # connect timeout, and the lanes go to the next relay without it (at once
            # through the liveness lock this process holds, else when their lease ends).
            log.warning("relay %s stops with its database out: lanes not released", self.relay_id)
        else:
            try:
                self.leases.release(self.relay_id, OUTBOX_LANES)
            except StorageError as exc:
                log.warning("relay %s could not release its lanes: %s", self.relay_id, exc)
        self._held = {}


@dataclass
class _Outcome:
    """What became of a batch so far: rows not settled yet, aggregates held back."""

    published: list[int] = field(default_factory=list)
    retry: list[tuple[int, float, str]] = field(default_factory=list)
    dead: list[tuple[int, str]] = field(default_factory=list)
    blocked: set[str] = field(default_factory=set)

    @property
    def unsettled(self) -> int:
        """Rows waiting to be settled."""
        return len(self.published) + len(self.retry) + len(self.dead)

    def take(self) -> Settlement:
        """The rows to settle now; the outcome keeps only the held-back aggregates."""
        settlement = Settlement(self.published, self.retry, self.dead)
        self.published, self.retry, self.dead = [], [], []
        return settlement


@dataclass
class _Sent:
    """A group ready for the broker: the entries and their messages, index for index,
    and the entries that could not be encoded, with the reason."""

    ready: list[OutboxEntry] = field(default_factory=list)
    messages: list[OutgoingMessage] = field(default_factory=list)
    unencodable: list[tuple[OutboxEntry, str | None]] = field(default_factory=list)
    waves: list[tuple[int, int]] = field(default_factory=list)  # [start, end) of each group


def groups(entries: Sequence[OutboxEntry], size: int) -> list[list[OutboxEntry]]:
    """The waves of ``entries``, each cut into slices of at most ``size``."""
    return [wave[i : i + size] for wave in waves(entries) for i in range(0, len(wave), size)]


def waves(entries: Sequence[OutboxEntry]) -> list[list[OutboxEntry]]:
    """Wave k holds the k-th entry of every aggregate, in position order."""
    waves_: list[list[OutboxEntry]] = []
    depth: dict[str, int] = {}
    for entry in entries:
        k = depth.get(entry.record.stream_id, 0)
        depth[entry.record.stream_id] = k + 1
        if k == len(waves_):
            waves_.append([])
        waves_[k].append(entry)
    return waves_
