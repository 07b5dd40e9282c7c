"""The ports: small Protocols the application layer uses and adapters implement.

A port never imports an adapter, and an adapter (or a test fake) satisfies a port by
shape, without inheriting from it. Each port is one capability; a backend implements
the ones it supports.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
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
