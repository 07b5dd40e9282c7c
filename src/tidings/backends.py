"""The backends a URL can name, and the adapters each one offers.

Driver imports happen here only when their backend is asked for, so ``import tidings``
never needs psycopg.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast
from urllib.parse import unquote, urlsplit

from tidings.adapters.extras import require
from tidings.adapters.memory import MemoryDatabase
from tidings.errors import ConfigurationError
from tidings.ports import (
    Database,
    EventStore,
    EventWriter,
    Inbox,
    InFlight,
    KeyStore,
    Leases,
    Messages,
    Outbox,
    OutboxDeadLetters,
    SnapshotStore,
)

if TYPE_CHECKING:
    from tidings.adapters.postgres.database import PostgresDatabase
    from tidings.adapters.sqlite.database import SqliteDatabase


class OutboxAdapter(Outbox, OutboxDeadLetters, Protocol):
    """What every outbox adapter implements: the outbox ports and ``close`` (its lanes are
    leased through the ``Leases`` component it is built with)."""

    def close(self) -> None:
        """Release what the outbox holds (a listening connection)."""


def inbox_of(database: Database) -> Inbox:
    """The inbox adapter of a database."""
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
        dialect="postgresql",
    )


def in_flight_of(database: Database) -> InFlight:
    """Where a database's consumers keep what they fetched and have not finished."""
    if isinstance(database, MemoryDatabase):
        from tidings.adapters.memory_inbox import MemoryInFlight

        return MemoryInFlight()
    from tidings.adapters.sql_inbox import SqlInFlight

    sql: Any = database
    return SqlInFlight(
        sql.tables, mark="?" if database.dialect == "sqlite" else "%s", transaction=sql.transaction
    )


def messages_of(database: Database, outbox: EventWriter) -> Messages:
    """Where a database keeps message keys and scheduled messages (released to ``outbox``)."""
    if isinstance(database, MemoryDatabase):
        from tidings.adapters.memory_messages import MemoryMessages

        return MemoryMessages(database, outbox)
    from tidings.adapters.sql_messages import SqlMessages

    sql: Any = database
    postgres = database.dialect == "postgresql"
    return SqlMessages(
        sql.tables,
        mark="%s" if postgres else "?",
        transaction=sql.transaction,
        outbox=outbox,
        lock_due=" FOR UPDATE SKIP LOCKED" if postgres else "",
    )


def leases_of(database: Database) -> Leases:
    """The lease component of a database: numbered slots shared fairly among live owners
    under fencing tokens (the relays' lanes; a worker's partitions).

    On ``memory://`` the leases live in this object: every worker of one store must share
    the same one (``store.leases``); on SQL backends they live in the database."""
    if isinstance(database, MemoryDatabase):
        from tidings.adapters.memory_leases import MemoryLeases

        return MemoryLeases(database)
    from tidings.adapters.sql_leases import sql_leases

    return sql_leases(database)


def outbox_of(database: Database, leases: Leases) -> OutboxAdapter:
    """The outbox adapter of a database; its settles check the relays' lanes in
    ``leases`` (the component the relays lease them from)."""
    if isinstance(database, MemoryDatabase):
        from tidings.adapters.memory_outbox import MemoryOutbox

        return MemoryOutbox(database, leases)
    if database.dialect == "sqlite":
        from tidings.adapters.sqlite.outbox import SqliteOutbox

        return SqliteOutbox(cast("SqliteDatabase", database), leases)
    from tidings.adapters.postgres.outbox import PostgresOutbox

    return PostgresOutbox(cast("PostgresDatabase", database), leases)


def open_backend(
    url: str, *, prefix: str, schema: str, synchronous: str
) -> tuple[Database, EventStore, SnapshotStore, KeyStore]:
    """The database, event store, snapshot store and key store a URL names."""
    scheme = urlsplit(url).scheme.lower()
    if scheme == "memory":
        from tidings.adapters.memory import MemoryDatabase, MemoryEventStore, MemorySnapshotStore
        from tidings.adapters.memory_keys import MemoryKeyStore

        memory = MemoryDatabase()
        return (
            memory,
            MemoryEventStore(memory),
            MemorySnapshotStore(memory),
            MemoryKeyStore(memory),
        )
    if scheme == "sqlite":
        from tidings.adapters.sqlite import (
            SqliteDatabase,
            SqliteEventStore,
            SqliteKeyStore,
            SqliteSnapshotStore,
        )

        sqlite = SqliteDatabase(sqlite_path(url), prefix=prefix, synchronous=synchronous)
        return sqlite, SqliteEventStore(sqlite), SqliteSnapshotStore(sqlite), SqliteKeyStore(sqlite)
    if scheme in ("postgresql", "postgres"):
        require("postgres", "a PostgreSQL database")
        from tidings.adapters.postgres import (
            PostgresDatabase,
            PostgresEventStore,
            PostgresKeyStore,
            PostgresSnapshotStore,
        )

        pg = PostgresDatabase(url, schema=schema, prefix=prefix)
        return pg, PostgresEventStore(pg), PostgresSnapshotStore(pg), PostgresKeyStore(pg)
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
