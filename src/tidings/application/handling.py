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
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any, Protocol

from tidings.application.backoff import Backoff
from tidings.application.causation import Cause, handling
from tidings.application.merging import MergingWork
from tidings.application.unit_of_work import UnitOfWork
from tidings.domain.events import DomainEvent
from tidings.errors import (
    BadMessageError,
    ConfigurationError,
    DataRefusedError,
    HeldWriteError,
    MessageRejectedError,
    SerializationError,
    ServerUnavailableError,
    StorageError,
)
from tidings.observability import tracing
from tidings.observability.logs import about
from tidings.ports import Inbox, Transaction
from tidings.records import EventRecord

log = logging.getLogger(__name__)

DRIVERS = ("psycopg", "sqlite3")
"""Modules whose exceptions are database errors even when they escape a handler unwrapped."""

HandlerFn = Callable[[Any, UnitOfWork], None]

_handled: ContextVar[EventRecord | None] = ContextVar("tidings_handled_record", default=None)


def handled_record() -> EventRecord | None:
    """The record of the message a handler runs for in this context, or None: its
    envelope beyond the event (the source, and the log position a stream projection
    checkpoints, in its metadata)."""
    return _handled.get()


class _handling:  # noqa: N801 - used as a function
    """Run a handler of ``record``: its cause is current, and so is the record (a class:
    entered for every handler of every message a consumer takes)."""

    __slots__ = ("record", "tokens")

    def __init__(self, record: EventRecord) -> None:
        self.record = record

    def __enter__(self) -> None:
        cause = handling(Cause.of(self.record.event_id, self.record.metadata))
        cause.__enter__()
        self.tokens = (_handled.set(self.record), cause)

    def __exit__(self, *exc: object) -> None:
        token, cause = self.tokens
        cause.__exit__()
        _handled.reset(token)


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
    held: bool = False  # sent round unhandled, behind an earlier event of its aggregate


Finish = Callable[[Transaction, Sequence[Verdict]], None]
"""Called inside the batch's transaction, just before it commits, with the verdicts."""


class HandlerObserver(Protocol):
    """Told how long each handler ran and when one failed (the metrics of
    ``tidings.observability`` are one)."""

    def handled(self, handler: str, seconds: float) -> None:
        """A handler returned after ``seconds``."""

    def failed(self, handler: str) -> None:
        """A handler's attempt failed (its writes were undone)."""


class Session(Protocol):
    """What the processor needs of a store (``tidings.Store`` has it)."""

    def unit_of_work_in(self, tx: Transaction) -> UnitOfWork:
        """A unit of work inside ``tx``."""

    def decode(self, record: EventRecord) -> DomainEvent:
        """The event of a record."""


class _BatchFailedError(Exception):
    """A handler raised in the batch pass: the pass is rolled back and the batch handled
    one by one, where this failure counts as that handler's attempt (it does not run twice
    for one delivery), unless it was a database error that may not be its own."""

    def __init__(self, index: int, handler: str, error: Exception) -> None:
        super().__init__(f"{handler} failed on delivery {index}")
        self.index, self.handler, self.error = index, handler, error
        # A merged write's result read too late fails only in the batch pass: one by one
        # nothing is merged, so the handler runs again there.
        self.its_own = not _from_the_database(error) and not isinstance(error, HeldWriteError)


@dataclass
class InboxProcessor:
    """Runs the handlers of a batch of deliveries in one transaction.

    Per delivery: bad input is buried with its reason; each handler runs with its inbox
    row, so a duplicate is skipped. The usual batch, where every handler succeeds, takes
    one pass: the inbox rows of the whole batch in one statement, then the handlers, then
    the commit. When a handler raises, that pass is rolled back whole and the batch is
    handled again one by one: a savepoint per message and handler, so a failure undoes only
    that handler's writes. A failed attempt is counted; after ``max_attempts`` the message
    is buried for that handler. The verdicts say which messages to acknowledge and which to
    redeliver later (with backoff); apply them only after ``process`` returned (the commit).

    Either way the inbox rows and the handlers' writes commit together or not at all; a
    handler's effects outside the database (an e-mail, say) may happen twice when another
    handler of its batch fails, as they may anyway when a consumer crashes before its commit.
    """

    session: Session
    inbox: Inbox
    handlers: Handlers
    database: Any
    max_attempts: int = 5
    backoff: Backoff = field(default_factory=lambda: Backoff(base=1.0, cap=300.0))
    rng: random.Random = field(default_factory=random.Random)
    destination: tracing.Destination = tracing.IN_PROCESS  # named on the consumer's spans
    observer: HandlerObserver | None = None

    def process(
        self, deliveries: Sequence[Delivery], finish: Finish | None = None
    ) -> list[Verdict]:
        """Handle the deliveries in one transaction; return a verdict for each.

        Once a message of an aggregate must go round again, the later messages of that
        aggregate in the batch are not handled but sent round with it, so they keep their
        order behind it. ``finish`` writes the caller's own bookkeeping of the batch in
        the same transaction.
        """
        try:
            verdicts = self._in_one_pass(deliveries, finish)
        except _BatchFailedError as failed:
            return self._one_by_one(deliveries, failed if failed.its_own else None, finish)
        except ServerUnavailableError:
            raise  # going one by one would only wait for the server a second time
        except StorageError:  # a statement failed, but whose? Each handler runs again.
            return self._one_by_one(deliveries, None, finish)
        for verdict in verdicts:  # logged only now: a redone pass would log them twice
            for reason in verdict.buried:
                log.error("message buried: %s", reason)
        return verdicts

    def _in_one_pass(self, deliveries: Sequence[Delivery], finish: Finish | None) -> list[Verdict]:
        """Every handler of every delivery, no savepoints, statements pipelined where the
        backend can; any exception undoes the whole pass."""
        with (
            self.database.transaction() as tx,
            tx.pipeline(),
            self.session.unit_of_work_in(tx) as sender,
        ):
            work = MergingWork(sender)  # consecutive writes of one SQL: one executemany
            readings = [self._read(delivery) for delivery in deliveries]
            keys = [
                (delivery.record, handler.name)
                for delivery, event in readings
                if event is not None and delivery.record is not None
                for handler in self.handlers.for_class(type(event))
                if not handler.idempotent
            ]
            fresh = iter(self.inbox.begin_many(tx, keys))
            verdicts = []
            for index, (delivery, event) in enumerate(readings):
                if event is None:
                    reason = delivery.problem or ""
                    self.inbox.bury(tx, delivery.body, reason, record=delivery.record)
                    verdicts.append(Verdict(True, buried=(reason,)))
                else:
                    record = delivery.record
                    assert record is not None  # noqa: S101 - _read gives an event only with one
                    with tracing.processing(self.destination, record):
                        verdicts.append(
                            self._apply(tx, work, index, event, fresh=fresh, record=record)
                        )
            work.flush()  # within the handlers' pass, so an error in it is theirs to redo
            if finish is not None:
                finish(tx, verdicts)
            return verdicts

    def _apply(
        self,
        tx: Transaction,
        work: MergingWork,
        index: int,
        event: DomainEvent,
        *,
        fresh: Iterator[bool],
        record: EventRecord,
    ) -> Verdict:
        """Run the event's handlers whose inbox row is fresh (and the idempotent ones),
        each with its own unit of work seen through the batch's ``work``."""
        applied, duplicates = [], []
        for handler in self.handlers.for_class(type(event)):
            if not handler.idempotent and not next(fresh):
                duplicates.append(handler.name)
                continue
            began = perf_counter()
            try:
                with _handling(record), self.session.unit_of_work_in(tx) as uow:
                    work.serve(uow)
                    handler.fn(event, work)  # type: ignore[arg-type] # it acts as the uow
            except Exception as exc:
                raise _BatchFailedError(index, handler.name, exc) from exc
            if self.observer is not None:
                self.observer.handled(handler.name, perf_counter() - began)
            applied.append(handler.name)
        return Verdict(True, 0.0, tuple(applied), tuple(duplicates))

    def _read(self, delivery: Delivery) -> tuple[Delivery, DomainEvent | None]:
        """The delivery's event, or None with the problem noted on the delivery."""
        record = delivery.record
        if record is None or delivery.problem:
            return _problem(delivery, delivery.problem or "the message could not be read"), None
        try:
            return delivery, self.session.decode(record)
        except SerializationError as exc:
            return _problem(delivery, str(exc)), None

    def _one_by_one(
        self,
        deliveries: Sequence[Delivery],
        failed: _BatchFailedError | None,
        finish: Finish | None = None,
    ) -> list[Verdict]:
        """A savepoint per message and handler, so a failure undoes only its own writes."""
        verdicts: list[Verdict] = []
        held: dict[str, float] = {}
        with self.database.transaction() as tx:
            for index, delivery in enumerate(deliveries):
                stream = delivery.record.stream_id if delivery.record else None
                if stream is not None and stream in held:
                    verdicts.append(Verdict(False, held[stream]))
                    continue
                known = failed if failed is not None and failed.index == index else None
                with tracing.processing(self.destination, delivery.record):
                    verdict = self._one(tx, delivery, known)
                    if verdict.buried or not verdict.ack:
                        tracing.failed(", ".join(verdict.buried) or "a handler failed: retried")
                if not verdict.ack and stream is not None:
                    held[stream] = verdict.retry_in
                verdicts.append(verdict)
            if finish is not None:
                finish(tx, verdicts)
        return verdicts

    def _one(
        self, tx: Transaction, delivery: Delivery, failed: _BatchFailedError | None
    ) -> Verdict:
        delivery, event = self._read(delivery)
        record = delivery.record
        if event is None or record is None:
            return self._bury(tx, delivery, delivery.problem or "")
        applied, duplicates, buried, delays = [], [], [], []
        for handler in self.handlers.for_class(type(event)):
            try:
                with tx.savepoint():
                    if not handler.idempotent and not self.inbox.begin(tx, record, handler.name):
                        duplicates.append(handler.name)
                        continue
                    if failed is not None and handler.name == failed.handler:
                        raise failed.error  # its failure in the batch pass, not a second run
                    began = perf_counter()
                    with _handling(record), self.session.unit_of_work_in(tx) as uow:
                        handler.fn(event, uow)
                    if self.observer is not None:
                        self.observer.handled(handler.name, perf_counter() - began)
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

    def retry_dead(
        self, read: Callable[[bytes], EventRecord], ids: Sequence[int] | None = None
    ) -> list[Verdict]:
        """Handle dead letters again (all when ``ids`` is None), in one transaction with
        taking them out: one that fails again is kept again with its new error, so nothing
        is lost whatever happens."""
        with self.database.transaction() as tx:
            verdicts = []
            for letter in self.inbox.remove_dead(tx, ids):
                try:
                    delivery = Delivery(letter.body, read(letter.body))
                except BadMessageError as exc:
                    delivery = Delivery(letter.body, None, exc.reason)
                verdict = self._one(tx, delivery, None)
                if not verdict.ack:
                    reason = f"retried and failed again ({letter.reason})"
                    self.inbox.bury(
                        tx,
                        letter.body,
                        reason,
                        handler=letter.handler,
                        record=delivery.record,
                        attempts=letter.attempts + 1,
                    )
                verdicts.append(verdict)
            return verdicts

    def _failed(
        self, tx: Transaction, delivery: Delivery, record: EventRecord, name: str, exc: Exception
    ) -> tuple[float, str | None]:
        """Count a handler's failed attempt: (delay before the next one, None), or (0, the
        reason it was buried) after the last attempt or when the inbox cannot keep it."""
        error = f"{type(exc).__name__}: {exc}"
        if self.observer is not None:
            self.observer.failed(name)
        if isinstance(exc, MessageRejectedError):  # retrying cannot help: bury it now
            reason = f"handler {name} rejected it: {exc}"
            self.inbox.bury(tx, delivery.body, reason, handler=name, record=record)
            log.error(
                "event %s buried for %s: %s", record.event_id, name, exc, extra=about(record, name)
            )
            return 0.0, reason
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
            try:
                with tx.savepoint():
                    self.inbox.bury(tx, delivery.body, reason, handler=name, record=record)
            except DataRefusedError:  # not even its event id and type: the body alone
                self.inbox.bury(tx, delivery.body, reason, handler=name)
            log.error(
                "event %s buried for %s: %s",
                record.event_id,
                name,
                refused,
                extra=about(record, name),
            )
            return 0.0, reason
        if attempts >= self.max_attempts:
            reason = f"handler {name} failed {attempts} times; last: {error}"
            self.inbox.bury(
                tx, delivery.body, reason, handler=name, record=record, attempts=attempts
            )
            log.error(
                "event %s buried for %s: %s",
                record.event_id,
                name,
                error,
                extra=about(record, name),
            )
            return 0.0, reason
        log.warning(
            "event %s failed in %s (attempt %d): %s",
            record.event_id,
            name,
            attempts,
            error,
            extra=about(record, name),
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


def _from_the_database(exc: BaseException) -> bool:
    """True for a database error, ours or a driver's (also as the cause of another): with
    pipelined statements it may belong to an earlier statement than the one that met it."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, StorageError) or type(seen).__module__.split(".")[0] in DRIVERS:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _problem(delivery: Delivery, reason: str) -> Delivery:
    """The delivery with the reason it cannot be handled."""
    return Delivery(delivery.body, delivery.record, reason)
