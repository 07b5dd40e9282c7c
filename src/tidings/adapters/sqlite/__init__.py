"""The SQLite backend (standard library ``sqlite3``): the embedded default."""

from tidings.adapters.sqlite.database import SqliteDatabase, sqlite_schema
from tidings.adapters.sqlite.event_store import SqliteEventStore
from tidings.adapters.sqlite.key_store import SqliteKeyStore
from tidings.adapters.sqlite.snapshot_store import SqliteSnapshotStore

__all__ = [
    "SqliteDatabase",
    "SqliteEventStore",
    "SqliteKeyStore",
    "SqliteSnapshotStore",
    "sqlite_schema",
]
