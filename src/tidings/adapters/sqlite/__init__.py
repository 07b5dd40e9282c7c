"""The SQLite backend (standard library ``sqlite3``): the embedded default."""

from tidings.adapters.sqlite.database import SqliteDatabase, sqlite_schema
from tidings.adapters.sqlite.event_store import SqliteEventStore

__all__ = ["SqliteDatabase", "SqliteEventStore", "sqlite_schema"]
