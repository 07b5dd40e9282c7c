"""The PostgreSQL backend (psycopg 3 + psycopg_pool): production. Needs the postgres extra."""

from tidings.adapters.postgres.database import PostgresDatabase
from tidings.adapters.postgres.event_store import PostgresEventStore
from tidings.adapters.postgres.key_store import PostgresKeyStore
from tidings.adapters.postgres.reader_hold import ReaderHold
from tidings.adapters.postgres.snapshot_store import PostgresSnapshotStore
from tidings.adapters.sql import postgres_schema

__all__ = [
    "PostgresDatabase",
    "PostgresEventStore",
    "PostgresKeyStore",
    "PostgresSnapshotStore",
    "ReaderHold",
    "postgres_schema",
]
