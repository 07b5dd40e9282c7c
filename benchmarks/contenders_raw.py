"""The raw drivers: the fewest statements that store and read the same events.

The floor tidings is measured against: the same rows in the same table (tidings' own DDL,
so the ratio is the library's cost, not a difference of schema), one INSERT per event in
a transaction of its own (or a thousand), reads that select the rows and ``json.loads``
the payload.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from datetime import UTC, datetime
from typing import Any

from tidings.adapters.postgres.database import postgres_schema
from tidings.adapters.sql import split_statements
from tidings.adapters.sqlite.database import sqlite_schema

PAYLOAD = {"sku": "BOOK-42", "quantity": 2, "unit_price_cents": 1950}
COLUMNS = "event_id, stream_id, version, event_type, schema_version, occurred_at, data, metadata"


def row(stream: str, version: int) -> tuple[Any, ...]:
    """One event row: a fresh id, the time, and the shared payload as JSON text."""
    now = datetime.now(UTC).isoformat(timespec="microseconds")
    return (str(uuid.uuid4()), stream, version, "ItemAdded", 1, now, json.dumps(PAYLOAD), "{}")


class RawSqlite:
    """sqlite3 in WAL mode with synchronous=FULL, BEGIN IMMEDIATE ... COMMIT."""

    name = "sqlite3"

    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = FULL")
        for statement in split_statements(sqlite_schema("raw_")):
            self.conn.execute(statement)
        self.insert = f"INSERT INTO raw_events ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"

    def one_per_transaction(self, streams: list[str]) -> None:
        """Each stream's first event, one transaction each."""
        for stream in streams:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute(self.insert, row(stream, 1))
            self.conn.execute("COMMIT")

    def many_per_transaction(self, stream: str, count: int) -> None:
        """``count`` events of one stream in one transaction."""
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.executemany(self.insert, [row(stream, v) for v in range(1, count + 1)])
        self.conn.execute("COMMIT")

    def load(self, stream: str) -> int:
        """Every event of the stream, decoded to dicts; returns how many."""
        rows = self.conn.execute(
            "SELECT data FROM raw_events WHERE stream_id = ? ORDER BY version", (stream,)
        ).fetchall()
        return len([json.loads(data) for (data,) in rows])

    def read_log(self, page: int) -> int:
        """The whole log in pages, decoded to dicts; returns how many."""
        count, after = 0, 0
        while True:
            rows = self.conn.execute(
                "SELECT position, data FROM raw_events WHERE position > ? ORDER BY position "
                "LIMIT ?",
                (after, page),
            ).fetchall()
            count += len([json.loads(data) for _, data in rows])
            if len(rows) < page:
                return count
            after = rows[-1][0]

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


class RawPostgres:
    """psycopg 3: one connection per thread, INSERT then COMMIT."""

    name = "psycopg"

    def __init__(self, url: str, schema: str) -> None:
        import psycopg

        self.url, self.table = url, f"{schema}.raw_events"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(postgres_schema(schema, "raw_"))
        self.insert = (
            f"INSERT INTO {self.table} ({COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        )

    def connect(self) -> Any:
        """A new connection (one per writer thread)."""
        import psycopg

        return psycopg.connect(self.url)

    def one_per_transaction(self, streams: list[str], conn: Any = None) -> None:
        """Each stream's first event, one transaction each."""
        own = conn is None
        conn = conn or self.connect()
        for stream in streams:
            conn.execute(self.insert, row(stream, 1))
            conn.commit()
        if own:
            conn.close()

    def many_per_transaction(self, stream: str, count: int) -> None:
        """``count`` events of one stream in one transaction."""
        with self.connect() as conn:
            with conn.cursor() as cursor:
                cursor.executemany(self.insert, [row(stream, v) for v in range(1, count + 1)])
            conn.commit()

    def close(self) -> None:
        """Nothing held between calls."""
