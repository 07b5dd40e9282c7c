"""Inbox handling: each (event, handler) takes effect once, however often it is delivered.

The spec's inbox snippet writes the inbox row, runs the handler and marks it processed in
separate steps; a crash between them either loses the effect or applies it twice. Here
the inbox row, the handler's own writes and the status commit in one transaction (a
savepoint per message and handler inside a batch transaction), so a crash at any moment
leaves either nothing or everything.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from tidings.application.backoff import Backoff
from tidings.application.unit_of_work import UnitOfWork
from tidings.domain.events import DomainEvent
from tidings.errors import (
    ConfigurationError,
    SerializationError,
    ServerUnavailableError,
    StorageError,
)
from tidings.ports import Inbox, Transaction
from tidings.records import EventRecord

log = logging.getLogger("tidings.inbox")

HandlerFn = Callable[[Any, UnitOfWork], None]


@dataclass(frozen=True)
class InboxHandler:
    """A handler under a stable name; renaming it makes old events look new to it."""

    name: str
    event_class: type[DomainEvent]
    fn: HandlerFn
    idempotent: bool = False


class Handlers:
    """The explicit registry: event class -> handlers, in the order they were added."""

    def __init__(self) -> None:
        self._all: list[InboxHandler] = []
        self._resolved: dict[type[DomainEvent], list[InboxHandler]] = {}

    def add(
        self,
        event_class: type[DomainEvent],
        name: str,
        fn: HandlerFn,
        *,
        idempotent: bool = False,
    ) -> None:
        """Handle ``event_class`` (and subclasses) with ``fn(event, uow)`` under ``name``.

        ``idempotent=True`` opts out of the inbox (the spec's upsert alternative): the
        handler runs on every delivery, so it must be safe to repeat.
        """
        if not name or len(name) > 200 or name == "*":
            raise ConfigurationError(f"handler name {name!r} must be 1-200 characters, not '*'")
        if any(h.name == name for h in self._all):
            raise ConfigurationError(f"a handler named {name!r} is already registered")
        self._all.append(InboxHandler(name, event_class, fn, idempotent))
        self._resolved.clear()

    def for_class(self, event_class: type[DomainEvent]) -> list[InboxHandler]:
        """Handlers of an event class, in registration order."""
        found = self._resolved.get(event_class)
        if found is None:
            found = [h for h in self._all if issubclass(event_class, h.event_class)]
            self._resolved[event_class] = found
        return found

    def names(self) -> list[str]:
        """Every handler name."""
        return [h.name for h in self._all]

    def event_classes(self) -> list[type[DomainEvent]]:
        """The event classes the handlers take, each once."""
        return list(dict.fromkeys(h.event_class for h in self._all))


@dataclass(frozen=True)
class Delivery:
    """One message to handle: its body as it arrived, the record read from it, or the
    problem that kept it from being read (bad input)."""

    body: bytes
    record: EventRecord | None
    problem: str | None = None


@dataclass(frozen=True)
class Verdict:
    """What to tell the broker once the batch transaction committed."""

    ack: bool
    retry_in: float = 0.0
    applied: tuple[str, ...] = ()
    duplicates: tuple[str, ...] = ()
    buried: tuple[str, ...] = ()


class Session(Protocol):
    """What the processor needs of a store (``tidings.Store`` has it)."""

    def unit_of_work_in(self, tx: Transaction) -> UnitOfWork:
        """A unit of work inside ``tx``."""

    def decode(self, record: EventRecord) -> DomainEvent:
        """The event of a record."""


@dataclass
class InboxProcessor:
    """Runs the handlers of a batch of deliveries in one transaction.

    Per delivery: bad input is buried with its reason; each handler runs in a savepoint
    with its inbox row, so a duplicate is skipped and a failure undoes only that handler's
    writes. A failed attempt is counted; after ``max_attempts`` the message is buried for
    that handler. The verdicts say which messages to acknowledge and which to redeliver
    later (with backoff); apply them only after ``process`` returned (the commit).
    """

    session: Session
    inbox: Inbox
    handlers: Handlers
    database: Any
    max_attempts: int = 5
    backoff: Backoff = field(default_factory=lambda: Backoff(base=1.0, cap=300.0))
    rng: random.Random = field(default_factory=random.Random)

    def process(self, deliveries: Sequence[Delivery]) -> list[Verdict]:
        """Handle the deliveries in one transaction; return a verdict for each.

        Once a message of an aggregate must go round again, the later messages of that
        aggregate in the batch are not handled but sent round with it, so they keep their
        order behind it.
        """
        verdicts: list[Verdict] = []
        held: dict[str, float] = {}
        with self.database.transaction() as tx:
            for delivery in deliveries:
                stream = delivery.record.stream_id if delivery.record else None
                if stream is not None and stream in held:
                    verdicts.append(Verdict(False, held[stream]))
                    continue
                verdict = self._one(tx, delivery)
                if not verdict.ack and stream is not None:
                    held[stream] = verdict.retry_in
                verdicts.append(verdict)
        return verdicts

    def _one(self, tx: Transaction, delivery: Delivery) -> Verdict:
        record = delivery.record
        if record is None or delivery.problem:
            return self._bury(tx, delivery, delivery.problem or "the message could not be read")
        try:
            event = self.session.decode(record)
        except SerializationError as exc:
            return self._bury(tx, delivery, str(exc))
        applied, duplicates, buried, delays = [], [], [], []
        for handler in self.handlers.for_class(type(event)):
            try:
                with tx.savepoint():
                    if not handler.idempotent and not self.inbox.begin(tx, record, handler.name):
                        duplicates.append(handler.name)
                        continue
                    with self.session.unit_of_work_in(tx) as uow:
                        handler.fn(event, uow)
                applied.append(handler.name)
            except Exception as exc:  # the handler's writes are undone; count the attempt
                delay, reason = self._failed(tx, delivery, record, handler.name, exc)
                if reason is None:
                    delays.append(delay)
                else:
                    buried.append(reason)
        if delays:
            return Verdict(False, min(delays), tuple(applied), tuple(duplicates), tuple(buried))
        return Verdict(True, 0.0, tuple(applied), tuple(duplicates), tuple(buried))

    def _failed(
        self, tx: Transaction, delivery: Delivery, record: EventRecord, name: str, exc: Exception
    ) -> tuple[float, str | None]:
        """Count a handler's failed attempt: (delay before the next one, None), or (0, the
        reason it was buried) after the last attempt or when the inbox cannot keep it."""
        error = f"{type(exc).__name__}: {exc}"
        try:
            with tx.savepoint():
                attempts = self.inbox.fail(tx, record, name, error)
        except ServerUnavailableError:
            raise  # the database is down: the whole batch comes again later
        except StorageError as refused:
            # The database refuses to keep this message at all (PostgreSQL's JSONB takes
            # no U+0000, nor numbers beyond its range), so no attempt can be counted: bury
            # it now rather than fail the batch around it again and again.
            reason = f"the inbox cannot keep this message for {name}: {refused}"
            self.inbox.bury(tx, delivery.body, reason, handler=name, record=record)
            log.error("event %s buried for %s: %s", record.event_id, name, refused)
            return 0.0, reason
        if attempts >= self.max_attempts:
            reason = f"handler {name} failed {attempts} times; last: {error}"
            self.inbox.bury(
                tx, delivery.body, reason, handler=name, record=record, attempts=attempts
            )
            log.error("event %s buried for %s: %s", record.event_id, name, error)
            return 0.0, reason
        log.warning(
            "event %s failed in %s (attempt %d): %s", record.event_id, name, attempts, error
        )
        return self.backoff.delay(attempts, self.rng), None

    def bury(self, delivery: Delivery, reason: str) -> None:
        """Keep a delivery as a dead letter in a transaction of its own."""
        with self.database.transaction() as tx:
            self.inbox.bury(tx, delivery.body, reason, record=delivery.record)

    def _bury(self, tx: Transaction, delivery: Delivery, reason: str) -> Verdict:
        self.inbox.bury(tx, delivery.body, reason, record=delivery.record)
        log.error("message buried: %s", reason)
        return Verdict(True, buried=(reason,))
