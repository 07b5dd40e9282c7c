"""The composition root: ``tidings.connect(url)`` builds the adapters for one database."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self
from urllib.parse import unquote, urlsplit

from tidings.adapters.memory import MemoryDatabase
from tidings.application.bus import InMemoryBus
from tidings.application.handling import Handlers, InboxProcessor
from tidings.application.unit_of_work import UnitOfWork
from tidings.domain.events import DomainEvent
from tidings.errors import ConfigurationError
from tidings.ports import (
    Database,
    EventStore,
    EventWriter,
    Inbox,
    LaneLeases,
    Outbox,
    OutboxDeadLetters,
    Transaction,
    Transport,
)
from tidings.records import EventRecord
from tidings.serialization.codec import JsonCodec
from tidings.serialization.registry import EventRegistry
from tidings.workers.relay import Encode, Relay


class OutboxAdapter(Outbox, LaneLeases, OutboxDeadLetters, Protocol):
    """What every outbox adapter implements: the three outbox ports and ``close``."""

    def close(self) -> None:
        """Release what the outbox holds (a listening connection)."""


class Store:
    """One database's tidings tables, the codec, and the bus events go to after commit.

    Build it with ``tidings.connect``; use ``unit_of_work()`` for every change, and the
    read methods to look at the event log. Close it (or use it as a context manager)
    to release connections.
    """

    def __init__(
        self,
        database: Database,
        events: EventStore,
        registry: EventRegistry,
        *,
        bus: InMemoryBus | None = None,
        writers: Sequence[EventWriter] = (),
        outbox: OutboxAdapter | None = None,
        inbox: Inbox | None = None,
    ) -> None:
        self.database = database
        self.events = events
        self.registry = registry
        self.codec = JsonCodec(registry)
        self.bus = bus if bus is not None else InMemoryBus()
        self.writers = list(writers)
        self.outbox = outbox
        self.inbox = inbox
        if outbox is not None:
            self.writers.append(outbox)

    def unit_of_work(self, metadata: Mapping[str, Any] | None = None) -> UnitOfWork:
        """A new unit of work; ``metadata`` (JSON-able) is stored with each of its events."""
        return UnitOfWork(
            self.database,
            self.events,
            self.codec,
            # With an outbox, events reach handlers through a relay, at least once; handing
            # them to the bus here as well would deliver them twice.
            publisher=self.bus if self.outbox is None else None,
            writers=self.writers,
            metadata=json.dumps(dict(metadata or {}), separators=(",", ":")).encode(),
        )

    def unit_of_work_in(self, tx: Transaction) -> UnitOfWork:
        """A unit of work inside ``tx``, a transaction someone else commits (a consumer's
        batch): its events are written there and handed on when that commits."""
        return UnitOfWork(
            self.database,
            self.events,
            self.codec,
            publisher=self.bus if self.outbox is None else None,
            writers=self.writers,
            joined=tx,
        )

    def decode(self, record: EventRecord) -> DomainEvent:
        """The event a stored or received record holds."""
        return self.codec.decode(record, self.database.describe())

    def processor(self, handlers: Handlers, **options: Any) -> InboxProcessor:
        """An inbox processor running ``handlers`` on this store (see ``InboxProcessor``)."""
        if self.inbox is None:
            raise ConfigurationError("this store has no inbox")
        return InboxProcessor(self, self.inbox, handlers, self.database, **options)

    def read_stream(self, stream_id: str, from_version: int = 1) -> Iterator[DomainEvent]:
        """The decoded events of one stream, oldest first."""
        where = self.database.describe()
        for record in self.events.read_stream(stream_id, from_version):
            yield self.codec.decode(record, where)

    def read_all(self, after_position: int = 0, limit: int = 1000) -> list[DomainEvent]:
        """Up to ``limit`` decoded events of the global log after ``after_position``."""
        where = self.database.describe()
        return [self.codec.decode(r, where) for r in self.events.read_all(after_position, limit)]

    def relay(self, transport: Transport, encode: Encode, **options: Any) -> Relay:
        """A relay from this store's outbox to ``transport`` (see ``tidings.workers.relay``)."""
        if self.outbox is None:
            raise ConfigurationError(
                "this store has no outbox: connect with tidings.connect(url, outbox=True)"
            )
        return Relay(self.outbox, self.outbox, transport, encode, **options)

    def close(self) -> None:
        """Release the database connections."""
        if self.outbox is not None:
            self.outbox.close()
        self.database.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def connect(
    url: str,
    *,
    registry: EventRegistry | None = None,
    bus: InMemoryBus | None = None,
    prefix: str = "tidings_",
    schema: str = "public",
    synchronous: str = "FULL",
    create_schema: bool = True,
    outbox: bool = False,
) -> Store:
    """Open the store at ``url`` and create its tables on first use.

    ``sqlite:///relative.db`` or ``sqlite:////absolute/path.db`` for an SQLite file,
    ``postgresql://user@host:5432/dbname`` for PostgreSQL (``schema`` picks the
    PostgreSQL schema), ``memory://`` for a store that lives in this process.
    ``prefix`` starts every table name. ``synchronous`` is SQLite's durability setting
    (FULL by default; NORMAL is an explicit trade of the last commits on power loss for
    speed). With ``create_schema=False`` tidings expects the tables to exist already
    (``tidings schema`` prints their DDL). With ``outbox=True`` every unit of work also
    writes outbox rows, and events reach handlers and brokers through a relay
    (``store.relay(...)`` or ``tidings relay``) instead of straight after the commit.
    """
    registry = registry if registry is not None else EventRegistry()
    database, events = _open(url, prefix=prefix, schema=schema, synchronous=synchronous)
    try:
        if create_schema:
            database.create_schema()
        box = _outbox(database) if outbox else None
    except BaseException:
        database.close()
        raise
    return Store(database, events, registry, bus=bus, outbox=box, inbox=_inbox(database))


def _inbox(database: Database) -> Inbox:
    if isinstance(database, MemoryDatabase):
        from tidings.adapters.memory_inbox import MemoryInbox

        return MemoryInbox(database)
    from tidings.adapters.sql_inbox import SqlInbox

    sql: Any = database
    if database.dialect == "sqlite":
        return SqlInbox(
            sql.tables,
            mark="?",
            now="strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
            transaction=sql.transaction,
            query=sql.query,
            older_than=(
                "processed_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-' || ? || ' seconds')"
            ),
        )
    return SqlInbox(
        sql.tables,
        mark="%s",
        now="now()",
        transaction=sql.transaction,
        query=sql.query,
        older_than="processed_at < now() - make_interval(secs => %s)",
    )


def _outbox(database: Database) -> OutboxAdapter:
    if isinstance(database, MemoryDatabase):
        from tidings.adapters.memory_outbox import MemoryOutbox

        return MemoryOutbox(database)
    if database.dialect == "sqlite":
        from tidings.adapters.sqlite.outbox import SqliteOutbox

        return SqliteOutbox(database)  # type: ignore[arg-type]
    from tidings.adapters.postgres.outbox import PostgresOutbox

    return PostgresOutbox(database)  # type: ignore[arg-type]


def _open(url: str, *, prefix: str, schema: str, synchronous: str) -> tuple[Database, EventStore]:
    scheme = urlsplit(url).scheme.lower()
    if scheme == "memory":
        from tidings.adapters.memory import MemoryDatabase, MemoryEventStore

        memory = MemoryDatabase()
        return memory, MemoryEventStore(memory)
    if scheme == "sqlite":
        from tidings.adapters.sqlite import SqliteDatabase, SqliteEventStore

        sqlite = SqliteDatabase(sqlite_path(url), prefix=prefix, synchronous=synchronous)
        return sqlite, SqliteEventStore(sqlite)
    if scheme in ("postgresql", "postgres"):
        from tidings.adapters.postgres import PostgresDatabase, PostgresEventStore

        postgres = PostgresDatabase(url, schema=schema, prefix=prefix)
        return postgres, PostgresEventStore(postgres)
    raise ConfigurationError(
        f"cannot open {url!r}: use sqlite:///path/to/file.db, postgresql://user@host/dbname "
        "or memory://"
    )


def sqlite_path(url: str) -> Path:
    """The file path in ``sqlite:///relative`` or ``sqlite:////absolute`` URLs."""
    if not url.lower().startswith("sqlite:///"):
        raise ConfigurationError(
            f"{url!r} is not an SQLite URL: write sqlite:///relative/path.db or "
            "sqlite:////absolute/path.db (three slashes, then the path)"
        )
    path = unquote(url[len("sqlite:///") :].split("?", 1)[0])
    if not path:
        raise ConfigurationError(f"{url!r} names no file: write sqlite:///shop.db")
    return Path(path)
