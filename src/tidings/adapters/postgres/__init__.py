"""The PostgreSQL backend (psycopg 3 + psycopg_pool): production. Needs the postgres extra."""

from tidings.adapters.postgres.database import PostgresDatabase, postgres_schema
from tidings.adapters.postgres.event_store import PostgresEventStore

__all__ = ["PostgresDatabase", "PostgresEventStore", "postgres_schema"]
