"""An in-process broker: the reference transport, and fast tests of relays and consumers.

``MemoryPublisher`` and ``MemorySubscription`` share a ``MemoryQueue``; it behaves like
one durable broker queue with competing consumers: first in, first out, settled by ack,
delivered again (with a higher delivery count) after ``retry_later`` or when the
subscription that held a message closes without settling it.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from tidings.errors import TransportError
from tidings.ports import IncomingMessage, OutgoingMessage


@dataclass(frozen=True, slots=True)
class _Entry:
    message: OutgoingMessage
    deliveries: int = 0
    not_before: float = 0.0
    tag: int = field(default=0, compare=False)


class MemoryQueue:
    """Messages waiting for a consumer, and those delivered but not settled yet."""

    def __init__(self) -> None:
        self._ready: list[_Entry] = []
        self._unsettled: dict[int, _Entry] = {}
        self._changed = threading.Condition()
        self._tags = itertools.count(1)

    def put(self, messages: Sequence[OutgoingMessage]) -> None:
        """Append messages in order."""
        with self._changed:
            self._ready.extend(_Entry(message) for message in messages)
            self._changed.notify_all()

    def take(self, max_messages: int, timeout: float) -> list[_Entry]:
        """Up to ``max_messages`` due entries, waiting at most ``timeout`` for the first."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                now = time.monotonic()
                due, rest = self._split(now, max_messages)
                if due or now >= deadline:
                    break
                self._changed.wait(min(deadline, self._next_due()) - now)
            self._ready = rest
            taken = []
            for entry in due:
                delivered = replace(entry, deliveries=entry.deliveries + 1, tag=next(self._tags))
                self._unsettled[delivered.tag] = delivered
                taken.append(delivered)
            return taken

    def settle(self, tag: int) -> _Entry | None:
        """Forget a delivered entry; returns it (None when it was already settled)."""
        with self._changed:
            return self._unsettled.pop(tag, None)

    def requeue(self, entries: Sequence[_Entry], delay: float = 0.0, front: bool = False) -> None:
        """Make entries ready again, after ``delay`` seconds, at the front or the back."""
        with self._changed:
            again = [replace(e, not_before=time.monotonic() + delay) for e in entries]
            self._ready = [*again, *self._ready] if front else [*self._ready, *again]
            self._changed.notify_all()

    def depth(self) -> int:
        """How many messages wait or are unsettled."""
        with self._changed:
            return len(self._ready) + len(self._unsettled)

    def _split(self, now: float, max_messages: int) -> tuple[list[_Entry], list[_Entry]]:
        """The first ``max_messages`` due entries, and all the others in their order."""
        due: list[_Entry] = []
        rest: list[_Entry] = []
        for entry in self._ready:
            ready = entry.not_before <= now and len(due) < max_messages
            (due if ready else rest).append(entry)
        return due, rest

    def _next_due(self) -> float:
        return min((e.not_before for e in self._ready), default=float("inf"))


class MemoryPublisher:
    """Publishes to a ``MemoryQueue``; refuses a body larger than ``max_message_bytes``."""

    def __init__(self, queue: MemoryQueue, *, max_message_bytes: int = 1024 * 1024) -> None:
        self.queue = queue
        self.max_message_bytes = max_message_bytes
        self._closed = False

    def publish(self, messages: Sequence[OutgoingMessage]) -> list[str | None]:
        """Queue the messages that fit; a refusal reason for each one that does not."""
        if self._closed:
            raise TransportError("this MemoryPublisher is closed: create a new one")
        reasons = [self._refusal(message) for message in messages]
        self.queue.put([m for m, reason in zip(messages, reasons, strict=True) if reason is None])
        return reasons

    def close(self) -> None:
        """Nothing to release; later publishes fail."""
        self._closed = True

    def _refusal(self, message: OutgoingMessage) -> str | None:
        if len(message.body) > self.max_message_bytes:
            return (
                f"message of {len(message.body)} bytes is larger than the broker's limit "
                f"of {self.max_message_bytes} bytes"
            )
        return None


class MemorySubscription:
    """A consumer of a ``MemoryQueue``; what it holds unsettled goes back when it closes."""

    def __init__(self, queue: MemoryQueue) -> None:
        self.queue = queue
        self._held: dict[int, _Entry] = {}
        self._lock = threading.Lock()
        self._closed = False

    def fetch(self, max_messages: int, timeout: float) -> list[IncomingMessage]:
        """Up to ``max_messages`` messages, waiting at most ``timeout`` for the first."""
        self._check_open()
        entries = self.queue.take(max_messages, timeout)
        with self._lock:
            self._held.update((e.tag, e) for e in entries)
        return [
            IncomingMessage(
                body=e.message.body,
                message_id=e.message.message_id,
                delivery_count=e.deliveries,
                token=e.tag,
                headers=dict(e.message.headers),
            )
            for e in entries
        ]

    def ack(self, messages: Sequence[IncomingMessage]) -> None:
        """Forget the messages (settling one twice is harmless)."""
        self._check_open()
        for message in messages:
            self._release(message.token)

    def retry_later(self, message: IncomingMessage, delay: float) -> None:
        """Deliver the message again, at the back of the queue, after ``delay`` seconds."""
        self._check_open()
        entry = self._release(message.token)
        if entry is not None:
            self.queue.requeue([entry], delay=delay)

    def give_back(self, messages: Sequence[IncomingMessage]) -> None:
        """Put the messages back at the front of the queue, in the order delivered."""
        self._check_open()
        entries = [e for e in map(self._release, (m.token for m in messages)) if e is not None]
        self.queue.requeue(sorted(entries, key=lambda e: e.tag), front=True)

    def close(self) -> None:
        """Give back every unsettled message, at the front, in the order it was delivered."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            held = [e for e in self._held.values() if self.queue.settle(e.tag) is not None]
            self._held.clear()
        self.queue.requeue(sorted(held, key=lambda e: e.tag), front=True)

    def _release(self, tag: int) -> _Entry | None:
        with self._lock:
            self._held.pop(tag, None)
        return self.queue.settle(tag)

    def _check_open(self) -> None:
        if self._closed:
            raise TransportError("this MemorySubscription is closed: create a new one")
