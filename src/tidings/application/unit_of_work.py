"""UnitOfWork: one transaction for state and events; publishing only after it commits."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self

import msgspec

from tidings.application.causation import Cause, current_cause, handling
from tidings.application.sending import Outgoing
from tidings.application.statements import for_psycopg
from tidings.domain.aggregate import Aggregate
from tidings.domain.events import DomainEvent
from tidings.errors import UnitOfWorkError
from tidings.observability import tracing
from tidings.ports import (
    Database,
    EventStore,
    EventWriter,
    Messages,
    Params,
    Publisher,
    Transaction,
)
from tidings.records import EventRecord
from tidings.serialization.codec import JsonCodec

_encode = msgspec.json.Encoder().encode
_NO_SPAN: AbstractContextManager[Any] = nullcontext()


class UnitOfWork:
    """Use as ``with store.unit_of_work() as uow:``; the block is one transaction.

    Inside, write your own state through ``uow.execute`` (or ``uow.connection``) and
    ``uow.track(aggregate)`` every aggregate you changed. On a clean exit the pending
    events of the tracked aggregates are written in the same transaction (event log, and
    any extra writers such as an outbox), the transaction commits, and only then are the
    events taken off the aggregates and handed to the publisher. On an exception, or a
    failed commit, everything rolls back, nothing is published, and the events stay on
    the aggregates so the caller can retry.

    After the commit, ``position`` is the global position of the last event it wrote
    (None if it wrote none): a consistency token to wait on until a projection has
    applied it (``ProjectionRunner.wait_for``, docs/cqrs.md).

    Given ``joined=tx`` it works inside a transaction someone else owns (an inbox handler
    runs in the consumer's batch transaction): it writes the events there, and takes them
    off the aggregates and publishes them only when that transaction commits.
    """

    def __init__(
        self,
        database: Database,
        event_store: EventStore,
        codec: JsonCodec,
        *,
        publisher: Publisher | None = None,
        writers: Sequence[EventWriter] = (),
        metadata: Mapping[str, Any] | None = None,
        cause: Cause | None = None,
        joined: Transaction | None = None,
        messages: Messages | None = None,
    ) -> None:
        self._joined = joined
        self._database = database
        self._event_store = event_store
        self._codec = codec
        self._publisher = publisher
        self._writers = tuple(writers)
        self._metadata = dict(metadata or {})
        # The message being handled where the unit of work was opened, if any (see
        # tidings.application.causation); a unit of work with none starts a conversation.
        self._cause = cause or current_cause()
        self._tracked: dict[int, Aggregate] = {}
        self._outgoing = Outgoing(messages, self._writers)
        self._tx_context: AbstractContextManager[Transaction] | None = None
        self._span: AbstractContextManager[Any] = _NO_SPAN
        self._tx: Transaction | None = None
        self._done = False
        self.published: list[DomainEvent] = []
        self.sent: list[DomainEvent] = []  # the messages sent, stamped, once committed
        self._sent: list[DomainEvent] = []
        # The consistency token: the highest global position written, once committed.
        self.position: int | None = None
        self._position: int | None = None
        self.handler_failures: list[object] = []

    def __enter__(self) -> Self:
        if self._done or self._tx_context is not None:
            raise UnitOfWorkError("a unit of work runs once: open a new one for the next change")
        if self._joined is not None:
            self._tx_context = nullcontext(self._joined)
        else:
            # Its own span, current for the block: the events it records carry its context.
            # Joined, it runs in its caller's span (a consumer's, for a handler).
            self._span = tracing.unit_of_work()
            self._span.__enter__()
            self._tx_context = self._database.transaction()
        try:
            self._tx = self._tx_context.__enter__()
        except BaseException as failure:
            span, self._span = self._span, _NO_SPAN
            span.__exit__(type(failure), failure, failure.__traceback__)
            raise
        return self

    @property
    def transaction(self) -> Transaction:
        """The open transaction (for adapters that write alongside, like a repository)."""
        if self._tx is None or self._done:
            raise UnitOfWorkError("the unit of work is not open: use it inside its with block")
        return self._tx

    @property
    def dialect(self) -> str:
        """``sqlite``, ``postgresql`` or ``memory``: which SQL your statements must speak."""
        return self._database.dialect

    @property
    def connection(self) -> Any:
        """The driver connection of the open transaction, for your own state."""
        return self.transaction.connection

    def execute(self, sql: str, params: Params = ()) -> Any:
        """Run one SQL statement of yours in this transaction and return the cursor.

        One parameter style on every backend: ``:name`` with a mapping, or ``?`` with a
        sequence (see ``tidings.application.statements``)."""
        if self._database.dialect == "postgresql":
            sql = for_psycopg(sql)
        return self.transaction.execute(sql, params)

    def stream_version(self, stream_id: str) -> int:
        """A stream's version as this unit of work sees it (its own writes included)."""
        return self._event_store.stream_version(stream_id, self.transaction)

    def track(self, *aggregates: Aggregate) -> None:
        """Save the pending events of these aggregates when the unit of work commits."""
        self.transaction  # noqa: B018 - raises if the unit of work is not open
        for aggregate in aggregates:
            self._tracked.setdefault(id(aggregate), aggregate)

    def send(
        self,
        message: DomainEvent,
        *,
        key: str | None = None,
        deliver_at: datetime | None = None,
        delay: float | timedelta | None = None,
    ) -> None:
        """Send a command or integration message (a ``tidings.Message``) when the unit of
        work commits: it is written to the outbox in the same transaction, so it leaves
        only if the transaction commits, and at least once.

        Messages of one ``key`` (a saga id, an order id) are delivered in the order sent;
        without one a message is ordered with no other. ``deliver_at`` (an aware datetime)
        or ``delay`` (seconds or a timedelta) hold it back until then: it waits in the
        database, across restarts, and a relay sends it once due. Without an outbox the
        message goes to the in-memory bus after the commit, and cannot be delayed.
        """
        self.transaction  # noqa: B018 - raises if the unit of work is not open
        self._outgoing.add(message, key, deliver_at, delay)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        span, self._span = self._span, _NO_SPAN
        try:
            self._finish(exc_type, exc, tb)
        except BaseException as failure:
            span.__exit__(type(failure), failure, failure.__traceback__)
            raise
        span.__exit__(exc_type, exc, tb)

    def _finish(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        context, tx = self._tx_context, self._tx
        self._tx_context, self._tx, self._done = None, None, True
        if context is None or tx is None:
            return
        if exc_type is not None:
            context.__exit__(exc_type, exc, tb)
            return
        if self._joined is not None and not self._tracked and not self._outgoing:
            # A handler's unit of work that only ran statements (the usual case, once per
            # handler and message): nothing to write, nothing to hand on after the commit.
            return
        try:
            metadata = self._metadata_bytes()
            written = write_pending(
                tx,
                self._tracked.values(),
                self._event_store,
                self._codec,
                self._writers,
                metadata=metadata,
                owned=self._joined is None and not self._outgoing,
            )
            if self._outgoing:
                self._sent = self._outgoing.write(tx, self._codec, metadata)
            self._position = max((r.position for r in written), default=None)
        except BaseException as failure:
            context.__exit__(type(failure), failure, failure.__traceback__)
            raise
        if self._joined is not None:
            tx.on_commit(self._publish)  # the owner of the transaction commits it
            return
        context.__exit__(None, None, None)  # commits; a failed commit raises here
        self._publish()

    @property
    def cause(self) -> Cause:
        """The conversation this unit of work belongs to and what caused it: the message
        being handled, or a new conversation (fixed on first use)."""
        if self._cause is None:
            self._cause = Cause.first()
        return self._cause

    def _metadata_bytes(self) -> bytes:
        """What is stored with each event: the cause's keys, the current span's trace
        context (which replaces the cause's), then yours (yours win)."""
        if not self._outgoing and not any(a.pending_events for a in self._tracked.values()):
            return b"{}"
        return _encode({**self.cause.metadata(), **tracing.current_context(), **self._metadata})

    def _publish(self) -> None:
        self.position = self._position
        events = [event for agg in self._tracked.values() for event in agg.pull_events()]
        self.published, self.sent = events, self._sent
        handed = events + self._sent  # messages too, where no outbox takes them
        if handed and self._publisher is not None:
            # A bus handler's own unit of work continues this conversation, caused by the
            # event it was handed.
            cause, failures = self.cause, list[object]()
            for event in handed:
                with handling(Cause(cause.correlation_id, event.event_id, cause.trace)):
                    failures += self._publisher.publish([event])
            self.handler_failures = failures


def write_pending(
    tx: Transaction,
    aggregates: Iterable[Aggregate],
    event_store: EventStore,
    codec: JsonCodec,
    writers: Sequence[EventWriter],
    *,
    metadata: bytes = b"{}",
    owned: bool = False,
) -> list[EventRecord]:
    """Write the pending events of ``aggregates`` in ``tx``: the event log (with the
    concurrency check) first, then every extra writer (the outbox). Nothing is taken off
    the aggregates: that happens only after the transaction commits.

    ``owned``: the caller commits ``tx`` right after this. The last append is then the
    transaction's last statement, which lets PostgreSQL run a unit of work that only
    appends to one stream as a single statement (``Transaction.last_statement``).
    """
    written: list[EventRecord] = []
    pending = [aggregate for aggregate in aggregates if aggregate.pending_events]
    for n, aggregate in enumerate(pending, start=1):
        records = codec.encode_all(aggregate.pending_events, metadata, tx)
        last = owned and n == len(pending) and not writers
        written += event_store.append(tx, records, aggregate.stored_version, last=last)
    if written:
        for writer in writers:
            writer.write(tx, written)
    return written
