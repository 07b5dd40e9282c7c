"""The composition root: ``tidings.connect(url)`` builds the adapters for one database."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import unquote, urlsplit

from tidings.application.bus import InMemoryBus
from tidings.application.event_log import iter_log
from tidings.application.repository import EventSourcedRepository
from tidings.application.unit_of_work import UnitOfWork
from tidings.domain.event_sourced import EventSourcedAggregate
from tidings.domain.events import DomainEvent
from tidings.domain.ids import Clock, IdSource, utc_now, uuid7
from tidings.errors import ConfigurationError
from tidings.ports import Database, EventStore, EventWriter, SnapshotStore
from tidings.records import StreamInfo
from tidings.serialization.codec import JsonCodec
from tidings.serialization.registry import EventRegistry

A = TypeVar("A", bound=EventSourcedAggregate)


class Store:
    """One database's tidings tables, the codec, and the bus events go to after commit.

    Build it with ``tidings.connect``; use ``unit_of_work()`` for every change,
    ``repository(cls)`` for event-sourced aggregates, and the read methods to look at the
    event log. Close it (or use it as a context manager)
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
        snapshots: SnapshotStore | None = None,
    ) -> None:
        self.database = database
        self.events = events
        self.snapshots = snapshots
        self.registry = registry
        self.codec = JsonCodec(registry)
        self.bus = bus if bus is not None else InMemoryBus()
        self.writers = list(writers)

    def unit_of_work(self, metadata: Mapping[str, Any] | None = None) -> UnitOfWork:
        """A new unit of work; ``metadata`` (JSON-able) is stored with each of its events."""
        return UnitOfWork(
            self.database,
            self.events,
            self.codec,
            publisher=self.bus,
            writers=self.writers,
            metadata=json.dumps(dict(metadata or {}), separators=(",", ":")).encode(),
        )

    def repository(
        self,
        aggregate_class: type[A],
        *,
        snapshot_every: int | None = None,
        clock: Clock = utc_now,
        ids: IdSource = uuid7,
    ) -> EventSourcedRepository[A]:
        """The repository of an event-sourced class; registers the events it applies."""
        self.registry.register(*aggregate_class.appliers)
        return EventSourcedRepository(
            aggregate_class,
            self.database,
            self.events,
            self.codec,
            self.snapshots,
            snapshot_every=snapshot_every,
            clock=clock,
            ids=ids,
        )

    def read_stream(
        self,
        stream_id: str,
        from_version: int = 1,
        to_version: int | None = None,
        *,
        as_of: datetime | None = None,
    ) -> Iterator[DomainEvent]:
        """The decoded events of one stream, oldest first (see ``EventStore.read_stream``)."""
        where = self.database.describe()
        for record in self.events.read_stream(stream_id, from_version, to_version, as_of=as_of):
            yield self.codec.decode(record, where)

    def stream_info(self, stream_id: str, as_of: datetime | None = None) -> StreamInfo:
        """A stream's version and first and last event times, now or as of ``as_of``."""
        return self.events.stream_info(stream_id, as_of)

    def read_all(self, after_position: int = 0, limit: int = 1000) -> list[DomainEvent]:
        """Up to ``limit`` decoded events of the global log after ``after_position``."""
        where = self.database.describe()
        return [self.codec.decode(r, where) for r in self.events.read_all(after_position, limit)]

    def iter_all(self, after_position: int = 0, page: int = 1000) -> Iterator[DomainEvent]:
        """Every decoded event after ``after_position``, a page at a time (flat memory)."""
        where = self.database.describe()
        for record in iter_log(self.events, after_position, page):
            yield self.codec.decode(record, where)

    def close(self) -> None:
        """Release the database connections."""
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
) -> Store:
    """Open the store at ``url`` and create its tables on first use.

    ``sqlite:///relative.db`` or ``sqlite:////absolute/path.db`` for an SQLite file,
    ``postgresql://user@host:5432/dbname`` for PostgreSQL (``schema`` picks the
    PostgreSQL schema), ``memory://`` for a store that lives in this process.
    ``prefix`` starts every table name. ``synchronous`` is SQLite's durability setting
    (FULL by default; NORMAL is an explicit trade of the last commits on power loss for
    speed). With ``create_schema=False`` tidings expects the tables to exist already
    (``tidings schema`` prints their DDL).
    """
    registry = registry if registry is not None else EventRegistry()
    database, events, snapshots = _open(url, prefix=prefix, schema=schema, synchronous=synchronous)
    try:
        if create_schema:
            database.create_schema()
    except BaseException:
        database.close()
        raise
    return Store(database, events, registry, bus=bus, snapshots=snapshots)


def _open(
    url: str, *, prefix: str, schema: str, synchronous: str
) -> tuple[Database, EventStore, SnapshotStore]:
    scheme = urlsplit(url).scheme.lower()
    if scheme == "memory":
        from tidings.adapters.memory import MemoryDatabase, MemoryEventStore, MemorySnapshotStore

        memory = MemoryDatabase()
        return memory, MemoryEventStore(memory), MemorySnapshotStore(memory)
    if scheme == "sqlite":
        from tidings.adapters.sqlite import SqliteDatabase, SqliteEventStore, SqliteSnapshotStore

        sqlite = SqliteDatabase(sqlite_path(url), prefix=prefix, synchronous=synchronous)
        return sqlite, SqliteEventStore(sqlite), SqliteSnapshotStore(sqlite)
    if scheme in ("postgresql", "postgres"):
        from tidings.adapters.postgres import (
            PostgresDatabase,
            PostgresEventStore,
            PostgresSnapshotStore,
        )

        postgres = PostgresDatabase(url, schema=schema, prefix=prefix)
        return postgres, PostgresEventStore(postgres), PostgresSnapshotStore(postgres)
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
