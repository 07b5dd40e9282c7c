"""Consumer: from a broker subscription through the inbox to the handlers.

Each pass (``run_once``) fetches a batch, reads every message (bad input becomes a dead
letter with its reason; it never stops the line), handles the batch in one transaction
(a savepoint per message and handler), and only after the commit acknowledges what is
done and asks for the rest to be delivered again after a backoff. A crash before the
commit leaves nothing behind and the broker delivers the messages again; a crash after
it leaves the inbox rows, so the redelivered messages are skipped as duplicates.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field

from tidings.adapters.memory_inbox import MemoryInFlight
from tidings.application.backoff import Backoff
from tidings.application.handling import Delivery, InboxProcessor, Verdict
from tidings.errors import BadMessageError, DataRefusedError, StorageError, TransportError
from tidings.ports import (
    Inbox,
    IncomingMessage,
    InFlight,
    InFlightMessage,
    Subscription,
    Transaction,
)
from tidings.records import EventRecord
from tidings.workers.passes import Background, delete_in_batches, run_passes

log = logging.getLogger("tidings.consumer")

Read = Callable[[bytes], EventRecord]
HOLD_MARGIN = 0.5  # seconds a held message comes back after the event it waits behind
HOLD_DELAY = 1.0  # seconds a held message waits when nobody here knows when that event is due


@dataclass
class ConsumerStats:
    """What a consumer has done since it started."""

    received: int = 0
    applied: int = 0
    duplicates: int = 0
    retried: int = 0
    held: int = 0
    buried: int = 0
    batches: int = 0
    outages: int = 0
    last_error: str = ""
    outage: str = ""  # the outage the consumer is paused on now; empty while it flows
    started_at: float = field(default_factory=time.time)


def subscription_name(subscription: Subscription) -> str:
    """The name a consumer records what it fetched under: the subscription's durable
    consumer (NATS) or queue (RabbitMQ), else ``consumer``."""
    for attribute in ("durable", "queue", "name"):
        value = getattr(subscription, attribute, None)
        if isinstance(value, str) and value:
            return value
    return "consumer"


class Consumer(Background):
    """One consumer process's worker around a broker subscription.

    Per-aggregate order holds across crashes: what a pass fetched is recorded (``InFlight``)
    before any handler runs, and deleted in the transaction that handles it. A message
    whose aggregate has an earlier event still in flight (fetched by a consumer that died,
    or sent round again after a failure) is sent round too, unhandled, until that event is
    finished. Only messages this consumer fetched count, so a consumer of some event types
    never waits for versions it will not receive. ``name`` keeps the records of consumers
    on one database apart: give each durable consumer or queue its own. ``fence`` runs
    first in the finish of every handling transaction (a partition's lease check): when it
    raises, nothing of the batch commits.
    """

    def __init__(
        self,
        processor: InboxProcessor,
        subscription: Subscription,
        read: Read,
        *,
        inbox: Inbox | None = None,
        in_flight: InFlight | None = None,
        name: str = "consumer",
        batch_size: int = 500,
        fetch_timeout: float = 1.0,
        dedup_window_seconds: float = 7 * 86_400.0,
        outage_backoff: Backoff | None = None,
        hold_timeout: float = 600.0,
        clock: Callable[[], float] = time.time,
        fence: Callable[[Transaction], None] | None = None,
    ) -> None:
        self.processor, self.subscription, self.read = processor, subscription, read
        self.fence = fence
        self.inbox = inbox
        self.in_flight: InFlight = in_flight if in_flight is not None else MemoryInFlight()
        self.name = name
        self.batch_size, self.fetch_timeout = batch_size, fetch_timeout
        self.dedup_window_seconds = dedup_window_seconds
        self.outage_backoff = outage_backoff or Backoff(base=0.2, cap=30.0)
        self.stats = ConsumerStats()
        self.hold_timeout = hold_timeout
        self.clock = clock
        self._due: dict[str, float] = {}  # event id -> when its retry comes back
        self._cleanup_at = 0.0
        self._stop = threading.Event()
        self._thread = None

    def run_once(self) -> int:
        """Fetch, handle in one transaction, then settle with the broker; return the count.

        A message whose aggregate has an earlier event in flight goes round again
        unhandled, in this batch or the next ones, until that event was handled (or
        buried), so the handlers see each aggregate's events in order, crash or not.
        """
        messages = self.subscription.fetch(self.batch_size, self.fetch_timeout)
        if not messages:
            return 0
        try:
            self._handle(messages)
        except (StorageError, TransportError):
            # The database (or broker) failed before the batch was settled: give it back
            # now, so it comes again before the aggregates' later events; left unsettled it
            # would come back only after the broker's ack_wait, behind them.
            self.subscription.give_back(messages)
            raise
        return len(messages)

    def _handle(self, messages: Sequence[IncomingMessage]) -> None:
        """Hold, handle and settle one fetched batch."""
        pairs = in_version_order([(m, self._delivery(m)) for m in messages])
        now = self.clock()
        waiting = self._waits(pairs, now)
        ready = [d for (_, d), w in zip(pairs, waiting, strict=True) if w is None]

        def finish(tx: Transaction, verdicts: Sequence[Verdict]) -> None:
            if self.fence is not None:
                self.fence(tx)
            done = [
                d.record.event_id
                for d, v in zip(ready, verdicts, strict=True)
                if v.ack and d.record is not None
            ]
            self.in_flight.finish(tx, self.name, done)

        handled = iter(self.processor.process(ready, finish=finish))
        verdicts = []
        for (_, delivery), wait in zip(pairs, waiting, strict=True):
            verdict = Verdict(False, wait, held=True) if wait is not None else next(handled)
            if wait is None and delivery.record is not None:
                self._remember(delivery.record, verdict, now)
            verdicts.append(verdict)
        self._settle([m for m, _ in pairs], verdicts)  # only after the commit above

    def _waits(
        self, pairs: Sequence[tuple[IncomingMessage, Delivery]], now: float
    ) -> list[float | None]:
        """Per delivery (in version order per aggregate), None when it may be handled now,
        else the seconds it waits: behind an earlier event of its aggregate in flight, or
        as long as the transport asked (``IncomingMessage.hold``)."""
        deliveries = [d for _, d in pairs]
        fetched = {  # one each: a broker may deliver an event twice in a batch
            d.record.event_id: InFlightMessage(
                d.record.event_id, d.record.stream_id, d.record.version
            )
            for d in deliveries
            if d.record is not None
        }
        if not fetched:
            return [None] * len(deliveries)
        in_batch = fetched.keys()
        behind: dict[str, tuple[int, str]] = {}  # stream -> the earliest event held elsewhere
        for other in self._note(list(fetched.values()), now):
            known = behind.get(other.stream_id)
            if other.event_id not in in_batch and (known is None or other.version < known[0]):
                behind[other.stream_id] = (other.version, other.event_id)
        waits: list[float | None] = []
        held: dict[str, float] = {}  # streams with a delivery held in this batch
        for message, delivery in pairs:
            record = delivery.record
            wait = None
            if record is not None:
                earlier = behind.get(record.stream_id)
                if record.stream_id in held:
                    wait = held[record.stream_id]
                elif message.hold > 0:
                    wait = held[record.stream_id] = message.hold
                elif earlier is not None and earlier[0] < record.version:
                    due = self._due.get(earlier[1])
                    wait = HOLD_DELAY if due is None else max(due - now, 0.0) + HOLD_MARGIN
                    held[record.stream_id] = wait
            waits.append(wait)
        return waits

    def _note(self, fetched: list[InFlightMessage], now: float) -> list[InFlightMessage]:
        """Record what was fetched; the messages in flight of their aggregates.

        When the database refuses a key (a reader of your own let an id through that is
        too long for an index), each message is noted alone: the refused ones are not
        held and go on to the inbox, which buries them with the reason."""
        try:
            return self.in_flight.note(self.name, fetched, now, self.hold_timeout)
        except DataRefusedError:
            found: list[InFlightMessage] = []
            for message in fetched:
                with suppress(DataRefusedError):
                    found.extend(self.in_flight.note(self.name, [message], now, self.hold_timeout))
            return found

    def _remember(self, record: EventRecord, verdict: Verdict, now: float) -> None:
        """Keep when a retried event comes back, to time the holds behind it."""
        if verdict.ack:
            self._due.pop(record.event_id, None)
        else:
            self._due[record.event_id] = now + verdict.retry_in

    def _delivery(self, message: IncomingMessage) -> Delivery:
        try:
            return Delivery(message.body, self.read(message.body))
        except BadMessageError as exc:
            return Delivery(message.body, None, exc.reason)
        except Exception as exc:  # a reader's own failure on odd input is bad input too
            # (as the CloudEvents reader's OverflowError on a time at the calendar's edge
            # was): it must not stop the consumer, so the message becomes a dead letter.
            log.exception("the reader failed on a message")
            return Delivery(message.body, None, f"the reader failed: {type(exc).__name__}: {exc}")

    def _settle(self, messages: Sequence[IncomingMessage], verdicts: Sequence[Verdict]) -> None:
        done: list[IncomingMessage] = []
        for message, verdict in zip(messages, verdicts, strict=True):
            self._count(verdict)
            if verdict.ack:
                done.append(message)
            else:
                self.subscription.retry_later(message, verdict.retry_in)
        if done:
            self.subscription.ack(done)

    def _count(self, verdict: Verdict) -> None:
        self.stats.received += 1
        self.stats.applied += len(verdict.applied)
        self.stats.duplicates += len(verdict.duplicates)
        self.stats.buried += len(verdict.buried)
        self.stats.retried += 0 if verdict.ack else 1
        self.stats.held += 1 if verdict.held else 0

    def run(self, stop: threading.Event | None = None) -> None:
        """Pass after pass until ``stop`` is set; a database or broker outage pauses it."""
        run_passes(
            stop or self._stop,
            self._pass,
            pauses_on=(StorageError, TransportError),
            backoff=self.outage_backoff,
            rng=self.processor.rng,
            on_pause=self._paused,
            on_resume=self._resumed,
        )

    def _pass(self) -> None:
        self.run_once()
        self._clean_up()

    def _paused(self, exc: Exception) -> None:
        self.stats.outages += 1
        self.stats.last_error = self.stats.outage = str(exc)

    def _resumed(self) -> None:
        self.stats.outage = ""

    def _clean_up(self) -> None:
        now = self.clock()
        if now < self._cleanup_at:
            return
        self._cleanup_at = now + 60.0
        stale = self.in_flight.delete_stale(self.name, now - self.hold_timeout)
        if stale:
            log.warning(
                "consumer %s forgot %d messages fetched over %.0f s ago and never delivered "
                "again (a broker's delivery limit, a purged queue): their aggregates' later "
                "events are no longer held behind them",
                self.name,
                stale,
                self.hold_timeout,
            )
        if self.inbox is not None:
            inbox = self.inbox
            delete_in_batches(lambda n: inbox.delete_processed(self.dedup_window_seconds, n))


def dedup_window_warning(
    window_seconds: float, *redelivery_horizons: tuple[str, float]
) -> str | None:
    """A warning when duplicates could arrive after the inbox forgot the original.

    Each horizon is (what, seconds): how long after the first delivery a copy of the same
    event may still arrive (the broker's redelivery, the relay's retries).
    """
    too_long = [(what, s) for what, s in redelivery_horizons if s > window_seconds]
    if not too_long:
        return None
    listed = ", ".join(f"{what} up to {s / 3600:.1f} h" for what, s in too_long)
    return (
        f"the inbox forgets processed events after {window_seconds / 3600:.1f} h, but "
        f"duplicates can still arrive later ({listed}): raise the dedup window, or such a "
        "late duplicate would be applied twice"
    )


def retry_horizon(backoff: Backoff, attempts: int) -> float:
    """The longest time a relay keeps retrying one event (no jitter in its favour)."""
    return sum(
        min(backoff.cap, backoff.base * backoff.factor ** max(n - 1, 0)) * (1 + backoff.jitter)
        for n in range(1, attempts)
    )


def in_version_order(
    pairs: Sequence[tuple[IncomingMessage, Delivery]],
) -> list[tuple[IncomingMessage, Delivery]]:
    """The batch with each aggregate's deliveries sorted by version, in the places its
    deliveries had: a redelivered earlier event fetched after a later one goes first."""
    slots: dict[str, list[int]] = {}
    for index, (_, delivery) in enumerate(pairs):
        if delivery.record is not None:
            slots.setdefault(delivery.record.stream_id, []).append(index)
    ordered = list(pairs)
    for indexes in slots.values():
        if len(indexes) > 1:
            chosen = sorted((pairs[i] for i in indexes), key=_version)
            for index, pair in zip(indexes, chosen, strict=True):
                ordered[index] = pair
    return ordered


def _version(pair: tuple[IncomingMessage, Delivery]) -> int:
    record = pair[1].record
    return record.version if record is not None else 0
