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
from dataclasses import dataclass, field

from tidings.application.backoff import Backoff
from tidings.application.handling import Delivery, InboxProcessor, Verdict
from tidings.errors import BadMessageError, StorageError, TransportError
from tidings.ports import Inbox, IncomingMessage, Subscription
from tidings.records import EventRecord
from tidings.workers.passes import Background, delete_in_batches, run_passes

log = logging.getLogger("tidings.consumer")

Read = Callable[[bytes], EventRecord]
HOLD_MARGIN = 0.5  # seconds a held message comes back after the event it waits behind


@dataclass
class ConsumerStats:
    """What a consumer has done since it started."""

    received: int = 0
    applied: int = 0
    duplicates: int = 0
    retried: int = 0
    buried: int = 0
    batches: int = 0
    outages: int = 0
    last_error: str = ""
    started_at: float = field(default_factory=time.time)


class Consumer(Background):
    """One consumer process's worker around a broker subscription."""

    def __init__(
        self,
        processor: InboxProcessor,
        subscription: Subscription,
        read: Read,
        *,
        inbox: Inbox | None = None,
        batch_size: int = 500,
        fetch_timeout: float = 1.0,
        dedup_window_seconds: float = 7 * 86_400.0,
        outage_backoff: Backoff | None = None,
        hold_timeout: float = 600.0,
    ) -> None:
        self.processor, self.subscription, self.read = processor, subscription, read
        self.inbox = inbox
        self.batch_size, self.fetch_timeout = batch_size, fetch_timeout
        self.dedup_window_seconds = dedup_window_seconds
        self.outage_backoff = outage_backoff or Backoff(base=0.2, cap=30.0)
        self.stats = ConsumerStats()
        self.hold_timeout = hold_timeout
        self._held: dict[str, tuple[str, float, float]] = {}  # stream -> (event, due, since)
        self._cleanup_at = 0.0
        self._stop = threading.Event()
        self._thread = None

    def run_once(self) -> int:
        """Fetch, handle in one transaction, then settle with the broker; return the count.

        An aggregate whose event was sent round again is held: its later messages, in this
        batch or the next ones, go round again unhandled until that event was handled (or
        buried), so the handlers see the aggregate's events in order.
        """
        messages = self.subscription.fetch(self.batch_size, self.fetch_timeout)
        if not messages:
            return 0
        deliveries = [self._delivery(m) for m in messages]
        now = time.monotonic()
        waiting = [self._waits(d, now) for d in deliveries]
        handled = self.processor.process(
            [d for d, w in zip(deliveries, waiting, strict=True) if w is None]
        )
        verdicts, results = [], iter(handled)
        for delivery, wait in zip(deliveries, waiting, strict=True):
            verdict = Verdict(False, wait) if wait is not None else next(results)
            if wait is None:
                self._hold_or_release(delivery, verdict, now)
            verdicts.append(verdict)
        self._settle(messages, verdicts)  # only after the commit above
        return len(messages)

    def _waits(self, delivery: Delivery, now: float) -> float | None:
        """Seconds a delivery must wait behind its aggregate's held event, or None."""
        record = delivery.record
        hold = self._held.get(record.stream_id) if record else None
        if record is None or hold is None or hold[0] == record.event_id:
            return None
        event_id, due, since = hold
        if now - since > self.hold_timeout:
            log.warning(
                "aggregate %s waited %.0f s for event %s; going on without it",
                record.stream_id,
                now - since,
                event_id,
            )
            del self._held[record.stream_id]
            return None
        return max(due - now, 0.0) + HOLD_MARGIN

    def _hold_or_release(self, delivery: Delivery, verdict: Verdict, now: float) -> None:
        record = delivery.record
        if record is None:
            return
        if not verdict.ack:
            since = self._held.get(record.stream_id, ("", 0.0, now))[2]
            self._held[record.stream_id] = (record.event_id, now + verdict.retry_in, since)
        elif self._held.get(record.stream_id, ("",))[0] == record.event_id:
            del self._held[record.stream_id]

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

    def run(self, stop: threading.Event | None = None) -> None:
        """Pass after pass until ``stop`` is set; a database or broker outage pauses it."""
        run_passes(
            stop or self._stop,
            self._pass,
            pauses_on=(StorageError, TransportError),
            backoff=self.outage_backoff,
            rng=self.processor.rng,
            on_pause=self._paused,
        )

    def _pass(self) -> None:
        self.run_once()
        self._clean_up()

    def _paused(self, exc: Exception) -> None:
        self.stats.outages += 1
        self.stats.last_error = str(exc)

    def _clean_up(self) -> None:
        now = time.time()
        if self.inbox is None or now < self._cleanup_at:
            return
        self._cleanup_at = now + 60.0
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
