"""The ports: small Protocols the application layer uses and adapters implement.

A port never imports an adapter, and an adapter (or a test fake) satisfies a port by
shape, without inheriting from it. Each port is one capability; a backend implements
the ones it supports.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from tidings.domain.events import DomainEvent
from tidings.records import EventRecord

ANY_VERSION = -1
"""``expected_version`` that skips the concurrency check."""

NO_STREAM = 0
"""``expected_version`` of a stream that must not exist yet."""

Params = Sequence[Any] | Mapping[str, Any]


class Transaction(Protocol):
    """One open database transaction, handed to every writer so that they commit together."""

    @property
    def connection(self) -> Any:
        """The driver's own connection (``sqlite3.Connection``, ``psycopg.Connection``)."""

    def execute(self, sql: str, params: Params = ()) -> Any:
        """Run one statement in this transaction; driver errors arrive as ``StorageError``."""

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the transaction has committed (never if it rolls back)."""


class Database(Protocol):
    """A database that opens transactions and owns the tables tidings needs."""

    dialect: str

    def transaction(self) -> AbstractContextManager[Transaction]:
        """Open a write transaction: commit on a clean exit, roll back on an exception."""

    def create_schema(self) -> None:
        """Create the tables if they are missing (idempotent, versioned)."""

    def describe(self) -> str:
        """Say which database this is, for messages (never includes a password)."""

    def close(self) -> None:
        """Release connections."""


class EventStore(Protocol):
    """The append-only log of events: streams with versions, and one global order."""

    def append(
        self, tx: Transaction, records: Sequence[EventRecord], expected_version: int
    ) -> list[EventRecord]:
        """Append records of one stream at ``expected_version`` + 1, ..., inside ``tx``.

        Raises ``ConcurrencyError`` (writing nothing) when the stream is not at
        ``expected_version``. Returns the records with their global positions.
        """

    def stream_version(self, stream_id: str) -> int:
        """The version of the last committed event of a stream (0 when there is none)."""

    def read_stream(self, stream_id: str, from_version: int = 1) -> Iterator[EventRecord]:
        """Committed records of one stream from ``from_version`` on, in version order."""

    def read_all(self, after_position: int = 0, limit: int = 1000) -> list[EventRecord]:
        """Up to ``limit`` committed records after ``after_position``, in position order."""


class EventWriter(Protocol):
    """Something else that writes recorded events in the unit of work's transaction."""

    def write(self, tx: Transaction, records: Sequence[EventRecord]) -> None:
        """Write ``records`` inside ``tx`` (for example as outbox rows)."""


class Publisher(Protocol):
    """Where events go once their transaction committed (the in-memory bus, for one)."""

    def publish(self, events: Sequence[DomainEvent]) -> Sequence[object]:
        """Hand events to their handlers; return what failed (never raise for a handler)."""


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One event on its way to a broker.

    ``body`` is the CloudEvents 1.0 JSON document; ``message_id`` is the event id (brokers
    that deduplicate, like NATS JetStream, use it); ``routing_key`` comes from the event
    type (the RabbitMQ routing key, the last tokens of a NATS subject); ``ordering_key``
    is the aggregate id, the unit whose order must hold.
    """

    message_id: str
    routing_key: str
    ordering_key: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


class Transport(Protocol):
    """Publishes messages to a broker and waits for the broker to take responsibility."""

    def publish(self, messages: Sequence[OutgoingMessage]) -> list[str | None]:
        """Publish ``messages``; return, per message, None once the broker confirmed it, or
        the reason it refused it. Raise ``BrokerUnavailableError`` when the broker cannot be
        reached, or another ``TransportError`` when it refused the whole call (a topology
        conflict, say); then nothing may be assumed published. The next call reconnects."""

    def close(self) -> None:
        """Release the connection."""


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """One message delivered by a broker; ``token`` is the transport's handle to settle it."""

    body: bytes
    message_id: str | None
    delivery_count: int
    token: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)


class Subscription(Protocol):
    """A durable subscription of one consumer: fetch, then settle every message."""

    def fetch(self, max_messages: int, timeout: float) -> list[IncomingMessage]:
        """Up to ``max_messages`` messages, waiting at most ``timeout`` seconds for the first."""

    def ack(self, messages: Sequence[IncomingMessage]) -> None:
        """The messages are done with; the broker forgets them.

        Messages already settled, or fetched on a connection that has since been lost, are
        skipped: the broker delivers the latter again, and the inbox recognises them.
        """

    def retry_later(self, message: IncomingMessage, delay: float) -> None:
        """Deliver ``message`` again after about ``delay`` seconds."""

    def close(self) -> None:
        """Release the connection (unsettled messages are delivered again later)."""
